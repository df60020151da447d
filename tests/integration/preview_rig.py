"""A preview stack for tests: real Postgres, the real API in-process, Fly through FlyFake.

Everything Fly-side runs in virtual time (one FakeClock shared by the client, the fake and the
session service), so boots, waits, leases and retries take no real time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import jwt
import psycopg
import pytest

from agents.reporter import RunReporter
from api.app import create_app
from api.routes import previews as preview_routes
from core.services import Services
from previews.fly_driver import FlyMachinesDriver
from previews.sessions import PreviewSessions
from schemas.rows import NewProject, Project
from schemas.settings import Settings
from store.log_writer import LogWriter
from store.postgres import PostgresStore
from store.preview_store import PostgresPreviewStore
from tests.fakes.fly import FakeClock, FlyFake
from tests.fakes.previews import ContainerFleetFake

APP = "myyc-previews"
JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"


def with_preview_routes(services: Services) -> Any:
    """`create_app(services)` with the preview router (included once)."""
    app = create_app(services)
    if not any(getattr(r, "path", None) == "/sessions/start" for r in app.routes):
        app.include_router(preview_routes.router)
    return app


def user_token(user_id: UUID, secret: str = JWT_SECRET) -> str:
    """A Supabase-style user JWT."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class FlyStack:
    """The preview stack on Fly (fake) and Postgres (real)."""

    clock: FakeClock
    fly: FlyFake
    fleet: ContainerFleetFake
    store: PostgresStore
    previews_store: PostgresPreviewStore
    writer: LogWriter
    settings: Settings
    services: Services
    previews: PreviewSessions
    client: httpx.AsyncClient
    db_url: str

    async def user(self) -> UUID:
        """A new auth.users row."""
        user_id = uuid.uuid4()
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as conn:
            await conn.execute("insert into auth.users (id) values (%s)", (user_id,))
        return user_id

    async def project(self, user_id: UUID | None = None) -> Project:
        """A new project owned by `user_id`."""
        return await self.store.create_project(NewProject(title="preview me", user_id=user_id))

    def auth(self, user_id: UUID) -> dict[str, str]:
        """Headers of a signed-in user."""
        return {"Authorization": f"Bearer {user_token(user_id)}"}

    def ours_alive(self) -> list[dict[str, Any]]:
        """Our machines the fake still holds (anything not destroyed)."""
        return [
            m
            for m in self.fly.machines(APP, include_deleted=False)
            if (m["config"].get("metadata") or {}).get("myyc") == "preview"
        ]

    async def events(self, project_id: UUID) -> list[Any]:
        """The project's stored events (after flushing the writer)."""
        from schemas.events import Cursor

        await self.writer.flush()
        return await self.store.read_events(project_id, after=Cursor())


def fly_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings selecting Fly, with user auth and a small cap."""
    values: dict[str, Any] = {
        "fly_api_token": "fm2_test-token",
        "fly_app": APP,
        "supabase_jwt_secret": JWT_SECRET,
        "preview_max_live_per_user": 2,
        "preview_boot_timeout_seconds": 20.0,
        "preview_ttl_minutes": 30,
        "myyc_data_dir": tmp_path,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(name="stack")
async def stack_fixture(db_url: str, tmp_path: Path) -> AsyncIterator[FlyStack]:
    """The stack; test modules import this name (the fixture is called `stack`)."""
    clock = FakeClock()
    fake = FlyFake(clock=clock, sleep=clock.sleep)
    fake.add_app(APP)
    fleet = ContainerFleetFake(fake, APP)
    settings = fly_settings(tmp_path)
    store = await PostgresStore.open(db_url)
    writer = await LogWriter(store).start()
    services = Services(settings, store, writer, RunReporter(store, writer), None, None, db_url)
    fly_http = httpx.AsyncClient(transport=fake.transport())
    driver = FlyMachinesDriver.from_settings(
        settings,
        http_client=fly_http,
        base_url="http://fly.test/v1",
        clock=clock,
        sleep=clock.sleep,
    )
    probe_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=fleet))
    previews_store = PostgresPreviewStore.of(store)
    previews = PreviewSessions(
        store=previews_store,
        files=previews_store,
        projects=store,
        driver=driver,
        writer=writer,
        settings=settings,
        http=probe_http,
        clock=clock,
        sleep=clock.sleep,
    )
    app = with_preview_routes(services)
    app.state.services = services  # ASGITransport runs no lifespan
    app.state.previews = previews
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://myyc.test")
    try:
        yield FlyStack(
            clock, fake, fleet, store, previews_store, writer, settings, services, previews,
            client, db_url,
        )  # fmt: skip
    finally:
        await client.aclose()
        await previews.close()
        await probe_http.aclose()
        await fly_http.aclose()
        await writer.close()
        await store.close()
