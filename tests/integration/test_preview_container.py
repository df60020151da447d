"""The preview container end to end, locally: the real API on a socket, the local driver, the
real entrypoint as a subprocess syncing from the API and following its SSE stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agents.reporter import RunReporter
from core.services import Services
from previews.local_driver import LocalMachines
from previews.sessions import PreviewBootFailed, PreviewSessions
from schemas.events import EventType
from schemas.rows import NewProject
from schemas.settings import Settings
from schemas.status import PreviewStatus
from store.live import EventHub
from store.log_writer import LogWriter
from store.postgres import PostgresStore
from store.preview_store import PostgresPreviewStore
from tests.fakes.previews import FileSourceFake
from tests.integration.preview_rig import with_preview_routes
from tests.support import serve

INDEX = "<!doctype html><html><body><h1>v1</h1></body></html>"


@dataclass
class LocalStack:
    base: str
    client: httpx.AsyncClient
    store: PostgresStore
    writer: LogWriter
    data_dir: Path


@pytest.fixture
async def local(db_url: str, tmp_path: Path) -> AsyncIterator[LocalStack]:
    settings = Settings(myyc_auth_disabled=True, myyc_data_dir=tmp_path)
    store = await PostgresStore.open(db_url)
    hub = await EventHub(db_url).start()
    writer = await LogWriter(store).start()
    services = Services(settings, store, writer, RunReporter(store, writer), hub, None, db_url)
    app = with_preview_routes(services)
    try:
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
            yield LocalStack(base, client, store, writer, tmp_path)
            driver = LocalMachines(tmp_path)
            for machine in await driver.list_ours():
                await driver.destroy(machine.id)
    finally:
        await writer.close()
        await hub.close()
        await store.close()


async def _served(http: httpx.AsyncClient, url: str, needle: str, within: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + within
    body = ""
    while asyncio.get_running_loop().time() < deadline:
        try:
            response = await http.get(url)
            body = response.text
            if needle in body:
                return body
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.005)
    raise AssertionError(f"{url} never served {needle!r}; last body: {body[:300]!r}")


async def test_preview_serves_the_project_and_hot_reloads(local: LocalStack) -> None:
    project = await local.store.create_project(NewProject(title="live"))
    files = f"/projects/{project.id}/files"
    await local.client.post(files, json={"filePath": "index.html", "content": INDEX})
    await local.client.post(files, json={"filePath": "src/app.js", "content": "console.log(1)"})

    start = await local.client.post("/sessions/start", json={"projectId": str(project.id)})

    assert start.status_code == 200, start.text
    url = start.json()["containerUrl"]
    assert url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(timeout=5) as browser:
        page = await browser.get(url)
        assert page.status_code == 200
        assert "<h1>v1</h1>" in page.text
        assert "/__myyc/livereload" in page.text  # the live-reload script is injected
        assert (await browser.get(url + "src/app.js")).text == "console.log(1)"

        # An edit is stored, logged as file:update, streamed to the container, served.
        await local.client.post(
            files, json={"filePath": "index.html", "content": INDEX.replace("v1", "v2")}
        )
        await _served(browser, url, "<h1>v2</h1>")
        # A new file appears too.
        await local.client.post(files, json={"filePath": "about/index.html", "content": "about"})
        assert await _served(browser, url + "about/", "about")

    stop = await local.client.post("/sessions/stop", json={"sessionId": start.json()["sessionId"]})
    assert stop.json() == {"status": "ok"}
    async with httpx.AsyncClient(timeout=1) as browser:
        with pytest.raises(httpx.TransportError):
            await browser.get(url)


async def test_open_pages_are_told_to_reload(local: LocalStack) -> None:
    project = await local.store.create_project(NewProject(title="reload"))
    files = f"/projects/{project.id}/files"
    await local.client.post(files, json={"filePath": "index.html", "content": INDEX})
    start = await local.client.post("/sessions/start", json={"projectId": str(project.id)})
    url = start.json()["containerUrl"]
    async with (
        httpx.AsyncClient(timeout=10) as browser,
        browser.stream("GET", url + "__myyc/livereload") as stream,
    ):
        lines = stream.aiter_lines()
        assert await anext(lines) == "retry: 500"
        await local.client.post(files, json={"filePath": "style.css", "content": "h1{}"})
        seen = []
        while "event: reload" not in seen:
            seen.append(await asyncio.wait_for(anext(lines), 10))
        assert 'data: "style.css"' in [await anext(lines)]
    await local.client.post("/sessions/stop", json={"sessionId": start.json()["sessionId"]})


async def test_a_path_escaping_the_project_is_rejected_and_logged(local: LocalStack) -> None:
    project = await local.store.create_project(NewProject(title="escape"))
    files = f"/projects/{project.id}/files"
    await local.client.post(files, json={"filePath": "index.html", "content": INDEX})
    start = await local.client.post("/sessions/start", json={"projectId": str(project.id)})
    url = start.json()["containerUrl"]
    machine_id = start.json()["sessionId"]
    status = await local.client.get(f"/sessions/{machine_id}/status")
    workdir = local.data_dir / "previews" / status.json()["containerId"]
    victim = workdir / "escaped.txt"

    # The API refuses such paths, so forge the event straight into the log (as a rogue
    # broadcaster could): the container must refuse it on its own.
    for bad in ("../escaped.txt", "/tmp/escaped.txt", "a/../../escaped.txt"):
        await local.writer.log(
            project.id, "rogue", "file:update", type=EventType.file_update,
            data={"filePath": bad, "content": "pwned"},
        )  # fmt: skip
    await local.client.post(
        files, json={"filePath": "index.html", "content": INDEX.replace("v1", "after")}
    )
    async with httpx.AsyncClient(timeout=5) as browser:
        await _served(browser, url, "after")  # the bad events came before this one

    assert not _exists(victim)
    assert not _exists(Path("/tmp/escaped.txt"))
    log = _read(workdir / "container.log")
    assert log.count("rejected file update") == 3
    assert "filePath must not contain '..'" in log
    await local.client.post("/sessions/stop", json={"sessionId": machine_id})


async def test_changes_made_while_the_container_boots_are_not_lost(local: LocalStack) -> None:
    project = await local.store.create_project(NewProject(title="race"))
    files = f"/projects/{project.id}/files"
    await local.client.post(files, json={"filePath": "index.html", "content": INDEX})
    start_task = asyncio.create_task(
        local.client.post("/sessions/start", json={"projectId": str(project.id)})
    )
    for i in range(20):
        await local.client.post(files, json={"filePath": "n.txt", "content": f"n={i}"})
        await asyncio.sleep(0.01)
    start = await start_task
    async with httpx.AsyncClient(timeout=5) as browser:
        await _served(browser, start.json()["containerUrl"] + "n.txt", "n=19")
    await local.client.post("/sessions/stop", json={"sessionId": start.json()["sessionId"]})


async def test_an_empty_project_boots_and_a_deleted_one_is_404(local: LocalStack) -> None:
    gone = await local.store.create_project(NewProject(title="vanishing"))
    await local.store._rows("delete from projects where id = %s", (gone.id,))
    response = await local.client.post("/sessions/start", json={"projectId": str(gone.id)})
    assert response.status_code == 404

    empty = await local.store.create_project(NewProject(title="empty"))
    ok = await local.client.post("/sessions/start", json={"projectId": str(empty.id)})
    assert ok.status_code == 200  # nothing to serve yet, but the dev server answers
    async with httpx.AsyncClient(timeout=5) as browser:
        assert (await browser.get(ok.json()["containerUrl"])).status_code == 404
    await local.client.post("/sessions/stop", json={"sessionId": ok.json()["sessionId"]})


async def test_a_container_that_cannot_sync_fails_the_boot_with_its_reason(
    db_url: str, tmp_path: Path
) -> None:
    # The container's source refuses the project (404): the entrypoint exits, and the boot
    # fails fast with the container's own last words; the process is gone.
    source = FileSourceFake()
    source.known_projects = set()
    settings = Settings(myyc_auth_disabled=True, myyc_data_dir=tmp_path)
    store = await PostgresStore.open(db_url)
    writer = await LogWriter(store).start()
    driver = LocalMachines(tmp_path)
    try:
        async with serve(source) as base:
            previews = PreviewSessions(
                store=PostgresPreviewStore.of(store),
                projects=store,
                driver=driver,
                writer=writer,
                settings=settings,
                api_url=base,
            )
            project = await store.create_project(NewProject(title="unsyncable"))
            with pytest.raises(PreviewBootFailed) as failed:
                await previews.start(project.id, _Local())
            await previews.close()
        session = failed.value.session
        assert session.status == PreviewStatus.error
        assert session.error_message is not None
        assert "exited with code 3" in session.error_message
        assert "cannot sync project" in session.error_message
        assert await driver.list_ours() == []
    finally:
        await writer.close()
        await store.close()


def _exists(path: Path) -> bool:
    return path.exists()


def _read(path: Path) -> str:
    return path.read_text()


class _Local:
    is_service = True
    user_id = None


async def test_sigterm_while_the_first_sync_retries_stops_the_container(tmp_path: Path) -> None:
    """Regression: a container whose API was gone retried its first sync forever and ignored
    SIGTERM (test runs and `myyc` left such containers behind)."""
    import os
    import signal
    import sys

    from previews.local_driver import ENTRYPOINT

    env = {
        "PATH": os.environ["PATH"], "MYYC_PROJECT_ID": "00000000-0000-4000-8000-000000000001",
        "MYYC_SOURCE": "api", "MYYC_API_URL": "http://127.0.0.1:9", "PORT": "0",
        "HOST": "127.0.0.1", "MYYC_PROJECT_DIR": str(tmp_path / "project"),
    }  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ENTRYPOINT), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        # Wait until it is retrying the sync, then ask it to stop.
        while b"sync failed" not in await asyncio.wait_for(proc.stderr.readline(), 10):
            pass
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
