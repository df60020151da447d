"""Benchmark the event spine: LogWriter against the seeds' naive pattern and a raw COPY.

    python -m bench.log_pipeline [--quick]

All figures come from one run on one embedded PostgreSQL, with the same rows:
- naive: one awaited single-row INSERT per log line on one autocommit connection (the
  seeds' pattern in its fastest form);
- copy: a raw COPY of the rows in batches of 2,000 (the practical ceiling here);
- LogWriter: `log()` per line, persisted with ids, ordering and idempotency;
- latency: `log()` → the event arriving on the SSE stream, at a steady rate.
The last line: `speedup_vs_naive= copy_fraction= events_per_s= log_call_us= p50_ms= p99_ms=`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from agents.reporter import RunReporter
from api.app import create_app
from core.services import Services
from local.pg import EmbeddedPostgres
from schemas.rows import NewProject
from schemas.settings import Settings
from store.live import EventHub
from store.log_writer import LogWriter, event_id
from store.migrate import migrate
from store.ports import EventRecord
from store.postgres import _COPY_EVENTS, PostgresStore, encode_copy_rows


def _row(project: uuid.UUID, writer: uuid.UUID, seq: int) -> tuple[Any, ...]:
    return (
        event_id(writer, seq), project, None, "codegen", "info", "log", f"wrote file {seq}",
        json.dumps({"seq": seq}), datetime.now(UTC), writer, seq,
    )  # fmt: skip


async def bench_naive(url: str, project: uuid.UUID, n: int) -> float:
    """One awaited INSERT per line; returns rows/s."""
    writer = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for seq in range(1, n + 1):
            await conn.execute(
                "insert into project_logs (id, project_id, session_id, agent_name, level, type,"
                " message, data, timestamp, writer_id, seq)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                _row(project, writer, seq),
            )
        return n / (time.perf_counter() - start)


async def bench_copy(url: str, project: uuid.UUID, n: int, batch: int = 2000) -> float:
    """A raw COPY of the same rows in batches, encoded before the clock starts; rows/s.

    This is the server's own ingest rate: the ceiling any client can reach here.
    """
    writer = uuid.uuid4()
    now = time.time()
    payloads = [
        encode_copy_rows([
            EventRecord(str(event_id(writer, seq)), project, None, "codegen", "info", "log",
                        f"wrote file {seq}", json.dumps({"seq": seq}), now, writer, seq)
            for seq in range(first, min(first + batch, n + 1))
        ])
        for first in range(1, n + 1, batch)
    ]  # fmt: skip
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for payload in payloads:
            async with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY_EVENTS) as copy:
                await copy.write(payload)
        return n / (time.perf_counter() - start)


async def bench_writer(store: PostgresStore, project: uuid.UUID, n: int) -> tuple[float, float]:
    """LogWriter end to end; returns (persisted events/s, µs per log() call)."""
    async with LogWriter(store) as writer:
        start = time.perf_counter()
        for seq in range(1, n + 1):
            await writer.log(project, "codegen", f"wrote file {seq}", data={"seq": seq})
        logged = time.perf_counter()
        await writer.flush()
        done = time.perf_counter()
    return n / (done - start), (logged - start) / n * 1e6


async def bench_log_call(store: PostgresStore, project: uuid.UUID, n: int) -> float:
    """The agent's cost of one log() call (queue not full), in µs: best of 5 rounds."""
    best = float("inf")
    async with LogWriter(store, queue_max=n + 1) as writer:
        for _ in range(5):
            start = time.perf_counter()
            for seq in range(n):
                await writer.log(project, "codegen", "wrote a file", data={"seq": seq})
            best = min(best, (time.perf_counter() - start) / n * 1e6)
            await writer.flush()
    return best


async def bench_latency(
    services: Services, project: uuid.UUID, rate: int, seconds: float
) -> tuple[float, float]:
    """log() → SSE client latency at a steady `rate` events/s; returns (p50, p99) in ms."""
    from local.server import serve  # the loopback server helper (tests.support re-exports it)

    sent: dict[int, float] = {}
    latencies: list[float] = []
    total = int(rate * seconds)
    async with serve(create_app(services)) as base, httpx.AsyncClient(base_url=base) as client:
        ready = asyncio.Event()

        async def read() -> None:
            async with client.stream("GET", f"/projects/{project}/stream", timeout=None) as resp:
                ready.set()
                async for line in resp.aiter_lines():
                    if line.startswith("data:"):
                        now = time.perf_counter()
                        event = json.loads(line[5:])
                        if event["type"] == "log" and event["data"]["n"] in sent:
                            latencies.append((now - sent[event["data"]["n"]]) * 1000)
                            if len(latencies) >= total:
                                return

        reader = asyncio.create_task(read())
        await ready.wait()
        await asyncio.sleep(0.2)
        start = time.perf_counter()
        for i in range(total):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.perf_counter()
            await services.writer.log(project, "planner", f"step {i}", data={"n": i})
        await asyncio.wait_for(reader, 60)
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def bench_dir() -> Path:
    """A scratch directory the embedded server's system user can reach."""
    root = Path(tempfile.mkdtemp(prefix="myyc-bench-"))
    root.chmod(0o755)
    return root


async def main(quick: bool, root: Path) -> None:
    pg = EmbeddedPostgres(root)
    url = await asyncio.to_thread(pg.start)
    try:
        await migrate(url)
        store = await PostgresStore.open(url)
        projects = [
            (await store.create_project(NewProject(title=f"bench {i}"))).id for i in range(6)
        ]
        n_naive = 5_000 if quick else 20_000
        n_bulk = 100_000 if quick else 400_000
        naive = await bench_naive(url, projects[0], n_naive)
        copy = await bench_copy(url, projects[1], n_bulk)
        writer_rate, _ = await bench_writer(store, projects[2], n_bulk)
        log_us = await bench_log_call(store, projects[3], 50_000)

        hub = await EventHub(url).start()
        writer = await LogWriter(store).start()
        settings = Settings(myyc_auth_disabled=True)  # local, on loopback
        services = Services(settings, store, writer, RunReporter(store, writer), hub, None, url)
        points = [(1_000, 5.0 if quick else 10.0)] + ([] if quick else [(10_000, 5.0)])
        latency = {}
        for i, (rate, seconds) in enumerate(points):
            latency[rate] = await bench_latency(services, projects[4 + i], rate, seconds)
        await writer.close()
        await hub.close()
        await store.close()
    finally:
        await asyncio.to_thread(pg.close)
        shutil.rmtree(root, ignore_errors=True)

    print(f"{'pipeline':<34}{'events/s':>12}")
    print(f"{'naive (1 INSERT per line)':<34}{naive:>12,.0f}")
    print(f"{'raw COPY, batches of 2,000':<34}{copy:>12,.0f}")
    print(f"{'LogWriter':<34}{writer_rate:>12,.0f}")
    print(f"log() call: {log_us:.2f} µs")
    for rate, (p50, p99) in latency.items():
        print(f"log() → SSE at {rate:,}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    p50, p99 = latency[1_000]
    print(
        f"speedup_vs_naive={writer_rate / naive:.1f} copy_fraction={writer_rate / copy:.2f}"
        f" events_per_s={writer_rate:.0f} log_call_us={log_us:.2f}"
        f" p50_ms={p50:.1f} p99_ms={p99:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (under a minute)")
    asyncio.run(main(parser.parse_args().quick, bench_dir()))
