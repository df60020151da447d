"""The Store contract: one suite, run on every adapter against the same kind of fresh database.

`store` is the Postgres adapter (psycopg) or the Supabase REST adapter (httpx → PostgrestFake
→ the same PostgreSQL, signed in with a service-role JWT). Row counts are read straight from
the database as the oracle. The last tests put both adapters on one database and check they
answer identically.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from clients.retry import RetryPolicy
from schemas.errors import Conflict, NotFound, ValidationFailed
from schemas.events import Cursor, Event
from schemas.pipeline import PIPELINE
from schemas.plan import Feature
from schemas.rows import ModelUsage, NewProject, NewRun
from schemas.status import LogLevel, ProjectStatus, RunStatus
from store.log_writer import event_id
from store.ports import EventRecord, Store
from store.postgres import PostgresStore
from store.supabase_rest import SupabaseRestStore
from tests.fakes.postgrest import PostgrestFake

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
T0 = 1_795_000_000.0  # a fixed epoch second in 2026: timestamps are deterministic


@pytest.fixture(params=["postgres", "supabase_rest"])
async def store(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[Store]:
    """Each adapter in turn, on a fresh migrated database."""
    if request.param == "postgres":
        pg = await PostgresStore.open(db_url)
        yield pg
        await pg.close()
        return
    fake = PostgrestFake(db_url)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://testserver") as http:
        rest = SupabaseRestStore(
            "http://testserver", fake.service_role_key(), http_client=http, policy=FAST
        )
        yield rest
        await rest.close()
    await fake.close()


@pytest.fixture
async def both(db_url: str) -> AsyncIterator[tuple[PostgresStore, SupabaseRestStore]]:
    """Both adapters on one database."""
    pg = await PostgresStore.open(db_url)
    fake = PostgrestFake(db_url)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://testserver") as http:
        rest = SupabaseRestStore(
            "http://testserver", fake.service_role_key(), http_client=http, policy=FAST
        )
        yield pg, rest
    await fake.close()
    await pg.close()


def _scalar(db_url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]


def _user(db_url: str) -> UUID:
    user_id = uuid.uuid4()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "insert into auth.users (id, email) values (%s, %s)", (user_id, f"{user_id}@x")
        )
    return user_id


def _events(
    project_id: UUID,
    writer: UUID,
    seqs: Iterable[int],
    *,
    agent: str = "planner",
    level: str = "info",
    start: float = T0,
    step: float = 0.001,
) -> list[EventRecord]:
    return [
        EventRecord(
            event_id(writer, s),
            project_id,
            None,
            agent,
            level,
            "log",
            f"line {s}",
            None if s % 3 else f'{{"n": {s}, "tags": ["a", "b"]}}',
            start + s * step,
            writer,
            s,
        )
        for s in seqs
    ]


async def _read_all(store: Store, project_id: UUID, *, limit: int = 1000, **kw: Any) -> list[Event]:
    events: list[Event] = []
    cursor = Cursor()
    while page := await store.read_events(project_id, after=cursor, limit=limit, **kw):
        for e in page:
            cursor.advance(e)
        events.extend(page)
    return events


def _key(e: Event) -> tuple[Any, ...]:
    return (e.timestamp, e.writer_id, e.seq)


# --------------------------------------------------------------------------- projects


async def test_create_and_get_project(store: Store) -> None:
    new = NewProject(title="Recipe app", description="share recipes", category="food-tech")
    created = await store.create_project(new)
    assert (created.title, created.description, created.category) == (
        "Recipe app",
        "share recipes",
        "food-tech",
    )
    assert created.status is ProjectStatus.spawning
    assert created.progress == 0
    assert created.user_id is None
    assert await store.get_project(created.id) == created


async def test_get_unknown_project_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        await store.get_project(uuid.uuid4())
    assert info.value.field == "project_id"


async def test_list_projects_newest_first_and_by_user(store: Store, db_url: str) -> None:
    alice, bob = _user(db_url), _user(db_url)
    made = [
        await store.create_project(NewProject(title=f"p{i}", user_id=alice if i % 2 else bob))
        for i in range(5)
    ]
    listed = await store.list_projects()
    assert [p.id for p in listed] == [p.id for p in reversed(made)]
    assert [p.title for p in await store.list_projects(user_id=alice)] == ["p3", "p1"]
    assert [p.title for p in await store.list_projects(user_id=bob, limit=2)] == ["p4", "p2"]
    assert await store.list_projects(user_id=uuid.uuid4()) == []
    assert await store.list_projects(limit=0) == []


async def test_negative_limit_is_a_validation_error(store: Store) -> None:
    with pytest.raises(ValidationFailed):
        await store.list_projects(limit=-1)


async def test_update_project(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    updated = await store.update_project(
        project.id,
        {"status": ProjectStatus.running, "progress": 40, "github_url": "https://github.com/o/r"},
    )
    assert (updated.status, updated.progress, updated.github_url) == (
        ProjectStatus.running,
        40,
        "https://github.com/o/r",
    )
    assert updated.updated_at > project.updated_at
    assert await store.get_project(project.id) == updated


async def test_update_unknown_project_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        await store.update_project(uuid.uuid4(), {"progress": 1})
    assert info.value.field == "project_id"


async def test_update_project_unknown_column_is_a_validation_error(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    with pytest.raises(ValidationFailed) as info:
        await store.update_project(project.id, {"title": "x", "bogus": 1})
    assert info.value.field == "bogus"


async def test_update_project_check_violation_is_a_validation_error(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    with pytest.raises(ValidationFailed) as info:
        await store.update_project(project.id, {"progress": 101})
    assert info.value.field == "projects_progress_check"
    assert (await store.get_project(project.id)).progress == 0


async def test_repeated_idempotency_key_is_a_conflict(store: Store, db_url: str) -> None:
    await store.create_project(NewProject(title="a", idempotency_key="k1"))
    with pytest.raises(Conflict):
        await store.create_project(NewProject(title="b", idempotency_key="k1"))
    assert _scalar(db_url, "select count(*) from projects") == 1


async def test_create_session(store: Store, db_url: str) -> None:
    user = _user(db_url)
    project = await store.create_project(NewProject(title="t", user_id=user))
    session = await store.create_session(project.id, user_id=user, vibe_text="cosy")
    assert (session.project_id, session.user_id, session.vibe_text) == (project.id, user, "cosy")
    assert session.status == "queued"
    with pytest.raises(NotFound) as info:
        await store.create_session(uuid.uuid4(), user_id=None, vibe_text=None)
    assert info.value.field == "project_id"


# --------------------------------------------------------------------------- builds


async def test_spawn_project_is_one_unit_and_idempotent(store: Store, db_url: str) -> None:
    user = _user(db_url)
    new = NewProject(
        title="Recipes",
        description="share them",
        category="food",
        user_id=user,
        idempotency_key="spawn-1",
    )
    spawned = await store.spawn_project(new, ["planner", "codegen", "verifier"])
    assert spawned.created
    project = await store.get_project(spawned.project_id)
    assert (project.title, project.status, project.user_id) == ("Recipes", "spawning", user)
    session = await store.get_session(spawned.build_id)
    assert (session.project_id, session.status, session.template, session.vibe_text) == (
        project.id,
        "queued",
        "webapp",
        "Recipes\n\nshare them",
    )
    assert session.options == {"category": "food"}
    runs = await store.list_runs(project_id=project.id)
    assert sorted((r.agent_name, r.agent_id, r.status, r.session_id) for r in runs) == [
        (a, a, RunStatus.pending, session.id) for a in ("codegen", "planner", "verifier")
    ]
    again = await store.spawn_project(new.model_copy(update={"title": "other"}), ["planner"])
    assert again[:3] == (spawned.project_id, spawned.build_id, False)
    assert _scalar(db_url, "select count(*) from agent_runs") == 3
    # No key: every call spawns.
    keyless = NewProject(title="Loose")
    first, second = await store.spawn_project(keyless, []), await store.spawn_project(keyless, [])
    assert (first.created, second.created) == (True, True)
    assert first.project_id != second.project_id


async def test_sessions_get_and_update(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    session = await store.create_session(project.id, user_id=None, vibe_text="v")
    assert await store.get_session(session.id) == session
    updated = await store.update_session(
        session.id,
        {"status": "running", "plan": {"features": ["a"]}, "environment": {"url": "http://x"}},
    )
    assert (updated.status, updated.plan, updated.environment) == (
        "running",
        {"features": ["a"]},
        {"url": "http://x"},
    )
    assert await store.get_session(session.id) == updated
    with pytest.raises(NotFound) as info:
        await store.get_session(uuid.uuid4())
    assert info.value.field == "build_id"
    with pytest.raises(NotFound):
        await store.update_session(uuid.uuid4(), {"status": "failed"})
    with pytest.raises(ValidationFailed) as info_v:
        await store.update_session(session.id, {"vibe_text": "x"})
    assert info_v.value.field == "vibe_text"
    with pytest.raises(ValidationFailed) as info_v:
        await store.update_session(session.id, {"status": "exploded"})
    assert info_v.value.field == "build_sessions_status_check"


async def test_plan_appends_in_order_and_keeps_planned_features(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    await store.add_plan(project.id, [])
    assert await store.list_plan(project.id) == []
    await store.add_plan(
        project.id,
        [
            Feature(feature="login", priority="high"),
            Feature(feature="feed"),
            Feature(feature="search", priority="low", notes="later"),
        ],
    )
    await store.add_plan(
        project.id, [Feature(feature="feed", priority="low", notes="dup"), Feature(feature="chat")]
    )
    plan = await store.list_plan(project.id)
    assert [(p.feature, p.priority, p.notes, p.status) for p in plan] == [
        ("login", "high", None, "planned"),
        ("feed", "medium", None, "planned"),
        ("search", "low", "later", "planned"),
        ("chat", "medium", None, "planned"),
    ]
    # The duplicate keeps its place; the new feature follows the ones before it.
    assert [p.position for p in plan] == [0, 1, 2, 4]
    with pytest.raises(NotFound) as info:
        await store.add_plan(uuid.uuid4(), [Feature(feature="x")])
    assert info.value.field == "project_id"


async def test_activity_log(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    await store.add_activity(project.id, "ai", "planned", {"features": 3})
    await store.add_activity(project.id, "user", "renamed", {})
    log = await store.list_activity(project.id)
    assert [(a.actor, a.action, a.details) for a in log] == [
        ("ai", "planned", {"features": 3}),
        ("user", "renamed", {}),
    ]
    with pytest.raises(ValidationFailed) as info:
        await store.add_activity(project.id, "robot", "x", {})
    assert info.value.field == "activity_log_actor_check"
    with pytest.raises(NotFound):
        await store.add_activity(uuid.uuid4(), "ai", "x", {})


# --------------------------------------------------------------------------- runs


async def test_create_and_get_run(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    run = await store.create_run(
        NewRun(agent_name="planner", project_id=project.id, metadata={"model": "offline", "n": 1})
    )
    assert (run.status, run.agent_id, run.metadata) == (
        RunStatus.pending,
        "planner",
        {"model": "offline", "n": 1},
    )
    assert (run.verification_evidence, run.progress_percent, run.result) == ([], 0.0, None)
    assert await store.get_run(run.id) == run


async def test_run_of_unknown_project_is_not_found(store: Store, db_url: str) -> None:
    with pytest.raises(NotFound) as info:
        await store.create_run(NewRun(agent_name="planner", project_id=uuid.uuid4()))
    assert info.value.field == "project_id"
    assert _scalar(db_url, "select count(*) from agent_runs") == 0


async def test_get_unknown_run_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        await store.get_run(uuid.uuid4())
    assert info.value.field == "run_id"


async def test_update_run_with_expected_status(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    run = await store.create_run(NewRun(agent_name="codegen", project_id=project.id))

    moved = await store.update_run(
        run.id,
        {"status": RunStatus.in_progress, "progress_percent": 12.5, "current_step": "writing"},
        expected_status=RunStatus.pending,
    )
    assert moved is not None
    assert (moved.status, moved.progress_percent, moved.current_step) == (
        RunStatus.in_progress,
        12.5,
        "writing",
    )

    stale = await store.update_run(
        run.id, {"status": RunStatus.failed}, expected_status=RunStatus.pending
    )
    assert stale is None
    assert (await store.get_run(run.id)).status is RunStatus.in_progress

    with pytest.raises(NotFound):
        await store.update_run(
            uuid.uuid4(), {"status": RunStatus.failed}, expected_status=RunStatus.pending
        )


async def test_update_run_json_columns_and_unguarded(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    run = await store.create_run(NewRun(agent_name="verifier", project_id=project.id))
    done = await store.update_run(
        run.id,
        {
            "result": {"files": ["a.py", "b.py"], "ok": True},
            "verification_evidence": [{"check": "build", "passed": True}],
            "metadata": {"attempt": 2},
            "verification_attempts": 1,
        },
    )
    assert done is not None
    assert done.result == {"files": ["a.py", "b.py"], "ok": True}
    assert done.verification_evidence == [{"check": "build", "passed": True}]
    assert (done.metadata, done.verification_attempts) == ({"attempt": 2}, 1)
    with pytest.raises(ValidationFailed) as info:
        await store.update_run(run.id, {"agent_name": "x"})
    assert info.value.field == "agent_name"
    with pytest.raises(ValidationFailed):
        await store.update_run(run.id, {"progress_percent": 150.0})


async def test_list_runs_filters_and_order(store: Store, db_url: str) -> None:
    user = _user(db_url)
    a = await store.create_project(NewProject(title="a", user_id=user))
    b = await store.create_project(NewProject(title="b"))
    runs_a = [
        await store.create_run(NewRun(agent_name=f"agent{i}", project_id=a.id, user_id=user))
        for i in range(3)
    ]
    run_b = await store.create_run(NewRun(agent_name="solo", project_id=b.id))
    await store.update_run(runs_a[0].id, {"status": RunStatus.completed})
    await store.update_run(runs_a[1].id, {"status": RunStatus.failed})

    assert [r.id for r in await store.list_runs()] == [run_b.id] + [r.id for r in reversed(runs_a)]
    assert [r.id for r in await store.list_runs(project_id=a.id)] == [
        r.id for r in reversed(runs_a)
    ]
    assert [r.id for r in await store.list_runs(project_id=a.id, active=True)] == [runs_a[2].id]
    assert [r.id for r in await store.list_runs(project_id=a.id, active=False)] == [
        runs_a[1].id,
        runs_a[0].id,
    ]
    assert [r.id for r in await store.list_runs(user_id=user, limit=1)] == [runs_a[2].id]
    assert [r.id for r in await store.list_runs(active=True)] == [run_b.id, runs_a[2].id]


# --------------------------------------------------------------------------- rollup


ROLLUPS = [
    pytest.param([], ProjectStatus.spawning, 0, id="no-runs-stays-spawning"),
    pytest.param([("pending", 0), ("pending", 0)], ProjectStatus.spawning, 0, id="all-pending"),
    pytest.param(
        [("in_progress", 50), ("pending", 0)], ProjectStatus.running, 25, id="one-working"
    ),
    pytest.param(
        [("verification_in_progress", 99), ("completed", 100)],
        ProjectStatus.running,
        99,
        id="floor-of-mean",
    ),
    pytest.param(
        [("completed", 100), ("completed", 100)], ProjectStatus.completed, 100, id="all-done"
    ),
    pytest.param(
        [("completed", 90), ("canceled", 0)], ProjectStatus.completed, 100, id="done-or-canceled"
    ),
    pytest.param([("completed", 100), ("failed", 30)], ProjectStatus.failed, 65, id="one-failed"),
    pytest.param([("canceled", 0), ("canceled", 0)], ProjectStatus.canceled, 0, id="all-canceled"),
]


@pytest.mark.parametrize(("runs", "status", "progress"), ROLLUPS)
async def test_rollup_project(
    store: Store, runs: list[tuple[str, float]], status: ProjectStatus, progress: int
) -> None:
    project = await store.create_project(NewProject(title="t"))
    for i, (run_status, percent) in enumerate(runs):
        run = await store.create_run(NewRun(agent_name=f"a{i}", project_id=project.id))
        await store.update_run(run.id, {"status": run_status, "progress_percent": percent})
    rolled = await store.rollup_project(project.id)
    assert (rolled.status, rolled.progress) == (status, progress)
    assert await store.get_project(project.id) == rolled


async def test_rollup_keeps_a_finished_project(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    await store.update_project(project.id, {"status": ProjectStatus.completed, "progress": 100})
    run = await store.create_run(NewRun(agent_name="late", project_id=project.id))
    await store.update_run(run.id, {"status": RunStatus.failed})
    rolled = await store.rollup_project(project.id)
    assert (rolled.status, rolled.progress) == (ProjectStatus.completed, 100)


async def test_rollup_of_unknown_project_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.rollup_project(uuid.uuid4())


# --------------------------------------------------------------------------- events


async def test_append_and_read_round_trip(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    writer = uuid.uuid4()
    session = await store.create_session(project.id, user_id=None, vibe_text=None)
    records = _events(project.id, writer, range(1, 7))
    records[0] = records[0]._replace(session_id=session.id, level="success", type="plan_created")
    await store.append_events(records)
    events = await store.read_events(project.id, after=Cursor())
    assert [
        (
            e.id,
            e.project_id,
            e.session_id,
            e.agent_name,
            e.level,
            e.type,
            e.message,
            e.writer_id,
            e.seq,
        )
        for e in events
    ] == [
        (
            r.id,
            r.project_id,
            r.session_id,
            r.agent_name,
            r.level,
            r.type,
            r.message,
            r.writer_id,
            r.seq,
        )
        for r in records
    ]
    assert [e.data for e in events] == [
        None,
        None,
        {"n": 3, "tags": ["a", "b"]},
        None,
        None,
        {"n": 6, "tags": ["a", "b"]},
    ]
    assert [e.timestamp.timestamp() for e in events] == pytest.approx(
        [r.timestamp for r in records], abs=1e-6
    )
    await store.append_events([])  # nothing to do


async def test_reappending_a_batch_stores_nothing_twice(store: Store, db_url: str) -> None:
    project = await store.create_project(NewProject(title="t"))
    writer = uuid.uuid4()
    batch = _events(project.id, writer, range(1, 51))
    await store.append_events(batch)
    await store.append_events(batch)
    await store.append_events(_events(project.id, writer, range(41, 81)))  # 10 stored, 30 new
    assert _scalar(db_url, "select count(*) from project_logs") == 80
    assert _scalar(db_url, "select count(distinct (writer_id, seq)) from project_logs") == 80
    events = await _read_all(store, project.id)
    assert [e.seq for e in events] == list(range(1, 81))


async def test_cursor_reads_three_interleaved_writers_exactly_once(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    rng = random.Random(20261121)
    writers = [uuid.uuid4() for _ in range(3)]
    clocks = {w: T0 for w in writers}
    seqs = {w: 0 for w in writers}
    cursor = Cursor()
    seen: list[Event] = []
    for _round in range(6):
        # Each round, every writer logs a few events at non-decreasing times on a 1 ms grid,
        # so writers tie with each other (and with themselves) often.
        for w in writers:
            batch = []
            for _ in range(rng.randint(0, 9)):
                clocks[w] += rng.choice([0.0, 0.001, 0.002])
                seqs[w] += 1
                batch.extend(_events(project.id, w, [seqs[w]], start=clocks[w], step=0.0))
            await store.append_events(batch)
        # Read part of it, in pages of 4: later rounds append behind the cursor.
        for _ in range(3):
            page = await store.read_events(project.id, after=cursor, limit=4)
            assert len(page) <= 4
            assert page == sorted(page, key=_key)
            for e in page:
                assert not cursor.seen(e)
                cursor.advance(e)
            seen.extend(page)
    while page := await store.read_events(project.id, after=cursor, limit=4):
        for e in page:
            cursor.advance(e)
        seen.extend(page)
    assert len({e.id for e in seen}) == len(seen) == sum(seqs.values())
    for w in writers:
        assert [e.seq for e in seen if e.writer_id == w] == list(range(1, seqs[w] + 1))
    assert cursor.positions == {w: s for w, s in seqs.items() if s}


async def test_read_events_filters_by_agent_and_level(store: Store) -> None:
    project = await store.create_project(NewProject(title="t"))
    w1, w2 = uuid.uuid4(), uuid.uuid4()
    await store.append_events(
        _events(project.id, w1, range(1, 5), agent="planner")
        + _events(project.id, w1, range(5, 9), agent="codegen", level="error")
        + _events(project.id, w2, range(1, 4), agent="codegen", level="warning")
    )
    codegen = await _read_all(store, project.id, agent="codegen")
    assert sorted((e.writer_id == w1, e.seq) for e in codegen) == sorted(
        [(True, s) for s in range(5, 9)] + [(False, s) for s in range(1, 4)]
    )
    errors = await _read_all(store, project.id, level=LogLevel.error, limit=3)
    assert [(e.writer_id, e.seq) for e in errors] == [(w1, s) for s in range(5, 9)]
    assert (
        await store.read_events(project.id, after=Cursor(), agent="codegen", level=LogLevel.success)
        == []
    )
    assert await store.read_events(uuid.uuid4(), after=Cursor()) == []


async def test_unknown_project_rejects_the_whole_batch(store: Store, db_url: str) -> None:
    project = await store.create_project(NewProject(title="t"))
    writer = uuid.uuid4()
    good = _events(project.id, writer, range(1, 4))
    bad = _events(uuid.uuid4(), writer, [4])
    with pytest.raises(NotFound) as info:
        await store.append_events(good + bad)
    assert info.value.field == "project_id"
    assert _scalar(db_url, "select count(*) from project_logs") == 0
    # …and also when part of the batch was stored before (the merge path).
    await store.append_events(good[:2])
    with pytest.raises(NotFound):
        await store.append_events(good + bad)
    assert _scalar(db_url, "select count(*) from project_logs") == 2


async def test_bad_level_is_a_validation_error(store: Store, db_url: str) -> None:
    project = await store.create_project(NewProject(title="t"))
    batch = _events(project.id, uuid.uuid4(), [1], level="fatal")
    with pytest.raises(ValidationFailed) as info:
        await store.append_events(batch)
    assert info.value.field == "project_logs_level_check"
    assert _scalar(db_url, "select count(*) from project_logs") == 0


# --------------------------------------------------------------------------- both at once


async def test_adapters_store_identically(both: tuple[PostgresStore, SupabaseRestStore]) -> None:
    pg, rest = both
    stored = []
    for store in (pg, rest):
        project = await store.create_project(NewProject(title="t"))
        writer = uuid.uuid4()  # ids derive from it: each adapter stores its own copy
        odd = [
            EventRecord(
                event_id(writer, 1), project.id, None, "planner", "info", "log",
                "tab\there, newline\nthere, back\\slash, NUL\x00, quote \" and é 🎉",
                '{"path": "C:\\\\x", "list": [1, 2.50, null], "s": "tab\\t"}',
                T0 + 0.001, writer, 1,  # 0.001 is 0.000999… in binary: truncated, not rounded
            ),
            EventRecord(event_id(writer, 2), project.id, None, "codegen\x00", "error",
                        "file:update", "", None, T0 + 0.9999996, writer, 2),
        ]  # fmt: skip
        await store.append_events(odd)
        stored.append(await pg.read_events(project.id, after=Cursor()))
    via_pg, via_rest = stored
    mine = {"id": None, "project_id": None, "writer_id": None}
    assert [e.model_copy(update=mine) for e in via_rest] == [
        e.model_copy(update=mine) for e in via_pg
    ]
    assert via_pg[0].message.endswith('NUL\ufffd, quote " and é 🎉')
    assert via_pg[0].timestamp.microsecond == 999


async def test_adapters_read_identically(both: tuple[PostgresStore, SupabaseRestStore]) -> None:
    pg, rest = both
    project = await pg.create_project(NewProject(title="t"))
    other = await pg.create_project(NewProject(title="other"))
    rng = random.Random(7)
    writers = [uuid.uuid4() for _ in range(5)]
    for w in writers:
        clock = T0 + rng.random()
        batch = []
        for s in range(1, rng.randint(5, 40)):
            clock += rng.choice([0.0, 0.0005, 0.003])
            agent = rng.choice(["planner", "codegen"])
            level = rng.choice(["info", "info", "error"])
            batch.extend(_events(project.id, w, [s], agent=agent, level=level, start=clock, step=0))
        await pg.append_events(batch)
    await rest.append_events(_events(other.id, writers[0], range(1, 10)))

    for _ in range(60):
        positions = {w: rng.randint(0, 45) for w in rng.sample(writers, rng.randint(0, 5))}
        if rng.random() < 0.3:
            positions[uuid.uuid4()] = rng.randint(1, 5)  # a writer this project never had
        cursor = Cursor(positions)
        kw: dict[str, Any] = {"limit": rng.choice([1, 3, 10, 1000])}
        if rng.random() < 0.3:
            kw["agent"] = "codegen"
        if rng.random() < 0.3:
            kw["level"] = LogLevel.error
        assert await rest.read_events(project.id, after=cursor, **kw) == await pg.read_events(
            project.id, after=cursor, **kw
        )

    run = await rest.create_run(NewRun(agent_name="planner", project_id=project.id))
    assert await pg.get_run(run.id) == run
    assert await rest.list_projects() == await pg.list_projects()
    assert await rest.list_runs(active=True) == await pg.list_runs(active=True)
    assert await rest.rollup_project(project.id) == await pg.get_project(project.id)


async def test_put_files_upserts_the_projects_files(store, db_url: str) -> None:
    project = await store.create_project(NewProject(title="files"))
    await store.put_files(project.id, {"index.html": "<h1>v1</h1>", "src/app.js": "let x = 1"})
    await store.put_files(project.id, {"index.html": "<h1>v2</h1>"})
    await store.put_files(project.id, {})
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cur = await conn.execute(
            "select path, content from project_files where project_id = %s order by path",
            (project.id,),
        )
        rows = await cur.fetchall()
    assert rows == [("index.html", "<h1>v2</h1>"), ("src/app.js", "let x = 1")]
    with pytest.raises(NotFound):
        await store.put_files(uuid.uuid4(), {"a.txt": "x"})


# --------------------------------------------------------------------------- the pipeline
# Leases, approvals, the ledger, settings, prompts, versioned files, spec chunks.


def _rows(db_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


async def _build(store: Store, key: str | None = None) -> tuple[UUID, UUID]:
    spawned = await store.spawn_build(
        NewProject(title="Shop", idempotency_key=key), PIPELINE, template="marketplace",
        vibe_text="Shop\n\nSell things", options={"environmentMode": "branch"},
    )  # fmt: skip
    return spawned.project_id, spawned.build_id


async def test_spawn_build_keeps_seed_004s_fields_and_is_idempotent(store: Store) -> None:
    pid, bid = await _build(store, key="k-1")
    session = await store.get_session(bid)
    assert (session.template, session.vibe_text) == ("marketplace", "Shop\n\nSell things")
    assert session.options["environmentMode"] == "branch"
    assert {r.agent_name for r in await store.list_runs(project_id=pid)} == set(PIPELINE)
    again = await store.spawn_build(NewProject(title="Other", idempotency_key="k-1"), PIPELINE,
                                    template="saas", vibe_text="x", options={})  # fmt: skip
    assert (again.project_id, again.build_id, again.created) == (pid, bid, False)


async def test_leases(store: Store, db_url: str) -> None:
    _, bid = await _build(store)
    assert [s.id for s in await store.reclaimable_builds(0.0)] == [bid]  # never claimed
    held = await store.claim_build(bid, "h:1:a", 30)
    assert held is not None
    assert held.lease_owner == "h:1:a"
    assert held.status.value == "running"
    assert await store.claim_build(bid, "h:1:a", 30) is not None  # keeping it is fine
    assert await store.claim_build(bid, "h:2:b", 30) is None
    assert await store.build_lease_owners() == ["h:1:a"]
    assert await store.reclaimable_builds(0.0) == []
    assert [s.id for s in await store.reclaimable_builds(0.0, dead_owners=["h:1:a"])] == [bid]
    assert await store.renew_build_lease(bid, "h:2:b", 30) is None
    renewed = await store.renew_build_lease(bid, "h:1:a", 30)
    assert renewed is not None
    assert renewed.lease_expires_at is not None
    await store.release_build_lease(bid, "h:2:b")  # not the owner: nothing changes
    assert (await store.get_session(bid)).lease_owner == "h:1:a"
    await store.release_build_lease(bid, "h:1:a")
    assert (await store.get_session(bid)).lease_owner is None
    taken = await store.claim_build(bid, "h:2:b", 30)
    assert taken is not None
    assert taken.resume_count == 0
    _rows(db_url, "update build_sessions set status = 'succeeded' where id = %s", bid)
    assert await store.claim_build(bid, "h:3:c", 30) is None  # an ended build is nobody's


async def test_approvals(store: Store, db_url: str) -> None:
    pid, bid = await _build(store)
    row = {"token": "t" * 32, "session_id": bid, "project_id": pid, "run_id": None,
           "user_id": None, "attempt": 1, "reason": "checks failed", "evidence": {"a": 1},
           "expires_at": datetime.now(UTC) + timedelta(hours=1)}  # fmt: skip
    made = await store.create_approval(row)
    assert made.status == "pending"
    assert made.evidence == {"a": 1}
    # The same escalation again (a resumed node) keeps the first token.
    assert (await store.create_approval({**row, "token": "u" * 32})).token == "t" * 32
    assert (await store.pending_approval(bid)).token == "t" * 32  # type: ignore[union-attr]
    # A build waiting on a person is not reclaimable.
    _rows(db_url, "update build_sessions set status = 'running' where id = %s", bid)
    assert await store.reclaimable_builds(0.0) == []
    decided = await store.decide_approval("t" * 32, "approve", "ok")
    assert decided is not None
    assert decided.status == "approve"
    assert decided.note == "ok"
    assert await store.decide_approval("t" * 32, "reject", None) is None  # decided once
    late = await store.create_approval(
        {
            **row,
            "token": "v" * 32,
            "attempt": 2,
            "expires_at": datetime.now(UTC) - timedelta(seconds=1),
        }
    )
    assert late.status == "pending"
    assert [a.token for a in await store.expire_approvals()] == ["v" * 32]
    assert await store.expire_approvals() == []
    assert (await store.get_approval("v" * 32)).status == "expired"


async def test_the_cost_ledger_settings_and_prompts(store: Store) -> None:
    pid, bid = await _build(store)
    for tokens in (10, 20):
        await store.record_usage(ModelUsage(
            project_id=pid, session_id=bid, agent_name="codegen", provider="openai",
            model="gpt-4.1-mini", prompt_name="codegen", prompt_version=1, input_tokens=tokens,
            output_tokens=2 * tokens, cost_usd=0.001, attempts=2,
        ))  # fmt: skip
    usage = await store.list_usage(pid)
    assert [(u.input_tokens, u.output_tokens, u.attempts) for u in usage] == [
        (10, 20, 2),
        (20, 40, 2),
    ]
    assert usage[0].cost_usd == 0.001
    assert await store.get_setting("model") is None
    await store.put_setting("model", {"provider": "anthropic"})
    await store.put_setting("model", {"provider": "xai", "model": "grok-4"})
    assert await store.get_setting("model") == {"provider": "xai", "model": "grok-4"}
    prompt = await store.active_prompt("codegen")
    assert prompt is not None
    assert prompt.version == 1
    assert await store.active_prompt("nope") is None


async def test_files_keep_their_version_until_their_content_changes(
    store: Store, db_url: str
) -> None:
    pid, bid = await _build(store)
    await store.put_files(pid, {"index.html": "<p>1</p>", "app.js": "1"})
    await store.put_files(pid, {"index.html": "<p>1</p>"})  # the same again
    await store.put_files(pid, {"app.js": "2"})
    assert await store.get_files(pid) == {"app.js": "2", "index.html": "<p>1</p>"}
    assert await store.file_versions(pid) == {"index.html": 1, "app.js": 2}
    await store.put_spec_chunks(bid, ["one", "two"])
    await store.put_spec_chunks(bid, ["one", "two"])
    chunks = _rows(db_url, "select chunk_index, content from spec_chunks where session_id = %s"
                  " order by 1", bid)  # fmt: skip
    assert chunks == [(0, "one"), (1, "two")]


async def test_writing_a_file_twice_through_the_preview_store_answers_the_row(db_url: str) -> None:
    """Regression: the version trigger cancelled an update of unchanged content, so the
    preview store's upsert got no row back and `POST /projects/{id}/files` answered 500."""
    from store.preview_store import PostgresPreviewStore

    pg = await PostgresStore.open(db_url)
    files = PostgresPreviewStore.of(pg)
    try:
        project = await pg.create_project(NewProject(title="files"))
        first = await files.put_file(project.id, "a.txt", "same")
        again = await files.put_file(project.id, "a.txt", "same")
        assert (again.path, again.content, again.updated_at) == ("a.txt", "same", first.updated_at)
        assert await pg.file_versions(project.id) == {"a.txt": 1}
    finally:
        await pg.close()
