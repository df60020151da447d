"""Preview benchmarks: local start, hot reload, and the orphan cleanup at scale.

    python -m bench.previews [--quick]

Ends with one line:
`local_start_ms=<a> reload_p50_ms=<b> reload_p99_ms=<c> cleanup_calls=<n> cleanup_floor_ratio=<r>`

* **local_start_ms** — median over a few projects of `POST /sessions/start` until the preview
  URL first answers 200: the real API on loopback, embedded Postgres, the local driver, the
  real container entrypoint as a subprocess (sync, static server, health probe).
* **reload_p50_ms / reload_p99_ms** — `POST /projects/{id}/files` until a GET of the preview
  serves the new content: store, event log, LISTEN/NOTIFY, SSE stream, the container's
  atomic write, its static server. Target: p99 ≤ 100 ms.
* **cleanup_calls** — Fly API requests one cleanup makes over 10,000 preview machines of which
  1,000 are orphans (FlyFake, with Fly's rate limits on). The listing is one page (Fly's list
  endpoint does not paginate); each orphan costs a lease acquire and a destroy. The target in
  the issue, "list pages + one per orphan", is the lease-free minimum: holding a lease, which
  the issue also asks for, costs one more call per orphan (the release is saved: Fly drops a
  destroyed machine's lease).
* **cleanup_floor_ratio** — virtual time the cleanup took over the floor. Fly's limits are
  per action *per machine* (1 req/s, burst 3), so destroying 1,000 different machines is not
  throttled by them; what bounds the time is the round trip (the fake answers after
  `LATENCY` virtual seconds) times the calls on the critical path for a client that keeps at
  most `CONCURRENCY` requests in flight: `LATENCY × (list pages + ⌈orphans / CONCURRENCY⌉ ×
  calls per orphan)`. A ratio near 1 means no 429, no retry back-off, no pacing stall and
  no idle lane. The cleanup part runs in an event loop whose clock is virtual.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import selectors
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from local.server import serve

APP = "myyc-previews"
MACHINES = 10_000
ORPHANS = 1_000
LATENCY = 0.05
CONCURRENCY = 16
#: What one orphan needs at least: a lease, then a destroy under it.
CALLS_PER_ORPHAN = 2


# ------------------------------------------------------------------------------ local part


async def _until(http: httpx.AsyncClient, url: str, needle: str | None, within: float) -> float:
    """Poll `url` until it answers 200 (containing `needle`); the moment it did."""
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        try:
            response = await http.get(url)
            if response.status_code == 200 and (needle is None or needle in response.text):
                return time.perf_counter()
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.0005)
    raise TimeoutError(f"{url} did not serve {needle!r} within {within}s")


async def local_part(starts: int, reloads: int) -> tuple[list[float], list[float]]:
    """Start previews and push edits through the real local stack; (start ms, reload ms)."""
    from agents.reporter import RunReporter
    from api.app import create_app
    from api.routes import previews as preview_routes
    from core.services import Services
    from local.pg import EmbeddedPostgres
    from previews.local_driver import LocalMachines
    from schemas.rows import NewProject
    from schemas.settings import Settings
    from store.live import EventHub
    from store.log_writer import LogWriter
    from store.migrate import migrate
    from store.postgres import PostgresStore

    root = Path(tempfile.mkdtemp(prefix="myyc-bench-"))
    os.chmod(root, 0o755)  # the embedded server runs as its own user when we are root
    pg = EmbeddedPostgres(root / "pg")
    url = await asyncio.to_thread(pg.start)
    await migrate(url)
    store = await PostgresStore.open(url)
    hub = await EventHub(url).start()
    writer = await LogWriter(store).start()
    settings = Settings(myyc_auth_disabled=True, myyc_data_dir=root / "data")
    services = Services(settings, store, writer, RunReporter(store, writer), hub, None, url)
    app = create_app(services)
    if not any(getattr(r, "path", None) == "/sessions/start" for r in app.routes):
        app.include_router(preview_routes.router)
    start_ms: list[float] = []
    reload_ms: list[float] = []
    try:
        async with (
            serve(app) as base,
            httpx.AsyncClient(base_url=base, timeout=60) as api,
            httpx.AsyncClient(timeout=5) as browser,
        ):
            sessions: list[str] = []
            for i in range(starts):
                project = await store.create_project(NewProject(title=f"bench {i}"))
                files = f"/projects/{project.id}/files"
                page = f"<!doctype html><html><body><h1>start {i}</h1></body></html>"
                await api.post(files, json={"filePath": "index.html", "content": page})
                t0 = time.perf_counter()
                started = await api.post("/sessions/start", json={"projectId": str(project.id)})
                started.raise_for_status()
                t1 = await _until(browser, started.json()["containerUrl"], f"start {i}", 30)
                start_ms.append((t1 - t0) * 1000)
                sessions.append(started.json()["sessionId"])
                last = (files, started.json()["containerUrl"])
            files, preview = last
            for n in range(reloads):
                marker = f"edit-{n}-{uuid.uuid4().hex[:6]}"
                body = f"<!doctype html><html><body><h1>{marker}</h1></body></html>"
                t0 = time.perf_counter()
                await api.post(files, json={"filePath": "index.html", "content": body})
                t1 = await _until(browser, preview, marker, 10)
                reload_ms.append((t1 - t0) * 1000)
            for session in sessions:
                await api.post("/sessions/stop", json={"sessionId": session})
    finally:
        driver = LocalMachines(root / "data")
        for machine in await driver.list_ours():
            await driver.destroy(machine.id)
        await writer.close()
        await hub.close()
        await store.close()
        await asyncio.to_thread(pg.close)
        shutil.rmtree(root, ignore_errors=True)
    return start_ms, reload_ms


# ------------------------------------------------------------------------------ cleanup part


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when every task waits for a timer.

    When nothing is ready and a timer is due in `t` seconds, time jumps by `t` instead of
    the loop sleeping; sockets are still polled (without blocking) on every turn.
    """

    def __init__(self) -> None:
        super().__init__(selectors.DefaultSelector())
        self._now = 0.0
        selector = self._selector  # type: ignore[attr-defined]
        real_select = selector.select

        def select(timeout: float | None = None) -> list[Any]:
            events: list[Any] = real_select(0)
            if events or timeout == 0:
                return events
            if timeout is None:
                return list(real_select(None))
            self._now += timeout
            return []

        selector.select = select

    def time(self) -> float:
        """Virtual seconds since the loop was made."""
        return self._now


