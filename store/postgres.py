"""The Postgres store adapter: psycopg 3, async, pooled.

Events go in with COPY (the fastest path PostgreSQL has). A batch that partly exists
already — a retry after a lost commit acknowledgement — collides on the primary key; it is
then staged and merged with ON CONFLICT DO NOTHING, so a retry never duplicates.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from schemas.errors import Conflict, MyycError, NotFound, StoreUnavailable, ValidationFailed
from schemas.events import Cursor, Event
from schemas.plan import Feature
from schemas.rows import (
    Activity,
    AgentRun,
    Approval,
    BuildSession,
    ModelUsage,
    NewProject,
    NewRun,
    PlanItem,
    Project,
    Prompt,
)
from schemas.status import LIVE_RUN_STATUSES, LogLevel, RunStatus
from store.ports import (
    PROJECT_COLUMNS,
    RUN_COLUMNS,
    SESSION_COLUMNS,
    EventRecord,
    Spawned,
    reference_field,
)

EVENT_COLUMNS = (
    "id", "project_id", "session_id", "agent_name", "level", "type", "message", "data",
    "timestamp", "writer_id", "seq",
)  # fmt: skip
_COPY_EVENTS = sql.SQL("copy {} ({}) from stdin").format(
    sql.Identifier("project_logs"), sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS))
)
_COPY_CHUNK = 250
_COPY_STAGE = sql.SQL("copy _events_stage ({}) from stdin").format(
    sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS))
)

_JSON_COLUMNS = frozenset(
    {"result", "metadata", "verification_evidence", "plan", "environment", "outputs", "presence",
     "evidence"}
)  # fmt: skip


def translate(err: Exception) -> MyycError:
    """Map a psycopg error to myyc's error vocabulary."""
    if isinstance(err, pgerrors.UniqueViolation):
        return Conflict(f"already exists: {err.diag.message_detail or err}")
    if isinstance(err, pgerrors.ForeignKeyViolation):
        detail = err.diag.message_detail or str(err)
        return NotFound(f"unknown reference: {detail}", field=reference_field(detail))
    if isinstance(err, pgerrors.NoDataFound):
        return NotFound(str(err.diag.message_primary or err))
    if isinstance(err, (pgerrors.CheckViolation, pgerrors.NotNullViolation)):
        return ValidationFailed(
            f"rejected by the database: {err.diag.message_primary}",
            field=err.diag.column_name or err.diag.constraint_name,
        )
    if isinstance(err, (pgerrors.DataError, pgerrors.InvalidTextRepresentation)):
        # psycopg refuses some values itself (NUL in text), without server diagnostics.
        return ValidationFailed(f"invalid value: {err.diag.message_primary or err}")
    if isinstance(err, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreUnavailable(f"database unavailable: {err}")
    return MyycError(f"database error: {err}")


def _set_clause(changes: Mapping[str, Any]) -> sql.Composed:
    """`col = %(col)s, …` for the columns being set (names quoted, values as parameters)."""
    return sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
    )


