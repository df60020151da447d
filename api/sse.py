"""The Server-Sent Events stream of a project's log, resumable with Last-Event-ID.

Every event carries `id: <cursor>` — the reader's whole position after that event — so a
client that reconnects with the last id it saw receives every later event exactly once, in
each writer's order, however many writers interleave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from schemas.errors import StoreUnavailable
from schemas.events import Cursor, Event, EventType
from store.live import EventHub, Subscription
from store.ports import EventStore

logger = logging.getLogger(__name__)

PAGE = 1000


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


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
    down = 0
    while True:
        # Not awaited directly: a client leaving mid-read must not cancel the query under the
        # pool, and a read that waits on a store that is down (the pool's wait) must not keep
        # the client from hearing from us.
        read = asyncio.ensure_future(store.read_events(project_id, after=cursor, limit=PAGE))
        read.add_done_callback(_retrieved)  # a client gone mid-read leaves no loose exception
        while not (await asyncio.wait({read}, timeout=keepalive))[0]:
            yield ": keepalive (waiting for the store)\n\n"
        try:
            events = read.result()
        except StoreUnavailable as err:
            # The stream outlives an outage: wait and read again from the same cursor, and
            # keep the client's connection alive meanwhile (its read timeout is not ours).
            if down == 0:
                logger.warning("stream of %s waits for the store (%s)", project_id, err.message)
            down += 1
            pause = min(2.0, 0.25 * down)
            await asyncio.sleep(pause)
            idle += pause
            if idle >= keepalive:
                idle = 0.0
                yield ": keepalive (the store is unavailable; resuming from the cursor)\n\n"
            continue
        if down:
            logger.info("stream of %s resumed after the store came back", project_id)
            down = 0
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