class _NullEvents:
    """An event store that keeps nothing (the cleanup's log lines are not measured)."""

    async def append_events(self, events: Sequence[Any]) -> None:
        return None

    async def read_events(self, project_id: UUID, **_: Any) -> list[Any]:
        return []


class _MemorySessions:
    """Preview sessions in memory: the cleanup part measures Fly, not Postgres."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = {r.id: r for r in rows}

    async def list_live(self) -> list[Any]:
        return [r for r in self.rows.values() if r.live]

    async def get_session(self, session_id: UUID) -> Any:
        return self.rows[session_id]

    async def update_session(
        self, session_id: UUID, changes: Mapping[str, object], *, only_if: Any = None
    ) -> Any:
        row = self.rows[session_id]
        if only_if is not None and row.status not in only_if:
            return None
        self.rows[session_id] = row.model_copy(update=dict(changes))
        return self.rows[session_id]

    async def close(self) -> None:
        return None


@dataclass
class CleanupResult:
    """What the cleanup benchmark measured."""

    calls: int
    by_route: dict[str, int]
    virtual_s: float
    floor_s: float
    destroyed: int
    errors: int
    left: int


def _seed(fake: Any, app: str, sessions: list[Any], orphans: int) -> None:
    """Put 10,000 machines straight into the fake's state (seeding is not measured)."""
    from tests.fakes.fly import _Machine

    now = "2026-11-21T00:00:00Z"
    machines = fake._machines[app]

    def add(session_id: str) -> str:
        machine_id = uuid.uuid4().hex[:14]
        config = {
            "image": "ghcr.io/myyc/preview-container:latest",
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512},
            "metadata": {"myyc": "preview", "session_id": session_id, "project_id": "p"},
            "auto_destroy": True,
        }
        machines[machine_id] = _Machine(
            id=machine_id, app=app, name=f"preview-{session_id}", region="iad", config=config,
            state="started", instance_id="01" + "0" * 24, private_ip="fdaa::1",
            created_at=now, updated_at=now,
        )  # fmt: skip
        return machine_id

    for i, row in enumerate(sessions):
        sessions[i] = row.model_copy(update={"container_id": add(str(row.id))})
    for _ in range(orphans):
        add(str(uuid.uuid4()))  # sessions long gone


