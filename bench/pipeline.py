"""Benchmark the build pipeline: LangGraph's cost, crash resume, file → preview, concurrency.

    python -m bench.pipeline [--quick]

One embedded PostgreSQL in a temporary directory, one database per part (cloned from a migrated
template), the offline model provider, real Services. The figures and their baselines:

* **graph_overhead_ms** — what LangGraph with the Postgres checkpointer costs per node over a
  plain async chain doing the same work, in the same run. Builds alternate between `run_build`
  (the registry's orchestrator: the graph compiled on the checkpointer, `thread_id` = the
  build, a checkpoint per superstep) and `run_chain` below: run_build with the graph replaced
  by awaiting the same `Pipeline` node methods in the same order with the same state updates
  (github ∥ preview with asyncio.gather) — the lease claim, the run listing, "Build started",
  the lease keeper and the release are run_build's own code. Each build has its own spawned
  project (`spawn_build`, as POST /sessions makes it) and is started with `dispatcher.call`;
  previews off. Figure: the median over the pairs of (graph ms − chain ms) / nodes executed,
  with a distribution-free 95% confidence interval of that median. Printed beside it, the
  same difference in CPU time: this process's, and this process's plus the embedded
  Postgres's (every backend, from /proc) — steadier, but blind to commit (fsync) waits.
  Target ≤ 10 ms.
  What was found: a graph build writes 8 checkpoints, 8 blob rows and 20 write rows (about 50
  more transactions than the chain, each an autocommit statement and an fsync), which costs
  ~4-6 ms of CPU per node; with `durability="exit"` (no checkpoint per step, measured aside)
  the graph's wall time is the chain's and its CPU ~2 ms/node more: the overhead is mostly
  the checkpointer, not the engine. The wall-clock figure is noise-bound here: a build's
  wall time (node --check, git, two cores shared with other people's tests) moves by 10-50%
  from one build to the next, i.e. ±10-40 ms per node, so the interval is often wider than
  the target; the verdict line says when it contains the target.
* **resume_ms** — `myyc up` as a subprocess on its own database; a build made with POST
  /sessions; `kill -9` of the server once the build's first `file:update` is stored (codegen
  is writing, slowed by OFFLINE_CHUNK_DELAY_MS); `python -m local.cli up` started again at
  once, cold; until the first event of that build the new process writes (its timestamp:
  the `log()` call). Median over rounds. Components: launch → lease claimed (interpreter,
  imports, Services.open, the recovery pass that finds the dead owner), claimed → the event
  (checkpointer pool, graph compile, checkpoint load), and launch → /health; the imports
  alone are timed in a separate interpreter. Baseline: the lease (BUILD_LEASE_SECONDS,
  printed), which bounds the resume when the owner's death is not detected. Target ≤ 3000 ms.
  What was found: recovery sees the dead owner on this host and takes the build at once (the
  30 s lease plays no part); a cold interpreter's imports are almost all of the ~1.5-2 s,
  the checkpoint load ~30-50 ms.
* **file_to_preview_p99_ms** — codegen's `publish_file` (project_files, then the
  `file:update` event) until a running local preview container serves the new content
  (polled every 2 ms over a keep-alive connection); p50/p99/max over M edits. The path: the
  store, the LogWriter, LISTEN/NOTIFY, the API's SSE stream, the container's atomic write, its
  static server. Target p99 ≤ 250 ms.
* **concurrent_builds** — 20 POST /sessions at once against one in-process API (default
  MYYC_MAX_AGENTS, previews off): how many builds succeed within a bound; wall time (first
  POST → last `finished_at`) and builds/s. Target 20.
* **stream_ratio** — `bench.model_stream.stream_ratio`: tokens/s through our provider layer
  over the raw SDK. Target ≥ 0.9.

The last line:
`graph_overhead_ms= resume_ms= file_to_preview_p99_ms= concurrent_builds= stream_ratio=`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

import httpx
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import SecretStr

from bench.spawn import parse_response_head, percentile

if TYPE_CHECKING:
    from agents.deps import AgentDeps
    from agents.dispatch import Dispatcher
    from agents.graph import Node, Pipeline
    from core.services import Services
    from local.remote import RemoteClient
    from schemas.settings import Settings

VIBE = "Team notes\nShare notes with my team, plan sprints"
TEMPLATE = "saas"
CHAIN_AGENT = "bench_chain"
GRAPH_AGENT = "orchestrator"
#: `myyc up`'s lease in the resume part (the product default).
RESUME_LEASE_S = 30.0
#: Between the offline model's chunks in the resume part: codegen takes ~1-2 s.
RESUME_CHUNK_DELAY_MS = 15.0
CONCURRENT_BUILDS = 20
CONCURRENT_BOUND_S = 120.0
PREVIEW_POLL_S = 0.002
DB_POLL_S = 0.005
TARGETS = {
    "graph_overhead_ms": "<= 10",
    "resume_ms": "<= 3000",
    "file_to_preview_p99_ms": "<= 250",
    "concurrent_builds": f"= {CONCURRENT_BUILDS}",
    "stream_ratio": ">= 0.9",
}
# What a `myyc up` subprocess gets of our environment: nothing of a developer's MYYC_*,
# SUPABASE_*, GITHUB_TOKEN or model keys.
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR")

Db = psycopg.AsyncConnection[dict[str, Any]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each part measures."""

    quick: bool
    pairs: int
    """graph/chain build pairs (after one warm-up pair)."""
    rounds: int
    """kill -9 → restart rounds."""
    publishes: int
    """file versions pushed to the running preview."""


