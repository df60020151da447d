"""PostgresPreviewStore on real Postgres: sessions (cap, one live per project) and files."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from previews.ports import LiveSessionExists, PreviewLimitReached
from schemas.errors import NotFound, ValidationFailed
from schemas.events import Cursor
from schemas.rows import NewProject
from schemas.status import PreviewStatus
from store.log_writer import LogWriter
from store.postgres import PostgresStore
from store.preview_store import PostgresPreviewStore

LATER = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def previews(pg_store: PostgresStore) -> PostgresPreviewStore:
    return PostgresPreviewStore.of(pg_store)


async def _user(db_url: str) -> uuid.UUID:
    user = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("insert into auth.users (id) values (%s)", (user,))
    return user


async def test_one_live_session_per_project(
    pg_store: PostgresStore, previews: PostgresPreviewStore
) -> None:
    project = await pg_store.create_project(NewProject(title="p"))
    first = await previews.create_session(project.id, user_id=None, expires_at=LATER)
    assert first.status == PreviewStatus.creating
    with pytest.raises(LiveSessionExists):
        await previews.create_session(project.id, user_id=None, expires_at=LATER)
    await previews.update_session(first.id, {"status": PreviewStatus.ended})
    second = await previews.create_session(project.id, user_id=None, expires_at=LATER)
    assert await previews.find_live(project.id) == second


async def test_the_cap_holds_under_concurrent_starts(
    pg_store: PostgresStore, previews: PostgresPreviewStore, db_url: str
) -> None:
    user = await _user(db_url)
    projects = [
        await pg_store.create_project(NewProject(title="p", user_id=user)) for _ in range(6)
    ]
    results = await asyncio.gather(
        *(
            previews.create_session(p.id, user_id=user, expires_at=LATER, live_cap=2)
            for p in projects
        ),
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, PreviewLimitReached)]
    assert (len(made), len(refused)) == (2, 4)
    assert await previews.count_live(user) == 2


async def test_unknown_project_and_session_are_not_found(previews: PostgresPreviewStore) -> None:
    with pytest.raises(NotFound):
        await previews.create_session(uuid.uuid4(), user_id=None, expires_at=LATER)
    with pytest.raises(NotFound):
        await previews.get_session(uuid.uuid4())
    with pytest.raises(NotFound):
        await previews.update_session(uuid.uuid4(), {"status": PreviewStatus.ended})
    with pytest.raises(NotFound):
        await previews.put_file(uuid.uuid4(), "a.txt", "x")


async def test_update_only_if_and_unknown_columns(
    pg_store: PostgresStore, previews: PostgresPreviewStore
) -> None:
    project = await pg_store.create_project(NewProject(title="p"))
    session = await previews.create_session(project.id, user_id=None, expires_at=LATER)
    active = await previews.update_session(
        session.id, {"status": PreviewStatus.active}, only_if=frozenset({PreviewStatus.creating})
    )
    assert active is not None
    assert active.status == PreviewStatus.active
    again = await previews.update_session(
        session.id, {"status": PreviewStatus.error}, only_if=frozenset({PreviewStatus.creating})
    )
    assert again is None
    with pytest.raises(ValidationFailed):
        await previews.update_session(session.id, {"project_id": uuid.uuid4()})


async def test_expired_and_live_listings(
    pg_store: PostgresStore, previews: PostgresPreviewStore
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for minutes in (-5, 0, 5):
        project = await pg_store.create_project(NewProject(title="p"))
        made.append(
            await previews.create_session(
                project.id, user_id=None, expires_at=now + timedelta(minutes=minutes)
            )
        )
    ended_project = await pg_store.create_project(NewProject(title="p"))
    ended = await previews.create_session(ended_project.id, user_id=None, expires_at=now)
    await previews.update_session(ended.id, {"status": PreviewStatus.ended})

    assert [s.id for s in await previews.list_expired(now)] == [made[0].id, made[1].id]
    assert {s.id for s in await previews.list_live()} == {s.id for s in made}
    assert await previews.count_live(None) == 3


async def test_files_upsert_and_list_by_path(
    pg_store: PostgresStore, previews: PostgresPreviewStore
) -> None:
    project = await pg_store.create_project(NewProject(title="p"))
    await previews.put_file(project.id, "src/b.ts", "1")
    await previews.put_file(project.id, "index.html", "2")
    updated = await previews.put_file(project.id, "src/b.ts", "3")
    assert updated.content == "3"
    files = await previews.list_files(project.id)
    assert [(f.path, f.content) for f in files] == [("index.html", "2"), ("src/b.ts", "3")]


@pytest.mark.parametrize("path", ["../x", "/abs", "a/./b", "a\\b", "a/.."])
async def test_the_database_refuses_escaping_paths_too(
    pg_store: PostgresStore, previews: PostgresPreviewStore, path: str
) -> None:
    project = await pg_store.create_project(NewProject(title="p"))
    with pytest.raises(ValidationFailed):
        await previews.put_file(project.id, path, "x")


async def test_log_position_is_each_writers_last_seq(
    pg_store: PostgresStore, previews: PostgresPreviewStore
) -> None:
    project = await pg_store.create_project(NewProject(title="p"))
    assert await previews.log_position(project.id) == Cursor()
    writers = [await LogWriter(pg_store).start() for _ in range(2)]
    for i, writer in enumerate(writers):
        for _ in range(i + 2):
            await writer.log(project.id, "a", "m")
        await writer.close()
    position = await previews.log_position(project.id)
    assert position.positions == {writers[0].writer_id: 2, writers[1].writer_id: 3}


async def test_a_store_with_its_own_pool_opens_lazily_and_closes(db_url: str) -> None:
    store = PostgresPreviewStore.connect(db_url)
    assert await store.list_live() == []
    await store.close()
    await store.close()  # twice is fine


def test_the_driver_follows_the_settings(tmp_path) -> None:
    from previews.fly_driver import FlyMachinesDriver
    from previews.local_driver import LocalMachines
    from previews.wiring import make_driver
    from schemas.settings import Settings

    assert isinstance(make_driver(Settings(myyc_data_dir=tmp_path)), LocalMachines)
    fly = make_driver(Settings(fly_api_token="fm2_x", fly_app="a", myyc_data_dir=tmp_path))
    assert isinstance(fly, FlyMachinesDriver)
    asyncio.run(fly.close())
    with pytest.raises(ValidationFailed):
        make_driver(Settings(fly_app="a", myyc_data_dir=tmp_path))
