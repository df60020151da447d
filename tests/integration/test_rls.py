"""Row level security of every public table and view, on the real embedded PostgreSQL.

Each request is emulated exactly as PostgREST makes it (REFERENCE.md §3c): on a connection
logged in as `authenticator` (NOINHERIT),

    begin; set local role <role>;
    select set_config('request.jwt.claims', '{"sub": "<uuid>", "role": "authenticated"}', true);
    …; rollback;

As the superuser, two users (A and B) and one ownerless "local" project are seeded, each with
a full graph of rows: project, build session, agent run, two log events (one belonging to the
build session, so it is also a build_events row), activity, plan item, deployment, preview
session, spec chunk, drift alert, project file, approval and model usage row; plus one prompt
and one admin setting (the tables no user owns).

The matrix is principal (anon, user A, user B, service_role) x operation (select, insert,
update, delete) x relation. Users see exactly their own rows, anon sees nothing,
service_role sees and writes everything; users and anon write nothing — the expected way
each write is refused (a 42501 error, or zero rows affected) is stated per table below, and
the whole database is fingerprinted after every refused write to prove no row changed.

The matrix is checked against the catalog: a public table or view the matrix does not know,
a table without RLS, a view that is not security_invoker, a grant or a realtime
publication membership other than the migrations intend, a function the API roles may call,
or a LangGraph checkpoint schema they may reach, fails here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from tests.conftest import new_database

# --------------------------------------------------------------------------- the matrix

#: Every table in the public schema. A new table must be added here (and to the seed graph).
TABLES = (
    "projects",
    "build_sessions",
    "agent_runs",
    "project_logs",
    "activity_log",
    "project_plan",
    "prompts",
    "deployments",
    "preview_sessions",
    "spec_chunks",
    "drift_alerts",
    "project_files",
    "approvals",
    "model_usage",
    "admin_settings",
)
#: Every view in the public schema.
VIEWS = ("build_events",)
RELATIONS = TABLES + VIEWS

#: Relations with no owner: no user ever sees a row.
UNOWNED = frozenset({"prompts", "admin_settings"})

#: The tables the migrations put in the supabase_realtime publication.
REALTIME = frozenset(TABLES) - {
    "prompts",
    "spec_chunks",
    "project_files",
    "model_usage",
    "admin_settings",
}

DENIED = "denied (42501 permission denied)"
ZERO_ROWS = "zero rows affected"

#: How a select by anon or a user is refused or filtered, per relation.
#: FILTERED means RLS hides other rows; DENIED means the role has no SELECT grant at all.
FILTERED = "filtered by RLS"
READ_OUTCOME = {rel: FILTERED for rel in RELATIONS} | {rel: DENIED for rel in UNOWNED}

#: How each write by anon or a user is refused, per relation. The migrations grant the API
#: roles SELECT only, so every write is a permission error before RLS is even consulted.
WRITE_OUTCOME: dict[str, dict[str, str]] = {
    rel: {"insert": DENIED, "update": DENIED, "delete": DENIED} for rel in RELATIONS
}

#: The column each relation's update test changes.
UPDATE_COLUMN = {
    "projects": "title",
    "build_sessions": "template",
    "agent_runs": "current_step",
    "project_logs": "message",
    "build_events": "message",
    "activity_log": "action",
    "project_plan": "notes",
    "prompts": "content",
    "deployments": "url",
    "preview_sessions": "error_message",
    "spec_chunks": "content",
    "drift_alerts": "recommendation",
    "project_files": "content",
    "approvals": "reason",
    "model_usage": "model",
    "admin_settings": "key",
}

ALL_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
)
#: The table grants the migrations intend (information_schema.role_table_grants).
EXPECTED_GRANTS: dict[str, dict[str, frozenset[str]]] = {
    rel: {
        "anon": frozenset() if rel in UNOWNED else frozenset({"SELECT"}),
        "authenticated": frozenset() if rel in UNOWNED else frozenset({"SELECT"}),
        "service_role": ALL_PRIVILEGES,
    }
    for rel in RELATIONS
}

USER_A = uuid.UUID("0a000000-0000-4000-8000-00000000000a")
USER_B = uuid.UUID("0b000000-0000-4000-8000-00000000000b")
STRANGER = uuid.UUID("0c000000-0000-4000-8000-00000000000c")  # a valid JWT, no rows, no user


@dataclass(frozen=True)
class Principal:
    """Who makes the request: the role PostgREST switches to, and the JWT claims."""

    name: str
    role: str
    sub: uuid.UUID | None

    @property
    def claims(self) -> str:
        claims: dict[str, str] = {"role": self.role}
        if self.sub is not None:
            claims["sub"] = str(self.sub)
        return json.dumps(claims)


ANON = Principal("anon", "anon", None)
A = Principal("user_a", "authenticated", USER_A)
B = Principal("user_b", "authenticated", USER_B)
SERVICE = Principal("service_role", "service_role", None)
PRINCIPALS = (ANON, A, B, SERVICE)
OTHER = {A.name: B, B.name: A}


# --------------------------------------------------------------------------- the seed graph


def _id(*parts: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, "myyc-rls/" + "/".join(parts))


@dataclass
class Graph:
    """One owner's rows: relation → ids, plus the parents new rows hang from."""

    tag: str
    owner: uuid.UUID | None
    project: uuid.UUID
    session: uuid.UUID
    chunk: uuid.UUID
    ids: dict[str, set[uuid.UUID]] = field(default_factory=dict)


