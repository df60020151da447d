"""Agent runs (seed 001): POST /agents/run starts a task, GET /agent-runs lists runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.auth import CallerDep
from api.deps import ServicesDep
from api.errors import error_responses
from api.limits import rate_key
from api.routes.projects import spawn_for
from schemas.api import AgentRunOut, AgentRunRequest, AgentRunResponse
from schemas.pipeline import PIPELINE
from schemas.rows import NewProject

router = APIRouter(tags=["agent runs"])


@router.post(
    "/agents/run",
    status_code=202,
    response_model=AgentRunResponse,
    responses=error_responses(404, 413, 429),
)
async def start_agent_run(
    body: AgentRunRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> AgentRunResponse:
    """Start an agent on a task: a project is made for it and the orchestrator's run returned."""
    user_id = body.user_id if caller.is_service else caller.user_id
    limiter, key = request.app.state.spawn_limiter, rate_key(user_id)
    if key is not None:
        limiter.check(key)
    # A blank description (" ") has no first line: the project is then just "task".
    first_line = next(iter(body.task_description.strip().splitlines()), "")
    title = first_line[:200] or "task"
    spawned = await spawn_for(
        services,
        NewProject(title=title, description=body.task_description, user_id=user_id),
        ("orchestrator", *PIPELINE),
    )
    runs = await services.store.list_runs(project_id=spawned.project_id)
    run = next(r for r in runs if r.agent_name == "orchestrator")
    if body.task_id is not None:
        await services.store.update_run(run.id, {"task_id": body.task_id})
    await services.dispatcher.spawn(
        "orchestrator", project_id=str(spawned.project_id), build_id=str(spawned.build_id)
    )
    return AgentRunResponse(run_id=run.id, project_id=spawned.project_id)


@router.get("/agent-runs", response_model=list[AgentRunOut])
async def list_agent_runs(
    services: ServicesDep,
    caller: CallerDep,
    active: Annotated[bool | None, Query(description="Only live runs (or only finished).")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 100,
) -> list[AgentRunOut]:
    """Agent runs, newest first: the caller's own (servers see all)."""
    runs = await services.store.list_runs(user_id=caller.owner_filter(), active=active, limit=limit)
    return [AgentRunOut.model_validate(r) for r in runs]
