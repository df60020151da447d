"""`myyc up` as a service manager runs it: SIGTERM stops it cleanly, Postgres included."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import httpx

from tests.conftest import pg_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _postgres_serving(data_dir: Path) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "postgres" in cmdline and str(data_dir) in cmdline:
            return True
    return False


async def test_sigterm_stops_myyc_up_and_its_embedded_postgres() -> None:
    """Regression: SIGTERM made `myyc up` exit 143 without closing its services, and the
    embedded PostgreSQL kept running."""
    data_dir = pg_dir("myyc-up-")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SUPABASE"))}
    env.update(MYYC_DATA_DIR=str(data_dir), MYYC_PORT=str(port), MYYC_HOST="127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "local.cli", "up", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("myyc up never answered")
        assert _postgres_serving(data_dir)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert not _postgres_serving(data_dir)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_after_a_crash_the_next_process_still_stops_the_embedded_postgres() -> None:
    """Regression: a crashed process left its pid in pgserver's `.handle_pids.json`, and from
    then on even `myyc projects` left a `postgres` running when it exited."""
    data_dir = pg_dir("myyc-crash-")
    crash = (
        "import os, sys; from pathlib import Path; from local.pg import EmbeddedPostgres;"
        f" EmbeddedPostgres(Path({str(data_dir)!r})).start(); os._exit(0)"  # no cleanup: a crash
    )
    clean = (
        "from pathlib import Path; from local.pg import EmbeddedPostgres;"
        f" pg = EmbeddedPostgres(Path({str(data_dir)!r})); pg.start(); pg.close()"
    )
    try:
        for code in (crash, clean):
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            if code is crash:
                assert _postgres_serving(data_dir)  # the crash left it running
        for _ in range(100):  # pg_ctl stop -w has returned; the process table catches up
            if not _postgres_serving(data_dir):
                break
            await asyncio.sleep(0.05)
        assert not _postgres_serving(data_dir)
    finally:
        if _postgres_serving(data_dir):  # never leave a server behind, even when failing
            stop = await asyncio.create_subprocess_exec(sys.executable, "-c", clean)
            await stop.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