EMBEDDING = "[" + ",".join(["0.25"] * 384) + "]"


def seed_graph(conn: psycopg.Connection[Any], tag: str, owner: uuid.UUID | None) -> Graph:
    """Insert, as the superuser, a full graph of rows owned by `owner` (None = local)."""
    g = Graph(tag, owner, _id(tag, "project"), _id(tag, "session"), _id(tag, "chunk"))
    run, log, event = _id(tag, "run"), _id(tag, "log"), _id(tag, "event")
    activity, plan, deployment = _id(tag, "activity"), _id(tag, "plan"), _id(tag, "deploy")
    preview, alert, writer = _id(tag, "preview"), _id(tag, "alert"), _id(tag, "writer")
    file, approval, usage = _id(tag, "file"), _id(tag, "approval"), _id(tag, "usage")
    conn.execute(
        "insert into public.projects (id, user_id, title) values (%s, %s, %s)",
        (g.project, owner, f"project {tag}"),
    )
    conn.execute(
        "insert into public.build_sessions (id, project_id, user_id, template, vibe_text)"
        " values (%s, %s, %s, 'saas', %s)",
        (g.session, g.project, owner, f"vibe {tag}"),
    )
    conn.execute(
        "insert into public.agent_runs (id, project_id, session_id, user_id, agent_name,"
        " agent_id) values (%s, %s, %s, %s, 'planner', %s)",
        (run, g.project, g.session, owner, f"planner-{tag}"),
    )
    conn.execute(
        "insert into public.project_logs (id, project_id, session_id, agent_name, message,"
        " writer_id, seq) values (%s, %s, null, 'planner', %s, %s, 1),"
        " (%s, %s, %s, 'planner', %s, %s, 2)",
        (log, g.project, f"log {tag}", writer, event, g.project, g.session, f"event {tag}", writer),
    )
    conn.execute(
        "insert into public.activity_log (id, project_id, actor, action) values (%s, %s, 'ai', %s)",
        (activity, g.project, f"planned {tag}"),
    )
    conn.execute(
        "insert into public.project_plan (id, project_id, feature) values (%s, %s, %s)",
        (plan, g.project, f"feature {tag}"),
    )
    conn.execute(
        "insert into public.deployments (id, project_id, url) values (%s, %s, %s)",
        (deployment, g.project, f"https://{tag}.example"),
    )
    conn.execute(
        "insert into public.preview_sessions (id, user_id, project_id, status)"
        " values (%s, %s, %s, 'active')",
        (preview, owner, g.project),
    )
    conn.execute(
        "insert into public.spec_chunks (id, session_id, chunk_index, content, embedding)"
        " values (%s, %s, 0, %s, %s)",
        (g.chunk, g.session, f"spec {tag}", EMBEDDING if owner == USER_A else None),
    )
    conn.execute(
        "insert into public.drift_alerts (id, session_id, severity, type, resource,"
        " spec_chunk_id, recommendation) values (%s, %s, 'warning', 'rls_disabled', %s, %s, %s)",
        (alert, g.session, f"public.t_{tag}", g.chunk, f"alter table … enable rls ({tag})"),
    )
    conn.execute(
        "insert into public.project_files (id, project_id, path, content) values (%s, %s, %s, %s)",
        (file, g.project, f"src/{tag}.js", f"// {tag}"),
    )
    conn.execute(
        "insert into public.approvals (id, token, session_id, project_id, run_id, user_id,"
        " attempt, reason, expires_at) values (%s, %s, %s, %s, %s, %s, 1, %s,"
        " now() + interval '1 hour')",
        (approval, f"token-{approval.hex}", g.session, g.project, run, owner,
         f"verification failed ({tag})"),
    )  # fmt: skip
    conn.execute(
        "insert into public.model_usage (id, project_id, session_id, run_id, agent_name,"
        " provider, model, input_tokens, output_tokens, cost_usd)"
        " values (%s, %s, %s, %s, 'planner', 'offline', %s, 100, 200, 0.0125)",
        (usage, g.project, g.session, run, f"model-{tag}"),
    )
    g.ids = {
        "projects": {g.project},
        "build_sessions": {g.session},
        "agent_runs": {run},
        "project_logs": {log, event},
        "build_events": {event},
        "activity_log": {activity},
        "project_plan": {plan},
        "prompts": set(),
        "deployments": {deployment},
        "preview_sessions": {preview},
        "spec_chunks": {g.chunk},
        "drift_alerts": {alert},
        "project_files": {file},
        "approvals": {approval},
        "model_usage": {usage},
        "admin_settings": set(),
    }
    return g


