"""The live stream: SSE on a real socket, resumed with Last-Event-ID, under load and outage."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from agents.reporter import RunReporter
from api.app import create_app
from clients.retry import RetryPolicy
from core.services import Services
from local.pg import EmbeddedPostgres
from schemas.rows import NewProject
from schemas.settings import Settings
from store.live import EventHub
from store.log_writer import LogWriter
from store.migrate import migrate
from store.postgres import PostgresStore
from tests.conftest import pg_dir
from tests.support import Frame, read_frames, serve

WRITERS = 4
PER_WRITER = 10_000


def _services(store: PostgresStore, writer: LogWriter, hub: EventHub, url: str) -> Services:
    settings = Settings(myyc_auth_disabled=True)  # local, on loopback
    return Services(settings, store, writer, RunReporter(store, writer), hub, None, url)


def _check_exactly_once(frames: list[Frame], writers: list[LogWriter], count: int) -> None:
    by_writer: dict[str, list[int]] = {}
    for frame in frames:
        by_writer.setdefault(frame.data["writer_id"], []).append(frame.data["seq"])
    for writer in writers:
        seqs = by_writer.get(str(writer.writer_id), [])
        assert seqs == list(range(1, count + 1)), f"writer {writer.writer_id}: {len(seqs)} events"


async def _produce(writer: LogWriter, project: UUID, count: int, pause_every: int = 200) -> None:
    for i in range(count):
        await writer.log(project, f"agent-{str(writer.writer_id)[:4]}", f"line {i}", data={"i": i})
        if i % pause_every == 0:
            await asyncio.sleep(0.001)


@pytest.mark.slow
async def test_concurrent_writers_and_a_resuming_reader_see_every_event_once(
    db_url: str,
) -> None:
    store = await PostgresStore.open(db_url)
    hub = await EventHub(db_url).start()
    project = (await store.create_project(NewProject(title="stress"))).id
    writers = [await LogWriter(store, batch_size=500).start() for _ in range(WRITERS)]
    app = create_app(_services(store, writers[0], hub, db_url))
    rng = random.Random(1234)
    frames: list[Frame] = []
    reconnects = 0
    try:
        async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
            producers = [asyncio.create_task(_produce(w, project, PER_WRITER)) for w in writers]
            last_id: str | None = None
            while len(frames) < WRITERS * PER_WRITER:
                got, last_id = await read_frames(
                    client,
                    f"/projects/{project}/stream",
                    last_event_id=last_id,
                    max_frames=rng.randint(1, 6000),
                    idle_timeout=15,
                )
                assert got, "the stream stalled"
                frames.extend(got)
                reconnects += 1
            await asyncio.gather(*producers)
    finally:
        for w in writers:
            await w.close()
        await hub.close()
        await store.close()
    assert reconnects > 5
    assert len(frames) == WRITERS * PER_WRITER
    _check_exactly_once(frames, writers, PER_WRITER)


@pytest.mark.slow
async def test_postgres_outage_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(pg_dir("myyc-outage-"))
    url = await asyncio.to_thread(pg.start)
    await migrate(url)
    store = await PostgresStore.open(url, wait_s=1.0)
    hub = await EventHub(url).start()
    project = (await store.create_project(NewProject(title="outage"))).id
    policy = RetryPolicy(max_attempts=1_000_000, base_delay=0.05, max_delay=0.5)
    writers = [
        await LogWriter(
            store, batch_size=200, retry_for=1.0, spool_dir=tmp_path / "spool", policy=policy
        ).start()
        for _ in range(2)
    ]
    app = create_app(_services(store, writers[0], hub, url))
    count = 4000
    frames: list[Frame] = []
    try:
        async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:

            async def produce(writer: LogWriter) -> None:
                for i in range(count):
                    await writer.log(project, "agent", f"line {i}")
                    await asyncio.sleep(0.002)

            async def outage() -> None:
                await asyncio.sleep(1.5)
                await asyncio.to_thread(pg.stop_server)
                await asyncio.sleep(4.0)
                await asyncio.to_thread(pg.restart_server)

            tasks = [asyncio.create_task(produce(w)) for w in writers]
            down = asyncio.create_task(outage())
            last_id: str | None = None
            while len(frames) < 2 * count:
                try:
                    got, last_id = await read_frames(
                        client,
                        f"/projects/{project}/stream",
                        last_event_id=last_id,
                        max_frames=500,
                        idle_timeout=20,
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)  # the server refused while the DB was down
                    continue
                frames.extend(got)
            await asyncio.gather(*tasks, down)
            assert any(w.spooled > 0 or w.retries > 0 for w in writers)
    finally:
        for w in writers:
            await w.close()
        await hub.close()
        await store.close()
        await asyncio.to_thread(pg.close)
        await asyncio.to_thread(shutil.rmtree, pg.data_dir, True)
    _check_exactly_once(frames, writers, count)
