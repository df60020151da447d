"""The Supabase REST path under faults: LogWriter → SupabaseRestStore → PostgrestFake → Postgres.

Faults are the fake's switches (bursts of 429 with Retry-After, 503s from PostgREST, 502 pages
from a proxy, answers lost after the commit), so the real adapter, the real retry rules and the
real LogWriter are exercised end to end. The last tests check that the fake enforces what
Supabase enforces: JWTs and row level security.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from clients.retry import RetryPolicy
from schemas.errors import (
    Conflict,
    ErrorCode,
    MyycError,
    NotFound,
    StoreUnavailable,
    ValidationFailed,
)
from schemas.events import Cursor
from schemas.rows import NewProject, NewRun
from schemas.status import RunStatus
from store.log_writer import LogWriter, event_id
from store.ports import EventRecord
from store.supabase_rest import (
    RestForbidden,
    RestUnauthorized,
    RestUnavailable,
    SupabaseRestStore,
    error_from_response,
)
from tests.fakes.postgrest import PostgrestFake, sign_jwt

FAST = RetryPolicy(max_attempts=4, base_delay=0.005, max_delay=0.02)
WRITER_POLICY = RetryPolicy(max_attempts=1_000_000, base_delay=0.005, max_delay=0.05)
BASE = "http://testserver"
PARTS = "Invalid number of parts:"


@pytest.fixture
async def fake(db_url: str) -> AsyncIterator[PostgrestFake]:
    """PostgREST on a fresh database."""
    fake = PostgrestFake(db_url)
    yield fake
    await fake.close()


@pytest.fixture
async def http(fake: PostgrestFake) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired to the fake in-process."""
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE) as client:
        yield client


@pytest.fixture
def rest(fake: PostgrestFake, http: httpx.AsyncClient) -> SupabaseRestStore:
    """The REST adapter, signed in as the service role."""
    return SupabaseRestStore(BASE, fake.service_role_key(), http_client=http, policy=FAST)


def _rows(db_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query, params).fetchall()


def _record(project_id: UUID, writer: UUID, seq: int) -> EventRecord:
    return EventRecord(
        event_id(writer, seq),
        project_id,
        None,
        "planner",
        "info",
        "log",
        f"line {seq}",
        None,
        1_795_000_000.0 + seq,
        writer,
        seq,
    )


# --------------------------------------------------------------------------- the LogWriter


async def test_log_writer_stores_every_event_once_through_bursts_of_failures(
    fake: PostgrestFake, rest: SupabaseRestStore, db_url: str, spool_dir: Path
) -> None:
    project = await rest.create_project(NewProject(title="bursts"))
    writers = [
        LogWriter(rest, batch_size=250, policy=WRITER_POLICY, retry_for=60, spool_dir=spool_dir)
        for _ in range(3)
    ]
    bursts: list[dict[str, Any]] = [
        {"status": 429, "retry_after": 0.02},
        {"status": 503},
        {"status": 503, "after_commit": True},  # stored, but the answer is lost
        {"status": 429, "retry_after": 0.01},
        {"status": 502},  # a proxy's HTML page
    ]
    for w in writers:
        await w.start()
    total = 5000
    per_chunk = total // len(bursts)
    logged = 0
    for burst in bursts:
        fake.fail_next(4, **burst)
        for i in range(per_chunk):
            await writers[i % 3].log(project.id, f"agent{i % 3}", f"event {logged}")
            logged += 1
        # Every failure is served to these writers' flushes: each retry is one request.
        await asyncio.gather(*(w.flush() for w in writers))
        assert fake.pending_failures == 0
    for w in writers:
        await w.close()

    assert fake.failures_served == 4 * len(bursts)
    assert sum(w.retries for w in writers) >= 4 * len(bursts)
    assert sum(w.persisted for w in writers) == total
    assert [w.spooled for w in writers] == [0, 0, 0]
    [(count, distinct)] = _rows(
        db_url, "select count(*), count(distinct (writer_id, seq)) from project_logs"
    )
    assert count == distinct == total
    for w in writers:
        seqs = [
            s
            for (s,) in _rows(
                db_url,
                'select seq from project_logs where writer_id = %s order by "timestamp", seq',
                w.writer_id,
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1))
    # A reader following the cursor through the REST adapter sees each event once.
    cursor, seen = Cursor(), 0
    while page := await rest.read_events(project.id, after=cursor, limit=1000):
        for e in page:
            assert not cursor.seen(e)
            cursor.advance(e)
        seen += len(page)
    assert seen == total


