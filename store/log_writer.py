"""LogWriter: the "Supabase REST writer" every agent logs through.

- `log()` never waits on the network: it stamps the event with this writer's next sequence
  number and appends it to an in-memory queue. Only a full queue makes it wait
  (back-pressure); nothing is ever dropped.
- One flusher task drains the queue. An idle writer flushes a lone line at once; under load,
  batches form while the previous flush is in flight, up to `batch_size` (and an optional
  `linger` lets an idle writer wait to fill a batch).
- A flush that fails with StoreUnavailable (connection errors, 5xx, 429) is retried with
  exponential backoff and jitter, honouring the store's Retry-After, for `retry_for` seconds.
  After that the batch — and every later one, to keep order — goes to a spool file; the spool
  is replayed in order as soon as the store answers again.
- Event ids derive from (writer_id, seq), so a retried or replayed batch never duplicates.
- An event the store can never accept (an unknown project) is isolated by halving the batch,
  recorded in `rejected.jsonl` beside the spool, and logged; its neighbours are stored.
- `close()` flushes everything (to the store, or to the spool) before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

import orjson

from clients.retry import RetryPolicy, backoff_delay
from schemas.errors import MyycError, StoreUnavailable, ValidationFailed
from schemas.events import EVENT_TYPES, LEVELS, truncate_message
from store.ports import EventRecord, EventStore

logger = logging.getLogger(__name__)

_VARIANT = 0b10 << 62

#: Retry until the spool takes over: short waits, many attempts.
WRITER_POLICY = RetryPolicy(max_attempts=1_000_000, base_delay=0.05, max_delay=2.0)

# (seq, project_id, session_id, agent_name, level, type, message, data, timestamp)
_Pending = tuple[int, UUID, UUID | None, str, str, str, str, Any, float]


def _dumps(data: Any) -> str:
    return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def event_id(writer_id: UUID, seq: int) -> UUID:
    """The id of a writer's `seq`-th event: a UUIDv8 of the writer's high half and the seq."""
    return UUID(_id_prefix(writer_id) + _id_suffix(seq))


def _id_prefix(writer_id: UUID) -> str:
    high = f"{(writer_id.int >> 64) & ~(0xF << 12) | (0x8 << 12):016x}"
    return f"{high[:8]}-{high[8:12]}-{high[12:]}-"


def _id_suffix(seq: int) -> str:
    low = f"{_VARIANT | seq:016x}"
    return f"{low[:4]}-{low[4:]}"


class LogWriter:
    """Batches, retries, spools and never drops events; see the module docstring."""

    def __init__(
        self,
        store: EventStore,
        *,
        batch_size: int = 2000,
        queue_max: int = 100_000,
        linger: float = 0.0,
        retry_for: float = 5.0,
        spool_dir: Path | None = None,
        policy: RetryPolicy = WRITER_POLICY,
        writer_id: UUID | None = None,
    ) -> None:
        self.writer_id = writer_id or uuid.uuid4()
        self._id_prefix = _id_prefix(self.writer_id)
        self._store = store
        self._batch_size = batch_size
        self._queue_max = max(queue_max, batch_size)
        self._linger = linger
        self._retry_for = retry_for
        self._policy = policy
        self._spool = _Spool(spool_dir, self.writer_id) if spool_dir is not None else None
        self._buf: deque[_Pending] = deque()
        self._seq = 0
        self._last_ts = 0.0
        self._done_seq = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._next_probe = 0.0
        self._probes = 0
        self.persisted = 0
        self.spooled = 0
        self.retries = 0
        self.rejected = 0

    # lifecycle ----------------------------------------------------------------------------

    async def start(self) -> LogWriter:
        """Start the flusher (and replay any spool left by a crashed writer)."""
        if self._task is None:
            if self._spool is not None:
                self._spool.adopt_orphans()
            self._task = asyncio.create_task(self._run(), name=f"log-writer-{self.writer_id}")
        return self

    async def __aenter__(self) -> LogWriter:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Flush everything (to the store, or to the spool when it is down) and stop."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await self._task
        finally:
            self._task = None
            if self._spool is not None:
                self._spool.close()

    # the hot path -------------------------------------------------------------------------

    async def log(
        self,
        project_id: UUID,
        agent_name: str,
        message: str,
        level: str = "info",
        *,
        type: str = "log",
        data: Mapping[str, Any] | None = None,
        session_id: UUID | None = None,
    ) -> int:
        """Queue one event and return its sequence number; waits only when the queue is full."""
        if level not in LEVELS:
            raise ValidationFailed(
                f"unknown level {level!r}: expected one of info, success, warning, error",
                field="level",
            )
        if type not in EVENT_TYPES:
            raise ValidationFailed(f"unknown event type {type!r}", field="type")
        if self._closing or self._task is None:
            raise RuntimeError("LogWriter is not running (call start() first)")
        while len(self._buf) >= self._queue_max:
            self._space.clear()
            await self._space.wait()
        ts = time.time()
        # Within one writer, time never goes backwards: readers order by it.
        if ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        self._seq += 1
        self._buf.append(
            (self._seq, project_id, session_id, agent_name, level, type,
             truncate_message(message), data, ts)
        )  # fmt: skip
        self._wake.set()
        return self._seq

    async def flush(self) -> None:
        """Wait until every event logged before this call is stored (or spooled)."""
        target = self._seq
        while self._done_seq < target:
            if self._task is None or self._task.done():
                raise RuntimeError("LogWriter stopped before flushing")
            self._progress.clear()
            await self._progress.wait()

    async def drain(self) -> None:
        """Wait until nothing is left in memory or in the spool (the store has everything)."""
        while self._done_seq < self._seq or self.spool_pending:
            if self._task is None or self._task.done():
                raise RuntimeError("LogWriter stopped before draining")
            self._progress.clear()
            await self._progress.wait()

    @property
    def pending(self) -> int:
        """Events queued in memory, not yet handed to the store."""
        return len(self._buf)

    @property
    def spool_pending(self) -> bool:
        """Whether events wait in the spool for the store to come back."""
        return self._spool is not None and self._spool.has_pending()

    # the flusher --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._buf:
                if self.spool_pending:
                    await self._try_replay(wait=True)
                if self._closing:
                    return
                self._wake.clear()
                if not self._buf:
                    await self._wake.wait()
                continue
            if self._linger and len(self._buf) < self._batch_size and not self._closing:
                await asyncio.sleep(self._linger)
            n = min(len(self._buf), self._batch_size)
            batch = [self._buf.popleft() for _ in range(n)]
            self._space.set()
            records = [self._record(p) for p in batch]
            await self._deliver(records)
            self._done_seq = batch[-1][0]
            self._progress.set()

    def _record(self, p: _Pending) -> EventRecord:
        seq, project_id, session_id, agent, level, etype, message, data, ts = p
        return EventRecord(
            self._id_prefix + _id_suffix(seq), project_id, session_id, agent, level, etype, message,
            None if data is None else _dumps(data), ts, self.writer_id, seq,
        )  # fmt: skip

    async def _deliver(self, records: list[EventRecord]) -> None:
        if self.spool_pending and not await self._try_replay(wait=False):
            self._to_spool(records)
            return
        deadline = time.monotonic() + self._retry_for
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._store_isolating(records)
                self.persisted += len(records)
                return
            except StoreUnavailable as err:
                retry_after = getattr(err, "retry_after", None)
                delay = backoff_delay(attempt, self._policy, retry_after=retry_after)
                if self._spool is not None and time.monotonic() + delay > deadline:
                    logger.warning(
                        "store unavailable for %.1fs; spooling: %s", self._retry_for, err
                    )
                    self._to_spool(records)
                    return
                self.retries += 1
                await asyncio.sleep(delay)

    async def _store_isolating(self, records: Sequence[EventRecord]) -> None:
        """Store a batch; an event the store can never accept is set aside, not retried."""
        try:
            await self._store.append_events(records)
        except StoreUnavailable:
            raise
        except MyycError as err:
            if len(records) == 1:
                self._reject(records[0], err)
                return
            mid = len(records) // 2
            await self._store_isolating(records[:mid])
            await self._store_isolating(records[mid:])

    def _reject(self, record: EventRecord, err: MyycError) -> None:
        self.rejected += 1
        logger.error("event %s (%s seq %d) rejected by the store: %s",
                     record.id, record.writer_id, record.seq, err.message)  # fmt: skip
        if self._spool is not None:
            self._spool.dead_letter(record, err.message)

    def _to_spool(self, records: list[EventRecord]) -> None:
        assert self._spool is not None
        self._spool.append(records)
        self.spooled += len(records)
        self._next_probe = max(self._next_probe, time.monotonic() + self._policy.base_delay)

    async def _try_replay(self, *, wait: bool) -> bool:
        """Replay the spool in order; True when it is empty afterwards.

        With `wait`, sleep until the next probe instead of giving up — unless new events
        arrive or the writer is closing (the spool file keeps the events for the next writer).
        """
        assert self._spool is not None
        while self._spool.has_pending():
            now = time.monotonic()
            if now < self._next_probe:
                if not wait or self._closing or self._buf:
                    return False
                await asyncio.sleep(self._next_probe - now)
                continue
            try:
                for chunk in self._spool.chunks(self._batch_size):
                    await self._store_isolating(chunk)
                    self.persisted += len(chunk)
                    self._spool.advance(len(chunk))
            except StoreUnavailable:
                self._probes += 1
                self._next_probe = time.monotonic() + backoff_delay(self._probes, self._policy)
                continue
            self._spool.reset()
            self._probes = 0
            self._progress.set()
            logger.info("spool replayed; the store is back")
        return True


class _Spool:
    """An append-only JSON-lines file of events waiting for the store, in order."""

    def __init__(self, directory: Path, writer_id: UUID) -> None:
        self._dir = directory
        self._path = directory / f"{writer_id}.jsonl"
        self._file: TextIO | None = None
        self._pending: list[EventRecord] = []
        self._offset = 0

    def has_pending(self) -> bool:
        return self._offset < len(self._pending)

    def _open(self) -> TextIO:
        if self._file is None:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._file = self._path.open("a", encoding="utf-8")
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self._file

    def append(self, records: Sequence[EventRecord]) -> None:
        f = self._open()
        f.writelines(json.dumps(_to_json(r)) + "\n" for r in records)
        f.flush()
        self._pending.extend(records)

    def chunks(self, size: int) -> list[list[EventRecord]]:
        rest = self._pending[self._offset :]
        return [rest[i : i + size] for i in range(0, len(rest), size)]

    def advance(self, n: int) -> None:
        self._offset += n

    def reset(self) -> None:
        self._pending.clear()
        self._offset = 0
        if self._file is not None:
            self._file.truncate(0)
            self._file.seek(0)

    def adopt_orphans(self) -> None:
        """Take over spools of writers that died before replaying them (crash recovery)."""
        if not self._dir.is_dir():
            return
        for path in sorted(self._dir.glob("*.jsonl")):
            if path == self._path or path.name == "rejected.jsonl":
                continue
            with path.open("r+", encoding="utf-8") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it
                records = [_from_json(json.loads(line)) for line in f if line.strip()]
                if records:
                    self.append(records)
                    logger.info("adopted %d spooled events from %s", len(records), path.name)
            path.unlink()

    def dead_letter(self, record: EventRecord, reason: str) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        with (self._dir / "rejected.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps({"reason": reason, "event": _to_json(record)}) + "\n")

    def close(self) -> None:
        if self._file is not None:
            empty = not self.has_pending()
            self._file.close()
            self._file = None
            if empty:
                with contextlib.suppress(FileNotFoundError):
                    self._path.unlink()


def _to_json(r: EventRecord) -> list[Any]:
    return [
        str(r.id), str(r.project_id), None if r.session_id is None else str(r.session_id),
        r.agent_name, r.level, r.type, r.message, r.data, r.timestamp, str(r.writer_id), r.seq,
    ]  # fmt: skip


def _from_json(v: list[Any]) -> EventRecord:
    return EventRecord(
        v[0], UUID(v[1]), None if v[2] is None else UUID(v[2]), v[3], v[4], v[5], v[6],
        v[7], v[8], UUID(v[9]), v[10],
    )  # fmt: skip
