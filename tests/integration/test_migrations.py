"""The migrations (supabase/migrations + store/sql/bootstrap.sql) on the real embedded Postgres.

- They apply to a brand-new empty database, record each version once, and a second run
  returns [] and changes nothing (pg_dump --schema-only plus a catalog and data fingerprint).
- The bootstrap alone is idempotent when run twice by hand.
- Two concurrent `migrate()` calls on a fresh database both succeed and apply each version
  once (they serialise on the advisory lock; the test holds the lock until both wait on it).
- The seeds' tables and columns exist with the seeds' types; the status CHECKs reject bad
  values and accept exactly the values of `schemas.status`; `updated_at` triggers bump;
  deleting a project (or its owner) cascades; `rollup_project` as a table test; the
  `auth.uid()/role()/jwt()` shims read `request.jwt.claims` and the legacy per-claim settings.
- `discover()` refuses a badly named migration file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import re
import time
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

import store.migrate
from schemas.status import BuildStatus, LogLevel, PreviewStatus, ProjectStatus, RunStatus
from store.migrate import bootstrap_sql, discover, migrate

EXPECTED_MIGRATIONS = [
    ("20261121000100", "control_plane"),
    ("20261121000200", "workspace"),
    ("20261121000300", "previews"),
    ("20261121000400", "drift"),
    ("20261121000500", "project_files"),
    ("20261121000600", "spawn"),
    ("20261121000700", "read_events"),
    ("20261121000800", "project_status_events"),
    ("20261129000100", "pipeline"),
]

_fresh_counter = itertools.count()


def _with_db(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}?{query}" if query else f"{base}/{name}"


@pytest.fixture
def fresh_url(server_url: str) -> Any:
    """A brand-new, empty database (from template0: nothing of myyc in it); dropped after."""
    name = f"fresh_{next(_fresh_counter)}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    yield _with_db(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


# --------------------------------------------------------------------------- fingerprints


def pg_dump_path() -> Path:
    """The pg_dump of the pgserver wheel (found without importing pgserver)."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None
    assert spec.origin is not None
    path = Path(spec.origin).parent / "pginstall" / "bin" / "pg_dump"
    assert path.is_file(), path
    return path


CATALOG_FINGERPRINT = """
select json_build_object(
  'roles', (select json_agg(json_build_object('r', rolname, 'login', rolcanlogin,
              'inherit', rolinherit, 'bypassrls', rolbypassrls, 'super', rolsuper,
              'member_of', (select array_agg(g.rolname order by g.rolname)
                            from pg_auth_members m join pg_roles g on g.oid = m.roleid
                            where m.member = r.oid)) order by rolname)
            from pg_roles r
            where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')),
  'objects', (select json_agg(json_build_object('n', n.nspname, 'c', c.relname,
              'k', c.relkind, 'rls', c.relrowsecurity, 'acl', c.relacl::text,
              'opts', c.reloptions) order by n.nspname, c.relname)
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname in ('public', 'auth', 'extensions', 'supabase_migrations')),
  'columns', (select json_agg(json_build_object('t', table_schema || '.' || table_name,
              'c', column_name, 'ty', udt_name, 'null', is_nullable, 'd', column_default)
              order by table_schema, table_name, ordinal_position)
            from information_schema.columns
            where table_schema in ('public', 'auth', 'supabase_migrations')),
  'constraints', (select json_agg(json_build_object('n', conname,
              'def', pg_get_constraintdef(oid)) order by conrelid::regclass::text, conname)
            from pg_constraint where connamespace in
              (select oid from pg_namespace where nspname in ('public', 'auth'))),
  'indexes', (select json_agg(indexdef order by indexname) from pg_indexes
            where schemaname in ('public', 'auth')),
  'policies', (select json_agg(json_build_object('t', tablename, 'p', policyname,
              'cmd', cmd, 'roles', roles, 'q', qual, 'wc', with_check)
              order by tablename, policyname) from pg_policies),
  'triggers', (select json_agg(json_build_object('t', tgrelid::regclass::text,
              'n', tgname, 'def', pg_get_triggerdef(oid)) order by tgrelid::regclass::text, tgname)
            from pg_trigger where not tgisinternal),
  'functions', (select json_agg(json_build_object('f', p.oid::regprocedure::text,
              'src', p.prosrc, 'acl', p.proacl::text, 'secdef', p.prosecdef)
              order by p.oid::regprocedure::text)
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname in ('public', 'auth')),
  'publication', (select json_agg(schemaname || '.' || tablename order by tablename)
            from pg_publication_tables where pubname = 'supabase_realtime'),
  'migrations', (select json_agg(json_build_object('v', version, 'n', name,
              's', statements) order by version) from supabase_migrations.schema_migrations),
  'prompts', (select json_agg(json_build_object('n', name, 'v', version, 'a', is_active,
              'c', content) order by name, version) from public.prompts)
)::text
"""