async def test_append_events_leaves_the_retry_to_the_caller(
    fake: PostgrestFake, rest: SupabaseRestStore, db_url: str
) -> None:
    project = await rest.create_project(NewProject(title="t"))
    batch = [_record(project.id, uuid.uuid4(), s) for s in range(1, 4)]
    fake.fail_next(1, status=429, retry_after=0.25)
    with pytest.raises(RestUnavailable) as info:
        await rest.append_events(batch)
    assert (info.value.status, info.value.retry_after) == (429, 0.25)
    assert fake.requests[("POST", "project_logs")] == 1
    seen = fake.history[-1]
    assert (seen.query, seen.prefer) == (
        "on_conflict=id",
        "return=minimal,resolution=ignore-duplicates",
    )
    await rest.append_events(batch)
    assert _rows(db_url, "select count(*) from project_logs") == [(3,)]


# --------------------------------------------------------------------------- the adapter's retries


async def test_reads_are_retried_on_503(fake: PostgrestFake, rest: SupabaseRestStore) -> None:
    project = await rest.create_project(NewProject(title="t"))
    fake.fail_next(2, status=503)
    assert await rest.get_project(project.id) == project
    assert fake.requests[("GET", "projects")] == 3


async def test_retries_stop_after_the_policy(fake: PostgrestFake, rest: SupabaseRestStore) -> None:
    fake.fail_next(6, status=502)
    with pytest.raises(RestUnavailable) as info:
        await rest.list_projects()
    assert info.value.status == 502
    assert fake.requests[("GET", "projects")] == FAST.max_attempts
    assert fake.pending_failures == 6 - FAST.max_attempts


async def test_a_create_whose_answer_is_lost_is_not_repeated(
    fake: PostgrestFake, rest: SupabaseRestStore, db_url: str
) -> None:
    fake.fail_next(1, status=503, after_commit=True)
    with pytest.raises(StoreUnavailable):
        await rest.create_project(NewProject(title="once"))
    assert fake.requests[("POST", "projects")] == 1
    assert _rows(db_url, "select title from projects") == [("once",)]


@pytest.mark.parametrize(
    "fault",
    [{"status": 429, "retry_after": 0.01}, {"status": 504}],  # 504: PGRST003, no pool slot
    ids=["rate-limited", "pool-timeout"],
)
async def test_a_create_refused_before_the_database_is_retried(
    fake: PostgrestFake, rest: SupabaseRestStore, db_url: str, fault: dict[str, Any]
) -> None:
    fake.fail_next(1, **fault)
    await rest.create_project(NewProject(title="later"))
    assert fake.requests[("POST", "projects")] == 2
    assert _rows(db_url, "select title from projects") == [("later",)]


async def test_a_guarded_update_whose_answer_was_lost_still_returns_the_row(
    fake: PostgrestFake, rest: SupabaseRestStore
) -> None:
    project = await rest.create_project(NewProject(title="t"))
    run = await rest.create_run(NewRun(agent_name="codegen", project_id=project.id))
    fake.fail_next(1, status=503, after_commit=True)
    moved = await rest.update_run(
        run.id, {"status": RunStatus.in_progress}, expected_status=RunStatus.pending
    )
    assert moved is not None
    assert moved.status is RunStatus.in_progress
    assert fake.requests[("PATCH", "agent_runs")] == 2
    # A real race is still a race: someone else's move is not mistaken for ours.
    assert (
        await rest.update_run(
            run.id, {"status": RunStatus.failed}, expected_status=RunStatus.pending
        )
        is None
    )


