"""The Supabase REST store adapter: the Store port over PostgREST (`/rest/v1`) with httpx.

It behaves like the Postgres adapter (store/postgres.py) — same rows, same errors — and the
contract suite (tests/integration/test_store_contract.py) runs both on one database.

Errors. A PostgREST error body `{"code", "message", "details", "hint"}` is turned into
myyc's vocabulary in one place, `error_from_response`:

    MyycError
     ├── Conflict              23505 unique violation (409), any other 409
     ├── NotFound              23503 unknown reference (field="project_id" when it names it),
     │                         P0002 no data found (PostgREST answers it with a 500), other 404s
     ├── ValidationFailed      23514 check / 23502 not null (field = constraint or column),
     │                         22xxx invalid values, unknown columns
     ├── StoreUnavailable      (the caller may retry; writers keep their events)
     │    ├── RestUnavailable  429, 408, transient 5xx (no PostgREST body, PGRST000-003,
     │    │                    SQLSTATE classes 08/40/53/57), connection errors, timeouts;
     │    │                    `.retry_after` from Retry-After, `.status`
     │    ├── RestUnauthorized 401: the service key was refused (ErrorCode.unauthorized)
     │    └── RestForbidden    403: its role may not do this (ErrorCode.forbidden)
     └── MyycError itself      anything else, including a table or function missing from
                               the schema cache (PGRST205/PGRST202: a deployment fault)

Retries: one layer per failure. Reads, guarded updates and the rollup RPC retry
RestUnavailable themselves (clients/retry.py rules). Creating a row retries only what cannot
have reached the database (a connect error, a 429, PostgREST's PGRST000/002/003), so a lost
answer never inserts twice.
`append_events` never retries: the LogWriter owns that loop, and its batches are idempotent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any
from uuid import UUID

import httpx
from pydantic import ValidationError

from clients.retry import RetryPolicy, backoff_delay, parse_retry_after, should_retry
from schemas.errors import (
    Conflict,
    ErrorCode,
    MyycError,
    NotFound,
    StoreUnavailable,
    ValidationFailed,
)
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

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_REST_POLICY = RetryPolicy(
    max_attempts=4, base_delay=0.2, max_delay=4.0, max_retry_after=30.0
)
#: Requests in flight at once for one read_events call (one per writer in the cursor).

_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")
_TRANSIENT_PGRST = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
_NOT_EXECUTED = frozenset({"PGRST000", "PGRST002", "PGRST003"})
#: A table or function missing from PostgREST's schema cache (or from the database).
_SCHEMA_MISSES = frozenset({"PGRST202", "PGRST205", "42P01", "42883"})
_COLUMN = re.compile(r'column "([^"]+)"')
_CONSTRAINT = re.compile(r'constraint "([^"]+)"')
_SEND_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class RestUnavailable(StoreUnavailable):
    """Supabase REST did not answer usefully; the caller may retry (after `retry_after`)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        postgrest_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds the server asked us to wait (Retry-After), if it said."""
        self.status = status
        """The HTTP status, or None for a connection error or timeout."""
        self.postgrest_code = postgrest_code
        """The `code` of PostgREST's error body (PGRST00x, a SQLSTATE), if it sent one."""

    @property
    def unsent(self) -> bool:
        """Whether the statement surely never ran (so even an insert may be sent again)."""
        # A gateway's 429 refuses before PostgREST; PGRST000/002/003 mean PostgREST had no
        # database connection, no schema cache, or no pool slot: nothing was executed.
        return self.status == 429 or self.postgrest_code in _NOT_EXECUTED


class RestUnauthorized(StoreUnavailable):
    """Supabase refused the service key (401: missing, malformed, expired, rotated).

    A deployment fault, not the end user's: it is a StoreUnavailable so that writers keep
    their events (retry, then spool) until the key is fixed, instead of rejecting them.
    """

    code = ErrorCode.unauthorized
    retry_after: float | None = None