QUICK = Sizes(quick=True, pairs=16, rounds=3, publishes=30)
FULL = Sizes(quick=False, pairs=60, rounds=7, publishes=100)


# -- databases ---------------------------------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    """`url` (pgserver's `postgresql://…/postgres?host=…`) naming database `name`."""
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}?{query}" if query else f"{base}/{name}"


async def _create_database(server_url: str, name: str, template: str | None = None) -> str:
    query = sql.SQL("create database {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} template {}").format(query, sql.Identifier(template))
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as conn:
        await conn.execute(query)
    return _with_db(server_url, name)


@contextlib.asynccontextmanager
async def _connect(url: str) -> AsyncIterator[Db]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
    try:
        yield conn
    finally:
        await conn.close()


async def _one(db: Db, query: sql.SQL | str, params: Sequence[Any] = ()) -> dict[str, Any]:
    cur = await db.execute(cast(Any, query), params)
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError(f"no row for {query!r}")
    return row


def _settings(url: str, data_dir: Path, secret: str, **extra: Any) -> Settings:
    from schemas.settings import Settings

    values: dict[str, Any] = {
        "database_url": url, "myyc_data_dir": data_dir, "myyc_hmac_secret": SecretStr(secret),
        "myyc_build_previews": False,
    }  # fmt: skip
    values.update(extra)
    return Settings(**values)


def _session_body(vibe: str) -> dict[str, Any]:
    return {"vibeText": vibe, "template": TEMPLATE}


# -- 1. graph overhead -------------------------------------------------------------------------


async def run_chain(
    deps: AgentDeps,
    dispatcher: Dispatcher,
    *,
    project_id: str,
    build_id: str,
    dead_owner: str = "",
) -> dict[str, Any]:
    """`agents.orchestrator.run_build` with its graph replaced by a plain chain of the nodes.

    Everything around the graph is run_build's: the lease claim (`_claim`), the crash-loop
    check, the run listing, "Build started", the lease keeper (`_keep_lease`), the release.
    Left out, and so measured: `deps.checkpoints()`, `build_graph(deps).compile(...)`,
    `aget_state` and `ainvoke` — LangGraph and its checkpoint writes.
    """
    from agents.orchestrator import _claim

    pid, bid = UUID(project_id), UUID(build_id)
    session = await _claim(deps, bid, dead_owner or None)
    if session is None:
        return {"status": "not_owned"}
    try:
        if session.resume_count > deps.settings.max_build_resumes:
            raise RuntimeError(f"build {bid} resumed {session.resume_count} times")
        return await _chain_owned(deps, pid, bid)
    finally:
        await deps.store.release_build_lease(bid, deps.owner)


async def _chain_owned(deps: AgentDeps, pid: UUID, bid: UUID) -> dict[str, Any]:
    from agents.graph import Pipeline
    from agents.orchestrator import _keep_lease

    store, writer = deps.store, deps.writer
    runs = {r.agent_name: r for r in await store.list_runs(project_id=pid) if r.session_id == bid}
    runs.pop("orchestrator", None)  # POST /sessions makes none: nothing to report on
    state: dict[str, Any] = {"project_id": str(pid), "build_id": str(bid),
                             "runs": {name: str(r.id) for name, r in runs.items()}}  # fmt: skip
    await writer.log(pid, "orchestrator", "Build started", session_id=bid,
                     data={"agents": sorted(runs)})  # fmt: skip
    work = asyncio.create_task(
        _chain(Pipeline(deps), state, deps.settings.verify_max_attempts), name=f"chain-{bid}"
    )
    keeper = asyncio.create_task(_keep_lease(deps, bid, work), name=f"chain-lease-{bid}")
    try:
        nodes = await work
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    return {"status": str(state.get("outcome")), "nodes": nodes}