class PostgresStore:
    """The Store port on PostgreSQL (embedded, Supabase's database, or any Postgres)."""

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 1, max_size: int = 8, wait_s: float = 5.0
    ) -> PostgresStore:
        """Open a pool on `url` (connections are checked before use, so an outage heals).

        `wait_s` bounds the wait for a healthy connection: during an outage a call fails
        with StoreUnavailable after it, rather than hanging.
        """
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True},
            timeout=wait_s,
            reconnect_timeout=3600,
        )
        await pool.open(wait=True, timeout=30)
        return cls(pool)

    @property
    def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        """The connection pool (for the live stream and tests)."""
        return self._pool

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    async def _rows(
        self, query: str | sql.Composed, params: Mapping[str, Any] | Sequence[Any]
    ) -> list[dict[str, Any]]:
        try:
            async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, params)
                return await cur.fetchall() if cur.description else []
        except psycopg.Error as err:
            raise translate(err) from err
        except TimeoutError as err:  # the pool found no healthy connection in time
            raise StoreUnavailable(f"database unavailable: {err}") from err

    # projects -----------------------------------------------------------------------------

    async def create_project(self, new: NewProject) -> Project:
        """Insert a project in status `spawning`."""
        rows = await self._rows(
            "insert into projects (title, description, category, user_id, idempotency_key)"
            " values (%s, %s, %s, %s, %s) returning *",
            (new.title, new.description, new.category, new.user_id, new.idempotency_key),
        )
        return Project.model_validate(rows[0])

    async def get_project(self, project_id: UUID) -> Project:
        """The project; NotFound if unknown."""
        rows = await self._rows("select * from projects where id = %s", (project_id,))
        if not rows:
            raise NotFound(f"project {project_id} not found", field="project_id")
        return Project.model_validate(rows[0])

    async def list_projects(
        self, *, user_id: UUID | None = None, limit: int = 100
    ) -> list[Project]:
        """Newest first; only `user_id`'s when given."""
        rows = await self._rows(
            "select * from projects where (%(u)s::uuid is null or user_id = %(u)s)"
            " order by created_at desc, id limit %(l)s",
            {"u": user_id, "l": limit},
        )
        return [Project.model_validate(r) for r in rows]

    async def update_project(self, project_id: UUID, changes: Mapping[str, Any]) -> Project:
        """Set columns; NotFound if unknown."""
        rows = await self._update("projects", PROJECT_COLUMNS, project_id, changes)
        if not rows:
            raise NotFound(f"project {project_id} not found", field="project_id")
        return Project.model_validate(rows[0])

    async def rollup_project(self, project_id: UUID) -> Project:
        """Derive status and progress from the runs (the SQL function `rollup_project`)."""
        rows = await self._rows("select * from rollup_project(%s)", (project_id,))
        return Project.model_validate(rows[0])

    async def create_session(
        self, project_id: UUID, *, user_id: UUID | None, vibe_text: str | None
    ) -> BuildSession:
        """Queue a build session for a project."""
        rows = await self._rows(
            "insert into build_sessions (project_id, user_id, vibe_text) values (%s, %s, %s)"
            " returning *",
            (project_id, user_id, vibe_text),
        )
        return BuildSession.model_validate(rows[0])

    async def _update(
        self, table: str, allowed: frozenset[str], row_id: UUID, changes: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        unknown = set(changes) - allowed
        if unknown:
            raise ValidationFailed(f"cannot set {sorted(unknown)} on {table}", field=min(unknown))
        if not changes:
            return await self._rows(
                sql.SQL("select * from {} where id = %(id)s").format(sql.Identifier(table)),
                {"id": row_id},
            )
        params = {k: Jsonb(v) if k in _JSON_COLUMNS else v for k, v in changes.items()}
        query = sql.SQL("update {} set {} where id = %(id)s returning *").format(
            sql.Identifier(table), _set_clause(changes)
        )
        return await self._rows(query, {**params, "id": row_id})

    # builds -------------------------------------------------------------------------------

    async def spawn_project(self, new: NewProject, agents: Sequence[str]) -> Spawned:
        """Project, build session and pending runs in one transaction (SQL spawn_project)."""
        rows = await self._rows(
            "select spawn_project(%s, %s, %s, %s, %s, %s) as r",
            (new.title, new.description, new.category, new.user_id, new.idempotency_key,
             list(agents)),
        )  # fmt: skip
        r = rows[0]["r"]
        return Spawned(UUID(r["project_id"]), UUID(r["build_id"]), bool(r["created"]))

    async def get_session(self, build_id: UUID) -> BuildSession:
        """The build session; NotFound if unknown."""
        rows = await self._rows("select * from build_sessions where id = %s", (build_id,))
        if not rows:
            raise NotFound(f"build session {build_id} not found", field="build_id")
        return BuildSession.model_validate(rows[0])

    async def update_session(self, build_id: UUID, changes: Mapping[str, Any]) -> BuildSession:
        """Set columns of a build session."""
        rows = await self._update("build_sessions", SESSION_COLUMNS, build_id, changes)
        if not rows:
            raise NotFound(f"build session {build_id} not found", field="build_id")
        return BuildSession.model_validate(rows[0])

    async def add_plan(self, project_id: UUID, features: Sequence[Feature]) -> None:
        """Append features to the plan; one already planned is kept as is."""
        await self._rows(
            "insert into project_plan (project_id, feature, priority, notes, position)"
            " select %(p)s, f, pr, n, o - 1 + coalesce((select max(position) + 1 from project_plan"
            "   where project_id = %(p)s), 0)"
            " from unnest(%(f)s::text[], %(pr)s::text[], %(n)s::text[]) with ordinality"
            "   as t(f, pr, n, o)"
            " on conflict (project_id, feature) do nothing",
            {
                "p": project_id,
                "f": [f.feature for f in features],
                "pr": [f.priority for f in features],
                "n": [f.notes for f in features],
            },
        )

    async def list_plan(self, project_id: UUID) -> list[PlanItem]:
        """The plan in order."""
        rows = await self._rows(
            "select * from project_plan where project_id = %s order by position, created_at",
            (project_id,),
        )
        return [PlanItem.model_validate(r) for r in rows]

    async def add_activity(
        self, project_id: UUID, actor: str, action: str, details: Mapping[str, Any]
    ) -> None:
        """Append to the activity log."""
        await self._rows(
            "insert into activity_log (project_id, actor, action, details) values (%s, %s, %s, %s)",
            (project_id, actor, action, Jsonb(dict(details))),
        )

    async def put_files(self, project_id: UUID, files: Mapping[str, str]) -> None:
        """Write the project's files in one upsert."""
        if not files:
            return
        await self._rows(
            "insert into project_files (project_id, path, content)"
            " select %(p)s, path, content from unnest(%(paths)s::text[], %(contents)s::text[])"
            "   as t(path, content)"
            " on conflict (project_id, path) do update set content = excluded.content",
            {"p": project_id, "paths": list(files), "contents": list(files.values())},
        )

    async def list_activity(self, project_id: UUID) -> list[Activity]:
        """The activity log, oldest first."""
        rows = await self._rows(
            "select * from activity_log where project_id = %s order by created_at, id",
            (project_id,),
        )
        return [Activity.model_validate(r) for r in rows]

    # runs ---------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> AgentRun:
        """Insert a run in status `pending`."""
        rows = await self._rows(
            "insert into agent_runs (agent_name, agent_id, task_id, project_id, session_id,"
            " user_id, metadata) values (%s, %s, %s, %s, %s, %s, %s) returning *",
            (
                new.agent_name, new.agent_id or new.agent_name, new.task_id, new.project_id,
                new.session_id, new.user_id, Jsonb(new.metadata),
            ),
        )  # fmt: skip
        return AgentRun.model_validate(rows[0])

    async def get_run(self, run_id: UUID) -> AgentRun:
        """The run; NotFound if unknown."""
        rows = await self._rows("select * from agent_runs where id = %s", (run_id,))
        if not rows:
            raise NotFound(f"agent run {run_id} not found", field="run_id")
        return AgentRun.model_validate(rows[0])

    async def update_run(
        self, run_id: UUID, changes: Mapping[str, Any], *, expected_status: RunStatus | None = None
    ) -> AgentRun | None:
        """Set columns when the run is still in `expected_status`; None if it moved on."""
        unknown = set(changes) - RUN_COLUMNS
        if unknown:
            raise ValidationFailed(f"cannot set {sorted(unknown)} on a run", field=min(unknown))
        if not changes:
            run = await self.get_run(run_id)
            return run if expected_status is None or run.status == expected_status else None
        params: dict[str, Any] = {
            k: Jsonb(v) if k in _JSON_COLUMNS else v for k, v in changes.items()
        }
        params.update(id=run_id, expected=expected_status)
        query = sql.SQL(
            "update agent_runs set {} where id = %(id)s"
            " and (%(expected)s::text is null or status = %(expected)s) returning *"
        ).format(_set_clause(changes))
        rows = await self._rows(query, params)
        if rows:
            return AgentRun.model_validate(rows[0])
        await self.get_run(run_id)  # NotFound when it does not exist at all
        return None

    async def list_runs(
        self,
        *,
        project_id: UUID | None = None,
        user_id: UUID | None = None,
        active: bool | None = None,
        limit: int = 100,
    ) -> list[AgentRun]:
        """Newest first, filtered."""
        live = sorted(LIVE_RUN_STATUSES)
        rows = await self._rows(
            "select * from agent_runs where (%(p)s::uuid is null or project_id = %(p)s)"
            " and (%(u)s::uuid is null or user_id = %(u)s)"
            " and (%(a)s::boolean is null or (status = any(%(live)s)) = %(a)s)"
            " order by started_at desc, id limit %(l)s",
            {"p": project_id, "u": user_id, "a": active, "live": live, "l": limit},
        )
        return [AgentRun.model_validate(r) for r in rows]

    # events -------------------------------------------------------------------------------

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        """COPY the batch; on a primary-key collision, merge it skipping stored events."""
        if not events:
            return
        try:
            async with self._pool.connection() as conn:
                try:
                    async with (
                        conn.transaction(),
                        conn.cursor() as cur,
                        cur.copy(_COPY_EVENTS) as copy,
                    ):
                        # Stream in chunks: the server parses and indexes one chunk while
                        # we encode the next.
                        for i in range(0, len(events), _COPY_CHUNK):
                            await copy.write(encode_copy_rows(events[i : i + _COPY_CHUNK]))
                except pgerrors.UniqueViolation:
                    await self._merge_events(conn, events)
        except psycopg.Error as err:
            raise translate(err) from err
        except TimeoutError as err:
            raise StoreUnavailable(f"database unavailable: {err}") from err

    @staticmethod
    async def _merge_events(
        conn: psycopg.AsyncConnection[Any], events: Sequence[EventRecord]
    ) -> None:
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                "create temp table if not exists _events_stage"
                " (like public.project_logs) on commit delete rows"
            )
            async with cur.copy(_COPY_STAGE) as copy:
                await copy.write(encode_copy_rows(events))
            await cur.execute(
                "insert into project_logs select * from _events_stage on conflict do nothing"
            )

    async def read_events(
        self,
        project_id: UUID,
        *,
        after: Cursor,
        limit: int = 1000,
        agent: str | None = None,
        level: LogLevel | None = None,
    ) -> list[Event]:
        """Events of a project not yet seen by `after` (the SQL function `read_events`)."""
        cursor_json = json.dumps({str(w): s for w, s in after.positions.items()})
        rows = await self._rows(
            "select * from read_events(%s, %s::jsonb, %s, %s, %s)",
            (project_id, cursor_json, agent, level, limit),
        )
        return [Event.model_validate(r) for r in rows]

    # the pipeline --------------------------------------------------------------------------

    async def spawn_build(
        self,
        new: NewProject,
        agents: Sequence[str],
        *,
        template: str | None,
        vibe_text: str | None,
        options: Mapping[str, Any],
        fingerprint: str | None = None,
    ) -> Spawned:
        """`spawn_project` plus seed 004's template, vibe text and options (SQL spawn_build)."""
        rows = await self._rows(
            "select spawn_build(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) as r",
            (new.title, new.description, new.category, new.user_id, new.idempotency_key,
             list(agents), template, vibe_text, Jsonb(dict(options)), fingerprint),
        )  # fmt: skip
        r = rows[0]["r"]
        return Spawned(UUID(r["project_id"]), UUID(r["build_id"]), bool(r["created"]),
                       bool(r.get("mismatch")))  # fmt: skip

    async def _sessions(self, query: str, params: Sequence[Any]) -> list[BuildSession]:
        return [BuildSession.model_validate(r) for r in await self._rows(query, params)]

    async def claim_build(
        self, build_id: UUID, owner: str, ttl: float, *, dead_owner: str | None = None
    ) -> BuildSession | None:
        """Take or keep the lease (SQL claim_build)."""
        found = await self._sessions(
            "select * from claim_build(%s, %s, %s, %s)", (build_id, owner, ttl, dead_owner)
        )
        return found[0] if found else None

    async def renew_build_lease(
        self, build_id: UUID, owner: str, ttl: float
    ) -> BuildSession | None:
        """Extend the lease `owner` holds (SQL renew_build_lease)."""
        found = await self._sessions(
            "select * from renew_build_lease(%s, %s, %s)", (build_id, owner, ttl)
        )
        return found[0] if found else None

    async def release_build_lease(self, build_id: UUID, owner: str) -> None:
        """Give the lease up."""
        await self._rows("select release_build_lease(%s, %s)", (build_id, owner))

    async def reclaimable_builds(
        self, grace: float, limit: int = 50, *, dead_owners: Sequence[str] = ()
    ) -> list[BuildSession]:
        """Live builds nobody owns (SQL reclaimable_builds)."""
        return await self._sessions(
            "select * from reclaimable_builds(%s, %s, %s)", (grace, limit, list(dead_owners))
        )

    async def build_lease_owners(self) -> list[str]:
        """The owners of live leases (SQL build_lease_owners)."""
        rows = await self._rows("select * from build_lease_owners() as o", ())
        return [r["o"] for r in rows]

    async def stalled_runs(self, deadline: float, limit: int = 50) -> list[AgentRun]:
        """Silent live runs of owned builds (SQL stalled_runs)."""
        rows = await self._rows("select * from stalled_runs(%s, %s)", (deadline, limit))
        return [AgentRun.model_validate(r) for r in rows]

    async def create_approval(self, approval: Mapping[str, Any]) -> Approval:
        """Insert an approval, or return the one already made for (session, attempt)."""
        a = dict(approval)
        rows = await self._rows(
            "with new as (insert into approvals (token, session_id, project_id, run_id, user_id,"
            " attempt, reason, evidence, expires_at) values (%(token)s, %(session_id)s,"
            " %(project_id)s, %(run_id)s, %(user_id)s, %(attempt)s, %(reason)s, %(evidence)s,"
            " %(expires_at)s) on conflict (session_id, attempt) do nothing returning *)"
            " select * from new union all select * from approvals"
            " where session_id = %(session_id)s and attempt = %(attempt)s"
            " and not exists (select 1 from new)",
            {**a, "evidence": Jsonb(a.get("evidence") or {})},
        )
        return Approval.model_validate(rows[0])

    async def get_approval(self, token: str) -> Approval:
        """The approval; NotFound if unknown."""
        rows = await self._rows("select * from approvals where token = %s", (token,))
        if not rows:
            raise NotFound("approval not found", field="token")
        return Approval.model_validate(rows[0])

    async def pending_approval(self, build_id: UUID) -> Approval | None:
        """The build's latest approval."""
        rows = await self._rows(
            "select * from approvals where session_id = %s order by attempt desc limit 1",
            (build_id,),
        )
        return Approval.model_validate(rows[0]) if rows else None

    async def decide_approval(self, token: str, decision: str, note: str | None) -> Approval | None:
        """Record a decision on a pending approval (SQL decide_approval)."""
        rows = await self._rows(
            "select * from decide_approval(%s, %s, %s)", (token, decision, note)
        )
        return Approval.model_validate(rows[0]) if rows else None

    async def expire_approvals(self, limit: int = 50) -> list[Approval]:
        """Expire overdue approvals (SQL expire_approvals)."""
        rows = await self._rows("select * from expire_approvals(%s)", (limit,))
        return [Approval.model_validate(r) for r in rows]

    async def record_usage(self, usage: ModelUsage) -> None:
        """Append to the cost ledger."""
        u = usage.model_dump()
        await self._rows(
            "insert into model_usage (project_id, session_id, run_id, agent_name, provider, model,"
            " prompt_name, prompt_version, input_tokens, output_tokens, cost_usd, attempts)"
            " values (%(project_id)s, %(session_id)s, %(run_id)s, %(agent_name)s, %(provider)s,"
            " %(model)s, %(prompt_name)s, %(prompt_version)s, %(input_tokens)s,"
            " %(output_tokens)s, %(cost_usd)s, %(attempts)s)",
            u,
        )

    async def list_usage(self, project_id: UUID) -> list[ModelUsage]:
        """The project's ledger, oldest first."""
        rows = await self._rows(
            "select * from model_usage where project_id = %s order by created_at, id",
            (project_id,),
        )
        return [ModelUsage.model_validate(r) for r in rows]

    async def get_setting(self, key: str) -> Any | None:
        """An admin setting's value."""
        rows = await self._rows("select value from admin_settings where key = %s", (key,))
        return rows[0]["value"] if rows else None

    async def put_setting(self, key: str, value: Any) -> None:
        """Set an admin setting."""
        await self._rows(
            "insert into admin_settings (key, value) values (%s, %s)"
            " on conflict (key) do update set value = excluded.value",
            (key, Jsonb(value)),
        )

    async def active_prompt(self, name: str) -> Prompt | None:
        """The active version of a prompt."""
        rows = await self._rows("select * from prompts where name = %s and is_active", (name,))
        return Prompt.model_validate(rows[0]) if rows else None

    async def get_files(self, project_id: UUID) -> dict[str, str]:
        """The project's files."""
        rows = await self._rows(
            "select path, content from project_files where project_id = %s order by path",
            (project_id,),
        )
        return {r["path"]: r["content"] for r in rows}

    async def file_versions(self, project_id: UUID) -> dict[str, int]:
        """Each file's version."""
        rows = await self._rows(
            "select path, version from project_files where project_id = %s", (project_id,)
        )
        return {r["path"]: r["version"] for r in rows}

    async def put_spec_chunks(self, build_id: UUID, chunks: Sequence[str]) -> None:
        """Store the vibe's sections, idempotently by (session, index)."""
        if not chunks:
            return
        await self._rows(
            "insert into spec_chunks (session_id, chunk_index, content)"
            " select %(s)s, i - 1, c from unnest(%(c)s::text[]) with ordinality as t(c, i)"
            " on conflict (session_id, chunk_index) do nothing",
            {"s": build_id, "c": list(chunks)},
        )


