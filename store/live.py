"""Live wake-ups for readers of the event log: one LISTEN connection per process.

The `project_logs_notify` trigger sends one NOTIFY per inserted batch naming the projects it
touched. The hub wakes the subscribers of those projects, which then read from their cursor:
NOTIFY says "look", the cursor read says what — so a lost NOTIFY (an outage, a reconnect)
never loses an event; the hub wakes everyone after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from uuid import UUID

import psycopg

from clients.retry import RetryPolicy, backoff_delay

logger = logging.getLogger(__name__)

CHANNEL = "myyc_project_logs"


class Subscription:
    """One reader's wake-up flag."""

    def __init__(self, project_id: UUID) -> None:
        self.project_id = project_id
        self._event = asyncio.Event()

    def wake(self) -> None:
        """Mark that new events may be there."""
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Wait for a wake-up (True) or `seconds` to pass (False); clears the flag."""
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return False
        self._event.clear()
        return True


class EventHub:
    """LISTENs on the event channel and wakes the subscribers of each notified project."""

    def __init__(self, url: str, *, reconnect_delay: float = 0.2) -> None:
        self._url = url
        self._backoff = RetryPolicy(max_attempts=2**31, base_delay=reconnect_delay, max_delay=5.0)
        self._subs: dict[UUID, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> EventHub:
        """Start listening; returns once the first LISTEN is in place."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-hub")
            await asyncio.wait_for(self._connected.wait(), 30)
        return self

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.asynccontextmanager
    async def subscribe(self, project_id: UUID) -> AsyncIterator[Subscription]:
        """A subscription to one project's wake-ups, for the life of the block."""
        sub = Subscription(project_id)
        self._subs.setdefault(project_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(project_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[project_id]

    def _wake(self, payload: str) -> None:
        if payload == "*":
            self._wake_all()
            return
        for raw in payload.split(","):
            try:
                pid = UUID(raw)
            except ValueError:
                continue
            for sub in self._subs.get(pid, ()):
                sub.wake()

    def _wake_all(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.wake()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await conn.execute(f"listen {CHANNEL}")
                    self._connected.set()
                    if failures:
                        logger.info("event hub reconnected after %d attempt(s)", failures)
                        failures = 0
                    # Anything may have been written while we were not listening.
                    self._wake_all()
                    async for note in conn.notifies():
                        self._wake(note.payload)
            except psycopg.Error as err:
                # One warning per outage, then quiet retries backing off to a few seconds.
                if failures == 0:
                    logger.warning("event hub lost its connection (%s); reconnecting", err)
                failures += 1
                await asyncio.sleep(backoff_delay(failures, self._backoff))
