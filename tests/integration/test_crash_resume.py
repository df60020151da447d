"""The crash matrix: `kill -9` of the process running a build, at node boundaries and inside
nodes, then a restart of `myyc up` on the same port and data.

Every case runs the real thing: `myyc up` as a subprocess (the API, LangGraph on the Postgres
checkpointer, the local forge, local preview machines), one build made with POST /sessions,
and a follower in this process reading the project's SSE stream, which reconnects with
Last-Event-ID across the restart. The test watches the database for its crash point, kills
the server's process group with SIGKILL and starts the server again; the new process's
recovery sees the dead owner and resumes the build from its checkpoint.

The kill lands where it is aimed by timing: the offline model is slowed down
(OFFLINE_CHUNK_DELAY_MS) and the database polled every 20 ms, so each point is reached well
before the build ends (asserted), and `build_resumed.data.next` tells where it landed. Finalize
is too short for that: the test holds the verifier run's row locked, so the process blocks
inside close_build right after closing the session, and kills it there. The replacement
server is launched (and imports) while the build runs, and is let go after the kill.

Once the build has ended, each case checks:

- the build `succeeded`, taken over exactly once (`resume_count` 1); the project is
  `completed`; every run of the build is `completed`; verification ran once and passed;
- one `build_resumed` event, whose `next` (the nodes the graph resumed at) is where the kill
  landed; one "Build started", one `build_succeeded`, no `build_failed`;
- side effects exactly once: the forge repository has 2 commits (auto-init + app), every
  `project_files` row is at version 1; with previews on, one preview session, `active`, whose
  machine is the only live one;
- the follower saw every event of the project exactly once: the multiset of event ids it
  received equals the set of `project_logs` ids.

`build_resumed` is logged whenever the resumed graph's checkpoint has nodes to run, which is
the case at every crash point here (all come after the graph's first checkpoint). Two cases
guard bugs this matrix found (`KnownBug`, raised as soon as the state shows one again): a
preview left `creating` by the dead process was reused as it was, and a build killed inside
finalize was never resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from local.remote import RemoteClient, StreamEvent
from previews.local_driver import LocalMachines

pytestmark = pytest.mark.slow

Db = psycopg.AsyncConnection[dict[str, Any]]

SECRET = "crash-resume-test-secret-0123456789"
LEASE_SECONDS = 2
#: Between the offline model's chunks: codegen streams ~100 of them, so it takes ~1.5 s.
CHUNK_DELAY_MS = 10
POLL = 0.02
VIBE = "Team notes\nShare notes with my team, plan sprints"
AGENTS = ("planner", "codegen", "github", "preview", "verifier")
# `myyc up` (local.cli's main, as `python -m local.cli` runs it), with its heavy imports done
# before the go line on stdin: a replacement server imports while the build runs, so the
# restart after the kill costs what a restart costs, not ~1.5 s of imports.
_LAUNCHER = """\
import sys
import local.cli, api.app, core.services, local.server, store.checkpoints, store.postgres
sys.stdin.readline()
sys.exit(local.cli.main(sys.argv[1:]))
"""
# Only what a process needs: the developer's MYYC_*, SUPABASE_*, GITHUB_TOKEN or model keys
# must not reach the server under test (nor a `.env`: it runs in its data directory).
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


class KnownBug(AssertionError):
    """The resumed build hit a bug this matrix found before (a regression)."""


@dataclass(frozen=True)
class CrashPoint:
    """Where to kill: `reached` (SQL, a boolean) turns true at that point of the build."""

    name: str
    reached: str
    resumes_at: frozenset[str]
    """The nodes the graph may resume at (`build_resumed.data.next`) when the kill lands
    within a poll of `reached`."""
    previews: bool = False
    hold_verifier: bool = False
    """Freeze finalize: hold the verifier run's row locked (taken while it verifies) so the
    process blocks right after closing the session; kill it there."""


def _event(where: str) -> str:
    return (
        "exists (select 1 from project_logs where project_id = %(project)s"
        f" and session_id = %(build)s and {where})"
    )


def _run(agent: str, status: str) -> str:
    return (
        "exists (select 1 from agent_runs where session_id = %(build)s"
        f" and agent_name = '{agent}' and status = '{status}')"
    )


POINTS = [
    # Inside the planner: the draft plan is out (the end of ingest_vibe); the kill lands in
    # ingest_vibe's tail or in generate_plan's model call.
    CrashPoint(
        "planner-after-draft-plan",
        _event("type = 'plan_created' and data->>'draft' = 'true'"),
        frozenset({"ingest_vibe", "generate_plan"}),
    ),
    # The final plan is stored on the session: generate_plan's end, or codegen's start.
    CrashPoint(
        "after-final-plan",
        "exists (select 1 from build_sessions where id = %(build)s and plan is not null)",
        frozenset({"generate_plan", "codegen"}),
    ),
    # Inside codegen: the first file is stored and published, the model is still writing.
    CrashPoint("inside-codegen", _event("type = 'file:update'"), frozenset({"codegen"})),
    # Codegen is done (its run awaits verification); github and preview start.
    CrashPoint(
        "after-codegen",
        _run("codegen", "awaiting_verification"),
        frozenset({"codegen", "github", "preview"}),
        previews=True,
    ),
    # The commit is made (previews off: the superstep's other half ends at once).
    CrashPoint(
        "after-github", _run("github", "completed"), frozenset({"github", "preview", "verify"})
    ),
    # Inside preview: its session is `creating`, its machine made and booting. (Regression: a
    # session left `creating` by a dead process was reused as it was: never made active.)
    CrashPoint(
        "inside-preview",
        "exists (select 1 from preview_sessions where project_id = %(project)s"
        " and status = 'creating' and container_id is not null)",
        frozenset({"github", "preview"}),
        previews=True,
    ),
    # Inside verify: the verifier's run is live, the checks run against the live preview.
    CrashPoint(
        "inside-verify", _run("verifier", "in_progress"), frozenset({"verify"}), previews=True
    ),
    # Inside finalize: the outputs and `build_succeeded` are written, the runs not completed
    # and the session not closed yet. (Regression: the session was closed first, and a build
    # killed there was never resumed.)
    CrashPoint(
        "inside-finalize",
        "exists (select 1 from build_sessions where id = %(build)s and outputs ? 'closed')",
        frozenset({"finalize"}),
        hold_verifier=True,
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """`myyc up` as a subprocess in its own process group, restartable on the same port."""

    env: dict[str, str]
    data_dir: Path
    port: int
    proc: asyncio.subprocess.Process | None = None
    """The server running now."""
    spare: asyncio.subprocess.Process | None = None
    """The next one, launched and waiting to be started."""
    starts: int = 0
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    async def prepare(self) -> None:
        """Launch the next server's process: it imports, then waits for `start`."""
        if self.spare is not None:
            return
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.spare = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LAUNCHER, "-v", "up", "--port", str(self.port),
            cwd=self.data_dir, env=self.env, stdin=subprocess.PIPE, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    async def start(self, *, within: float = 30.0) -> None:
        """Run `myyc up` in the prepared process (or a new one); wait for GET /health."""
        assert self.proc is None, "already running"
        await self.prepare()
        proc, self.spare = self.spare, None
        assert proc is not None
        assert proc.stdin is not None
        assert self._log is not None
        self.proc = proc
        self.starts += 1
        self._log.write(f"--- start {self.starts}\n".encode())
        self._log.flush()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        proc.stdin.close()
        await proc.stdin.wait_closed()
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                if proc.returncode is not None:
                    raise AssertionError(f"myyc up exited ({proc.returncode}):\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + "/health")).status_code == 200:
                        return
                assert time.monotonic() < deadline, f"myyc up did not answer:\n{self.tail()}"
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL the running server and its process group (git, …), and reap it."""
        if self.proc is not None:
            await _kill(self.proc)
            self.proc = None

    async def close(self) -> None:
        await self.kill()
        if self.spare is not None:
            await _kill(self.spare)
            self.spare = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:  # not reaped: its pid is still its own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


@dataclass
class Follower:
    """The project's SSE stream, read in the background: every event it got, in order."""

    client: RemoteClient
    project_id: str
    events: list[StreamEvent] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    final: str | None = None
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._read(), name="crash-resume-follower")

    async def _read(self) -> None:
        stream = self.client.stream(self.project_id)
        try:
            async for event in stream:
                self.events.append(event)
                if event.final_status is not None and self.final is None:
                    self.final = event.final_status
                    self.ended.set()
        finally:
            await stream.aclose()

    def ids(self) -> Counter[str]:
        return Counter(str(e.data.get("id")) for e in self.events)

    def check(self) -> None:
        """Raise what the follower died of (e.g. it ran out of reconnects)."""
        if self.task is not None and self.task.done() and not self.task.cancelled():
            self.task.result()
            raise AssertionError("the SSE stream ended")

    async def stop(self) -> None:
        if self.task is None:
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.task = None