def insert_statement(rel: str, g: Graph, new_id: uuid.UUID) -> tuple[str, tuple[Any, ...]]:
    """An INSERT of one new, valid row hanging from graph `g` (valid for the service role)."""
    owner = g.owner
    tag = f"new-{new_id.hex[:8]}"
    statements: dict[str, tuple[str, tuple[Any, ...]]] = {
        "projects": (
            "insert into public.projects (id, user_id, title) values (%s, %s, %s)",
            (new_id, owner, tag),
        ),
        "build_sessions": (
            "insert into public.build_sessions (id, project_id, user_id) values (%s, %s, %s)",
            (new_id, g.project, owner),
        ),
        "agent_runs": (
            "insert into public.agent_runs (id, project_id, session_id, user_id, agent_name,"
            " agent_id) values (%s, %s, %s, %s, 'codegen', %s)",
            (new_id, g.project, g.session, owner, tag),
        ),
        "project_logs": (
            "insert into public.project_logs (id, project_id, agent_name, message, writer_id,"
            " seq) values (%s, %s, 'codegen', %s, %s, 1)",
            (new_id, g.project, tag, new_id),
        ),
        "build_events": (
            "insert into public.build_events (id, session_id, project_id, agent_name, message,"
            " type, writer_id, seq) values (%s, %s, %s, 'codegen', %s, 'table_created', %s, 1)",
            (new_id, g.session, g.project, tag, new_id),
        ),
        "activity_log": (
            "insert into public.activity_log (id, project_id, actor, action)"
            " values (%s, %s, 'user', %s)",
            (new_id, g.project, tag),
        ),
        "project_plan": (
            "insert into public.project_plan (id, project_id, feature) values (%s, %s, %s)",
            (new_id, g.project, tag),
        ),
        "prompts": (
            "insert into public.prompts (id, name, content) values (%s, %s, 'be terse')",
            (new_id, tag),
        ),
        "deployments": (
            "insert into public.deployments (id, project_id) values (%s, %s)",
            (new_id, g.project),
        ),
        "preview_sessions": (
            "insert into public.preview_sessions (id, user_id, project_id, status)"
            " values (%s, %s, %s, 'ended')",
            (new_id, owner, g.project),
        ),
        "spec_chunks": (
            "insert into public.spec_chunks (id, session_id, chunk_index, content)"
            " values (%s, %s, 99, %s)",
            (new_id, g.session, tag),
        ),
        "drift_alerts": (
            "insert into public.drift_alerts (id, session_id, severity, type, resource,"
            " recommendation) values (%s, %s, 'info', 'other', %s, 'none')",
            (new_id, g.session, tag),
        ),
        "project_files": (
            "insert into public.project_files (id, project_id, path, content)"
            " values (%s, %s, %s, 'x')",
            (new_id, g.project, f"new/{tag}.txt"),
        ),
        # Attempt 2: the graph's approval of this session is attempt 1.
        "approvals": (
            "insert into public.approvals (id, token, session_id, project_id, user_id, attempt,"
            " reason, expires_at) values (%s, %s, %s, %s, %s, 2, %s, now() + interval '1 hour')",
            (new_id, f"token-{new_id.hex}", g.session, g.project, owner, tag),
        ),
        "model_usage": (
            "insert into public.model_usage (id, project_id, session_id, agent_name, provider,"
            " model) values (%s, %s, %s, 'codegen', 'offline', %s)",
            (new_id, g.project, g.session, tag),
        ),
        "admin_settings": (
            "insert into public.admin_settings (id, key, value) values (%s, %s, '{\"on\": true}')",
            (new_id, tag),
        ),
    }
    return statements[rel]


# --------------------------------------------------------------------------- fixtures


@dataclass
class Seeded:
    url: str
    admin: psycopg.Connection[Any]
    """The superuser: seeds the rows and reads the catalog."""
    api: psycopg.Connection[Any]
    """Logged in as `authenticator`, as PostgREST is: every request goes through here."""
    graphs: dict[str, Graph]
    unowned: dict[str, uuid.UUID]
    """Per relation no user owns, its seeded row."""
    baseline: dict[str, str]
    all_ids: dict[str, set[uuid.UUID]]