class RestForbidden(StoreUnavailable):
    """The key's role may not do this (403), e.g. a table the migrations forgot to grant."""

    code = ErrorCode.forbidden
    retry_after: float | None = None


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], *, now: float | None = None
) -> MyycError:
    """Map a failed PostgREST answer to myyc's error vocabulary (see the module docstring)."""
    info = _error_body(body)
    code = str(info.get("code") or "")
    message = str(info.get("message") or "") or f"HTTP {status}"
    details = str(info.get("details") or "")
    hint = str(info.get("hint") or "")
    text = message + (f" ({details})" if details else "") + (f" hint: {hint}" if hint else "")
    if status in (408, 429) or _is_transient(status, code):
        retry_after = parse_retry_after(headers, time.time() if now is None else now)
        return RestUnavailable(
            f"supabase rest unavailable: HTTP {status}: {text}",
            retry_after=retry_after,
            status=status,
            postgrest_code=code or None,
        )
    if code == "23505":
        return Conflict(f"already exists: {details or message}")
    if code == "23503":
        field = reference_field(f"{details} {message}")
        return NotFound(f"unknown reference: {details or message}", field=field)
    if code == "P0002":
        return NotFound(message)
    if code in ("23514", "23502"):
        column = _COLUMN.search(message) if code == "23502" else None
        constraint = _CONSTRAINT.search(message)
        field = column.group(1) if column else constraint.group(1) if constraint else None
        return ValidationFailed(f"rejected by the database: {message}", field=field)
    if code.startswith("22") or code in ("42703", "PGRST102", "PGRST204"):
        return ValidationFailed(f"invalid value: {message}")
    if code in _SCHEMA_MISSES:
        # Not an unknown id: the database lacks what this adapter needs (as an undefined
        # table is for the Postgres adapter). Surface it, do not pass it off as a 404.
        return MyycError(f"supabase rest schema mismatch: {text}")
    if status == 401:
        return RestUnauthorized(f"supabase rest refused the key: {text}")
    if status == 403:
        return RestForbidden(f"supabase rest forbids this: {text}")
    if status == 404:
        return NotFound(f"not found: {text}")
    if status == 409:
        return Conflict(f"conflict: {text}")
    return MyycError(f"supabase rest error: HTTP {status} {code}: {text}")


def _error_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        return {}  # a proxy's HTML page
    return parsed if isinstance(parsed, dict) else {}


def _is_transient(status: int, code: str) -> bool:
    if status < 500:
        return False
    if not code:
        return True  # not PostgREST speaking: a gateway or proxy in front of it
    if code.startswith("PGRST"):
        return code in _TRANSIENT_PGRST
    # The same SQLSTATEs psycopg raises as OperationalError (the Postgres adapter's outages).
    return code[:2] in _TRANSIENT_SQLSTATE_CLASSES


