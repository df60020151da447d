"""The embedded PostgreSQL: the `pgserver` wheel's server, with data under MYYC_DATA_DIR.

Used when neither DATABASE_URL nor SUPABASE_URL is set. Postgres listens on a unix socket
in its data directory only (no TCP port), so several checkouts never collide.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _ensure_runtime_dir() -> None:
    """pgserver keeps its lock file in the XDG runtime dir; give it a private one if unset."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime = Path(tempfile.gettempdir()) / f"myyc-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X")


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop pids of dead processes from pgserver's handle list; return the ones dropped.

    pgserver stops the server when the last process holding a handle lets go, and counts
    holders in `.handle_pids.json`. A process that crashed never lets go: its pid stays, and
    from then on no process ever stops the server. Dead pids are forgotten before starting.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (FileNotFoundError, ValueError):
        return []
    if not isinstance(pids, list):
        return []
    dead = [pid for pid in pids if isinstance(pid, int) and not _alive(pid)]
    if dead:
        handles.write_text(json.dumps([pid for pid in pids if pid not in dead]))
        logger.info("forgot %d dead embedded-postgres handle(s): %s", len(dead), dead)
    return dead


class EmbeddedPostgres:
    """Start, stop and restart a pgserver-managed PostgreSQL 16 (pgvector bundled)."""

    def __init__(self, data_dir: Path, *, keep_running: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self._keep_running = keep_running
        self._server: Any = None

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL data directory."""
        return self.data_dir / "pgdata"

    def start(self) -> str:
        """Start (or attach to) the server and return its connection URL."""
        _ensure_runtime_dir()
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        forget_dead_handles(self.pgdata)
        self._server = pgserver.get_server(  # type: ignore[attr-defined]
            self.pgdata, cleanup_mode=None if self._keep_running else "stop"
        )
        url: str = self._server.get_uri()
        logger.info("embedded postgres ready at %s", url)
        return url

    @property
    def url(self) -> str:
        """The connection URL of the running server."""
        if self._server is None:
            raise RuntimeError("embedded postgres is not started")
        uri: str = self._server.get_uri()
        return uri

    def running(self) -> bool:
        """Whether the postgres process (the postmaster in `postmaster.pid`) is alive."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return False
        return _alive(pid)

    def stop_server(self) -> None:
        """Stop the postgres process but keep the handle (for outage tests and restarts)."""
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)

    def restart_server(self) -> None:
        """Start the postgres process again after `stop_server`, on the same socket."""
        self._server.ensure_postgres_running()

    def close(self) -> None:
        """Release this process's handle; the server stops unless `keep_running` was set."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
