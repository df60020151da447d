"""The Server-Sent Events stream of a project's log, resumable with Last-Event-ID.

Every event carries `id: <cursor>` — the reader's whole position after that event — so a
client that reconnects with the last id it saw receives every later event exactly once, in
each writer's order, however many writers interleave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from uuid import UUID

from schemas.errors import StoreUnavailable
from schemas.events import Cursor, Event, EventType
from store.live import EventHub, Subscription
from store.ports import EventStore

logger = logging.getLogger(__name__)

PAGE = 1000


def format_event(event: Event, cursor: Cursor) -> str:
    """One SSE frame: the cursor as id, the event as JSON data.

    Seed 004's presence rides the same stream as `event: presence`, so a browser's
    EventSource can listen for it apart from the log lines.
    """
    kind = "event: presence\n" if event.type == EventType.presence else ""
    return f"{kind}id: {cursor.encode()}\ndata: {event.model_dump_json()}\n\n"


async def sse_events(
    store: EventStore,
    hub: EventHub | None,
    project_id: UUID,
    cursor: Cursor,
    *,
    keepalive: float = 15.0,
    poll: float = 1.0,
) -> AsyncIterator[str]:
    """Yield SSE frames from `cursor` on, forever (until the client goes)."""
    if hub is None:
        # No LISTEN channel (the Supabase REST store): poll; production readers use Realtime.
        async for frame in _frames(store, None, project_id, cursor, keepalive, poll):
            yield frame
        return
    async with hub.subscribe(project_id) as sub:
        async for frame in _frames(store, sub, project_id, cursor, keepalive, poll):
            yield frame


async def _frames(
    store: EventStore,
    sub: Subscription | None,
    project_id: UUID,
    cursor: Cursor,
    keepalive: float,
    poll: float,
) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    idle = 0.0
    while True:
        try:
            # Shielded: a client leaving mid-read must not cancel the query under the pool.
            events = await asyncio.shield(store.read_events(project_id, after=cursor, limit=PAGE))
        except StoreUnavailable as err:
            # The stream outlives an outage: wait and read again from the same cursor.
            logger.warning("stream read failed (%s); retrying", err)
            await asyncio.sleep(0.5)
            continue
        if events:
            frames = []
            for event in events:
                cursor.advance(event)
                frames.append(format_event(event, cursor))
            yield "".join(frames)
            idle = 0.0
            if len(events) == PAGE:
                continue
        # Wait for a NOTIFY (or, with no hub, poll); say something when quiet for `keepalive`.
        if sub is not None:
            idle += 0.0 if await sub.wait(keepalive) else keepalive
        else:
            await asyncio.sleep(poll)
            idle += poll
        if idle >= keepalive:
            idle = 0.0
            yield ": keepalive\n\n"