async def pg_dump_schema(url: str) -> str:
    """`pg_dump --schema-only` of the database at `url` (comments and restrict keys dropped)."""
    proc = await asyncio.create_subprocess_exec(
        str(pg_dump_path()),
        "--schema-only",
        "--dbname",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    return "\n".join(
        line for line in lines if not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


async def catalog_fingerprint(url: str) -> str:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(CATALOG_FINGERPRINT)
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def applied_versions(url: str) -> list[tuple[str, str]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select version, name from supabase_migrations.schema_migrations order by version"
        )
        return [(r[0], r[1]) for r in await cur.fetchall()]


# --------------------------------------------------------------------------- applying


def test_discover_lists_the_migrations_in_version_order() -> None:
    found = discover()
    assert [(m.version, m.name) for m in found] == EXPECTED_MIGRATIONS
    assert all(m.path.is_file() for m in found)


async def test_migrations_apply_to_a_brand_new_database(fresh_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(fresh_url) as conn:
        cur = await conn.execute("select count(*) from pg_tables where schemaname = 'public'")
        assert await cur.fetchone() == (0,)

    applied = await migrate(fresh_url)

    assert applied == [v for v, _ in EXPECTED_MIGRATIONS]
    assert await applied_versions(fresh_url) == EXPECTED_MIGRATIONS
    async with await psycopg.AsyncConnection.connect(fresh_url) as conn:
        cur = await conn.execute(
            "select tablename from pg_tables where schemaname = 'public' order by 1"
        )
        tables = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute("select name from public.prompts where is_active order by 1")
        active_prompts = [r[0] for r in await cur.fetchall()]
    assert tables == sorted(
        [
            "activity_log",
            "admin_settings",
            "agent_runs",
            "approvals",
            "build_sessions",
            "deployments",
            "drift_alerts",
            "model_usage",
            "preview_sessions",
            "project_files",
            "project_logs",
            "project_plan",
            "projects",
            "prompts",
            "spec_chunks",
        ]
    )
    assert active_prompts == ["codegen", "planner"]  # supabase/seed.sql ran once


async def test_applying_again_returns_nothing_and_changes_nothing(fresh_url: str) -> None:
    await migrate(fresh_url)
    dump_before = await pg_dump_schema(fresh_url)
    catalog_before = await catalog_fingerprint(fresh_url)
    assert "CREATE TABLE public.projects" in dump_before

    assert await migrate(fresh_url) == []
    assert await migrate(fresh_url) == []

    assert await pg_dump_schema(fresh_url) == dump_before
    assert await catalog_fingerprint(fresh_url) == catalog_before
    assert await applied_versions(fresh_url) == EXPECTED_MIGRATIONS


async def test_bootstrap_is_idempotent_by_hand(fresh_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(fresh_url, autocommit=True) as conn:
        await conn.execute(bootstrap_sql())  # type: ignore[arg-type]
    dump_once = await pg_dump_schema(fresh_url)
    async with await psycopg.AsyncConnection.connect(fresh_url, autocommit=True) as conn:
        await conn.execute(bootstrap_sql())  # type: ignore[arg-type]
        cur = await conn.execute(
            "select rolname, rolcanlogin, rolinherit, rolbypassrls from pg_roles"
            " where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')"
            " order by rolname"
        )
        roles = await cur.fetchall()
        cur = await conn.execute(
            "select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid"
            " join pg_roles u on u.oid = m.member where u.rolname = 'authenticator' order by 1"
        )
        authenticator_of = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute(
            "select (select count(*) from pg_publication where pubname = 'supabase_realtime'),"
            " to_regclass('auth.users') is not null,"
            " (select count(*) from pg_namespace where nspname in ('auth', 'extensions'))"
        )
        counts = await cur.fetchone()
    assert await pg_dump_schema(fresh_url) == dump_once
    assert roles == [
        ("anon", False, False, False),
        ("authenticated", False, False, False),
        ("authenticator", True, False, False),
        ("service_role", False, False, True),
    ]
    assert authenticator_of == ["anon", "authenticated", "service_role"]
    assert counts == (1, True, 2)


async def _waiting_on_advisory_lock(conn: psycopg.AsyncConnection[Any], db: str) -> int:
    cur = await conn.execute(
        "select count(*) from pg_stat_activity"
        " where datname = %s and wait_event_type = 'Lock' and wait_event = 'advisory'",
        (db,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_concurrent_migrations_serialise_and_apply_each_version_once(
    fresh_url: str,
) -> None:
    db = fresh_url.partition("?")[0].rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(fresh_url, autocommit=True) as holder:
        # Hold the runner's lock so both calls are provably in flight at the same time.
        await holder.execute("select pg_advisory_lock(%s)", (store.migrate._LOCK_KEY,))
        first = asyncio.create_task(migrate(fresh_url))
        second = asyncio.create_task(migrate(fresh_url))
        deadline = time.monotonic() + 20
        while await _waiting_on_advisory_lock(holder, db) < 2:
            assert time.monotonic() < deadline, "both migrate() calls should wait on the lock"
            assert not first.done()
            assert not second.done()
            await asyncio.sleep(0.02)
        await holder.execute("select pg_advisory_unlock(%s)", (store.migrate._LOCK_KEY,))
        results = await asyncio.gather(first, second)

    versions = [v for v, _ in EXPECTED_MIGRATIONS]
    assert sorted(results, key=len) == [[], versions]
    assert await applied_versions(fresh_url) == EXPECTED_MIGRATIONS
    async with await psycopg.AsyncConnection.connect(fresh_url) as conn:
        cur = await conn.execute("select count(*) from public.prompts")
        assert await cur.fetchone() == (2,)


@pytest.mark.parametrize(
    "bad_name",
    [
        "bad.sql",
        "2026112100010_short.sql",  # 13 digits
        "20261121000100-dash.sql",
        "20261121000100_Upper.sql",
        "20261121000100_.sql",
        "20261121000100_white space.sql",
    ],
)
def test_discover_rejects_a_badly_named_file(tmp_path: Path, bad_name: str) -> None:
    (tmp_path / "20260101000000_fine.sql").write_text("select 1;")
    (tmp_path / bad_name).write_text("select 1;")
    with pytest.raises(ValueError, match=re.escape("is not <14 digits>_<name>.sql")):
        discover(tmp_path)


def test_discover_rejects_two_files_with_one_version(tmp_path: Path) -> None:
    (tmp_path / "20260101000000_one.sql").write_text("select 1;")
    (tmp_path / "20260101000000_two.sql").write_text("select 2;")
    with pytest.raises(ValueError, match="share a version"):
        discover(tmp_path)


def test_discover_ignores_other_files_and_sorts(tmp_path: Path) -> None:
    (tmp_path / "20260102000000_second.sql").write_text("select 2;")
    (tmp_path / "20260101000000_first.sql").write_text("select 1;")
    (tmp_path / "README.md").write_text("not a migration")
    assert [(m.version, m.name) for m in discover(tmp_path)] == [
        ("20260101000000", "first"),
        ("20260102000000", "second"),
    ]


async def test_migrate_refuses_a_bad_directory_before_touching_the_database(
    tmp_path: Path, fresh_url: str
) -> None:
    (tmp_path / "oops.sql").write_text("create table public.should_not_exist (id int);")
    with pytest.raises(ValueError, match=re.escape("'oops.sql'")):
        await migrate(fresh_url, directory=tmp_path)
    async with await psycopg.AsyncConnection.connect(fresh_url) as conn:
        cur = await conn.execute("select to_regnamespace('supabase_migrations')")
        assert await cur.fetchone() == (None,)


async def test_a_failing_migration_is_not_recorded(tmp_path: Path, fresh_url: str) -> None:
    (tmp_path / "20260101000000_good.sql").write_text("create table public.good (id int);")
    (tmp_path / "20260102000000_bad.sql").write_text(
        "create table public.half (id int); select 1/0;"
    )
    with pytest.raises(psycopg.errors.DivisionByZero):
        await migrate(fresh_url, directory=tmp_path, seed=False)
    async with await psycopg.AsyncConnection.connect(fresh_url) as conn:
        cur = await conn.execute("select version from supabase_migrations.schema_migrations")
        assert [r[0] for r in await cur.fetchall()] == ["20260101000000"]
        cur = await conn.execute("select to_regclass('public.good'), to_regclass('public.half')")
        assert await cur.fetchone() == ("good", None)


# --------------------------------------------------------------------------- a small graph


class Graph:
    """Two projects of one user, the first with a full graph of rows."""

    def __init__(self, url: str) -> None:
        self.user = uuid.uuid4()
        self.project = uuid.uuid4()
        self.project2 = uuid.uuid4()
        self.session = uuid.uuid4()
        self.run = uuid.uuid4()
        self.log = uuid.uuid4()
        self.event = uuid.uuid4()
        self.chunk = uuid.uuid4()
        self.approval = uuid.uuid4()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("insert into auth.users (id) values (%s)", (self.user,))
            conn.execute(
                "insert into public.projects (id, user_id, title) values (%s, %s, 'one'),"
                " (%s, %s, 'two')",
                (self.project, self.user, self.project2, self.user),
            )
            conn.execute(
                "insert into public.build_sessions (id, project_id, user_id) values (%s, %s, %s)",
                (self.session, self.project, self.user),
            )
            conn.execute(
                "insert into public.agent_runs (id, project_id, session_id, user_id,"
                " agent_name, agent_id) values (%s, %s, %s, %s, 'planner', 'p1')",
                (self.run, self.project, self.session, self.user),
            )
            writer = uuid.uuid4()
            conn.execute(
                "insert into public.project_logs (id, project_id, session_id, agent_name,"
                " message, writer_id, seq, type, data) values"
                " (%s, %s, null, 'planner', 'hello', %s, 1, 'log', null),"
                " (%s, %s, %s, 'planner', 'plan', %s, 2, 'plan_created', '{\"n\": 1}')",
                (self.log, self.project, writer, self.event, self.project, self.session, writer),
            )
            conn.execute(
                "insert into public.activity_log (project_id, actor, action)"
                " values (%s, 'ai', 'planned')",
                (self.project,),
            )
            conn.execute(
                "insert into public.project_plan (project_id, feature) values (%s, 'login')",
                (self.project,),
            )
            conn.execute("insert into public.deployments (project_id) values (%s)", (self.project,))
            conn.execute(
                "insert into public.preview_sessions (user_id, project_id) values (%s, %s)",
                (self.user, self.project),
            )
            conn.execute(
                "insert into public.project_files (project_id, path, content)"
                " values (%s, 'index.html', '<h1>hi</h1>')",
                (self.project,),
            )
            conn.execute(
                "insert into public.spec_chunks (id, session_id, chunk_index, content)"
                " values (%s, %s, 0, 'spec')",
                (self.chunk, self.session),
            )
            conn.execute(
                "insert into public.drift_alerts (session_id, severity, type, resource,"
                " spec_chunk_id, recommendation)"
                " values (%s, 'critical', 'rls_disabled', 'public.t', %s, 'enable rls')",
                (self.session, self.chunk),
            )
            conn.execute(
                "insert into public.approvals (id, token, session_id, project_id, run_id,"
                " user_id, attempt, reason, expires_at)"
                " values (%s, %s, %s, %s, %s, %s, 1, 'verification failed',"
                " now() + interval '1 hour')",
                (self.approval, f"token-{uuid.uuid4().hex}", self.session, self.project,
                 self.run, self.user),
            )  # fmt: skip
            conn.execute(
                "insert into public.model_usage (project_id, session_id, run_id, agent_name,"
                " provider, model, input_tokens, output_tokens)"
                " values (%s, %s, %s, 'planner', 'offline', 'offline-templates-2', 10, 20)",
                (self.project, self.session, self.run),
            )


@pytest.fixture
def graph(db_url: str) -> Graph:
    return Graph(db_url)


# --------------------------------------------------------------------------- the seeds' shape

#: Seed columns and their types (udt_name), per table or view.
SEED_COLUMNS: dict[str, dict[str, str]] = {
    # seed 000
    "projects": {
        "id": "uuid",
        "title": "text",
        "description": "text",
        "category": "text",
        "status": "text",
        "progress": "int4",
        "github_url": "text",
        "deployment_url": "text",
        "created_at": "timestamptz",
        "updated_at": "timestamptz",
    },
    "project_logs": {
        "id": "uuid",
        "project_id": "uuid",
        "agent_name": "text",
        "level": "text",
        "message": "text",
        "data": "jsonb",
        "timestamp": "timestamptz",
    },
    # seed 001
    "agent_runs": {
        "id": "uuid",
        "task_id": "uuid",
        "user_id": "uuid",
        "agent_name": "text",
        "agent_id": "text",
        "status": "text",
        "current_step": "text",
        "progress_percent": "float8",
        "result": "jsonb",
        "error": "text",
        "metadata": "jsonb",
        "verification_attempts": "int4",
        "verification_evidence": "jsonb",
        "started_at": "timestamptz",
        "completed_at": "timestamptz",
        "updated_at": "timestamptz",
    },
    # seed 002
    "activity_log": {
        "id": "uuid",
        "project_id": "uuid",
        "actor": "text",
        "action": "text",
        "details": "jsonb",
        "created_at": "timestamptz",
    },
    "project_plan": {
        "project_id": "uuid",
        "feature": "text",
        "status": "text",
        "notes": "text",
        "priority": "text",
    },
    # seed 003, final container-based shape
    "preview_sessions": {
        "id": "uuid",
        "user_id": "uuid",
        "project_id": "uuid",
        "session_id": "text",
        "container_id": "text",
        "container_url": "text",
        "status": "text",
        "error_message": "text",
        "expires_at": "timestamptz",
        "created_at": "timestamptz",
        "ended_at": "timestamptz",
        "updated_at": "timestamptz",
    },
    # seed 004
    "build_sessions": {
        "id": "uuid",
        "created_at": "timestamptz",
        "status": "text",
        "template": "text",
        "vibe_text": "text",
        "options": "jsonb",
        "plan": "jsonb",
        "environment": "jsonb",
        "outputs": "jsonb",
        "error": "text",
    },
    "build_events": {
        "id": "uuid",
        "session_id": "uuid",
        "ts": "timestamptz",
        "type": "text",
        "message": "text",
        "payload": "jsonb",
    },
    "spec_chunks": {
        "id": "uuid",
        "session_id": "uuid",
        "chunk_index": "int4",
        "content": "text",
        "embedding": "vector",
        "metadata": "jsonb",
    },
    "drift_alerts": {
        "id": "uuid",
        "session_id": "uuid",
        "ts": "timestamptz",
        "severity": "text",
        "type": "text",
        "resource": "text",
        "spec_chunk_id": "uuid",
        "recommendation": "text",
    },
}


def _columns(url: str, table: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select column_name, udt_name from information_schema.columns"
            " where table_schema = 'public' and table_name = %s",
            (table,),
        ).fetchall()
    return {r[0]: r[1] for r in rows}


@pytest.mark.parametrize("table", sorted(SEED_COLUMNS))
def test_seed_columns_exist_with_their_types(db_url: str, table: str) -> None:
    columns = _columns(db_url, table)
    assert columns, f"{table} does not exist"
    expected = SEED_COLUMNS[table]
    assert {c: columns.get(c) for c in expected} == expected


def test_preview_sessions_dropped_the_appetize_columns(db_url: str) -> None:
    columns = _columns(db_url, "preview_sessions")
    assert {"device_id", "public_key", "app_url", "preview_url"} & set(columns) == set()
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select pg_get_constraintdef(oid) from pg_constraint"
            " where conname = 'preview_sessions_status_check'"
            " and conrelid = 'public.preview_sessions'::regclass"
        ).fetchone()
    assert row is not None  # seed 003 drops and re-adds the constraint by this name
    for status in ("creating", "active", "ended", "error"):
        assert f"'{status}'" in row[0]


def test_spec_chunk_embedding_is_a_384_dimension_pgvector(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = 'public.spec_chunks'::regclass and attname = 'embedding'"
        ).fetchone()
        assert row == ("extensions.vector(384)",)
        index = conn.execute(
            "select indexdef from pg_indexes where indexname = 'spec_chunks_embedding_idx'"
        ).fetchone()
    assert index is not None
    assert "hnsw" in index[0]


def test_build_events_is_the_session_part_of_project_logs(db_url: str, graph: Graph) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select id, session_id, ts, type, message, payload from public.build_events"
        ).fetchall()
        logs = conn.execute(
            'select id, session_id, "timestamp", type, message, data from public.project_logs'
            " where session_id is not null"
        ).fetchall()
    assert rows == logs
    assert [r[0] for r in rows] == [graph.event]


def test_seed_defaults(db_url: str, graph: Graph) -> None:
    with psycopg.connect(db_url) as conn:
        project = conn.execute(
            "insert into public.projects (title) values ('defaults') returning status, progress"
        ).fetchone()
        run = conn.execute(
            "insert into public.agent_runs (agent_name, agent_id) values ('x', 'x')"
            " returning status, progress_percent, metadata, verification_attempts,"
            " verification_evidence, started_at is not null"
        ).fetchone()
        level = conn.execute(
            "insert into public.project_logs (id, project_id, agent_name, message, writer_id,"
            " seq) values (gen_random_uuid(), %s, 'x', 'x', gen_random_uuid(), 1)"
            " returning level",
            (graph.project,),
        ).fetchone()
        preview = conn.execute(
            "insert into public.preview_sessions (project_id) values (%s) returning status",
            (graph.project2,),
        ).fetchone()
    assert project == ("spawning", 0)
    assert run == ("pending", 0.0, {}, 0, [], True)
    assert level == ("info",)
    assert preview == ("creating",)


#: Per table, how its rows hang from a project (for the cascade test).
PROJECT_ROWS = {
    "build_sessions": "project_id = %(p)s",
    "agent_runs": "project_id = %(p)s",
    "project_logs": "project_id = %(p)s",
    "activity_log": "project_id = %(p)s",
    "project_plan": "project_id = %(p)s",
    "deployments": "project_id = %(p)s",
    "preview_sessions": "project_id = %(p)s",
    "spec_chunks": "session_id in (select id from public.build_sessions where project_id = %(p)s)",
    "drift_alerts": "session_id = %(s)s",
    "approvals": "project_id = %(p)s",
    "model_usage": "project_id = %(p)s",
}


def _counts(conn: psycopg.Connection[Any], graph: Graph) -> dict[str, int]:
    out: dict[str, int] = {}
    for table, where in PROJECT_ROWS.items():
        row = conn.execute(
            sql.SQL("select count(*) from public.{} where ").format(sql.Identifier(table))
            + sql.SQL(where),
            {"p": graph.project, "s": graph.session},
        ).fetchone()
        assert row is not None
        out[table] = row[0]
    return out


def test_deleting_a_project_cascades_to_everything_under_it(db_url: str, graph: Graph) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = _counts(conn, graph)
        assert all(before.values()), before
        conn.execute("delete from public.projects where id = %s", (graph.project,))
        assert set(_counts(conn, graph).values()) == {0}
        # The user's other project is untouched.
        row = conn.execute(
            "select count(*) from public.projects where id = %s", (graph.project2,)
        ).fetchone()
        assert row == (1,)


def test_deleting_a_user_cascades_to_their_projects(db_url: str, graph: Graph) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        other = Graph(db_url)
        conn.execute("delete from auth.users where id = %s", (graph.user,))
        row = conn.execute(
            "select count(*) from public.projects where user_id = %s", (graph.user,)
        ).fetchone()
        assert row == (0,)
        assert set(_counts(conn, graph).values()) == {0}
        assert all(_counts(conn, other).values())


# --------------------------------------------------------------------------- CHECKs

BAD_VALUES = [
    ("projects", "status", "bogus", "projects_status_check"),
    ("agent_runs", "status", "bogus", "agent_runs_status_check"),
    ("project_logs", "level", "debug", "project_logs_level_check"),
    ("preview_sessions", "status", "x", "preview_sessions_status_check"),
    ("build_sessions", "status", "done", "build_sessions_status_check"),
    ("projects", "progress", 101, "projects_progress_check"),
    ("projects", "progress", -1, "projects_progress_check"),
    ("agent_runs", "progress_percent", 100.5, "agent_runs_progress_percent_check"),
    ("activity_log", "actor", "robot", "activity_log_actor_check"),
    ("project_plan", "priority", "urgent", "project_plan_priority_check"),
    ("deployments", "status", "live", "deployments_status_check"),
    ("drift_alerts", "severity", "meh", "drift_alerts_severity_check"),
    ("approvals", "status", "approved", "approvals_status_check"),
    ("approvals", "attempt", 0, "approvals_attempt_check"),
    ("approvals", "token", "too-short", "approvals_token_check"),
    ("model_usage", "input_tokens", -1, "model_usage_input_tokens_check"),
    ("model_usage", "output_tokens", -1, "model_usage_output_tokens_check"),
    ("model_usage", "attempts", 0, "model_usage_attempts_check"),
    ("admin_settings", "key", "", "admin_settings_key_check"),
]


def _insert_with(
    conn: psycopg.Connection[Any], graph: Graph, table: str, column: str, value: Any
) -> None:
    base: dict[str, dict[str, Any]] = {
        "projects": {"title": "t"},
        "agent_runs": {"agent_name": "a", "agent_id": "a", "project_id": graph.project},
        "project_logs": {
            "id": uuid.uuid4(),
            "project_id": graph.project,
            "agent_name": "a",
            "message": "m",
            "writer_id": uuid.uuid4(),
            "seq": 1,
        },
        "preview_sessions": {"project_id": graph.project2, "status": "ended"},
        "build_sessions": {"project_id": graph.project},
        "activity_log": {"project_id": graph.project, "actor": "ai", "action": "a"},
        "project_plan": {"project_id": graph.project, "feature": f"f-{uuid.uuid4()}"},
        "deployments": {"project_id": graph.project},
        "drift_alerts": {
            "session_id": graph.session,
            "severity": "info",
            "type": "other",
            "resource": "r",
            "recommendation": "r",
        },
        # Attempt 2: the graph's approval of this session is attempt 1.
        "approvals": {
            "token": f"token-{uuid.uuid4().hex}",
            "session_id": graph.session,
            "project_id": graph.project,
            "attempt": 2,
            "reason": "r",
            "expires_at": "2100-01-01T00:00:00Z",
        },
        "model_usage": {
            "project_id": graph.project,
            "agent_name": "codegen",
            "provider": "offline",
            "model": "m",
        },
        "admin_settings": {"key": f"k-{uuid.uuid4()}", "value": '{"v": 1}'},
    }
    row = base[table] | {column: value}
    conn.execute(
        sql.SQL("insert into public.{} ({}) values ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        ),
        tuple(row.values()),
    )


@pytest.mark.parametrize(
    ("table", "column", "value", "constraint"),
    BAD_VALUES,
    ids=[f"{t}.{c}={v}" for t, c, v, _ in BAD_VALUES],
)
def test_check_rejects_a_bad_value(
    db_url: str, graph: Graph, table: str, column: str, value: Any, constraint: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(errors.CheckViolation) as caught:
            _insert_with(conn, graph, table, column, value)
        assert caught.value.diag.constraint_name == constraint
        # The same row with a good value goes in (the CHECK, not the row, was at fault).
        _insert_with(conn, graph, table, "id", uuid.uuid4())


def test_check_rejects_a_bad_status_on_update(db_url: str, graph: Graph) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(errors.CheckViolation):
            conn.execute(
                "update public.agent_runs set status = 'bogus' where id = %s", (graph.run,)
            )
        row = conn.execute(
            "select status from public.agent_runs where id = %s", (graph.run,)
        ).fetchone()
    assert row == ("pending",)


ENUM_COLUMNS: list[tuple[str, str, type[StrEnum]]] = [
    ("projects", "status", ProjectStatus),
    ("build_sessions", "status", BuildStatus),
    ("agent_runs", "status", RunStatus),
    ("project_logs", "level", LogLevel),
    ("preview_sessions", "status", PreviewStatus),
]


@pytest.mark.parametrize(
    ("table", "column", "enum"), ENUM_COLUMNS, ids=[f"{t}.{c}" for t, c, _ in ENUM_COLUMNS]
)
def test_every_python_status_is_accepted_by_the_database(
    db_url: str, graph: Graph, table: str, column: str, enum: type[StrEnum]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for member in enum:
            if table == "preview_sessions":
                # One live session per project: give each its own project.
                project = conn.execute(
                    "insert into public.projects (title) values ('p') returning id"
                ).fetchone()
                assert project is not None
                conn.execute(
                    "insert into public.preview_sessions (project_id, status) values (%s, %s)",
                    (project[0], member.value),
                )
            else:
                _insert_with(conn, graph, table, column, member.value)


# --------------------------------------------------------------------------- updated_at

UPDATED_AT_TABLES = {
    "projects": ("title", "renamed"),
    "build_sessions": ("template", "saas"),
    "agent_runs": ("current_step", "step 2"),
    "project_plan": ("notes", "n"),
    "prompts": ("content", "new content"),
    "deployments": ("url", "https://x.example"),
    "preview_sessions": ("error_message", "oops"),
    "project_files": ("content", "x"),
    "admin_settings": ("key", "renamed-setting"),
}
#: The column that records when the row was made (which the trigger must leave alone), if any.
CREATED_COLUMN: dict[str, str | None] = {"agent_runs": "started_at", "admin_settings": None}


def test_every_table_with_updated_at_has_the_trigger(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        with_column = {
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.columns"
                " where table_schema = 'public' and column_name = 'updated_at'"
                " and table_name in (select tablename from pg_tables where schemaname = 'public')"
            ).fetchall()
        }
        with_trigger = {
            r[0]
            for r in conn.execute(
                "select c.relname from pg_trigger t join pg_class c on c.oid = t.tgrelid"
                " join pg_proc p on p.oid = t.tgfoid"
                " where p.proname = 'set_updated_at' and not t.tgisinternal"
                " and t.tgtype & 2 = 2 and t.tgtype & 16 = 16"  # BEFORE, UPDATE
            ).fetchall()
        }
    assert with_column == set(UPDATED_AT_TABLES)
    assert with_trigger == set(UPDATED_AT_TABLES)


@pytest.mark.parametrize("table", sorted(UPDATED_AT_TABLES))
def test_update_bumps_updated_at(db_url: str, graph: Graph, table: str) -> None:
    column, value = UPDATED_AT_TABLES[table]
    old = "2001-02-03 04:05:06+00"
    ident = sql.Identifier(table)
    with psycopg.connect(db_url, autocommit=True) as conn:
        if table == "prompts":
            conn.execute("insert into public.prompts (name, content) values ('trigger-test', 'c')")
            where, key = sql.SQL("name = %s"), "trigger-test"
        elif table == "admin_settings":
            row = conn.execute(
                "insert into public.admin_settings (key, value) values ('trigger-test', '1')"
                " returning id"
            ).fetchone()
            assert row is not None
            where, key = sql.SQL("id = %s"), row[0]
        else:
            row = conn.execute(sql.SQL("select id from public.{} limit 1").format(ident)).fetchone()
            assert row is not None
            where, key = sql.SQL("id = %s"), row[0]
        # Pretend the row is old, bypassing the trigger for this one statement.
        created_name = CREATED_COLUMN.get(table, "created_at")
        backdated = ["updated_at"] if created_name is None else ["updated_at", created_name]
        conn.execute(sql.SQL("alter table public.{} disable trigger user").format(ident))
        conn.execute(
            sql.SQL("update public.{} set {} where ").format(
                ident,
                sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in backdated),
            )
            + where,
            (*[old] * len(backdated), key),
        )
        conn.execute(sql.SQL("alter table public.{} enable trigger user").format(ident))

        db_now = conn.execute("select now()").fetchone()
        assert db_now is not None
        conn.execute(
            sql.SQL("update public.{} set {} = %s where ").format(ident, sql.Identifier(column))
            + where,
            (value, key),
        )
        # An explicit updated_at in the UPDATE is overridden too.
        conn.execute(
            sql.SQL("update public.{} set updated_at = %s where ").format(ident) + where,
            (old, key),
        )
        # The other backdated column, or (a table without one) the value that was not updated.
        untouched = sql.Identifier(created_name or "value")
        row = conn.execute(
            sql.SQL("select updated_at, {}, {} from public.{} where ").format(
                untouched, sql.Identifier(column), ident
            )
            + where,
            (key,),
        ).fetchone()
    assert row is not None
    updated_at, other, current = row
    assert current == value
    assert updated_at >= db_now[0]
    if created_name is None:
        assert other == 1  # admin_settings: the trigger touches updated_at only
    else:
        assert str(other.year) == "2001"  # the trigger touches updated_at only


# --------------------------------------------------------------------------- rollup_project

ROLLUP_CASES: list[tuple[str, str, int, list[tuple[str, float]], str, int]] = [
    # (id, project status before, progress before, runs, expected status, expected progress)
    ("no-runs", "spawning", 0, [], "spawning", 0),
    ("one-pending", "spawning", 0, [("pending", 0)], "spawning", 0),
    ("all-pending", "spawning", 0, [("pending", 0), ("pending", 0)], "spawning", 0),
    ("running-stays-if-pending", "running", 10, [("pending", 0)], "running", 0),
    ("one-started", "spawning", 0, [("in_progress", 50), ("pending", 0)], "running", 25),
    (
        "verifying",
        "spawning",
        0,
        [("awaiting_verification", 80), ("verification_in_progress", 60)],
        "running",
        70,
    ),
    (
        "verification-failed-escalated",
        "running",
        50,
        [("verification_failed", 90), ("escalated_to_human", 90)],
        "running",
        90,
    ),
    ("half-done", "running", 0, [("completed", 100), ("in_progress", 40)], "running", 70),
    ("progress-floors", "running", 0, [("in_progress", 33.3), ("in_progress", 0)], "running", 16),
    ("progress-not-rounded", "running", 0, [("in_progress", 99.9)], "running", 99),
    ("all-completed", "running", 80, [("completed", 100), ("completed", 100)], "completed", 100),
    (
        "completed-and-canceled",
        "running",
        0,
        [("completed", 90), ("canceled", 0)],
        "completed",
        100,
    ),
    ("all-canceled", "running", 0, [("canceled", 0), ("canceled", 30)], "canceled", 15),
    ("any-failed", "running", 0, [("failed", 20), ("completed", 100)], "failed", 60),
    ("failed-beats-canceled", "running", 0, [("failed", 0), ("canceled", 0)], "failed", 0),
    ("failed-while-pending", "spawning", 0, [("pending", 0), ("failed", 0)], "failed", 0),
    ("completed-project-keeps", "completed", 100, [("in_progress", 10)], "completed", 100),
    ("failed-project-keeps", "failed", 40, [("completed", 100)], "failed", 40),
    ("canceled-project-keeps", "canceled", 5, [("failed", 0)], "canceled", 5),
]


@pytest.mark.parametrize(
    ("before", "progress_before", "runs", "status", "progress"),
    [c[1:] for c in ROLLUP_CASES],
    ids=[c[0] for c in ROLLUP_CASES],
)
def test_rollup_project(
    db_url: str,
    before: str,
    progress_before: int,
    runs: list[tuple[str, float]],
    status: str,
    progress: int,
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "insert into public.projects (title, status, progress) values ('r', %s, %s)"
            " returning id",
            (before, progress_before),
        ).fetchone()
        assert row is not None
        project = row[0]
        # A run of another project must not count.
        other = conn.execute("insert into public.projects (title) values ('o') returning id")
        other_row = other.fetchone()
        assert other_row is not None
        conn.execute(
            "insert into public.agent_runs (project_id, agent_name, agent_id, status,"
            " progress_percent) values (%s, 'x', 'x', 'failed', 0)",
            (other_row[0],),
        )
        for i, (run_status, run_progress) in enumerate(runs):
            conn.execute(
                "insert into public.agent_runs (project_id, agent_name, agent_id, status,"
                " progress_percent) values (%s, %s, %s, %s, %s)",
                (project, f"agent{i}", f"a{i}", run_status, run_progress),
            )
        returned = conn.execute(
            "select id, status, progress from public.rollup_project(%s)", (project,)
        ).fetchall()
        stored = conn.execute(
            "select status, progress from public.projects where id = %s", (project,)
        ).fetchone()
    assert returned == [(project, status, progress)]
    assert stored == (status, progress)


def test_rollup_of_an_unknown_project_is_no_data_found(db_url: str) -> None:
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        pytest.raises(errors.NoDataFound) as caught,
    ):
        conn.execute("select * from public.rollup_project(%s)", (uuid.uuid4(),))
    assert caught.value.sqlstate == "P0002"


# --------------------------------------------------------------------------- auth shims

SUB = uuid.UUID("5ab00000-0000-4000-8000-000000000001")
LEGACY_SUB = uuid.UUID("1e6ac000-0000-4000-8000-000000000002")


def _auth(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute("select auth.uid(), auth.role(), auth.jwt()").fetchone()
    assert row is not None
    return tuple(row)


def test_auth_functions_are_null_without_a_request(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert _auth(conn) == (None, None, None)


def test_auth_functions_read_request_jwt_claims(db_url: str) -> None:
    claims = {"sub": str(SUB), "role": "authenticated", "email": "a@example.com"}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("begin")
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        assert _auth(conn) == (SUB, "authenticated", claims)
        row = conn.execute("select auth.jwt() ->> 'email'").fetchone()
        assert row == ("a@example.com",)
        conn.execute("rollback")
        # The settings were transaction-local: now empty strings, which read as NULL.
        row = conn.execute("select current_setting('request.jwt.claims', true)").fetchone()
        assert row == ("",)
        assert _auth(conn) == (None, None, None)


def test_auth_functions_read_the_legacy_per_claim_settings(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("begin")
        conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(LEGACY_SUB),))
        conn.execute("select set_config('request.jwt.claim.role', 'service_role', true)")
        conn.execute("select set_config('request.jwt.claim', '{\"legacy\": true}', true)")
        assert _auth(conn) == (LEGACY_SUB, "service_role", {"legacy": True})
        conn.execute("rollback")


def test_legacy_claim_settings_take_precedence(db_url: str) -> None:
    claims = {"sub": str(SUB), "role": "authenticated"}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("begin")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(LEGACY_SUB),))
        uid, role, jwt = _auth(conn)
        conn.execute("rollback")
    # Supabase's definitions read the per-claim setting first, then the claims object.
    assert uid == LEGACY_SUB
    assert role == "authenticated"
    assert jwt == claims


def test_an_empty_legacy_setting_falls_back_to_the_claims(db_url: str) -> None:
    claims = {"sub": str(SUB), "role": "anon"}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("begin")
        conn.execute("select set_config('request.jwt.claim.sub', '', true)")
        conn.execute("select set_config('request.jwt.claim.role', '', true)")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        assert _auth(conn) == (SUB, "anon", claims)
        conn.execute("rollback")
