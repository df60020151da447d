"""A project's event log: read after a cursor, or follow it live over SSE."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from api.auth import CallerDep
from api.deps import ServicesDep, visible_project
from api.errors import error_responses
from api.sse import sse_events
from schemas.base import Model
from schemas.events import Cursor, Event
from schemas.status import LogLevel

router = APIRouter(tags=["logs"])

#: What `Cursor.encode()` writes: `<writer hex>.<seq>` parts joined by `~` (empty: the start).
CURSOR_PATTERN = r"^([0-9a-f]{32}\.[1-9][0-9]{0,17}(~[0-9a-f]{32}\.[1-9][0-9]{0,17})*)?$"


class LogPage(Model):
    """A page of events and the cursor to read the next one from."""

    events: list[Event]
    """Events after the given cursor, each writer's in order."""
    cursor: str
    """Pass as `after` to get the events that follow."""


@router.get("/projects/{project_id}/logs", response_model=LogPage, responses=error_responses(404))
async def read_logs(
    project_id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    after: Annotated[
        str | None,
        Query(
            max_length=65536, pattern=CURSOR_PATTERN, description="A cursor from a previous page."
        ),
    ] = None,
    agent: Annotated[
        str | None, Query(max_length=100, description="Only this agent's events.")
    ] = None,
    level: Annotated[LogLevel | None, Query(description="Only events of this level.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000, description="At most this many events.")] = 1000,
) -> LogPage:
    """Events of a project after `after` (all when omitted)."""
    cursor = Cursor.parse(after, field="after")
    await visible_project(services, caller, project_id)
    events = await services.store.read_events(
        project_id, after=cursor, limit=limit, agent=agent, level=level
    )
    for event in events:
        cursor.advance(event)
    return LogPage(events=events, cursor=cursor.encode())


@router.get(
    "/projects/{project_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "SSE frames."},
        **error_responses(404),
    },
)
async def stream_logs(
    project_id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    after: Annotated[
        str | None,
        Query(max_length=65536, pattern=CURSOR_PATTERN, description="Start after this cursor."),
    ] = None,
    last_event_id: Annotated[
        str,
        Header(
            max_length=65536, pattern=CURSOR_PATTERN, description="Resume point; wins over `after`."
        ),
    ] = "",
) -> StreamingResponse:
    """Follow a project's log live (Server-Sent Events); reconnect with Last-Event-ID."""
    if last_event_id:
        cursor = Cursor.parse(last_event_id, field="Last-Event-ID")
    else:
        cursor = Cursor.parse(after, field="after")
    await visible_project(services, caller, project_id)
    return StreamingResponse(
        sse_events(
            services.store,
            services.hub,
            project_id,
            cursor,
            keepalive=services.settings.sse_keepalive_seconds,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
