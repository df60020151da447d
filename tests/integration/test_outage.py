"""A database outage as a new user meets it: liveness stays up, readiness says no, the live
stream keeps its client, and the process that owns the embedded Postgres restarts it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import httpx
from pydantic import SecretStr

from api.app import create_app
from core.services import Services
from schemas.rows import NewProject
from schemas.settings import Settings
from tests.conftest import pg_dir
from tests.support import serve

SECRET = "test-hmac-secret-0123456789"


async def test_an_embedded_postgres_that_dies_is_restarted_and_the_stream_holds_on() -> None:
    """Regressions: with the database down /health said ok while every route answered 503 (the
    CLI trusted it); the SSE stream went silent, so followers timed out; the embedded Postgres
    was never restarted by the process that owns it."""
    data_dir = pg_dir("myyc-outage-")
    settings = Settings(myyc_data_dir=data_dir, myyc_hmac_secret=SecretStr(SECRET),
                        sse_keepalive_seconds=0.5, myyc_auth_disabled=True)  # fmt: skip
    services = await Services.open(settings)
    assert services.embedded is not None
    try:
        project = (await services.store.create_project(NewProject(title="outage"))).id
        async with (
            serve(create_app(services)) as base,
            httpx.AsyncClient(base_url=base, timeout=10.0) as http,
        ):
            assert (await http.get("/ready")).status_code == 200
            lines: list[str] = []

            async def follow() -> None:
                async with http.stream("GET", f"/projects/{project}/stream",
                                       timeout=httpx.Timeout(5.0, read=3.0)) as stream:  # fmt: skip
                    async for line in stream.aiter_lines():
                        lines.append(line)

            follower = asyncio.create_task(follow())
            await asyncio.sleep(0.3)
            postmaster = int((services.embedded.pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGKILL)
            saw_down = False
            for _ in range(200):  # the owner notices within a few seconds and restarts it
                ready = await http.get("/ready")
                health = await http.get("/health")
                assert health.status_code == 200  # liveness: the process answers regardless
                if ready.status_code == 503:
                    saw_down = True
                    assert ready.json()["error"]["code"] == "store_unavailable"
                elif saw_down:
                    break
                await asyncio.sleep(0.05)
            assert saw_down
            assert ready.status_code == 200
            assert not follower.done(), "the stream dropped its client during the outage"
            assert any(line.startswith(": keepalive") for line in lines)
            follower.cancel()
            # Back for real: writes land again.
            await services.store.create_project(NewProject(title="after"))
    finally:
        await services.close()
        shutil.rmtree(Path(data_dir), ignore_errors=True)