def _jsonable(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot send {type(value).__name__} to Supabase REST")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, default=_jsonable, separators=(",", ":")).encode()


def _nul_free(text: str) -> str:
    # PostgreSQL text cannot hold NUL; the Postgres adapter stores U+FFFD instead of failing
    # the batch, and so does this one.
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _timestamp(ts: float) -> str:
    # Microseconds truncated, not rounded: to the microsecond what the Postgres adapter's COPY
    # writes, so both adapters store the same instant for the same event.
    second = int(ts)
    wall = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{wall}.{int((ts - second) * 1_000_000):06d}+00:00"


def _event_json(e: EventRecord) -> str:
    head = json.dumps(
        {
            "id": str(e.id), "project_id": str(e.project_id),
            "session_id": None if e.session_id is None else str(e.session_id),
            "agent_name": _nul_free(e.agent_name), "level": _nul_free(e.level),
            "type": _nul_free(e.type), "message": _nul_free(e.message),
            "timestamp": _timestamp(e.timestamp), "writer_id": str(e.writer_id), "seq": e.seq,
        },
        separators=(",", ":"),
    )  # fmt: skip
    # `data` is JSON text already: splice it in rather than parse and re-serialise it.
    data = "null" if e.data is None else _nul_free(e.data)
    return f'{head[:-1]},"data":{data}}}'


@dataclass(frozen=True, slots=True)
class _Reply:
    response: httpx.Response
    ambiguous: bool
    """An earlier attempt failed after it may have reached the database."""


class SupabaseRestStore:
    """The Store port on Supabase's REST API (PostgREST), with the service-role key."""

    def __init__(
        self,
        url: str,
        service_key: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        policy: RetryPolicy = DEFAULT_REST_POLICY,
    ) -> None:
        base = url.rstrip("/")
        self._base = base if base.endswith("/rest/v1") else f"{base}/rest/v1"
        self._headers = {
            "apikey": service_key,
            "Authorization": f"Bearer {service_key}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._owns_client = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout
        self._policy = policy

    async def close(self) -> None:
        """Close the HTTP client (an injected one belongs to the caller and stays open)."""
        if self._owns_client:
            await self._http.aclose()

    # the wire ------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        prefer: str | None = None,
        idempotent: bool = True,
        retry: bool = True,
    ) -> _Reply:
        """One call, retried per the policy; raises the mapped MyycError when it fails."""
        headers = dict(self._headers)
        if prefer:
            headers["Prefer"] = prefer
        attempt = 0
        ambiguous = False
        while True:
            attempt += 1
            status: int | None = None
            try:
                response = await self._http.request(
                    method, self._base + path, params=list(params), content=body,
                    headers=headers, timeout=self._timeout,
                )  # fmt: skip
            except httpx.TransportError as err:
                unsent = isinstance(err, _SEND_UNSENT)
                error: MyycError = RestUnavailable(
                    f"supabase rest unreachable: {type(err).__name__}: {err}"
                )
                cause: BaseException = err
            else:
                if response.is_success:
                    return _Reply(response, ambiguous)
                status = response.status_code
                error = error_from_response(status, response.content, response.headers)
                unsent = isinstance(error, RestUnavailable) and error.unsent
                cause = httpx.HTTPStatusError(
                    f"HTTP {status}", request=response.request, response=response
                )
            retry_after = error.retry_after if isinstance(error, RestUnavailable) else None
            if (
                not retry
                or not isinstance(error, RestUnavailable)
                or not (idempotent or unsent)
                or not should_retry(attempt, self._policy, status=status, retry_after=retry_after)
            ):
                raise error from cause
            ambiguous = ambiguous or not unsent
            delay = backoff_delay(attempt, self._policy, retry_after=retry_after)
            logger.info("supabase rest %s %s failed (%s); retry %d in %.2fs",
                        method, path, status or "transport", attempt, delay)  # fmt: skip
            await asyncio.sleep(delay)

    async def _get(self, table: str, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        reply = await self._send("GET", f"/{table}", params=[("select", "*"), *params])
        rows: list[dict[str, Any]] = reply.response.json()
        return rows

    async def _insert(self, table: str, row: Mapping[str, Any]) -> dict[str, Any]:
        reply = await self._send(
            "POST", f"/{table}", body=_dumps(row), prefer="return=representation", idempotent=False
        )
        rows: list[dict[str, Any]] = reply.response.json()
        return rows[0]

    async def _patch(
        self, table: str, params: Sequence[tuple[str, str]], changes: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], bool]:
        reply = await self._send(
            "PATCH", f"/{table}", params=params, body=_dumps(dict(changes)),
            prefer="return=representation",
        )  # fmt: skip
        rows: list[dict[str, Any]] = reply.response.json()
        return rows, reply.ambiguous

    # projects -----------------------------------------------------------------------------

    async def create_project(self, new: NewProject) -> Project:
        """Insert a project in status `spawning`."""
        row = await self._insert(
            "projects",
            {
                "title": new.title, "description": new.description, "category": new.category,
                "user_id": new.user_id, "idempotency_key": new.idempotency_key,
            },
        )  # fmt: skip
        return Project.model_validate(row)

    async def get_project(self, project_id: UUID) -> Project:
        """The project; NotFound if unknown."""
        rows = await self._get("projects", [("id", f"eq.{project_id}")])
        if not rows:
            raise NotFound(f"project {project_id} not found", field="project_id")
        return Project.model_validate(rows[0])

    async def list_projects(
        self, *, user_id: UUID | None = None, limit: int = 100
    ) -> list[Project]:
        """Newest first; only `user_id`'s when given."""
        _check_limit(limit)
        params = [("order", "created_at.desc,id.asc"), ("limit", str(limit))]
        if user_id is not None:
            params.append(("user_id", f"eq.{user_id}"))
        return [Project.model_validate(r) for r in await self._get("projects", params)]

    async def update_project(self, project_id: UUID, changes: Mapping[str, Any]) -> Project:
        """Set columns; NotFound if unknown."""
        unknown = set(changes) - PROJECT_COLUMNS
        if unknown:
            raise ValidationFailed(f"cannot set {sorted(unknown)} on a project", field=min(unknown))
        if not changes:  # PostgREST answers an empty PATCH as if no row matched
            return await self.get_project(project_id)
        rows, _ = await self._patch("projects", [("id", f"eq.{project_id}")], changes)
        if not rows:
            raise NotFound(f"project {project_id} not found", field="project_id")
        return Project.model_validate(rows[0])

    async def rollup_project(self, project_id: UUID) -> Project:
        """Derive status and progress from the runs (the SQL function, as /rpc/rollup_project)."""
        reply = await self._send(
            "POST", "/rpc/rollup_project", body=_dumps({"p_project_id": project_id})
        )
        rows: list[dict[str, Any]] = reply.response.json()
        return Project.model_validate(rows[0])

    async def create_session(
        self, project_id: UUID, *, user_id: UUID | None, vibe_text: str | None
    ) -> BuildSession:
        """Queue a build session for a project."""
        row = await self._insert(
            "build_sessions", {"project_id": project_id, "user_id": user_id, "vibe_text": vibe_text}
        )
        return BuildSession.model_validate(row)

    # builds -------------------------------------------------------------------------------

    async def spawn_project(self, new: NewProject, agents: Sequence[str]) -> Spawned:
        """Project, build session and pending runs in one transaction (/rpc/spawn_project).

        Retried like a read: the function is idempotent per idempotency key; without a key a
        retry after a lost answer could spawn twice, so it is then retried only when unsent.
        """
        reply = await self._send(
            "POST",
            "/rpc/spawn_project",
            body=_dumps(
                {
                    "p_title": new.title, "p_description": new.description,
                    "p_category": new.category, "p_user_id": new.user_id,
                    "p_idempotency_key": new.idempotency_key, "p_agents": list(agents),
                }
            ),
            idempotent=new.idempotency_key is not None,
        )  # fmt: skip
        r = reply.response.json()
        return Spawned(UUID(r["project_id"]), UUID(r["build_id"]), bool(r["created"]))

    async def get_session(self, build_id: UUID) -> BuildSession:
        """The build session; NotFound if unknown."""
        rows = await self._get("build_sessions", [("id", f"eq.{build_id}")])
        if not rows:
            raise NotFound(f"build session {build_id} not found", field="build_id")
        return BuildSession.model_validate(rows[0])

    async def update_session(self, build_id: UUID, changes: Mapping[str, Any]) -> BuildSession:
        """Set columns of a build session."""
        unknown = set(changes) - SESSION_COLUMNS
        if unknown:
            raise ValidationFailed(
                f"cannot set {sorted(unknown)} on build_sessions", field=min(unknown)
            )
        if not changes:  # PostgREST answers an empty PATCH as if no row matched
            return await self.get_session(build_id)
        rows, _ = await self._patch("build_sessions", [("id", f"eq.{build_id}")], changes)
        if not rows:
            raise NotFound(f"build session {build_id} not found", field="build_id")
        return BuildSession.model_validate(rows[0])

    async def add_plan(self, project_id: UUID, features: Sequence[Feature]) -> None:
        """Append features to the plan; one already planned is kept as is.

        Positions continue after the current last one exactly as the Postgres adapter numbers
        them (the i-th feature, from 0, goes to max + 1 + i, or i for an empty plan). Two
        calls at once may number alike, as they may there: the read and the insert are two
        requests here, two snapshots of one statement there.
        """
        if not features:
            return
        last = await self._get(
            "project_plan",
            [("project_id", f"eq.{project_id}"), ("order", "position.desc"), ("limit", "1")],
        )
        base = last[0]["position"] + 1 if last else 0
        rows = [
            {"project_id": project_id, "feature": f.feature, "priority": f.priority,
             "notes": f.notes, "position": base + i}
            for i, f in enumerate(features)
        ]  # fmt: skip
        # Idempotent (a feature is unique per project), so a lost answer may be retried.
        await self._send(
            "POST", "/project_plan", params=[("on_conflict", "project_id,feature")],
            body=_dumps(rows), prefer="return=minimal,resolution=ignore-duplicates",
        )  # fmt: skip

    async def put_files(self, project_id: UUID, files: Mapping[str, str]) -> None:
        """Write the project's files: one bulk upsert on (project_id, path)."""
        if not files:
            return
        rows = [{"project_id": project_id, "path": p, "content": c} for p, c in files.items()]
        # Idempotent (an upsert of the same content), so a lost answer may be retried.
        await self._send(
            "POST", "/project_files", params=[("on_conflict", "project_id,path")],
            body=_dumps(rows), prefer="return=minimal,resolution=merge-duplicates",
        )  # fmt: skip

    async def list_plan(self, project_id: UUID) -> list[PlanItem]:
        """The plan in order."""
        rows = await self._get(
            "project_plan",
            [("project_id", f"eq.{project_id}"), ("order", "position.asc,created_at.asc")],
        )
        return [PlanItem.model_validate(r) for r in rows]

    async def add_activity(
        self, project_id: UUID, actor: str, action: str, details: Mapping[str, Any]
    ) -> None:
        """Append to the activity log."""
        body = {
            "project_id": project_id,
            "actor": actor,
            "action": action,
            "details": dict(details),
        }
        await self._send(
            "POST", "/activity_log", body=_dumps(body), prefer="return=minimal", idempotent=False
        )

    async def list_activity(self, project_id: UUID) -> list[Activity]:
        """The activity log, oldest first."""
        rows = await self._get(
            "activity_log",
            [("project_id", f"eq.{project_id}"), ("order", "created_at.asc,id.asc")],
        )
        return [Activity.model_validate(r) for r in rows]

    # runs ---------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> AgentRun:
        """Insert a run in status `pending`."""
        row = await self._insert(
            "agent_runs",
            {
                "agent_name": new.agent_name, "agent_id": new.agent_id or new.agent_name,
                "task_id": new.task_id, "project_id": new.project_id,
                "session_id": new.session_id, "user_id": new.user_id, "metadata": new.metadata,
            },
        )  # fmt: skip
        return AgentRun.model_validate(row)

    async def get_run(self, run_id: UUID) -> AgentRun:
        """The run; NotFound if unknown."""
        rows = await self._get("agent_runs", [("id", f"eq.{run_id}")])
        if not rows:
            raise NotFound(f"agent run {run_id} not found", field="run_id")
        return AgentRun.model_validate(rows[0])

    async def update_run(
        self, run_id: UUID, changes: Mapping[str, Any], *, expected_status: RunStatus | None = None
    ) -> AgentRun | None:
        """Set columns when the run is still in `expected_status`; None if it moved on.

        The guard is a filter of the PATCH (`status=eq.<expected>`), so the check and the
        write are one statement. An empty answer is told apart by a GET: NotFound, or None.
        """
        unknown = set(changes) - RUN_COLUMNS
        if unknown:
            raise ValidationFailed(f"cannot set {sorted(unknown)} on a run", field=min(unknown))
        if not changes:  # nothing to write: answer the guard alone
            run = await self.get_run(run_id)
            return run if expected_status in (None, run.status) else None
        params = [("id", f"eq.{run_id}")]
        if expected_status is not None:
            params.append(("status", f"eq.{expected_status}"))
        rows, ambiguous = await self._patch("agent_runs", params, changes)
        if rows:
            return AgentRun.model_validate(rows[0])
        run = await self.get_run(run_id)  # NotFound when it does not exist at all
        # A retried PATCH whose first attempt landed sees the guard fail on its own write.
        # (An identical change by someone else in that window looks the same: accepted.)
        if ambiguous and _landed(run, changes):
            return run
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
        _check_limit(limit)
        params = [("order", "started_at.desc,id.asc"), ("limit", str(limit))]
        if project_id is not None:
            params.append(("project_id", f"eq.{project_id}"))
        if user_id is not None:
            params.append(("user_id", f"eq.{user_id}"))
        if active is not None:
            live = ",".join(sorted(LIVE_RUN_STATUSES))
            params.append(("status", f"in.({live})" if active else f"not.in.({live})"))
        return [AgentRun.model_validate(r) for r in await self._get("agent_runs", params)]

    # events -------------------------------------------------------------------------------

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        """One bulk INSERT through PostgREST; events already stored (same id) are skipped.

        Not retried here: a failure raises StoreUnavailable (RestUnavailable, with the
        server's Retry-After) and the LogWriter retries the same idempotent batch.
        """
        if not events:
            return
        body = ("[" + ",".join(_event_json(e) for e in events) + "]").encode()
        await self._send(
            "POST", "/project_logs", params=[("on_conflict", "id")], body=body,
            prefer="return=minimal,resolution=ignore-duplicates", retry=False,
        )  # fmt: skip

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
        _check_limit(limit)
        args = {
            "p_project_id": project_id,
            "p_cursor": {str(w): s for w, s in after.positions.items()},
            "p_agent": agent,
            "p_level": None if level is None else str(level),
            "p_limit": limit,
        }
        reply = await self._send("POST", "/rpc/read_events", body=_dumps(args))
        rows: list[dict[str, Any]] = reply.response.json()
        return [Event.model_validate(row) for row in rows]

    # the pipeline --------------------------------------------------------------------------

    async def _rpc(
        self, fn: str, args: Mapping[str, Any], *, idempotent: bool = True
    ) -> list[dict[str, Any]]:
        reply = await self._send("POST", f"/rpc/{fn}", body=_dumps(dict(args)),
                                 idempotent=idempotent)  # fmt: skip
        # A void function answers 204 with no body.
        body = reply.response.json() if reply.response.content else None
        rows: list[dict[str, Any]] = (
            body if isinstance(body, list) else [] if body is None else [body]
        )
        return rows

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
        """`spawn_project` with seed 004's fields (/rpc/spawn_build; retried like spawn)."""
        reply = await self._send(
            "POST",
            "/rpc/spawn_build",
            body=_dumps(
                {
                    "p_title": new.title, "p_description": new.description,
                    "p_category": new.category, "p_user_id": new.user_id,
                    "p_idempotency_key": new.idempotency_key, "p_agents": list(agents),
                    "p_template": template, "p_vibe_text": vibe_text, "p_options": dict(options),
                    "p_fingerprint": fingerprint,
                }
            ),
            idempotent=new.idempotency_key is not None,
        )  # fmt: skip
        r = reply.response.json()
        return Spawned(UUID(r["project_id"]), UUID(r["build_id"]), bool(r["created"]),
                       bool(r.get("mismatch")))  # fmt: skip

    async def claim_build(
        self, build_id: UUID, owner: str, ttl: float, *, dead_owner: str | None = None
    ) -> BuildSession | None:
        """Take or keep the lease (/rpc/claim_build: idempotent for one owner)."""
        rows = await self._rpc(
            "claim_build",
            {"p_session_id": build_id, "p_owner": owner, "p_ttl_seconds": ttl,
             "p_dead_owner": dead_owner},
        )  # fmt: skip
        return BuildSession.model_validate(rows[0]) if rows else None

    async def renew_build_lease(
        self, build_id: UUID, owner: str, ttl: float
    ) -> BuildSession | None:
        """Extend the lease (/rpc/renew_build_lease)."""
        rows = await self._rpc(
            "renew_build_lease", {"p_session_id": build_id, "p_owner": owner, "p_ttl_seconds": ttl}
        )
        return BuildSession.model_validate(rows[0]) if rows else None

    async def release_build_lease(self, build_id: UUID, owner: str) -> None:
        """Give the lease up (/rpc/release_build_lease)."""
        await self._rpc("release_build_lease", {"p_session_id": build_id, "p_owner": owner})

    async def reclaimable_builds(
        self, grace: float, limit: int = 50, *, dead_owners: Sequence[str] = ()
    ) -> list[BuildSession]:
        """Live builds nobody owns (/rpc/reclaimable_builds)."""
        rows = await self._rpc(
            "reclaimable_builds",
            {"p_grace_seconds": grace, "p_limit": limit, "p_dead_owners": list(dead_owners)},
        )
        return [BuildSession.model_validate(r) for r in rows]

    async def build_lease_owners(self) -> list[str]:
        """The owners of live leases (/rpc/build_lease_owners)."""
        rows = await self._rpc("build_lease_owners", {})
        return [str(next(iter(r.values()))) if isinstance(r, dict) else str(r) for r in rows]

    async def stalled_runs(self, deadline: float, limit: int = 50) -> list[AgentRun]:
        """Silent live runs of owned builds (/rpc/stalled_runs)."""
        rows = await self._rpc("stalled_runs", {"p_deadline_seconds": deadline, "p_limit": limit})
        return [AgentRun.model_validate(r) for r in rows]

    async def create_approval(self, approval: Mapping[str, Any]) -> Approval:
        """Insert an approval; the existing one for (session, attempt) is returned as is."""
        row = dict(approval)
        await self._send(
            "POST", "/approvals", params=[("on_conflict", "session_id,attempt")],
            body=_dumps(row), prefer="return=minimal,resolution=ignore-duplicates",
        )  # fmt: skip
        rows = await self._get(
            "approvals",
            [("session_id", f"eq.{row['session_id']}"), ("attempt", f"eq.{row['attempt']}")],
        )
        return Approval.model_validate(rows[0])

    async def get_approval(self, token: str) -> Approval:
        """The approval; NotFound if unknown."""
        rows = await self._get("approvals", [("token", f"eq.{token}")])
        if not rows:
            raise NotFound("approval not found", field="token")
        return Approval.model_validate(rows[0])

    async def pending_approval(self, build_id: UUID) -> Approval | None:
        """The build's latest approval."""
        rows = await self._get(
            "approvals",
            [("session_id", f"eq.{build_id}"), ("order", "attempt.desc"), ("limit", "1")],
        )
        return Approval.model_validate(rows[0]) if rows else None

    async def decide_approval(self, token: str, decision: str, note: str | None) -> Approval | None:
        """Record a decision on a pending approval (/rpc/decide_approval)."""
        rows = await self._rpc(
            "decide_approval", {"p_token": token, "p_decision": decision, "p_note": note},
            idempotent=False,
        )  # fmt: skip
        return Approval.model_validate(rows[0]) if rows else None

    async def expire_approvals(self, limit: int = 50) -> list[Approval]:
        """Expire overdue approvals (/rpc/expire_approvals)."""
        rows = await self._rpc("expire_approvals", {"p_limit": limit}, idempotent=False)
        return [Approval.model_validate(r) for r in rows]

    async def record_usage(self, usage: ModelUsage) -> None:
        """Append to the cost ledger."""
        await self._send(
            "POST", "/model_usage", body=_dumps(usage.model_dump()), prefer="return=minimal",
            idempotent=False,
        )  # fmt: skip

    async def list_usage(self, project_id: UUID) -> list[ModelUsage]:
        """The project's ledger, oldest first."""
        rows = await self._get(
            "model_usage", [("project_id", f"eq.{project_id}"), ("order", "created_at.asc,id.asc")]
        )
        return [ModelUsage.model_validate(r) for r in rows]

    async def get_setting(self, key: str) -> Any | None:
        """An admin setting's value."""
        rows = await self._get("admin_settings", [("key", f"eq.{key}")])
        return rows[0]["value"] if rows else None

    async def put_setting(self, key: str, value: Any) -> None:
        """Set an admin setting (an upsert on the key)."""
        await self._send(
            "POST", "/admin_settings", params=[("on_conflict", "key")],
            body=_dumps({"key": key, "value": value}),
            prefer="return=minimal,resolution=merge-duplicates",
        )  # fmt: skip

    async def active_prompt(self, name: str) -> Prompt | None:
        """The active version of a prompt."""
        rows = await self._get("prompts", [("name", f"eq.{name}"), ("is_active", "is.true")])
        return Prompt.model_validate(rows[0]) if rows else None

    async def get_files(self, project_id: UUID) -> dict[str, str]:
        """The project's files."""
        rows = await self._get(
            "project_files", [("project_id", f"eq.{project_id}"), ("order", "path.asc")]
        )
        return {r["path"]: r["content"] for r in rows}

    async def file_versions(self, project_id: UUID) -> dict[str, int]:
        """Each file's version."""
        rows = await self._get("project_files", [("project_id", f"eq.{project_id}")])
        return {r["path"]: r["version"] for r in rows}

    async def put_spec_chunks(self, build_id: UUID, chunks: Sequence[str]) -> None:
        """Store the vibe's sections, idempotently by (session, index)."""
        if not chunks:
            return
        rows = [
            {"session_id": build_id, "chunk_index": i, "content": c} for i, c in enumerate(chunks)
        ]
        await self._send(
            "POST", "/spec_chunks", params=[("on_conflict", "session_id,chunk_index")],
            body=_dumps(rows), prefer="return=minimal,resolution=ignore-duplicates",
        )  # fmt: skip


def _check_limit(limit: int) -> None:
    # PostgreSQL refuses a negative LIMIT (a DataError → ValidationFailed in the Postgres adapter).
    if limit < 0:
        raise ValidationFailed("limit must not be negative", field="limit")


def _landed(run: AgentRun, changes: Mapping[str, Any]) -> bool:
    """Whether `run` already holds every value in `changes` (compared as the model's types)."""
    try:
        wanted = AgentRun.model_validate({**run.model_dump(), **changes})
    except ValidationError:
        return False
    return all(getattr(wanted, k) == getattr(run, k) for k in changes)