async def cleanup_part(machines: int, orphans: int) -> CleanupResult:
    """One cleanup over `machines` preview machines, `orphans` of them orphaned."""
    from clients.fly_machines import FlyMachines
    from previews.cleanup import run_cleanup
    from previews.fly_driver import FlyMachinesDriver
    from previews.ports import PreviewSession
    from previews.sessions import PreviewSessions
    from schemas.settings import Settings
    from schemas.status import PreviewStatus
    from store.log_writer import LogWriter
    from tests.fakes.fly import FlyFake

    loop = asyncio.get_running_loop()
    fake = FlyFake(clock=loop.time, sleep=asyncio.sleep, latency=LATENCY)
    fake.add_app(APP)
    created = datetime(2026, 11, 21, tzinfo=UTC)
    rows = [
        PreviewSession(
            id=uuid.uuid4(),
            project_id=uuid.uuid4(),
            status=PreviewStatus.active,
            expires_at=created + timedelta(days=1),
            created_at=created,
            updated_at=created,
        )
        for _ in range(machines - orphans)
    ]
    _seed(fake, APP, rows, orphans)
    store = _MemorySessions(rows)
    writer = await LogWriter(_NullEvents()).start()
    http = httpx.AsyncClient(transport=fake.transport())
    fly = FlyMachines(
        "fm2_bench",
        base_url="http://fly.test/v1",
        http_client=http,
        clock=loop.time,
        sleep=asyncio.sleep,
    )
    driver = FlyMachinesDriver(fly, APP, image="bench", clock=loop.time)
    previews = PreviewSessions(
        store=store,  # type: ignore[arg-type]
        projects=None,  # type: ignore[arg-type]
        driver=driver,
        writer=writer,
        settings=Settings(),
        clock=lambda: created.timestamp(),
    )
    t0 = loop.time()
    report = await run_cleanup(previews, now=created.timestamp(), concurrency=CONCURRENCY)
    elapsed = loop.time() - t0
    await writer.close()
    await http.aclose()
    owned = {str(r.id) for r in rows}
    left = sum(
        m["config"]["metadata"]["session_id"] not in owned
        for m in fake.machines(APP, include_deleted=False)
    )
    calls = sum(fake.calls.values())
    list_pages = fake.count("GET", "/apps/{app_name}/machines")
    floor = LATENCY * (list_pages + math.ceil(orphans / CONCURRENCY) * CALLS_PER_ORPHAN)
    return CleanupResult(
        calls=calls,
        by_route={f"{m} {r}": n for (m, r), n in sorted(fake.calls.items())},
        virtual_s=elapsed,
        floor_s=floor,
        destroyed=report.destroyed,
        errors=report.errors,
        left=left,
    )


def _run_cleanup_virtual(machines: int, orphans: int) -> CleanupResult:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(cleanup_part(machines, orphans))
    finally:
        loop.close()


# ------------------------------------------------------------------------------ main


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print the table and the summary line."""
    parser = argparse.ArgumentParser(prog="python -m bench.previews")
    parser.add_argument("--quick", action="store_true", help="fewer starts and reloads")
    args = parser.parse_args(argv)
    starts, reloads = (3, 100) if args.quick else (8, 500)

    start_ms, reload_ms = asyncio.run(local_part(starts, reloads))
    wall = time.perf_counter()
    result = _run_cleanup_virtual(MACHINES, ORPHANS)
    wall = time.perf_counter() - wall

    print(f"local preview start → first page, {starts} runs (ms):", end=" ")
    print(", ".join(f"{v:.0f}" for v in start_ms))
    print(
        f"reload over {reloads} edits (ms): p50 {_percentile(reload_ms, 0.5):.1f}, "
        f"p90 {_percentile(reload_ms, 0.9):.1f}, p99 {_percentile(reload_ms, 0.99):.1f}, "
        f"max {max(reload_ms):.1f}"
    )
    print(f"cleanup of {MACHINES} machines with {ORPHANS} orphans (FlyFake, rate limits on):")
    for route, n in result.by_route.items():
        print(f"  {n:6d}  {route}")
    print(
        f"  destroyed {result.destroyed}, errors {result.errors}, orphans left {result.left}; "
        f"virtual {result.virtual_s:.2f}s vs floor {result.floor_s:.2f}s "
        f"(latency {LATENCY}s, {CONCURRENCY} in flight); wall {wall:.1f}s"
    )
    print(
        f"local_start_ms={statistics.median(start_ms):.0f} "
        f"reload_p50_ms={_percentile(reload_ms, 0.5):.1f} "
        f"reload_p99_ms={_percentile(reload_ms, 0.99):.1f} "
        f"cleanup_calls={result.calls} "
        f"cleanup_floor_ratio={result.virtual_s / result.floor_s:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
