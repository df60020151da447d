"""Builds: seed 004's build sessions, cancel and resume, approvals, the cost ledger.

Namespaces under `/sessions`: seed 004's **build** sessions are `POST /sessions`,
`GET /sessions/{id}` and `GET /sessions/{id}/events`; seed 003's **preview** sessions keep
`POST /sessions/start`, `POST /sessions/stop` and `GET /sessions/{id}/status`
(`api/routes/previews.py`). The two never share a path: a build session id is a build id,
a preview session id a preview's.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from api.auth import Caller, CallerDep
from api.deps import ServicesDep, visible_project
from api.errors import error_responses
from api.routes.projects import accept_build
from core.services import Services
from schemas.builds import (
    ApprovalOut,
    BuildAction,
    BuildEventOut,
    CostLine,
    Costs,
    DecisionRequest,
    ModelSetting,
    SessionCreated,
    SessionOut,
    SessionRequest,
)
from schemas.errors import Conflict, ErrorCode, MyycError, NotFound
from schemas.events import Cursor, EventType
from schemas.rows import Approval, BuildSession, NewProject
from schemas.status import BuildStatus

router = APIRouter(tags=["builds"])

_LIVE = (BuildStatus.queued, BuildStatus.running)


class Forbidden(MyycError):
    """Only servers (service role, HMAC) may do this."""

    code = ErrorCode.forbidden


async def _visible_session(services: Services, caller: Caller, build_id: UUID) -> BuildSession:
    try:
        session = await services.store.get_session(build_id)
    except NotFound:
        raise NotFound(f"build session {build_id} not found", field="id") from None
    if not caller.is_service and session.user_id != caller.user_id:
        raise NotFound(f"build session {build_id} not found", field="id")
    return session


def _title(vibe: str) -> str:
    first = next((line.strip() for line in vibe.splitlines() if line.strip()), "")
    return first[:200] or "app"


def _session_out(s: BuildSession) -> SessionOut:
    return SessionOut(
        id=s.id, status=s.status, template=s.template, vibeText=s.vibe_text, options=s.options,
        environment=s.environment, outputs=s.outputs, error=s.error, errorCode=s.error_code,
        projectId=s.project_id, presence=s.presence, createdAt=s.created_at,
    )  # fmt: skip


@router.post(
    "/sessions",
    status_code=202,
    response_model=SessionCreated,
    responses={
        200: {"model": SessionCreated, "description": "A repeated Idempotency-Key."},
        **error_responses(404, 413, 429, 502),
    },
)
async def create_session(
    body: SessionRequest,
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200, description="Repeat it to get the first answer back."),
    ] = None,
) -> JSONResponse:
    """Create a build session from a vibe and a template (seed 004) and start its graph."""
    user_id = body.userId if caller.is_service else caller.user_id
    new = NewProject(title=_title(body.vibeText), description=body.vibeText,
                     category=body.template, user_id=user_id,
                     idempotency_key=idempotency_key)  # fmt: skip
    spawned = await accept_build(
        request, services, body, new, user_field="body.userId", template=body.template,
        vibe_text=body.vibeText, options=body.options.model_dump(mode="json", exclude_none=True),
    )  # fmt: skip
    answer = SessionCreated(sessionId=spawned.build_id, projectId=spawned.project_id)
    return JSONResponse(answer.model_dump(mode="json"), status_code=202 if spawned.created else 200)


@router.get("/sessions/{id}", response_model=SessionOut, responses=error_responses(404))
async def get_build_session(id: UUID, services: ServicesDep, caller: CallerDep) -> SessionOut:
    """A build session: status, template, vibe, options, environment, outputs, error."""
    return _session_out(await _visible_session(services, caller, id))


@router.get(
    "/sessions/{id}/events", response_model=list[BuildEventOut], responses=error_responses(404)
)
async def build_events(
    id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many.")] = 2000,
) -> list[BuildEventOut]:
    """The build's events (seed 004's `BuildEvent[]`), ordered by `ts`; presence excluded."""
    session = await _visible_session(services, caller, id)
    assert session.project_id is not None
    cursor, found = Cursor(), []
    while True:
        page = await services.store.read_events(session.project_id, after=cursor, limit=1000)
        for event in page:
            cursor.advance(event)
            if event.session_id == id and event.type != EventType.presence:
                found.append(event)
        if len(page) < 1000:
            break
    found.sort(key=lambda e: (e.timestamp, e.writer_id.int, e.seq))
    return [
        BuildEventOut(
            id=e.id,
            sessionId=e.session_id,
            ts=e.timestamp,
            type=e.type,
            message=e.message,
            payload=e.data,
        )
        for e in found[:limit]
    ]


@router.post("/builds/{id}/cancel", response_model=BuildAction, responses=error_responses(404, 409))
async def cancel(id: UUID, services: ServicesDep, caller: CallerDep) -> BuildAction:
    """Cancel a live build; its owner stops at its next lease renewal. Idempotent."""
    session = await _visible_session(services, caller, id)
    if session.status not in _LIVE and session.status is not BuildStatus.canceled:
        raise Conflict(f"the build already {session.status}", field="id")
    who = "a server" if caller.is_service else "its owner"
    session = await services.cancel_build(id, reason=f"canceled by {who}")
    return BuildAction(sessionId=id, status=session.status)


@router.post(
    "/builds/{id}/resume",
    status_code=202,
    response_model=BuildAction,
    responses=error_responses(404, 409),
)
async def resume(id: UUID, services: ServicesDep, caller: CallerDep) -> BuildAction:
    """Hand a live build to an orchestrator now (it continues from its last checkpoint)."""
    session = await _visible_session(services, caller, id)
    if session.status not in _LIVE:
        raise Conflict(f"the build already {session.status}; spawn a new one", field="id")
    assert session.project_id is not None
    await services.dispatcher.spawn("orchestrator", project_id=str(session.project_id),
                                    build_id=str(id))  # fmt: skip
    return BuildAction(sessionId=id, status=session.status)


def _approval_out(a: Approval) -> ApprovalOut:
    return ApprovalOut(
        token=a.token, sessionId=a.session_id, projectId=a.project_id, status=a.status,
        reason=a.reason, evidence=a.evidence, note=a.note, expiresAt=a.expires_at,
        decidedAt=a.decided_at,
    )  # fmt: skip


async def _visible_approval(services: Services, caller: Caller, token: str) -> Approval:
    try:
        approval = await services.store.get_approval(token)
    except NotFound:
        raise NotFound("approval not found", field="token") from None
    if not caller.is_service and approval.user_id != caller.user_id:
        raise NotFound("approval not found", field="token")
    return approval


@router.get("/approvals/{token}", response_model=ApprovalOut, responses=error_responses(404))
async def get_approval(token: str, services: ServicesDep, caller: CallerDep) -> ApprovalOut:
    """An escalation: why, the evidence, its deadline, and the decision once made."""
    return _approval_out(await _visible_approval(services, caller, token))


@router.post(
    "/approvals/{token}", response_model=ApprovalOut, responses=error_responses(404, 409, 413)
)
async def decide(
    token: str, body: DecisionRequest, services: ServicesDep, caller: CallerDep
) -> ApprovalOut:
    """Approve, reject or retry an escalated build; the build resumes with the decision."""
    approval = await _visible_approval(services, caller, token)
    decided = await services.store.decide_approval(token, body.decision, body.note)
    if decided is None:
        current = await services.store.get_approval(token)
        raise Conflict(f"this approval is already {current.status}", field="token")
    await services.dispatcher.spawn("orchestrator", project_id=str(approval.project_id),
                                    build_id=str(approval.session_id))  # fmt: skip
    return _approval_out(decided)


@router.get("/projects/{project_id}/costs", response_model=Costs, responses=error_responses(404))
async def costs(project_id: UUID, services: ServicesDep, caller: CallerDep) -> Costs:
    """The project's model usage and list-price cost, per agent and model (the ledger)."""
    await visible_project(services, caller, project_id)
    usage = await services.store.list_usage(project_id)
    groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for u in usage:
        groups[(u.agent_name, u.provider, u.model)].append(u)
    lines = [
        CostLine(
            agent=agent,
            provider=provider,
            model=model,
            calls=len(rows),
            inputTokens=sum(r.input_tokens for r in rows),
            outputTokens=sum(r.output_tokens for r in rows),
            costUsd=None
            if any(r.cost_usd is None for r in rows)
            else round(sum(r.cost_usd or 0.0 for r in rows), 6),
        )
        for (agent, provider, model), rows in groups.items()
    ]
    return Costs(
        projectId=project_id, calls=len(usage),
        inputTokens=sum(u.input_tokens for u in usage),
        outputTokens=sum(u.output_tokens for u in usage),
        costUsd=round(sum(u.cost_usd or 0.0 for u in usage), 6),
        unpricedCalls=sum(1 for u in usage if u.cost_usd is None), lines=lines,
    )  # fmt: skip


@router.put(
    "/admin/settings/model", response_model=ModelSetting, responses=error_responses(403, 413)
)
async def set_model(body: ModelSetting, services: ServicesDep, caller: CallerDep) -> ModelSetting:
    """Choose the model new builds use, at runtime (servers only; a build's option wins)."""
    if not caller.is_service:
        raise Forbidden("only servers may change admin settings", field="authorization")
    await services.store.put_setting("model", body.model_dump(exclude_none=True))
    return body


@router.get(
    "/admin/settings/model", response_model=ModelSetting | None, responses=error_responses(403)
)
async def get_model(services: ServicesDep, caller: CallerDep) -> ModelSetting | None:
    """The admin model setting, if one is set."""
    if not caller.is_service:
        raise Forbidden("only servers may read admin settings", field="authorization")
    value = await services.store.get_setting("model")
    return ModelSetting.model_validate(value) if value else None
