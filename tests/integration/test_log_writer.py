"""LogWriter on real Postgres: ordering, idempotent ids, back-pressure, retries, spool, rejects.

Faults are injected by small wrapper stores around the real PostgresStore (they speak the
EventStore port): an outage, a lost commit acknowledgement, a closed gate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from clients.retry import RetryPolicy
from schemas.errors import StoreUnavailable, ValidationFailed
from schemas.events import MAX_MESSAGE_BYTES, TRUNCATION_MARKER, Cursor, Event
from schemas.rows import NewProject
from store.log_writer import LogWriter, event_id
from store.ports import EventRecord
from store.postgres import PostgresStore

FAST = RetryPolicy(max_attempts=1_000_000, base_delay=0.01, max_delay=0.05)


class OutageStore:
    """The real store behind a switch: while `down`, appends fail as unreachable."""

    def __init__(self, inner: PostgresStore) -> None:
        self.inner = inner
        self.down = False
        self.calls = 0
        self.failed_five_times = asyncio.Event()

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        self.calls += 1
        if self.calls >= 5:
            self.failed_five_times.set()
        if self.down:
            raise StoreUnavailable("connection refused (injected)")
        await self.inner.append_events(events)


class LostAckStore:
    """Commits, then reports a failure (twice): the writer must retry without duplicating."""

    def __init__(self, inner: PostgresStore) -> None:
        self.inner = inner
        self.lost = 0

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        await self.inner.append_events(events)
        if self.lost < 2:
            self.lost += 1
            raise StoreUnavailable("connection reset after commit (injected)")


class GatedStore:
    """Holds every append until the gate opens."""

    def __init__(self, inner: PostgresStore) -> None:
        self.inner = inner
        self.gate = asyncio.Event()

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        await self.gate.wait()
        await self.inner.append_events(events)


async def _project(store: PostgresStore) -> UUID:
    return (await store.create_project(NewProject(title="log test"))).id


async def _all(store: PostgresStore, project_id: UUID) -> list[Event]:
    events: list[Event] = []
    cursor = Cursor()
    while page := await store.read_events(project_id, after=cursor, limit=5000):
        for e in page:
            cursor.advance(e)
        events.extend(page)
    return events


def _assert_once_in_order(events: list[Event], writer: UUID, count: int) -> None:
    mine = [e.seq for e in events if e.writer_id == writer]
    assert mine == list(range(1, count + 1))
    assert len({e.id for e in events}) == len(events)


async def test_events_persist_in_order_with_derived_ids(pg_store: PostgresStore) -> None:
    a, b = await _project(pg_store), await _project(pg_store)
    async with LogWriter(pg_store, batch_size=500) as writer:
        for i in range(3000):
            await writer.log(a if i % 3 else b, "planner", f"line {i}", "info", data={"i": i})
        await writer.flush()
        assert writer.persisted == 3000
    events = await _all(pg_store, a) + await _all(pg_store, b)
    assert len(events) == 3000
    _assert_once_in_order(sorted(events, key=lambda e: e.seq), writer.writer_id, 3000)
    for e in events:
        assert e.id == event_id(writer.writer_id, e.seq)
        assert e.data == {"i": e.seq - 1}
        assert e.message == f"line {e.seq - 1}"


async def test_unknown_level_or_type_is_rejected_and_nothing_queued(
    pg_store: PostgresStore,
) -> None:
    project = await _project(pg_store)
    async with LogWriter(pg_store) as writer:
        with pytest.raises(ValidationFailed) as err:
            await writer.log(project, "planner", "x", "debug")
        assert err.value.field == "level"
        with pytest.raises(ValidationFailed) as err:
            await writer.log(project, "planner", "x", "info", type="nonsense")
        assert err.value.field == "type"
        assert writer.pending == 0
    assert await _all(pg_store, project) == []


async def test_an_event_for_an_unknown_project_is_isolated(
    pg_store: PostgresStore, spool_dir: Path
) -> None:
    project = await _project(pg_store)
    ghost = uuid4()
    async with LogWriter(pg_store, spool_dir=spool_dir) as writer:
        for i in range(50):
            await writer.log(ghost if i == 25 else project, "github", f"line {i}")
        await writer.flush()
        assert writer.rejected == 1
    stored = await _all(pg_store, project)
    assert len(stored) == 49
    dead = [json.loads(line) for line in (spool_dir / "rejected.jsonl").read_text().splitlines()]
    assert [d["event"][1] for d in dead] == [str(ghost)]
    assert "unknown reference" in dead[0]["reason"]


async def test_a_long_message_is_truncated_with_a_visible_marker(pg_store: PostgresStore) -> None:
    project = await _project(pg_store)
    async with LogWriter(pg_store) as writer:
        await writer.log(project, "codegen", "é" * MAX_MESSAGE_BYTES)
        await writer.flush()
    (event,) = await _all(pg_store, project)
    assert event.message.endswith(TRUNCATION_MARKER)
    assert len(event.message.encode()) <= MAX_MESSAGE_BYTES


async def test_a_full_queue_applies_back_pressure_and_drops_nothing(
    pg_store: PostgresStore,
) -> None:
    project = await _project(pg_store)
    gated = GatedStore(pg_store)
    async with LogWriter(gated, batch_size=10, queue_max=100) as writer:

        async def produce() -> None:
            for i in range(1000):
                await writer.log(project, "codegen", f"line {i}")

        producer = asyncio.create_task(produce())
        for _ in range(50):
            await asyncio.sleep(0)
        assert not producer.done(), "log() should wait while the queue is full"
        assert writer.pending <= 100
        gated.gate.set()
        await producer
        await writer.flush()
    _assert_once_in_order(await _all(pg_store, project), writer.writer_id, 1000)


async def test_a_lost_acknowledgement_is_retried_without_duplicates(
    pg_store: PostgresStore,
) -> None:
    project = await _project(pg_store)
    store = LostAckStore(pg_store)
    async with LogWriter(store, batch_size=100, policy=FAST) as writer:
        for i in range(250):
            await writer.log(project, "github", f"line {i}")
        await writer.flush()
        assert writer.retries == 2
    _assert_once_in_order(await _all(pg_store, project), writer.writer_id, 250)


async def test_retries_while_the_store_is_briefly_down(pg_store: PostgresStore) -> None:
    project = await _project(pg_store)
    store = OutageStore(pg_store)
    store.down = True
    async with LogWriter(store, policy=FAST, retry_for=30.0) as writer:
        for i in range(100):
            await writer.log(project, "planner", f"line {i}")
        await asyncio.wait_for(store.failed_five_times.wait(), 10)
        store.down = False
        await writer.flush()
        assert writer.retries >= 4
        assert writer.spooled == 0
    _assert_once_in_order(await _all(pg_store, project), writer.writer_id, 100)


async def test_spools_when_the_store_stays_down_then_replays_in_order(
    pg_store: PostgresStore, spool_dir: Path
) -> None:
    project = await _project(pg_store)
    store = OutageStore(pg_store)
    store.down = True
    async with LogWriter(
        store, batch_size=50, policy=FAST, retry_for=0.05, spool_dir=spool_dir
    ) as writer:
        for i in range(500):
            await writer.log(project, "preview", f"line {i}")
            if i % 50 == 0:
                await asyncio.sleep(0.02)
        await writer.flush()
        assert writer.spooled > 0
        assert writer.spool_pending
        assert (spool_dir / f"{writer.writer_id}.jsonl").stat().st_size > 0
        store.down = False
        for i in range(500, 600):
            await writer.log(project, "preview", f"line {i}")
        await asyncio.wait_for(writer.drain(), 10)
    _assert_once_in_order(await _all(pg_store, project), writer.writer_id, 600)
    assert not (spool_dir / f"{writer.writer_id}.jsonl").exists()


async def test_a_spool_left_at_shutdown_is_adopted_by_the_next_writer(
    pg_store: PostgresStore, spool_dir: Path
) -> None:
    project = await _project(pg_store)
    store = OutageStore(pg_store)
    store.down = True
    first = LogWriter(store, policy=FAST, retry_for=0.02, spool_dir=spool_dir)
    await first.start()
    for i in range(300):
        await first.log(project, "verifier", f"line {i}")
    await first.close()
    assert (spool_dir / f"{first.writer_id}.jsonl").exists()
    assert await _all(pg_store, project) == []

    store.down = False
    async with LogWriter(pg_store, spool_dir=spool_dir) as second:
        await second.log(project, "verifier", "after restart")
        await asyncio.wait_for(second.drain(), 10)
    events = await _all(pg_store, project)
    _assert_once_in_order(events, first.writer_id, 300)
    assert [e.message for e in events if e.writer_id == second.writer_id] == ["after restart"]
    assert not (spool_dir / f"{first.writer_id}.jsonl").exists()


async def test_close_flushes_everything(pg_store: PostgresStore) -> None:
    project = await _project(pg_store)
    writer = await LogWriter(pg_store, batch_size=7).start()
    for i in range(1234):
        await writer.log(project, "planner", f"line {i}")
    await writer.close()
    _assert_once_in_order(await _all(pg_store, project), writer.writer_id, 1234)
    with pytest.raises(RuntimeError):
        await writer.log(project, "planner", "after close")