async def _chain(p: Pipeline, state: dict[str, Any], max_attempts: int) -> int:
    """The graph's path for a build without provisioning, node by node; the nodes run."""
    from agents.graph import BuildState, route_after_plan, route_after_verify

    def view() -> BuildState:
        return cast(BuildState, state)

    async def step(*nodes: Node) -> int:
        # Like a superstep: every node of it sees the state as it was, then all updates apply.
        for update in await asyncio.gather(*(node(view()) for node in nodes)):
            state.update(update)
        return len(nodes)

    ran = await step(p.ingest_vibe)
    ran += await step(p.generate_plan)
    if route_after_plan(view(), provisioning=False) != "codegen":
        raise RuntimeError("the chain has no provisioning nodes")
    while True:
        ran += await step(p.codegen)
        ran += await step(p.github, p.preview)
        ran += await step(p.verify)
        route = route_after_verify(view(), max_attempts=max_attempts)
        if route == "finalize":
            break
        if route != "codegen":
            raise RuntimeError(f"verification failed {state.get('attempt')} times: {route}")
    return ran + await step(p.finalize)


@dataclass(frozen=True, slots=True)
class BuildSample:
    """One build of the overhead part."""

    wall_ms: float
    cpu_ms: float
    """This process's CPU time."""
    server_cpu_ms: float
    """The embedded PostgreSQL's CPU time (every backend and helper process)."""
    nodes: int


async def _spawn(services: Services, vibe: str) -> tuple[UUID, UUID]:
    """A build as POST /sessions spawns it (the same project, session, runs and options)."""
    from schemas.builds import SessionRequest
    from schemas.pipeline import PIPELINE
    from schemas.rows import NewProject

    request = SessionRequest(vibeText=vibe, template=TEMPLATE)
    spawned = await services.store.spawn_build(
        NewProject(title=vibe.splitlines()[0][:200], description=vibe, category=TEMPLATE),
        PIPELINE, template=TEMPLATE, vibe_text=vibe,
        options=request.options.model_dump(mode="json", exclude_none=True),
    )  # fmt: skip
    return spawned.project_id, spawned.build_id