async def test_a_function_error_is_not_retried(
    fake: PostgrestFake, rest: SupabaseRestStore
) -> None:
    # rollup_project raises P0002 for an unknown project: PostgREST answers 500, P0* class.
    with pytest.raises(NotFound):
        await rest.rollup_project(uuid.uuid4())
    assert fake.requests[("POST", "rpc/rollup_project")] == 1


async def test_connection_refused_is_store_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = SupabaseRestStore(f"http://127.0.0.1:{port}", "key", policy=FAST, timeout=2.0)
    try:
        with pytest.raises(RestUnavailable) as info:
            await store.get_project(uuid.uuid4())
        assert info.value.status is None
        with pytest.raises(StoreUnavailable):
            await store.append_events([_record(uuid.uuid4(), uuid.uuid4(), 1)])
    finally:
        await store.close()


# --------------------------------------------------------------------------- auth and RLS


async def test_bad_and_expired_jwts_are_refused(
    fake: PostgrestFake, http: httpx.AsyncClient
) -> None:
    anon = fake.anon_key()
    wrong_secret = sign_jwt("another-secret-that-is-also-32-bytes-long", {"role": "service_role"})
    for token, message in [
        ("not-a-jwt", f"JWSError (CompactDecodeError {PARTS} Expected 3 parts; got 1)"),
        (fake.sign({"role": "service_role"}, expires_in=-3600), "JWT expired"),
        (wrong_secret, "JWSError JWSInvalidSignature"),
    ]:
        r = await http.get(
            "/rest/v1/projects", headers={"apikey": anon, "Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 401
        assert r.json() == {"code": "PGRST301", "details": None, "hint": None, "message": message}
        assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    r = await http.get("/rest/v1/projects")
    assert (r.status_code, r.json()["message"]) == (401, "No API key found in request")


def _pgrst(code: str | None, message: str, details: str | None = None) -> bytes:
    return json.dumps({"code": code, "message": message, "details": details, "hint": None}).encode()


FK_DETAIL = (
    'Key (project_id)=(0d9b1c3e-1111-4111-8111-111111111111) is not present in table "projects".'
)
ERRORS = [
    (409, _pgrst("23505", "duplicate key value violates unique constraint \"p\""), Conflict, None),
    (409, _pgrst("23503", "insert or update on table \"agent_runs\" violates foreign key "
                 "constraint \"agent_runs_project_id_fkey\"", FK_DETAIL), NotFound, "project_id"),
    (500, _pgrst("P0002", "project 0d9b1c3e not found"), NotFound, None),
    (400, _pgrst("23514", 'new row for relation "projects" violates check constraint '
                 '"projects_progress_check"'), ValidationFailed, "projects_progress_check"),
    (400, _pgrst("23502", 'null value in column "title" of relation "projects" violates '
                 "not-null constraint"), ValidationFailed, "title"),
    (400, _pgrst("22P02", 'invalid input syntax for type uuid: "x"'), ValidationFailed, None),
    (400, _pgrst("PGRST204", "Could not find the 'x' column of 'projects' in the schema cache"),
     ValidationFailed, None),
    (404, _pgrst("PGRST205", "Could not find the table 'public.x' in the schema cache"),
     MyycError, None),
    (404, b"", NotFound, None),
    (401, _pgrst("PGRST301", "JWT expired"), RestUnauthorized, None),
    (401, b'{"message":"Invalid API key"}', RestUnauthorized, None),
    (403, _pgrst("42501", "permission denied for table projects"), RestForbidden, None),
    (429, b'{"message":"API rate limit exceeded"}', RestUnavailable, None),
    (503, _pgrst("PGRST001", "Database client error. Retrying the connection."),
     RestUnavailable, None),
    (504, _pgrst("PGRST003", "Timed out acquiring connection from connection pool."),
     RestUnavailable, None),
    (500, _pgrst("40001", "could not serialize access"), RestUnavailable, None),
    (502, b"<html>bad gateway</html>", RestUnavailable, None),
    (500, _pgrst("XX000", "internal error"), MyycError, None),
    (400, _pgrst("PGRST100", '"failed to parse filter (x)"'), MyycError, None),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "kind", "field"), ERRORS)
def test_error_from_response(
    status: int, body: bytes, kind: type[MyycError], field: str | None
) -> None:
    error = error_from_response(status, body, {"Retry-After": "2"}, now=0.0)
    assert type(error) is kind
    assert error.field == field
    if isinstance(error, RestUnavailable):
        assert (error.status, error.retry_after) == (status, 2.0)


async def test_a_refused_key_keeps_the_events(
    fake: PostgrestFake, rest: SupabaseRestStore, http: httpx.AsyncClient, spool_dir: Path
) -> None:
    project = await rest.create_project(NewProject(title="t"))
    expired = SupabaseRestStore(BASE, fake.sign({"role": "service_role"}, expires_in=-60),
                                http_client=http, policy=FAST)  # fmt: skip
    async with LogWriter(expired, policy=WRITER_POLICY, retry_for=0.05, spool_dir=spool_dir) as w:
        for i in range(10):
            await w.log(project.id, "planner", f"line {i}")
        await w.flush()
        # Spooled for a later replay, not dead-lettered as if the events were at fault.
        assert (w.spooled, w.rejected, w.persisted) == (10, 0, 0)


async def test_the_store_reports_a_refused_key(
    fake: PostgrestFake, http: httpx.AsyncClient
) -> None:
    expired = fake.sign({"role": "service_role"}, expires_in=-3600)
    store = SupabaseRestStore(BASE, expired, http_client=http, policy=FAST)
    with pytest.raises(RestUnauthorized) as info:
        await store.list_projects()
    assert info.value.code is ErrorCode.unauthorized
    assert isinstance(info.value, StoreUnavailable)
    assert fake.requests[("GET", "projects")] == 1


async def test_rls_is_real_through_the_fake(
    fake: PostgrestFake, rest: SupabaseRestStore, http: httpx.AsyncClient, db_url: str
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db_url, autocommit=True) as conn:
        for u in (alice, bob):
            conn.execute("insert into auth.users (id) values (%s)", (u,))
    mine = await rest.create_project(NewProject(title="alice's", user_id=alice))
    theirs = await rest.create_project(NewProject(title="bob's", user_id=bob))
    writer = uuid.uuid4()
    await rest.append_events([_record(mine.id, writer, 1), _record(theirs.id, writer, 2)])
    anon = fake.anon_key()

    async def logs(token: str) -> list[Any]:
        r = await http.get(
            "/rest/v1/project_logs",
            params={"select": "project_id,seq", "order": "seq"},
            headers={"apikey": anon, "Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200
        return [(UUID(row["project_id"]), row["seq"]) for row in r.json()]

    assert await logs(anon) == []
    assert await logs(fake.user_token(str(alice))) == [(mine.id, 1)]
    assert await logs(fake.user_token(str(bob))) == [(theirs.id, 2)]
    assert await logs(fake.service_role_key()) == [(mine.id, 1), (theirs.id, 2)]

    row = {
        "id": str(uuid.uuid4()),
        "project_id": str(mine.id),
        "agent_name": "x",
        "message": "forged",
        "writer_id": str(writer),
        "seq": 9,
    }
    for token, status in [(anon, 401), (fake.user_token(str(alice)), 403)]:
        r = await http.post(
            "/rest/v1/project_logs",
            json=row,
            headers={"apikey": anon, "Authorization": f"Bearer {token}"},
        )
        assert (r.status_code, r.json()["code"]) == (status, "42501")
    assert _rows(db_url, "select count(*) from project_logs") == [(2,)]