@contextlib.asynccontextmanager
async def _connect(url: str) -> AsyncIterator[Db]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
    try:
        yield conn
    finally:
        await conn.close()


async def _rows(db: Db, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur = await db.execute(sql, params)
    return await cur.fetchall()


async def _one(db: Db, sql: str, params: Any = None) -> dict[str, Any]:
    rows = await _rows(db, sql, params)
    assert len(rows) == 1, (sql, rows)
    return rows[0]


async def _holds(db: Db, condition: str, ids: dict[str, str]) -> bool:
    """Whether the SQL `condition` is true now."""
    return bool((await _one(db, f"select {condition} as holds", ids))["holds"])


async def _poll(check: Callable[[], Awaitable[Any]], what: str, *, within: float) -> Any:
    """Await `check()` every POLL seconds until it returns something truthy."""
    deadline = time.monotonic() + within
    while not (value := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL)
    return value


async def _check_going(db: Db, ids: dict[str, str]) -> None:
    """Fail now if the resumed build already went wrong, rather than time out later."""
    stale = await _rows(
        db,
        "select p.status from preview_sessions p where p.project_id = %(project)s"
        f" and p.status <> 'active' and {_run('preview', 'completed')}",
        ids,
    )
    if stale:
        raise KnownBug(f"the preview run completed on a preview still {stale[0]['status']}")
    # Closed, yet leased by an owner long dead: nobody will complete its runs.
    orphan = await _rows(
        db,
        "select status from build_sessions where id = %(build)s"
        " and status not in ('queued', 'running') and lease_owner is not null"
        " and lease_expires_at < now() - make_interval(secs => %(grace)s)",
        {**ids, "grace": 2 * LEASE_SECONDS},
    )
    if orphan:
        raise KnownBug(f"the build is {orphan[0]['status']} but its runs are never completed")
    bad = await _rows(
        db,
        "select message, data from project_logs where project_id = %(project)s and"
        " (type in ('build_failed', 'approval_requested')"
        "  or (type = 'verification' and data->>'passed' = 'false'))",
        ids,
    )
    assert not bad, f"the resumed build went wrong: {bad[0]['message']}: {bad[0]['data']}"


async def _state(db: Db, ids: dict[str, str]) -> str:
    """The build as the database has it, for a failure's message."""
    lines = ["", "--- database"]
    for sql in (
        "select status, resume_count, lease_owner, lease_expires_at from build_sessions"
        " where id = %(build)s",
        "select status, progress from projects where id = %(project)s",
        "select agent_name, status, current_step from agent_runs where session_id = %(build)s",
        "select status, container_id from preview_sessions where project_id = %(project)s",
        "select agent_name, type, message from project_logs where project_id = %(project)s"
        " order by timestamp",
    ):
        lines.extend(str(row) for row in await _rows(db, sql, ids))
    return "\n".join(lines)


def _commits(data_dir: Path) -> dict[str, int]:
    """Commits on HEAD of each bare repository of the local forge."""
    counts = {}
    for repo in sorted((data_dir / "forge").glob("*.git")):
        out = subprocess.run(
            ["git", "--git-dir", str(repo), "rev-list", "--count", "HEAD"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        counts[repo.name] = int(out.stdout)
    return counts


async def _live_machines(data_dir: Path) -> list[str]:
    return [m.id for m in await LocalMachines(data_dir).list_ours() if m.state == "started"]


async def _destroy_machines(data_dir: Path) -> None:
    machines = LocalMachines(data_dir, stop_grace=1.0)
    for machine in await machines.list_ours():
        await machines.destroy(machine.id)


async def _check_outcome(
    db: Db, ids: dict[str, str], point: CrashPoint, data_dir: Path, follower: Follower
) -> None:
    """Everything the module docstring promises, once the build ended."""
    session = await _one(db, "select * from build_sessions where id = %(build)s", ids)
    project = await _one(db, "select * from projects where id = %(project)s", ids)
    runs = await _rows(db, "select * from agent_runs where session_id = %(build)s", ids)
    logs = await _rows(
        db,
        "select id::text, type, message, data from project_logs where project_id = %(project)s",
        ids,
    )
    files = await _rows(
        db, "select path, version from project_files where project_id = %(project)s", ids
    )
    previews = await _rows(db, "select * from preview_sessions where project_id = %(project)s", ids)

    # The build: finished, taken over once, every run completed, verified once.
    assert session["status"] == "succeeded", session
    assert session["resume_count"] == 1, session
    assert session["lease_owner"] is None, session
    assert project["status"] == "completed", project
    assert {r["agent_name"]: r["status"] for r in runs} == dict.fromkeys(AGENTS, "completed")
    codegen = next(r for r in runs if r["agent_name"] == "codegen")
    assert codegen["verification_attempts"] == 1, codegen["verification_evidence"]
    assert session["outputs"]["verified"] is True

    # The log: one start, one resume at the node the kill interrupted, one success.
    types = Counter(e["type"] for e in logs)
    resumed = [e["data"] for e in logs if e["type"] == "build_resumed"]
    assert len(resumed) == 1, resumed
    assert resumed[0]["resume_count"] == 1, resumed
    assert resumed[0]["next"], resumed
    assert set(resumed[0]["next"]) <= point.resumes_at, resumed
    assert [e["message"] for e in logs].count("Build started") == 1
    assert (types["build_succeeded"], types["build_failed"]) == (1, 0), types
    assert [e["data"]["passed"] for e in logs if e["type"] == "verification"] == [True]

    # Side effects once: two commits, every file at version 1, one preview on one machine.
    assert list(_commits(data_dir).values()) == [2], _commits(data_dir)
    assert files, "codegen wrote nothing"
    assert {f["path"]: f["version"] for f in files} == {f["path"]: 1 for f in files}
    assert sorted(f["path"] for f in files) == sorted(session["outputs"]["files"])
    live = await _live_machines(data_dir)
    if point.previews:
        assert len(previews) == 1, previews
        assert previews[0]["status"] == "active", previews
        assert live == [previews[0]["container_id"]], (live, previews)
        assert session["outputs"]["preview_url"] == previews[0]["container_url"]
    else:
        assert previews == [], previews
        assert live == [], live

    # The follower: every stored event, exactly once.
    received = follower.ids()
    assert {i: n for i, n in received.items() if n > 1} == {}, "events seen twice"
    assert set(received) == {e["id"] for e in logs}


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
async def test_a_build_killed_mid_way_resumes_and_does_everything_once(
    db_url: str, point: CrashPoint
) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="myyc-crash-"))
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    env.update(
        DATABASE_URL=db_url, MYYC_DATA_DIR=str(data_dir), MYYC_HMAC_SECRET=SECRET,
        MYYC_HOST="127.0.0.1", BUILD_LEASE_SECONDS=str(LEASE_SECONDS),
        OFFLINE_CHUNK_DELAY_MS=str(CHUNK_DELAY_MS),
        MYYC_BUILD_PREVIEWS="true" if point.previews else "false",
    )  # fmt: skip
    server = Server(env, data_dir, _free_port())
    # Reconnects every 0.1 s: enough of them to outlast a restart (~2-4 s) many times over.
    client = RemoteClient(server.url, SECRET, reconnect_delay=0.1, max_reconnects=400)
    follower: Follower | None = None
    try:
        async with _connect(db_url) as db, _connect(db_url) as holder:
            await server.start()
            await server.prepare()  # the replacement imports while the build runs
            created = await client.request(
                "POST", "/sessions", json_body={"vibeText": VIBE, "template": "saas"}
            )
            ids = {"project": created["projectId"], "build": created["sessionId"]}
            follower = Follower(client, created["projectId"])
            follower.start()
            try:
                if point.hold_verifier:
                    # Once the verifier runs, nothing touches its run's row until finalize
                    # completes it: lock the row, and finalize blocks right there.
                    async def verifying() -> bool:
                        row = await _one(
                            db,
                            f"select {_run('verifier', 'in_progress')} as on, status"
                            " from build_sessions where id = %(build)s",
                            ids,
                        )
                        assert row["status"] in ("queued", "running"), row
                        return bool(row["on"])

                    await _poll(verifying, "the verifier to start", within=30)
                    await holder.set_autocommit(False)
                    locked = await _rows(
                        holder,
                        "select status from agent_runs where session_id = %(build)s"
                        " and agent_name = 'verifier' for update",
                        ids,
                    )
                    assert locked == [{"status": "in_progress"}], "too late: finalize ran"

                async def reached() -> bool:
                    row = await _one(
                        db,
                        f"select {point.reached} as reached, s.status, p.status as project"
                        " from build_sessions s join projects p on p.id = s.project_id"
                        " where s.id = %(build)s",
                        ids,
                    )
                    if not row["reached"]:
                        assert row["status"] in ("queued", "running"), (
                            f"the build ended before the crash point ({row}): slow it down"
                        )
                    return bool(row["reached"])

                await _poll(reached, f"the crash point {point.name}", within=30)
                await server.kill()
                killed = await _one(
                    db,
                    "select s.status, p.status as project from build_sessions s"
                    " join projects p on p.id = s.project_id where s.id = %(build)s",
                    ids,
                )
                if point.hold_verifier:
                    # The dead process's statement still waits on the lock in its backend: end it,
                    # as if it had never been sent, then let go of the row.
                    await _rows(
                        db,
                        "select pg_terminate_backend(pid) from pg_stat_activity"
                        " where %s = any(pg_blocking_pids(pid))",
                        (holder.info.backend_pid,),
                    )
                    await holder.rollback()
                else:
                    assert killed["status"] == "running", killed
                assert killed["project"] != "completed", killed

                await server.start()

                async def ended() -> bool:
                    follower.check()
                    await _check_going(db, ids)
                    return follower.ended.is_set()

                await _poll(ended, "the project to end", within=30)
                assert follower.final == "completed", follower.final

                # Quiet: the owner let the lease go, the follower has every stored event.
                async def settled() -> bool:
                    follower.check()
                    owner = await _one(
                        db, "select lease_owner from build_sessions where id = %(build)s", ids
                    )
                    stored = await _rows(
                        db, "select id::text from project_logs where project_id = %(project)s",
                        ids,
                    )  # fmt: skip
                    caught_up = {r["id"] for r in stored} == set(follower.ids())
                    return owner["lease_owner"] is None and caught_up

                await _poll(settled, "the stream to catch up", within=20)
                await asyncio.sleep(0.3)  # a quiet moment: nothing more may come
                await follower.stop()
                await _check_outcome(db, ids, point, data_dir, follower)
            except AssertionError as err:
                detail = f"{err}\n{server.tail()}{await _state(db, ids)}"
                raise type(err)(detail) from None
    finally:
        if follower is not None:
            await follower.stop()
        await client.aclose()
        await server.close()
        await _destroy_machines(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