class ServerCpu:
    """CPU seconds the embedded PostgreSQL has used: its postmaster and every child
    (backends, WAL writer, checkpointer…), from /proc/PID/schedstat (nanoseconds)."""

    def __init__(self, pgdata: Path) -> None:
        try:
            self.postmaster: int | None = int((pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            self.postmaster = None  # not readable by us: the figure is left out (nan)

    def seconds(self) -> float:
        """The total so far (a backend that exits takes its share with it)."""
        if self.postmaster is None:
            return math.nan
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    stat = f.read()
                ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
                if ppid != self.postmaster and int(entry.name) != self.postmaster:
                    continue
                with open(f"/proc/{entry.name}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to read
        return total / 1e9


async def _timed_build(services: Services, agent: str, server: ServerCpu) -> BuildSample:
    pid, bid = await _spawn(services, VIBE)
    await services.writer.flush()  # nothing of the last build left to write
    gc.collect()  # nor its garbage: each arm pays for its own
    server_cpu = server.seconds()
    cpu, wall = time.process_time(), time.perf_counter()
    result = await services.dispatcher.call(agent, project_id=str(pid), build_id=str(bid))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server_cpu = server.seconds() - server_cpu
    if result.get("status") != "succeeded":
        raise RuntimeError(f"{agent}: build {bid} ended {result}")
    codegen = next(
        r for r in await services.store.list_runs(project_id=pid) if r.agent_name == "codegen"
    )
    # ingest_vibe, generate_plan, finalize, and codegen, github, preview, verify per attempt.
    nodes = 3 + 4 * codegen.verification_attempts
    if agent == CHAIN_AGENT and result["nodes"] != nodes:
        raise RuntimeError(f"the chain ran {result['nodes']} nodes, the build needed {nodes}")
    return BuildSample(wall * 1000, cpu * 1000, server_cpu * 1000, nodes)


@dataclass
class OverheadResult:
    """Both arms, pair by pair."""

    graph: list[BuildSample] = field(default_factory=list)
    chain: list[BuildSample] = field(default_factory=list)
    checkpoint_rows: dict[str, float] = field(default_factory=dict)
    """Median rows per graph build in LangGraph's tables (each one a statement of its own)."""

    def per_node(self, what: Callable[[BuildSample], float]) -> list[float]:
        """(graph − chain) / nodes for each pair."""
        return [
            (what(g) - what(c)) / g.nodes
            for g, c in zip(self.graph, self.chain, strict=True)
            if g.nodes == c.nodes
        ]


async def graph_overhead(
    url: str, data_dir: Path, secret: str, pairs: int, server: ServerCpu
) -> OverheadResult:
    """`pairs` graph builds and `pairs` chain builds, alternating which goes first."""
    from agents.registry import AGENTS
    from core.services import Services

    settings = _settings(url, data_dir, secret)
    services = await Services.open(settings, registry={**AGENTS, CHAIN_AGENT: run_chain})
    result = OverheadResult()
    try:
        for agent in (GRAPH_AGENT, CHAIN_AGENT):  # warm-up: pools, the checkpointer, imports
            await _timed_build(services, agent, server)
        for i in range(pairs):
            order = (GRAPH_AGENT, CHAIN_AGENT) if i % 2 == 0 else (CHAIN_AGENT, GRAPH_AGENT)
            for agent in order:
                sample = await _timed_build(services, agent, server)
                (result.graph if agent == GRAPH_AGENT else result.chain).append(sample)
        async with _connect(url) as db:
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
                cur = await db.execute(
                    sql.SQL("select count(*) as n from langgraph.{} group by thread_id").format(
                        sql.Identifier(table)
                    )
                )
                counts = [int(r["n"]) for r in await cur.fetchall()]
                result.checkpoint_rows[table] = statistics.median(counts) if counts else 0.0
    finally:
        await services.close()
    return result


# -- 2. kill -9 → resume -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _append(path: Path) -> IO[bytes]:
    return path.open("ab")


@dataclass
class UpServer:
    """`python -m local.cli up` as a subprocess in its own process group."""

    env: dict[str, str]
    cwd: Path
    port: int
    proc: asyncio.subprocess.Process | None = None
    launches: int = 0

    @property
    def url(self) -> str:
        """Where it serves the API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Its stdout and stderr, every start appended."""
        return self.cwd / "server.log"

    async def launch(self) -> float:
        """Start a new server process; the wall-clock time it was started at."""
        self.launches += 1
        with _append(self.log_path) as log:
            log.write(f"--- launch {self.launches}\n".encode())
            log.flush()
            launched = time.time()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "local.cli", "up", "--port", str(self.port),
                cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return launched

    async def healthy(self, http: httpx.AsyncClient, within: float = 60.0) -> float:
        """Poll GET /health until it answers 200; the wall-clock time it did."""
        proc = self.proc
        assert proc is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"myyc up exited with {proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(self.url + "/health", timeout=1.0)).status_code == 200:
                    return time.time()
            await asyncio.sleep(0.01)
        raise TimeoutError(f"myyc up did not answer within {within:g}s:\n{self.tail()}")

    def kill(self) -> tuple[asyncio.subprocess.Process, float]:
        """SIGKILL the server's process group now; (the killed process, when)."""
        proc = self.proc
        assert proc is not None
        self.proc = None
        killed = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc, killed

    async def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL after 20 s; reaped either way."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    def tail(self, chars: int = 4000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass(frozen=True, slots=True)
class ResumeSample:
    """One kill -9 → resume round; times in ms from the kill."""

    first_event_ms: float
    launched_ms: float
    claimed_ms: float
    healthy_ms: float
    first_type: str
    resumed_at: str
    build_ms: float
    """The whole build, from its creation to its end (resume included)."""


async def _until(check: Callable[[], Awaitable[Any]], what: str, within: float) -> Any:
    deadline = time.monotonic() + within
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(DB_POLL_S)
    return value


async def _resume_round(
    server: UpServer, client: RemoteClient, db: Db, http: httpx.AsyncClient, n: int
) -> ResumeSample:
    created = await client.request("POST", "/sessions", json_body=_session_body(f"{VIBE} {n}"))
    pid, bid = UUID(created["projectId"]), UUID(created["sessionId"])

    async def writing() -> bool:
        row = await _one(
            db,
            "select exists (select 1 from project_logs where project_id = %s"
            " and type = 'file:update') as writing, (select status from build_sessions"
            " where id = %s) as status",
            (pid, bid),
        )
        if not row["writing"] and row["status"] not in ("queued", "running"):
            raise RuntimeError(f"the build ended ({row['status']}) before codegen was killed")
        return bool(row["writing"])

    await _until(writing, "the first file:update", 60)
    old, killed = server.kill()
    launched = await server.launch()  # at once: the replacement starts cold
    await old.wait()
    old_writers = [
        r["writer_id"]
        for r in await (
            await db.execute(
                "select distinct writer_id from project_logs where project_id = %s", (pid,)
            )
        ).fetchall()
    ]
    health = asyncio.create_task(server.healthy(http))
    claimed: float | None = None
    first: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + 120
        while claimed is None or first is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"build {bid} was not resumed within 120 s:\n{server.tail()}")
            if claimed is None:
                row = await _one(
                    db,
                    "select resume_count, lease_expires_at from build_sessions where id = %s",
                    (bid,),
                )
                if row["resume_count"] >= 1:
                    expires: datetime = row["lease_expires_at"]
                    claimed = expires.timestamp() - RESUME_LEASE_S  # now() at the claim
            if first is None:
                cur = await db.execute(
                    "select timestamp, type, data from project_logs where project_id = %s"
                    " and timestamp > to_timestamp(%s) and writer_id <> all(%s)"
                    " order by timestamp limit 1",
                    (pid, killed, old_writers),
                )
                first = await cur.fetchone()
            await asyncio.sleep(DB_POLL_S)
        healthy = await health
    finally:
        if not health.done():
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health

    async def ended() -> dict[str, Any] | None:
        row = await _one(
            db,
            "select status, resume_count, created_at, finished_at from build_sessions"
            " where id = %s",
            (bid,),
        )
        return row if row["status"] not in ("queued", "running") else None

    end = await _until(ended, f"build {bid} to end", 120)
    if end["status"] != "succeeded" or end["resume_count"] != 1:
        raise RuntimeError(f"the resumed build {bid} ended {end['status']}, resumed"
                           f" {end['resume_count']} times:\n{server.tail()}")  # fmt: skip
    stamp: datetime = first["timestamp"]
    data = first["data"] if isinstance(first["data"], dict) else {}
    return ResumeSample(
        first_event_ms=(stamp.timestamp() - killed) * 1000,
        launched_ms=(launched - killed) * 1000,
        claimed_ms=(claimed - killed) * 1000,
        healthy_ms=(healthy - killed) * 1000,
        first_type=str(first["type"]),
        resumed_at=",".join(str(x) for x in data.get("next", [])),
        build_ms=(end["finished_at"] - end["created_at"]).total_seconds() * 1000,
    )


async def _imports_ms(env: dict[str, str], cwd: Path) -> float:
    """A fresh interpreter importing what `myyc up` imports before it serves."""
    modules = "local.cli, api.app, core.services, local.server, agents.registry, store.postgres"
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"import {modules}", cwd=cwd, env=env
    )
    if await proc.wait() != 0:
        raise RuntimeError("importing myyc up's modules failed")
    return (time.perf_counter() - start) * 1000


@dataclass
class ResumeResult:
    """The rounds, and what a cold interpreter's imports cost."""

    rounds: list[ResumeSample]
    imports_ms: list[float]
    """A fresh interpreter's imports, timed between rounds."""


async def resume(url: str, data_dir: Path, secret: str, rounds: int) -> ResumeResult:
    """`rounds` kill -9 → restart rounds against one `myyc up` on database `url`."""
    from local.remote import RemoteClient

    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    env.update(
        DATABASE_URL=url, MYYC_DATA_DIR=str(data_dir), MYYC_HMAC_SECRET=secret,
        MYYC_HOST="127.0.0.1", MYYC_BUILD_PREVIEWS="false",
        BUILD_LEASE_SECONDS=f"{RESUME_LEASE_S:g}",
        OFFLINE_CHUNK_DELAY_MS=f"{RESUME_CHUNK_DELAY_MS:g}",
    )  # fmt: skip
    imports: list[float] = []
    server = UpServer(env, data_dir, _free_port())
    samples: list[ResumeSample] = []
    try:
        async with (
            _connect(url) as db,
            httpx.AsyncClient() as http,
            RemoteClient(server.url, secret) as client,
        ):
            await server.launch()
            await server.healthy(http)
            for n in range(rounds):
                samples.append(await _resume_round(server, client, db, http, n))
                imports.append(await _imports_ms(env, data_dir))
    finally:
        await server.stop()
    return ResumeResult(samples, imports)


# -- 3. file → preview -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Server:
    """A server-side actor (a local or HMAC caller): previews may act for any project."""

    is_service: bool = True
    user_id: UUID | None = None


class Browser:
    """GETs over one keep-alive HTTP/1.1 connection written by hand (cheap to poll with)."""

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port or 80
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET `path`: (status, body); (0, b"") when the connection failed."""
        if self._conn is None or self._conn[0].at_eof():
            self.close()
            try:
                self._conn = await asyncio.open_connection(self.host, self.port)
            except OSError:
                return 0, b""
        reader, writer = self._conn
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n\r\n".encode())
            status, length, keep_alive = parse_response_head(await reader.readuntil(b"\r\n\r\n"))
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return 0, b""
        if not keep_alive:
            self.close()
        return status, body

    async def until(self, path: str, needle: bytes, within: float) -> float:
        """Poll until `path` serves `needle`; the perf_counter time it did."""
        deadline = time.perf_counter() + within
        while True:
            status, body = await self.get(path)
            now = time.perf_counter()
            if status == 200 and needle in body:
                return now
            if now > deadline:
                raise TimeoutError(f"{path} did not serve {needle!r} within {within:g}s")
            await asyncio.sleep(PREVIEW_POLL_S)

    def close(self) -> None:
        """Drop the connection."""
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


def _page(marker: str) -> str:
    return (
        "<!doctype html><html><head><title>Team notes</title></head>"
        f'<body><h1 data-feature="notes">{marker}</h1></body></html>'
    )


async def file_to_preview(url: str, data_dir: Path, secret: str, edits: int) -> list[float]:
    """Start a local preview of a project, publish `edits` versions of its index.html as
    codegen does, and time each until the preview serves it (ms)."""
    from agents.codegen import publish_file
    from agents.common import RunContext
    from api.app import create_app
    from core.services import Services
    from local.server import serve
    from previews.local_driver import LocalMachines
    from previews.wiring import open_previews

    services = await Services.open(_settings(url, data_dir, secret, myyc_build_previews=True))
    actor = _Server()
    latencies: list[float] = []
    try:
        async with serve(create_app(services)) as base:
            services.api_url = base
            previews = open_previews(services, api_url=base)
            try:
                pid, bid = await _spawn(services, VIBE)  # never run: its project and runs
                run = next(r for r in await services.store.list_runs(project_id=pid)
                           if r.agent_name == "codegen")  # fmt: skip
                ctx = RunContext(services, pid, bid, run.id, "codegen")
                await publish_file(ctx, "index.html", _page("first"))
                session = await previews.start(pid, actor)
                if session.container_url is None:
                    raise RuntimeError(f"the preview did not start: {session}")
                browser = Browser(session.container_url)
                try:
                    await browser.until("/index.html", b"first", 60)
                    for i in range(edits):
                        marker = f"edit-{i}-{uuid.uuid4().hex[:8]}"
                        start = time.perf_counter()
                        await publish_file(ctx, "index.html", _page(marker))
                        served = await browser.until("/index.html", marker.encode(), 30)
                        latencies.append((served - start) * 1000)
                        await asyncio.sleep(0.01 + 0.02 * (i % 3) / 2)  # off any beat
                finally:
                    browser.close()
                await previews.stop(session.id, actor)
            finally:
                await previews.close()
    finally:
        await services.close()
        machines = LocalMachines(data_dir, stop_grace=1.0)
        for machine in await machines.list_ours():
            await machines.destroy(machine.id)
    return latencies


# -- 4. concurrent builds ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConcurrentResult:
    """What became of the burst."""

    started: int
    succeeded: int
    statuses: dict[str, int]
    wall_s: float
    """First POST → the last success's finished_at."""
    posted_s: float
    """First POST → the last answer."""
    build_ms: list[float]
    """Each success's created_at → finished_at."""
    post_errors: list[str]
    max_agents: int


async def concurrent_builds(url: str, data_dir: Path, secret: str, n: int) -> ConcurrentResult:
    """`n` POST /sessions at once; how many builds succeed within CONCURRENT_BOUND_S."""
    from api.app import create_app
    from core.services import Services
    from local.remote import RemoteClient
    from local.server import serve

    settings = _settings(url, data_dir, secret)
    services = await Services.open(settings, recover=True)  # as `myyc up` runs
    try:
        async with (
            serve(create_app(services)) as base,
            RemoteClient(base, secret) as client,
            _connect(url) as db,
        ):
            services.api_url = base
            start = time.time()
            answers = await asyncio.gather(
                *(client.request("POST", "/sessions", json_body=_session_body(f"{VIBE} #{i}"))
                  for i in range(n)),
                return_exceptions=True,
            )  # fmt: skip
            posted = time.time() - start
            ids = [UUID(a["sessionId"]) for a in answers if isinstance(a, dict)]
            errors = [repr(a) for a in answers if not isinstance(a, dict)]
            rows: list[dict[str, Any]] = []
            while time.time() < start + CONCURRENT_BOUND_S:
                cur = await db.execute(
                    "select status, created_at, finished_at from build_sessions where id = any(%s)",
                    (ids,),
                )
                rows = await cur.fetchall()
                if all(r["status"] not in ("queued", "running") for r in rows):
                    break
                await asyncio.sleep(0.1)
    finally:
        await services.close()
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    done = [
        r
        for r in rows
        if r["status"] == "succeeded" and r["finished_at"].timestamp() <= start + CONCURRENT_BOUND_S
    ]
    last = max((r["finished_at"].timestamp() for r in done), default=time.time())
    return ConcurrentResult(
        started=len(ids), succeeded=len(done), statuses=statuses, wall_s=last - start,
        posted_s=posted,
        build_ms=[(r["finished_at"] - r["created_at"]).total_seconds() * 1000 for r in done],
        post_errors=errors, max_agents=settings.myyc_max_agents,
    )  # fmt: skip


# -- 5. stream ratio ---------------------------------------------------------------------------


async def model_stream_ratio(quick: bool) -> dict[str, float]:
    """bench.model_stream's figure (another engineer's module; waited for if not there yet)."""
    deadline = time.monotonic() + 20 * 60
    while True:
        try:
            from bench.model_stream import stream_ratio
        except ImportError:
            if time.monotonic() > deadline:
                raise
            print("waiting for bench/model_stream.py (stream_ratio) …", flush=True)
            await asyncio.sleep(60)
        else:
            return await stream_ratio(quick)


# -- the run -----------------------------------------------------------------------------------


def _ms(values: Sequence[float]) -> str:
    return (
        f"median {statistics.median(values):7.1f}  p90 {percentile(values, 90):7.1f}"
        f"  max {max(values):7.1f}"
    )


def median_ci(values: Sequence[float]) -> tuple[float, float]:
    """A distribution-free confidence interval of the median, at least 95% (order statistics:
    the k-th smallest and k-th largest, k the largest with P(Binomial(n, ½) < k) ≤ 2.5%)."""
    ordered, n = sorted(values), len(values)
    ks = [k for k in range(1, n) if sum(math.comb(n, i) for i in range(k)) / 2**n <= 0.025]
    k = max(ks, default=1)
    return ordered[k - 1], ordered[n - k]


def _verdict(name: str, value: float, ci: tuple[float, float] | None = None) -> str:
    target = TARGETS[name]
    op, bound = target.split()
    limit = float(bound)
    ok = {"<=": value <= limit, ">=": value >= limit, "=": value == limit}[op]
    line = f"{name:<24}{value:>10.1f}   target {target:<8} {'met' if ok else 'MISSED'}"
    if ci is not None and ci[0] <= limit <= ci[1]:
        line += f" (inconclusive: the 95% CI {ci[0]:.1f} … {ci[1]:.1f} contains {bound})"
    return line


async def main(sizes: Sizes, root: Path) -> int:
    """Run every part; print the tables and the result line."""
    from local.pg import EmbeddedPostgres
    from store.migrate import migrate

    secret = secrets.token_hex(32)
    pg = EmbeddedPostgres(root / "pg")
    failures: dict[str, str] = {}
    overhead: OverheadResult | None = None
    resumed: ResumeResult | None = None
    reloads: list[float] = []
    burst: ConcurrentResult | None = None

    async def part(name: str, run: Callable[[], Awaitable[T]]) -> T | None:
        started = time.perf_counter()
        print(f"[{name}] …", flush=True)
        try:
            return await run()
        except Exception as err:
            failures[name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
            return None
        finally:
            print(f"[{name}] {time.perf_counter() - started:.1f} s", flush=True)

    try:
        server = await asyncio.to_thread(pg.start)
        await migrate(await _create_database(server, "bench_template"))

        async def db(name: str) -> str:
            return await _create_database(server, f"bench_{name}", "bench_template")

        async def graph_part() -> OverheadResult:
            url = await db("graph")
            cpu = ServerCpu(pg.pgdata)
            return await graph_overhead(url, root / "graph", secret, sizes.pairs, cpu)

        async def resume_part() -> ResumeResult:
            return await resume(await db("resume"), root / "resume", secret, sizes.rounds)

        async def preview_part() -> list[float]:
            url = await db("preview")
            return await file_to_preview(url, root / "preview", secret, sizes.publishes)

        async def burst_part() -> ConcurrentResult:
            url = await db("burst")
            return await concurrent_builds(url, root / "burst", secret, CONCURRENT_BUILDS)

        overhead = await part("graph overhead", graph_part)
        resumed = await part("resume", resume_part)
        reloads = await part("file to preview", preview_part) or []
        burst = await part("concurrent builds", burst_part)
    finally:
        await asyncio.to_thread(pg.close)
        shutil.rmtree(root, ignore_errors=True)
    stream = await part("stream ratio", lambda: model_stream_ratio(sizes.quick))

    print()
    nan = float("nan")
    figures = dict.fromkeys(TARGETS, nan)
    intervals: dict[str, tuple[float, float]] = {}
    if overhead is not None and overhead.graph:
        wall = overhead.per_node(lambda s: s.wall_ms)
        cpu = overhead.per_node(lambda s: s.cpu_ms)
        both = overhead.per_node(lambda s: s.cpu_ms + s.server_cpu_ms)
        low, high = median_ci(wall)
        graph_ms = [s.wall_ms for s in overhead.graph]
        chain_ms = [s.wall_ms for s in overhead.chain]
        print(f"graph vs chain, {len(graph_ms)} pairs alternated, previews off, ms per build:")
        print(f"  graph (run_build)  {_ms(graph_ms)}")
        print(f"  chain (run_chain)  {_ms(chain_ms)}")
        print(f"  nodes per build    {sorted({s.nodes for s in overhead.graph})}")
        print(f"  (graph − chain) / node, wall: {_ms(wall)};"
              f" 95% CI of the median {low:.1f} … {high:.1f}")  # fmt: skip
        print(f"  (graph − chain) / node, CPU of this process: {_ms(cpu)}")
        print(f"  (graph − chain) / node, CPU of this process + Postgres: {_ms(both)}")
        rows = ", ".join(f"{n:g} {t}" for t, n in overhead.checkpoint_rows.items())
        print(f"  LangGraph rows per graph build (median): {rows}")
        figures["graph_overhead_ms"] = statistics.median(wall)
        intervals["graph_overhead_ms"] = (low, high)
    if resumed is not None and resumed.rounds:
        r = resumed.rounds
        print(f"kill -9 → first event of the resumed build, {len(r)} rounds, ms from the kill"
              f" (BUILD_LEASE_SECONDS={RESUME_LEASE_S:g}, OFFLINE_CHUNK_DELAY_MS="
              f"{RESUME_CHUNK_DELAY_MS:g}):")  # fmt: skip
        print(f"  {'round':<6}{'launched':>9}{'claimed':>9}{'event':>9}{'/health':>9}"
              f"  {'first event (resumed at)':<32}{'build':>8}")  # fmt: skip
        for i, s in enumerate(r):
            print(f"  {i:<6}{s.launched_ms:>9.0f}{s.claimed_ms:>9.0f}{s.first_event_ms:>9.0f}"
                  f"{s.healthy_ms:>9.0f}  {f'{s.first_type} ({s.resumed_at})':<32}"
                  f"{s.build_ms:>8.0f}")  # fmt: skip
        claim = statistics.median(s.claimed_ms - s.launched_ms for s in r)
        load = statistics.median(s.first_event_ms - s.claimed_ms for s in r)
        imports = statistics.median(resumed.imports_ms)
        print(f"  medians: launch → lease claimed {claim:.0f} ms (interpreter + imports"
              f" ≈ {imports:.0f} ms of it, timed alone), claimed → event {load:.0f} ms"
              " (checkpointer, compile, checkpoint load)")  # fmt: skip
        figures["resume_ms"] = statistics.median(s.first_event_ms for s in r)
    if reloads:
        print(f"publish_file → served by the running preview, {len(reloads)} edits (ms):"
              f" {_ms(reloads)}")  # fmt: skip
        figures["file_to_preview_p99_ms"] = percentile(reloads, 99)
    if burst is not None:
        print(f"{CONCURRENT_BUILDS} concurrent POST /sessions (MYYC_MAX_AGENTS="
              f"{burst.max_agents}): {burst.started} accepted in {burst.posted_s * 1000:.0f} ms,"
              f" {burst.succeeded} succeeded"
              f" within {CONCURRENT_BOUND_S:g} s; statuses {burst.statuses}")  # fmt: skip
        if burst.succeeded:
            print(f"  wall {burst.wall_s:.1f} s, {burst.succeeded / burst.wall_s:.2f} builds/s;"
                  f" per build (created → finished) {_ms(burst.build_ms)}")  # fmt: skip
        for error in burst.post_errors[:3]:
            print(f"  POST failed: {error}")
        figures["concurrent_builds"] = burst.succeeded
    if stream is not None:
        print(f"model stream: ours {stream['ours_tokens_per_s']:,.0f} tokens/CPU-s, raw"
              f" {stream['raw_tokens_per_s']:,.0f}")  # fmt: skip
        figures["stream_ratio"] = stream["stream_ratio"]
    print()
    for name, value in figures.items():
        print(_verdict(name, value, intervals.get(name)))
    for name, why in failures.items():
        print(f"part failed: {name}: {why}")
    print(
        f"graph_overhead_ms={figures['graph_overhead_ms']:.1f}"
        f" resume_ms={figures['resume_ms']:.0f}"
        f" file_to_preview_p99_ms={figures['file_to_preview_p99_ms']:.1f}"
        f" concurrent_builds={figures['concurrent_builds']:.0f}"
        f" stream_ratio={figures['stream_ratio']:.3f}"
    )
    return 1 if failures else 0


def bench_dir() -> Path:
    """A scratch directory the embedded server's system user can reach (0755)."""
    root = Path(tempfile.mkdtemp(prefix="myyc-bench-pipeline-"))
    root.chmod(0o755)
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (2-3 minutes)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(QUICK if args.quick else FULL, bench_dir())))
