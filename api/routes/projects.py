"""Spawning projects and reading them (seed 000): POST /spawn, GET /status/{id}, GET /projects."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.auth import CallerDep
from api.deps import ServicesDep, visible_project
from api.errors import error_responses
from api.limits import rate_key
from core.services import Services
from schemas.api import RunLine, SpawnRequest, SpawnResponse, StatusResponse
from schemas.errors import ErrorCode, MyycError, NotFound
from schemas.pipeline import PIPELINE
from schemas.rows import NewProject, Project
from store.ports import Spawned

logger = logging.getLogger(__name__)
router = APIRouter(tags=["projects"])


class DispatchFailed(MyycError):
    """The orchestrator could not be started."""

    code = ErrorCode.upstream_error


@router.post(
    "/spawn",
    status_code=202,
    response_model=SpawnResponse,
    responses={
        200: {"model": SpawnResponse, "description": "A repeated Idempotency-Key."},
        **error_responses(404, 413, 429, 502),
    },
)
async def spawn(
    body: SpawnRequest,
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200, description="Repeat it to get the first answer back."),
    ] = None,
) -> JSONResponse:
    """Create a project from an idea and start its build; answers before the agents run."""
    user_id = body.user_id if caller.is_service else caller.user_id
    idea = body.idea()
    new = NewProject(
        title=idea.title, description=idea.description, category=idea.category,
        user_id=user_id, idempotency_key=idempotency_key,
    )  # fmt: skip
    spawned = await accept_build(request, services, body, new)
    answer = SpawnResponse(project_id=spawned.project_id, build_id=spawned.build_id)
    return JSONResponse(answer.model_dump(mode="json"), status_code=202 if spawned.created else 200)


async def accept_build(
    request: Request,
    services: Services,
    body: BaseModel,
    new: NewProject,
    *,
    user_field: str = "body.user_id",
    template: str | None = None,
    vibe_text: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Spawned:
    """What POST /spawn and POST /sessions share: the owner's rate limit (a repeated key is
    free), the idempotent spawn (another body under a used key is idempotency_mismatch), and
    the start of a build that was created."""
    limiter, key = request.app.state.spawn_limiter, rate_key(new.user_id)
    idempotency_key = new.idempotency_key
    charged = limiter.check(key, idempotency_key=idempotency_key) if key is not None else False
    spawned = await spawn_for(
        services, new, PIPELINE, template=template, vibe_text=vibe_text, options=options,
        fingerprint=fingerprint(request, body, idempotency_key), user_field=user_field,
    )  # fmt: skip
    if not spawned.created:
        if charged and key is not None:
            limiter.refund(key, idempotency_key=idempotency_key)
        if spawned.mismatch:
            raise IdempotencyMismatch()
        return spawned
    await start_build(services, spawned)
    return spawned


async def start_build(services: Services, spawned: Spawned) -> None:
    """Hand a new build to an orchestrator; a dispatch that fails fails the project (502).

    The build says it is queued at once: when agents are busy, an orchestrator may wait its
    turn, and the person watching sees the build accepted, not silence.
    """
    await services.writer.log(spawned.project_id, "orchestrator", "Build queued",
                              session_id=spawned.build_id)  # fmt: skip
    try:
        await services.dispatcher.spawn(
            "orchestrator", project_id=str(spawned.project_id), build_id=str(spawned.build_id)
        )
    except Exception as err:
        logger.exception("could not start the build of %s", spawned.project_id)
        await services.store.update_project(
            spawned.project_id,
            {"status": "failed", "error": f"could not start the build: {err}",
             "error_code": ErrorCode.upstream_error.value},
        )  # fmt: skip
        raise DispatchFailed("could not start the build; try again with a new key") from err


async def spawn_for(
    services: Services,
    new: NewProject,
    agents: Sequence[str],
    *,
    template: str | None = None,
    vibe_text: str | None = None,
    options: Mapping[str, Any] | None = None,
    fingerprint: str | None = None,
    user_field: str = "body.user_id",
) -> Spawned:
    """Spawn in the store; an owner who does not exist is a 404 naming `user_field`."""
    try:
        return await services.store.spawn_build(
            new, agents, template=template, vibe_text=vibe_text, options=options or {},
            fingerprint=fingerprint,
        )  # fmt: skip
    except NotFound as err:
        if err.field == "user_id":
            raise NotFound("no such user", field=user_field) from err
        raise


class IdempotencyMismatch(MyycError):
    """The Idempotency-Key was used before with another request body."""

    code = ErrorCode.idempotency_mismatch

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used with a different request body; use a new key",
            field="header.idempotency-key",
        )


def fingerprint(request: Request, body: BaseModel, idempotency_key: str | None) -> str | None:
    """What identifies a request for its Idempotency-Key: the route and the parsed body."""
    if idempotency_key is None:
        return None
    canonical = f"{request.url.path}\n{body.model_dump_json()}".encode()
    return hashlib.sha256(canonical).hexdigest()


def _status(project: Project, runs: list[RunLine]) -> StatusResponse:
    return StatusResponse(
        project_id=project.id, title=project.title, status=project.status,
        progress=project.progress, github_url=project.github_url,
        deployment_url=project.deployment_url, preview_url=project.preview_url,
        error=project.error, created_at=project.created_at, updated_at=project.updated_at,
        runs=runs,
    )  # fmt: skip


@router.get("/status/{project_id}", response_model=StatusResponse, responses=error_responses(404))
async def status(project_id: UUID, services: ServicesDep, caller: CallerDep) -> StatusResponse:
    """A project's status, progress, URLs, and one line per agent run."""
    project = await visible_project(services, caller, project_id)
    return _status(project, await _run_lines(services, project_id))


async def _run_lines(services: Services, project_id: UUID) -> list[RunLine]:
    runs = await services.store.list_runs(project_id=project_id)
    # Runs of one spawn share a start time: order them as the pipeline runs them.
    position = {name: i for i, name in enumerate(("orchestrator", *PIPELINE))}
    runs.sort(key=lambda r: (r.started_at, position.get(r.agent_name, len(position))))
    return [RunLine.model_validate(r, from_attributes=True) for r in runs]


@router.get("/projects", response_model=list[StatusResponse])
async def projects(
    services: ServicesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 50,
) -> list[StatusResponse]:
    """The portfolio: the caller's projects, newest first (servers see all)."""
    rows = await services.store.list_projects(user_id=caller.owner_filter(), limit=limit)
    lines = await asyncio.gather(*(_run_lines(services, p.id) for p in rows))
    return [_status(p, runs) for p, runs in zip(rows, lines, strict=True)]