def fingerprint(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Row count and md5 of every row of every relation (read by a role that sees all)."""
    out: dict[str, str] = {}
    for rel in RELATIONS:
        row = conn.execute(
            sql.SQL(
                "select count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|'"
                " order by t::text)), '') from public.{} t"
            ).format(sql.Identifier(rel))
        ).fetchone()
        assert row is not None
        out[rel] = row[0]
    return out


def all_ids(conn: psycopg.Connection[Any]) -> dict[str, set[uuid.UUID]]:
    return {
        rel: {
            r[0]
            for r in conn.execute(
                sql.SQL("select id from public.{}").format(sql.Identifier(rel))
            ).fetchall()
        }
        for rel in RELATIONS
    }


@pytest.fixture(scope="module")
def seeded(server_url: str) -> Iterator[Seeded]:
    """One migrated database with users A and B, their graphs, a local graph and a prompt.

    Every test runs in a transaction that is rolled back, so the rows never change.
    """
    url = new_database(server_url)
    api_conninfo = psycopg.conninfo.make_conninfo(url, user="authenticator")
    with (
        psycopg.connect(url, autocommit=True) as conn,
        psycopg.connect(api_conninfo, autocommit=True) as api,
    ):
        conn.execute(
            "insert into auth.users (id, email) values (%s, 'a@example.com'),"
            " (%s, 'b@example.com')",
            (USER_A, USER_B),
        )
        graphs = {
            A.name: seed_graph(conn, "a", USER_A),
            B.name: seed_graph(conn, "b", USER_B),
            "local": seed_graph(conn, "local", None),
        }
        unowned = {"prompts": _id("prompt"), "admin_settings": _id("setting")}
        conn.execute(
            "insert into public.prompts (id, name, content, is_active)"
            " values (%s, 'rls-test', 'you are a test', true)",
            (unowned["prompts"],),
        )
        conn.execute(
            "insert into public.admin_settings (id, key, value)"
            """ values (%s, 'model', '{"provider": "offline"}')""",
            (unowned["admin_settings"],),
        )
        assert set(unowned) == UNOWNED
        base = fingerprint(conn)
        ids = all_ids(conn)
        yield Seeded(url, conn, api, graphs, unowned, base, ids)
    dbname = url.partition("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(dbname)))


@contextmanager
def request_as(
    conn: psycopg.Connection[Any], principal: Principal
) -> Iterator[psycopg.Connection[Any]]:
    """One PostgREST request: begin, set local role, set the JWT claims, …, rollback."""
    conn.execute("begin")
    try:
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(principal.role)))
        conn.execute("select set_config('request.jwt.claims', %s, true)", (principal.claims,))
        yield conn
    finally:
        conn.execute("rollback")


def attempt(
    conn: psycopg.Connection[Any],
    query: str | sql.Composable,
    params: tuple[Any, ...] | dict[str, Any] = (),
) -> psycopg.Cursor[Any] | psycopg.Error:
    """Run one statement under a savepoint; return its cursor or the error it raised."""
    conn.execute("savepoint attempt")
    try:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        conn.execute("rollback to savepoint attempt")
        return exc
    conn.execute("release savepoint attempt")
    return cur


def rowcount(outcome: psycopg.Cursor[Any] | psycopg.Error) -> int:
    assert not isinstance(outcome, psycopg.Error), outcome
    return outcome.rowcount


def inspect_everything(conn: psycopg.Connection[Any]) -> None:
    """Switch, still inside the request's transaction, to the role that sees every row.

    The connection is the authenticator's (NOINHERIT: it can read nothing itself), so the
    request's own uncommitted effects are inspected as service_role, which bypasses RLS.
    """
    conn.execute("set local role service_role")
    row = conn.execute(
        "select current_user, (select rolbypassrls from pg_roles where rolname = current_user)"
    ).fetchone()
    assert row == ("service_role", True)


def expected_visible(seeded: Seeded, principal: Principal, rel: str) -> set[uuid.UUID]:
    if principal is SERVICE:
        return seeded.all_ids[rel]
    if principal is ANON or rel in UNOWNED:
        return set()
    return seeded.graphs[principal.name].ids[rel]


# --------------------------------------------------------------------------- catalog checks


def test_seed_covers_every_relation(seeded: Seeded) -> None:
    # The graphs really populate every relation, so "sees nothing" is never vacuous.
    for rel in RELATIONS:
        assert seeded.all_ids[rel], rel
        if rel not in UNOWNED:
            assert seeded.graphs[A.name].ids[rel], rel
            assert seeded.graphs[B.name].ids[rel], rel
            assert not seeded.graphs[A.name].ids[rel] & seeded.graphs[B.name].ids[rel]
            assert seeded.graphs[A.name].ids[rel] <= seeded.all_ids[rel]
    for rel, row in seeded.unowned.items():
        assert row in seeded.all_ids[rel], rel


def test_matrix_covers_every_public_table(seeded: Seeded) -> None:
    rows = seeded.admin.execute(
        "select tablename from pg_tables where schemaname = 'public'"
    ).fetchall()
    in_db = {r[0] for r in rows}
    assert in_db - set(TABLES) == set(), "public table(s) not covered by the RLS matrix"
    assert set(TABLES) - in_db == set(), "the RLS matrix names table(s) that do not exist"


def test_matrix_covers_every_public_view(seeded: Seeded) -> None:
    rows = seeded.admin.execute(
        "select c.relname, c.relkind, coalesce(c.reloptions, '{}') from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('v', 'm')"
    ).fetchall()
    assert {r[0] for r in rows} == set(VIEWS)
    for name, kind, options in rows:
        # A view that is not security_invoker reads as its owner and bypasses RLS.
        assert kind == "v", f"{name}: a materialized view cannot enforce RLS"
        assert "security_invoker=true" in options, f"{name} must be security_invoker"


def test_every_public_table_has_rls_enabled(seeded: Seeded) -> None:
    rows = seeded.admin.execute(
        "select c.relname, c.relrowsecurity from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p')"
    ).fetchall()
    assert {r[0] for r in rows} == set(TABLES)
    disabled = sorted(name for name, enabled in rows if not enabled)
    assert disabled == [], f"RLS disabled on {disabled}"


def test_every_owned_table_has_a_select_policy_for_authenticated(seeded: Seeded) -> None:
    rows = seeded.admin.execute(
        "select tablename, cmd, roles::text[] from pg_policies where schemaname = 'public'"
    ).fetchall()
    with_select = {t for t, cmd, roles in rows if cmd in ("SELECT", "ALL")}
    assert with_select == set(TABLES) - UNOWNED
    # No policy opens anything to anon or to every role.
    assert [r for r in rows if {"anon", "public"} & set(r[2])] == []


def test_api_role_grants_are_explicit_and_as_intended(seeded: Seeded) -> None:
    rows = seeded.admin.execute(
        "select table_name, grantee, privilege_type from information_schema.role_table_grants"
        " where table_schema = 'public'"
        " and grantee in ('anon', 'authenticated', 'service_role')"
    ).fetchall()
    actual: dict[str, dict[str, set[str]]] = {
        rel: {"anon": set(), "authenticated": set(), "service_role": set()} for rel in RELATIONS
    }
    for table, grantee, privilege in rows:
        assert table in actual, f"grant on {table}, which the matrix does not know"
        actual[table][grantee].add(privilege)
    assert actual == {
        rel: {role: set(privs) for role, privs in grants.items()}
        for rel, grants in EXPECTED_GRANTS.items()
    }


def test_realtime_publication_has_the_intended_tables(seeded: Seeded) -> None:
    rows = seeded.admin.execute(
        "select schemaname, tablename from pg_publication_tables"
        " where pubname = 'supabase_realtime'"
    ).fetchall()
    assert {r[0] for r in rows} == {"public"}
    assert {r[1] for r in rows} == set(REALTIME)


def test_only_the_service_role_may_call_rollup_project(seeded: Seeded) -> None:
    rows = seeded.admin.execute(
        "select r.rolname, has_function_privilege(r.rolname,"
        " 'public.rollup_project(uuid)', 'execute')"
        " from pg_roles r where r.rolname in ('anon', 'authenticated', 'service_role')"
    ).fetchall()
    assert dict(rows) == {"anon": False, "authenticated": False, "service_role": True}
    project = seeded.graphs[A.name].project
    with request_as(seeded.api, A) as conn:
        outcome = attempt(conn, "select * from public.rollup_project(%s)", (project,))
        assert isinstance(outcome, errors.InsufficientPrivilege)
    with request_as(seeded.api, SERVICE) as conn:
        row = conn.execute(
            "select id, status, progress from public.rollup_project(%s)", (project,)
        ).fetchone()
    # The seeded project's only run is pending: the rollup keeps it spawning at 0 %.
    assert row == (project, "spawning", 0)


#: Every callable (non-trigger) function in the public schema: the service role's only.
SERVICE_FUNCTIONS = frozenset(
    {
        "build_lease_owners()",
        "claim_build(uuid,text,double precision,text)",
        "decide_approval(text,text,text)",
        "expire_approvals(integer)",
        "read_events(uuid,jsonb,text,text,integer)",
        "reclaimable_builds(double precision,integer,text[])",
        "release_build_lease(uuid,text)",
        "renew_build_lease(uuid,text,double precision)",
        "rollup_project(uuid)",
        "spawn_build(text,text,text,uuid,text,text[],text,text,jsonb,text)",
        "spawn_project(text,text,text,uuid,text,text[])",
        "stalled_runs(double precision,integer)",
    }
)


def test_only_the_service_role_may_call_the_public_functions(seeded: Seeded) -> None:
    rows = seeded.admin.execute(
        "select p.oid::regprocedure::text, has_function_privilege('anon', p.oid, 'execute'),"
        " has_function_privilege('authenticated', p.oid, 'execute'),"
        " has_function_privilege('service_role', p.oid, 'execute')"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public' and p.prorettype <> 'trigger'::regtype"
    ).fetchall()
    assert {r[0]: tuple(r[1:]) for r in rows} == {
        fn: (False, False, True) for fn in SERVICE_FUNCTIONS
    }


#: A call per pipeline function that would change rows (or read across tenants), as user A's
#: own build would make it: each is refused before it runs.
PIPELINE_CALLS = {
    "claim_build": "select * from public.claim_build(%(session)s, 'user-a', 60, null)",
    "renew_build_lease": "select * from public.renew_build_lease(%(session)s, 'user-a', 60)",
    "release_build_lease": "select public.release_build_lease(%(session)s, 'user-a')",
    "reclaimable_builds": "select * from public.reclaimable_builds(0, 100, '{}')",
    "build_lease_owners": "select * from public.build_lease_owners()",
    "stalled_runs": "select * from public.stalled_runs(0, 100)",
    "decide_approval": "select * from public.decide_approval(%(token)s, 'approve', 'mine')",
    "expire_approvals": "select * from public.expire_approvals(100)",
    "spawn_build": (
        "select public.spawn_build('t', null, null, %(user)s, null, '{planner}', 'saas',"
        " null, '{}')"
    ),
}


@pytest.mark.parametrize("call", sorted(PIPELINE_CALLS))
@pytest.mark.parametrize("principal", [ANON, A], ids=lambda p: p.name)
def test_api_roles_cannot_call_the_pipeline_functions(
    seeded: Seeded, principal: Principal, call: str
) -> None:
    graph = seeded.graphs[A.name]
    token = seeded.admin.execute(
        "select token from public.approvals where session_id = %s", (graph.session,)
    ).fetchone()
    assert token is not None
    params = {"session": graph.session, "token": token[0], "user": USER_A}
    with request_as(seeded.api, principal) as conn:
        outcome = attempt(conn, PIPELINE_CALLS[call], params)
        assert isinstance(outcome, errors.InsufficientPrivilege), outcome
        assert outcome.diag.message_primary == f"permission denied for function {call}"
        _assert_unchanged(seeded, conn)
    # The same call is a valid one: the service role makes it (rolled back, as every request).
    with request_as(seeded.api, SERVICE) as conn:
        outcome = attempt(conn, PIPELINE_CALLS[call], params)
        assert not isinstance(outcome, psycopg.Error), outcome


def test_the_langgraph_checkpoints_are_out_of_the_api_roles_reach(seeded: Seeded) -> None:
    rows = seeded.admin.execute(
        "select r.rolname, has_schema_privilege(r.rolname, 'langgraph', 'usage'),"
        " has_schema_privilege(r.rolname, 'langgraph', 'create')"
        " from pg_roles r where r.rolname in ('anon', 'authenticated', 'service_role')"
    ).fetchall()
    assert {r[0]: (r[1], r[2]) for r in rows} == {
        "anon": (False, False),
        "authenticated": (False, False),
        "service_role": (True, True),
    }


# --------------------------------------------------------------------------- select


@pytest.mark.parametrize("rel", RELATIONS)
@pytest.mark.parametrize("principal", PRINCIPALS, ids=lambda p: p.name)
def test_select(seeded: Seeded, principal: Principal, rel: str) -> None:
    query = sql.SQL("select id from public.{}").format(sql.Identifier(rel))
    with request_as(seeded.api, principal) as conn:
        outcome = attempt(conn, query)
        if principal is not SERVICE and READ_OUTCOME[rel] == DENIED:
            assert isinstance(outcome, errors.InsufficientPrivilege), outcome
            return
        assert not isinstance(outcome, psycopg.Error), outcome
        seen = {r[0] for r in outcome.fetchall()}
    assert seen == expected_visible(seeded, principal, rel)
    if principal in (A, B):
        other = seeded.graphs[OTHER[principal.name].name].ids[rel]
        assert seen.isdisjoint(other)
        assert seen.isdisjoint(seeded.graphs["local"].ids[rel])


@pytest.mark.parametrize("rel", sorted(set(RELATIONS) - UNOWNED))
def test_user_cannot_read_another_users_row_by_id(seeded: Seeded, rel: str) -> None:
    # A filter naming the other tenant's ids explicitly still returns nothing.
    others = sorted(seeded.graphs[B.name].ids[rel])
    query = sql.SQL("select count(*) from public.{} where id = any(%s)").format(sql.Identifier(rel))
    with request_as(seeded.api, A) as conn:
        row = conn.execute(query, (others,)).fetchone()
    assert row == (0,)


@pytest.mark.parametrize("rel", sorted(set(RELATIONS) - UNOWNED))
def test_jwt_of_a_stranger_sees_nothing(seeded: Seeded, rel: str) -> None:
    stranger = Principal("stranger", "authenticated", STRANGER)
    query = sql.SQL("select count(*) from public.{}").format(sql.Identifier(rel))
    with request_as(seeded.api, stranger) as conn:
        row = conn.execute(query).fetchone()
    assert row == (0,)


@pytest.mark.parametrize("rel", sorted(set(RELATIONS) - UNOWNED))
def test_authenticated_without_claims_sees_nothing(seeded: Seeded, rel: str) -> None:
    query = sql.SQL("select count(*) from public.{}").format(sql.Identifier(rel))
    conn = seeded.api
    conn.execute("begin")
    try:
        conn.execute("set local role authenticated")
        row = conn.execute(query).fetchone()
    finally:
        conn.execute("rollback")
    assert row == (0,)


def test_requests_really_come_from_the_authenticator(seeded: Seeded) -> None:
    row = seeded.api.execute("select session_user, current_user").fetchone()
    assert row == ("authenticator", "authenticator")
    # NOINHERIT: without SET ROLE the authenticator itself may read nothing.
    seeded.api.execute("begin")
    try:
        outcome = attempt(seeded.api, "select id from public.projects")
        assert isinstance(outcome, errors.InsufficientPrivilege)
    finally:
        seeded.api.execute("rollback")


def test_claims_do_not_leak_between_requests(seeded: Seeded) -> None:
    # set_config(..., true) is transaction-local: the next request starts with no identity.
    with request_as(seeded.api, A) as conn:
        row = conn.execute("select auth.uid()").fetchone()
        assert row == (USER_A,)
    conn = seeded.api
    conn.execute("begin")
    try:
        conn.execute("set local role authenticated")
        row = conn.execute("select auth.uid(), count(*) from public.projects").fetchone()
    finally:
        conn.execute("rollback")
    assert row == (None, 0)


# --------------------------------------------------------------------------- writes

WRITE_TARGETS = {
    # principal → the graphs whose rows it tries to write (own, then the other tenant's).
    ANON.name: ("user_a", "user_b"),
    A.name: ("user_a", "user_b"),
    B.name: ("user_b", "user_a"),
}


def _assert_refused(rel: str, op: str, outcome: psycopg.Cursor[Any] | psycopg.Error) -> None:
    expected = WRITE_OUTCOME[rel][op]
    if expected == DENIED:
        assert isinstance(outcome, errors.InsufficientPrivilege), (rel, op, outcome)
        assert outcome.sqlstate == "42501"
        primary = outcome.diag.message_primary or ""
        assert primary.startswith("permission denied for"), primary
    else:
        assert rowcount(outcome) == 0, (rel, op)


def _assert_unchanged(seeded: Seeded, conn: psycopg.Connection[Any]) -> None:
    inspect_everything(conn)
    assert fingerprint(conn) == seeded.baseline


def _target_rows(seeded: Seeded, rel: str, graph: str) -> list[uuid.UUID]:
    if rel in UNOWNED:
        return [seeded.unowned[rel]]
    return sorted(seeded.graphs[graph].ids[rel])


@pytest.mark.parametrize("rel", RELATIONS)
@pytest.mark.parametrize("principal", [ANON, A, B], ids=lambda p: p.name)
def test_insert_is_refused(seeded: Seeded, principal: Principal, rel: str) -> None:
    for graph in WRITE_TARGETS[principal.name]:
        new_id = _id("insert", principal.name, rel, graph)
        query, params = insert_statement(rel, seeded.graphs[graph], new_id)
        with request_as(seeded.api, principal) as conn:
            _assert_refused(rel, "insert", attempt(conn, query, params))
            _assert_unchanged(seeded, conn)


@pytest.mark.parametrize("rel", RELATIONS)
@pytest.mark.parametrize("principal", [ANON, A, B], ids=lambda p: p.name)
def test_update_is_refused(seeded: Seeded, principal: Principal, rel: str) -> None:
    column = sql.Identifier(UPDATE_COLUMN[rel])
    table = sql.Identifier(rel)
    by_id = sql.SQL("update public.{} set {} = %s where id = any(%s)").format(table, column)
    every = sql.SQL("update public.{} set {} = %s").format(table, column)  # PATCH, no filter
    for graph in WRITE_TARGETS[principal.name]:
        with request_as(seeded.api, principal) as conn:
            ids = _target_rows(seeded, rel, graph)
            outcome = attempt(conn, by_id, (f"by {principal.name}", ids))
            _assert_refused(rel, "update", outcome)
            _assert_unchanged(seeded, conn)
    with request_as(seeded.api, principal) as conn:
        outcome = attempt(conn, every, (f"all by {principal.name}",))
        _assert_refused(rel, "update", outcome)
        _assert_unchanged(seeded, conn)


@pytest.mark.parametrize("rel", RELATIONS)
@pytest.mark.parametrize("principal", [ANON, A, B], ids=lambda p: p.name)
def test_delete_is_refused(seeded: Seeded, principal: Principal, rel: str) -> None:
    table = sql.Identifier(rel)
    by_id = sql.SQL("delete from public.{} where id = any(%s)").format(table)
    every = sql.SQL("delete from public.{}").format(table)
    for graph in WRITE_TARGETS[principal.name]:
        with request_as(seeded.api, principal) as conn:
            ids = _target_rows(seeded, rel, graph)
            _assert_refused(rel, "delete", attempt(conn, by_id, (ids,)))
            _assert_unchanged(seeded, conn)
    with request_as(seeded.api, principal) as conn:
        _assert_refused(rel, "delete", attempt(conn, every, ()))
        _assert_unchanged(seeded, conn)


@pytest.mark.parametrize("rel", RELATIONS)
@pytest.mark.parametrize("graph", ["user_a", "user_b", "local"])
def test_service_role_inserts(seeded: Seeded, rel: str, graph: str) -> None:
    new_id = _id("service-insert", rel, graph)
    query, params = insert_statement(rel, seeded.graphs[graph], new_id)
    with request_as(seeded.api, SERVICE) as conn:
        assert rowcount(attempt(conn, query, params)) == 1
        inspect_everything(conn)
        count = conn.execute(
            sql.SQL("select count(*) from public.{} where id = %s").format(sql.Identifier(rel)),
            (new_id,),
        ).fetchone()
        assert count == (1,)
        after = fingerprint(conn)
    assert after[rel] != seeded.baseline[rel]


@pytest.mark.parametrize("rel", RELATIONS)
@pytest.mark.parametrize("graph", ["user_a", "user_b"])
def test_service_role_updates(seeded: Seeded, rel: str, graph: str) -> None:
    column = sql.Identifier(UPDATE_COLUMN[rel])
    table = sql.Identifier(rel)
    target = _target_rows(seeded, rel, graph)[0]
    value = f"service {rel} {graph}"
    with request_as(seeded.api, SERVICE) as conn:
        query = sql.SQL("update public.{} set {} = %s where id = %s").format(table, column)
        assert rowcount(attempt(conn, query, (value, target))) == 1
        inspect_everything(conn)
        row = conn.execute(
            sql.SQL("select {} from public.{} where id = %s").format(column, table), (target,)
        ).fetchone()
        assert row == (value,)
        # Only the targeted row changed: every other row of the relation is as seeded.
        untouched = conn.execute(
            sql.SQL("select count(*) from public.{} where {} = %s").format(table, column),
            (value,),
        ).fetchone()
        assert untouched == (1,)


@pytest.mark.parametrize("rel", RELATIONS)
@pytest.mark.parametrize("graph", ["user_a", "user_b"])
def test_service_role_deletes(seeded: Seeded, rel: str, graph: str) -> None:
    table = sql.Identifier(rel)
    target = _target_rows(seeded, rel, graph)[0]
    with request_as(seeded.api, SERVICE) as conn:
        query = sql.SQL("delete from public.{} where id = %s").format(table)
        assert rowcount(attempt(conn, query, (target,))) == 1
        inspect_everything(conn)
        row = conn.execute(
            sql.SQL("select count(*) from public.{} where id = %s").format(table), (target,)
        ).fetchone()
        assert row == (0,)
        remaining = conn.execute(sql.SQL("select count(*) from public.{}").format(table)).fetchone()
        assert remaining == (len(seeded.all_ids[rel]) - 1,)


def test_rolled_back_requests_left_the_seed_intact(seeded: Seeded) -> None:
    assert fingerprint(seeded.admin) == seeded.baseline
