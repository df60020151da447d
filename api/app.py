"""The FastAPI app: the same object Modal serves with @modal.asgi_app and uvicorn serves locally."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from api import docs, errors
from api.auth import ReplayGuard
from api.limits import BodyLimit, RateLimiter
from api.routes import agent_runs, builds, logs, previews, projects
from core.services import Services
from schemas.errors import StoreUnavailable
from schemas.settings import Settings, get_settings


def create_app(services: Services | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app; with `services` given (tests, the CLI) the caller owns their lifecycle."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        opened = await Services.open(effective, recover=True)
        app.state.services = opened
        try:
            yield
        finally:
            await opened.close()

    app = FastAPI(
        title="myyc",
        version="0.1.0",
        summary="The backend of an AI app builder: an idea becomes a live project.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    docs.install(app)
    effective = services.settings if services is not None else (settings or get_settings())
    app.state.replays = ReplayGuard()
    app.state.spawn_limiter = RateLimiter(effective.spawn_rate_per_minute)
    app.add_middleware(BodyLimit, max_bytes=effective.max_body_bytes)
    for router in (projects.router, builds.router, agent_runs.router, logs.router, previews.router):
        app.include_router(router, responses=errors.error_responses(401, 422))

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers (whatever its database does)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], responses=errors.error_responses(503))
    async def ready(request: Request) -> dict[str, str]:
        """Readiness: the store answers within 2 s; 503 `store_unavailable` while it does not."""
        try:
            await asyncio.wait_for(request.app.state.services.store.list_projects(limit=1), 2.0)
        except TimeoutError:
            raise StoreUnavailable("the store did not answer within 2 s") from None
        return {"status": "ready"}

    return app
