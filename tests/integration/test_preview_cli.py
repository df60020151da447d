"""`myyc preview` and `myyc cleanup`: the command functions on real services, locally."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agents.reporter import RunReporter
from core.services import Services
from previews import cli
from previews.local_driver import LocalMachines
from previews.ports import MachineSpec
from schemas.rows import NewProject
from schemas.settings import Settings
from store.live import EventHub
from store.log_writer import LogWriter
from store.postgres import PostgresStore
from tests.fakes.previews import FileSourceFake
from tests.integration.preview_rig import with_preview_routes
from tests.support import serve


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _services(db_url: str, tmp_path: Path, port: int) -> Services:
    settings = Settings(
        myyc_auth_disabled=True, myyc_data_dir=tmp_path, myyc_host="127.0.0.1", myyc_port=port
    )
    store = await PostgresStore.open(db_url)
    writer = await LogWriter(store).start()
    hub = await EventHub(db_url).start()
    return Services(settings, store, writer, RunReporter(store, writer), hub, None, db_url)


@pytest.fixture
async def services(db_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    s = await _services(db_url, tmp_path, _free_port())
    yield s
    for machine in await LocalMachines(tmp_path).list_ours():
        await LocalMachines(tmp_path).destroy(machine.id)
    await s.close()


def test_register_adds_the_commands() -> None:
    parser = argparse.ArgumentParser(prog="myyc")
    cli.register(parser.add_subparsers())
    start = parser.parse_args(["preview", str(uuid.uuid4()), "--json"])
    stop = parser.parse_args(["preview", "stop", str(uuid.uuid4())])
    clean = parser.parse_args(["cleanup", "--dry-run", "--json"])
    assert start.func is stop.func
    assert start.json is True
    assert stop.target[0] == "stop"
    assert (clean.dry_run, clean.json) == (True, True)
    assert parser.parse_args(["cleanup"]).func is clean.func


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="myyc")
    cli.register(parser.add_subparsers())
    assert (
        parser.parse_args(["preview", "not-a-uuid"]).func(
            parser.parse_args(["preview", "not-a-uuid"])
        )
        == 2
    )
    args = parser.parse_args(["preview", "a", "b", "c"])
    assert args.func(args) == 2
    assert "PROJECT must be a UUID" in capsys.readouterr().err


async def test_preview_uses_a_running_api_and_prints_json(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    project = await services.store.create_project(NewProject(title="cli"))
    app = with_preview_routes(services)
    async with serve(app) as base:
        port = int(base.rsplit(":", 1)[1])
        fresh = Services(
            services.settings.model_copy(update={"myyc_port": port}),
            services.store, services.writer, services.reporter, services.hub, None,
            services.database_url,
        )  # fmt: skip
        async with httpx.AsyncClient(base_url=base) as api:
            await api.post(
                f"/projects/{project.id}/files", json={"filePath": "index.html", "content": "cli!"}
            )
        assert await cli._start(fresh, project.id, True) == 0
        printed = json.loads(capsys.readouterr().out)
        assert set(printed) == {"sessionId", "status", "containerUrl"}
        assert printed["status"] == "active"
        async with httpx.AsyncClient() as browser:
            assert "cli!" in (await browser.get(printed["containerUrl"])).text

        assert await cli._stop(fresh, uuid.UUID(printed["sessionId"]), True) == 0
        stopped = json.loads(capsys.readouterr().out)
        assert stopped["status"] == "ended"
        # Again: still fine, nothing changes.
        assert await cli._stop(fresh, uuid.UUID(printed["sessionId"]), False) == 0
        assert "is ended" in capsys.readouterr().out


async def test_preview_serves_the_api_itself_until_stopped(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    project = await services.store.create_project(NewProject(title="foreground"))
    foreground = asyncio.create_task(cli._start(services, project.id, True))
    out = ""
    for _ in range(1000):
        out += capsys.readouterr().out
        if out.strip():
            break
        await asyncio.sleep(0.01)
    printed = json.loads(out)
    assert printed["status"] == "active"
    # Another terminal: `myyc preview stop SESSION`.
    await cli.stop_preview(services, uuid.UUID(printed["sessionId"]))
    assert await asyncio.wait_for(foreground, 10) == 0
    assert await LocalMachines(services.settings.myyc_data_dir).list_ours() == []


async def test_cleanup_reports_counts(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = FileSourceFake({"index.html": "x"})
    async with serve(source) as base:
        await LocalMachines(tmp_path).create(
            MachineSpec(uuid.uuid4(), uuid.uuid4(), {"MYYC_API_URL": base})
        )
        assert await cli._cleanup(services, True, True) == 0
        dry = json.loads(capsys.readouterr().out)
        assert dry == {
            "expired": 0, "orphaned": 1, "destroyed": 1, "gone": 0, "errors": 0, "dryRun": True
        }  # fmt: skip
        assert await cli._cleanup(services, False, False) == 0
        assert "1 orphaned machines, 1 destroyed" in capsys.readouterr().out
        report = await cli.cleanup(services)
        assert (report.orphaned, report.destroyed) == (0, 0)