# COPY text format: backslash, tab, newline and carriage return are escaped; NUL cannot be
# stored in text at all, so it becomes U+FFFD rather than failing the whole batch.
_NULL = "\\N"
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r\x00]")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\ufffd"})


def _text(value: str) -> str:
    return value.translate(_ESCAPES) if _NEEDS_ESCAPE.search(value) else value


class _Seconds:
    """Formats epoch seconds as timestamptz text, reusing the date part within a second."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def format(self, ts: float) -> str:
        second = int(ts)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
        return f"{self.prefix}.{int((ts - second) * 1_000_000):06d}+00"


def encode_copy_rows(events: Sequence[EventRecord]) -> bytes:
    """The batch as COPY text rows, in EVENT_COLUMNS order.

    One tight loop instead of psycopg's per-value dumpers: this is the writer's hot path.
    """
    seconds = _Seconds()
    names: dict[UUID | None, str] = {None: _NULL}
    lines = []
    for e in events:
        project = names.get(e.project_id)
        if project is None:
            project = names[e.project_id] = str(e.project_id)
        session = names.get(e.session_id)
        if session is None:
            session = names[e.session_id] = str(e.session_id)
        writer = names.get(e.writer_id)
        if writer is None:
            writer = names[e.writer_id] = str(e.writer_id)
        agent, level, etype, message = e.agent_name, e.level, e.type, e.message
        data = _NULL if e.data is None else e.data
        # One scan of all the text fields: escaping is rare, so the common row pays once.
        if _NEEDS_ESCAPE.search(f"{agent}{level}{etype}{message}{data}"):
            agent, level, etype, message = _text(agent), _text(level), _text(etype), _text(message)
            data = _NULL if e.data is None else _text(e.data)
        lines.append(
            f"{e.id}\t{project}\t{session}\t{agent}\t{level}\t{etype}\t{message}\t{data}\t"
            f"{seconds.format(e.timestamp)}\t{writer}\t{e.seq}\n"
        )
    return "".join(lines).encode()
