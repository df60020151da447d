"""The local machines driver (the embedded default): preview containers as subprocesses.

Each "machine" is `previews/container/entrypoint.py` run by this Python on 127.0.0.1 and a
free port, in its own process group (so destroying it also ends a Vite or npm it started)
and its own work directory under `MYYC_DATA_DIR/previews/<id>/` (project files and
`container.log`).

Machines are tracked in memory and in `MYYC_DATA_DIR/previews/machines.json`, updated under
an exclusive `flock`, so that `myyc cleanup` or `myyc preview stop` in another process sees
and destroys what this one started. A process is recognised by pid *and* start time (from
/proc), so a recycled pid is never mistaken for a preview. Removing the record under the
lock is what makes a destroy exclusive — the local counterpart of a Fly lease.

Only a minimal environment (PATH, HOME, locale) plus the spec's env reaches the container:
user code runs there, and the control plane's secrets must not.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from previews.container.entrypoint import HEALTH_PATH
from previews.ports import PREVIEW_TAG, DriverError, MachineInfo, MachineSpec

logger = logging.getLogger(__name__)

ENTRYPOINT: Final = Path(__file__).resolve().parent / "container" / "entrypoint.py"
_PASS_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
_LOG_TAIL_LINES: Final = 20


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None if it is gone.

    A zombie (exited, not yet reaped) counts as gone.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # not Linux: fall back to "does the pid exist"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0
        return 0
    fields = raw.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> int:
    """Start the entrypoint detached from us (its own session and process group); its pid.

    `posix_spawn` rather than a Popen or an asyncio subprocess on purpose: the preview must
    outlive the event loop (and this process, for `myyc preview`) without a Popen object
    that complains when it is collected, and a terminal's Ctrl-C must not reach it.
    """
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(fd)


class LocalMachines:
    """`MachinesDriver` on local subprocesses; see the module docstring."""

    name = "local"

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        python: str = sys.executable,
        entrypoint: Path = ENTRYPOINT,
        stop_grace: float = 3.0,
    ) -> None:
        """Keep machines under `data_dir/previews`."""
        self.root = (data_dir / "previews").resolve()
        self._host = host
        self._python = python
        self._entrypoint = entrypoint
        self._stop_grace = stop_grace
        #: Previews this process started (its children): machine id → pid.
        self._children: dict[str, int] = {}
        #: Exit codes of children that ended, once reaped.
        self._exits: dict[str, int] = {}

    # state file -------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        """The JSON file every process reads and writes the machine records in."""
        return self.root / "machines.json"

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The records, locked for the block; changes are written back atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "machines.lock").open("a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                try:
                    machines: dict[str, dict[str, Any]] = json.loads(
                        self.state_path.read_text()
                    ).get("machines", {})
                except (FileNotFoundError, ValueError):
                    machines = {}
                before = json.dumps(machines, sort_keys=True)
                yield machines
                if json.dumps(machines, sort_keys=True) != before:
                    tmp = self.state_path.with_suffix(".tmp")
                    tmp.write_text(json.dumps({"machines": machines}, indent=1, sort_keys=True))
                    os.replace(tmp, self.state_path)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # the port -----------------------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> MachineInfo:
        """Start the entrypoint for `spec` (or return the session's existing machine)."""
        session = str(spec.session_id)
        with self._state() as machines:
            for record in machines.values():
                if record["metadata"].get("session_id") == session:
                    return self._info(record)
            machine_id = f"local-{uuid.uuid4().hex[:14]}"
            workdir = self.root / machine_id
            workdir.mkdir(parents=True)
            port = _free_port(self._host)
            env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
            env.update(spec.env)
            env.update(
                HOST=self._host,
                PORT=str(port),
                MYYC_PROJECT_DIR=str(workdir / "project"),
                MYYC_PROJECT_ID=str(spec.project_id),
                MYYC_SESSION_ID=session,
                PYTHONUNBUFFERED="1",
            )
            try:
                pid = _spawn([self._python, str(self._entrypoint)], workdir / "container.log", env)
            except OSError as err:
                shutil.rmtree(workdir, ignore_errors=True)
                raise DriverError(f"could not start the preview process: {err}") from err
            self._children[machine_id] = pid
            record = {
                "id": machine_id,
                "pid": pid,
                "start_ticks": _start_ticks(pid),
                "port": port,
                "url": f"http://{self._host}:{port}/",
                "metadata": spec.metadata(),
                "created_at": time.time(),
                "workdir": str(workdir),
                "guest": {
                    "cpu_kind": spec.cpu_kind,
                    "cpus": spec.cpus,
                    "memory_mb": spec.memory_mb,
                },
            }
            machines[machine_id] = record
        logger.info("started local preview %s (pid %d) on port %d", machine_id, pid, port)
        return self._info(record)

    async def get(self, machine_id: str) -> MachineInfo | None:
        """The machine now, or None when no record of it exists."""
        with self._state() as machines:
            record = machines.get(machine_id)
        return None if record is None else self._info(record)

    async def destroy(self, machine_id: str) -> bool:
        """Claim the record under the lock, then end the process group and remove its files."""
        with self._state() as machines:
            record = machines.pop(machine_id, None)
        if record is None:
            return False
        pid = int(record["pid"])
        await self._terminate(machine_id, pid, record.get("start_ticks"))
        shutil.rmtree(record["workdir"], ignore_errors=True)
        logger.info("destroyed local preview %s", machine_id)
        return True

    async def list_ours(self) -> list[MachineInfo]:
        """Every recorded preview machine (a crashed one shows as `stopped`)."""
        with self._state() as machines:
            records = list(machines.values())
        return [
            self._info(r)
            for r in records
            if all(r["metadata"].get(k) == v for k, v in PREVIEW_TAG.items())
        ]

    async def close(self) -> None:
        """Reap children that exited; running previews are left running on purpose."""
        for machine_id in list(self._children):
            self._child_running(machine_id)

    # helpers ----------------------------------------------------------------------------

    def _child_running(self, machine_id: str) -> bool:
        """Whether our child still runs; reaps it (keeping its exit code) once it ended."""
        pid = self._children[machine_id]
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            done, status = pid, 0
        if done == 0:
            return True
        del self._children[machine_id]
        self._exits[machine_id] = os.waitstatus_to_exitcode(status)
        return False

    def _alive(self, machine_id: str, pid: int, ticks: int | None) -> bool:
        if machine_id in self._children:
            return self._child_running(machine_id)
        if machine_id in self._exits:
            return False
        now_ticks = _start_ticks(pid)
        return now_ticks is not None and now_ticks == ticks

    def _running(self, record: dict[str, Any]) -> bool:
        return self._alive(record["id"], int(record["pid"]), record.get("start_ticks"))

    def _info(self, record: dict[str, Any]) -> MachineInfo:
        running = self._running(record)
        detail = None if running else self._failure_detail(record)
        return MachineInfo(
            id=record["id"],
            state="started" if running else "stopped",
            url=record["url"],
            metadata=dict(record["metadata"]),
            health_url=f"http://{self._host}:{record['port']}{HEALTH_PATH}",
            created_at=record.get("created_at"),
            detail=detail,
        )

    def _failure_detail(self, record: dict[str, Any]) -> str:
        code = self._exits.get(record["id"])
        head = "the preview process exited" + ("" if code is None else f" with code {code}")
        log = Path(record["workdir"]) / "container.log"
        try:
            lines = log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return head
        return head + (": " + " | ".join(lines) if lines else "")

    async def _terminate(self, machine_id: str, pid: int, ticks: int | None) -> None:
        if not self._alive(machine_id, pid, ticks):
            return
        # The entrypoint leads its process group (setsid), so its pid is the group id.
        for sig, wait in ((signal.SIGTERM, self._stop_grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + wait
            # Possibly not our child (another process started it): nothing to await but time.
            while self._alive(machine_id, pid, ticks) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if not self._alive(machine_id, pid, ticks):
                self._exits.pop(machine_id, None)
                return
        logger.warning("local preview %s (pid %d) survived SIGKILL", machine_id, pid)
