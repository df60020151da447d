"""Preview sessions and project files on PostgreSQL (psycopg 3, the store's pool).

Implements `previews.ports.PreviewStore` and `ProjectFileStore`. The per-user cap on live
previews is checked and enforced in one transaction under an advisory lock on the user, so
two concurrent starts cannot both squeeze under it; the one-live-session-per-project rule is
the partial unique index of the previews migration.

No Supabase REST variant yet: a deployment on `SUPABASE_URL` gives previews their own pool on
`DATABASE_URL` (`PostgresPreviewStore.connect`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from previews.ports import (
    LIVE_STATUSES,
    LiveSessionExists,
    PreviewLimitReached,
    PreviewSession,
    ProjectFile,
)
from schemas.errors import NotFound, StoreUnavailable, ValidationFailed
from schemas.events import Cursor
from schemas.status import PreviewStatus
from store.postgres import PostgresStore, translate

_SESSION_COLUMNS = frozenset(
    {
        "status", "container_id", "container_url", "error_message", "error_code",
        "expires_at", "ended_at", "session_id",
    }
)  # fmt: skip
_LIVE = sorted(str(s) for s in LIVE_STATUSES)
#: Namespace of the advisory locks taken per user while checking the live-preview cap.
_CAP_LOCK_NS = 0x70726576  # "prev"

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


class PostgresPreviewStore:
    """PreviewStore + ProjectFileStore over a psycopg pool (usually the PostgresStore's)."""

    def __init__(self, pool: Pool, *, owned: bool = False) -> None:
        """Use `pool`; `owned` pools are opened on first use and closed by `close()`."""
        self._pool = pool
        self._owned = owned
        self._opened = not owned

    @classmethod
    def of(cls, store: PostgresStore) -> PostgresPreviewStore:
        """Share a PostgresStore's pool."""
        return cls(store.pool)

    @classmethod
    def connect(cls, url: str, *, max_size: int = 4, wait_s: float = 5.0) -> PostgresPreviewStore:
        """A store with its own pool on `url`, opened lazily (for a Supabase REST deployment
        whose previews still need `DATABASE_URL`)."""
        pool: Pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True},
            timeout=wait_s,
        )
        return cls(pool, owned=True)

    async def close(self) -> None:
        """Close the pool if this store opened it."""
        if self._owned and self._opened:
            self._opened = False
            await self._pool.close()

    async def _ready(self) -> Pool:
        if not self._opened:
            self._opened = True
            await self._pool.open(wait=True, timeout=30)
        return self._pool

    async def _rows(
        self, query: str | sql.Composed, params: Mapping[str, Any] | tuple[Any, ...]
    ) -> list[dict[str, Any]]:
        pool = await self._ready()
        try:
            async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, params)
                return await cur.fetchall() if cur.description else []
        except psycopg.Error as err:
            raise translate(err) from err
        except TimeoutError as err:  # no healthy connection in time
            raise StoreUnavailable(f"database unavailable: {err}") from err

    # sessions ---------------------------------------------------------------------------

    async def create_session(
        self,
        project_id: UUID,
        *,
        user_id: UUID | None,
        expires_at: datetime,
        live_cap: int | None = None,
    ) -> PreviewSession:
        """Insert a session in `creating`, enforcing the user's live cap atomically."""
        pool = await self._ready()
        try:
            async with pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                if live_cap is not None:
                    # Serialise this user's starts: count and insert see the same world.
                    await cur.execute(
                        "select pg_advisory_xact_lock(%s, hashtext(coalesce(%s::text, '')))",
                        (_CAP_LOCK_NS, user_id),
                    )
                    await cur.execute(
                        "select count(*) as n from preview_sessions"
                        " where user_id is not distinct from %s and status = any(%s)",
                        (user_id, _LIVE),
                    )
                    row = await cur.fetchone()
                    held = int(row["n"]) if row else 0
                    if held >= live_cap:
                        raise PreviewLimitReached(
                            f"{held} live previews already (the limit is {live_cap});"
                            " stop one before starting another",
                            field="projectId",
                        )
                await cur.execute(
                    "insert into preview_sessions (project_id, user_id, status, expires_at)"
                    " values (%s, %s, 'creating', %s) returning *",
                    (project_id, user_id, expires_at),
                )
                created = await cur.fetchone()
        except pgerrors.UniqueViolation as err:
            raise LiveSessionExists(
                f"project {project_id} already has a live preview", field="projectId"
            ) from err
        except pgerrors.ForeignKeyViolation as err:
            raise NotFound(f"project {project_id} not found", field="projectId") from err
        except psycopg.Error as err:
            raise translate(err) from err
        except TimeoutError as err:
            raise StoreUnavailable(f"database unavailable: {err}") from err
        assert created is not None
        return PreviewSession.model_validate(created)

    async def get_session(self, session_id: UUID) -> PreviewSession:
        """The session; NotFound if unknown."""
        rows = await self._rows("select * from preview_sessions where id = %s", (session_id,))
        if not rows:
            raise NotFound(f"preview session {session_id} not found", field="sessionId")
        return PreviewSession.model_validate(rows[0])

    async def find_live(self, project_id: UUID) -> PreviewSession | None:
        """The project's live session, if any."""
        rows = await self._rows(
            "select * from preview_sessions where project_id = %s and status = any(%s)",
            (project_id, _LIVE),
        )
        return PreviewSession.model_validate(rows[0]) if rows else None

    async def update_session(
        self,
        session_id: UUID,
        changes: Mapping[str, object],
        *,
        only_if: frozenset[PreviewStatus] | None = None,
    ) -> PreviewSession | None:
        """Set columns when the status is in `only_if`; None if it moved on."""
        unknown = set(changes) - _SESSION_COLUMNS
        if unknown:
            raise ValidationFailed(
                f"cannot set {sorted(unknown)} on a preview session", field=min(unknown)
            )
        if not changes:
            return await self.get_session(session_id)
        params: dict[str, Any] = {
            k: (str(v) if isinstance(v, PreviewStatus) else v) for k, v in changes.items()
        }
        params["id"] = session_id
        params["only_if"] = None if only_if is None else sorted(str(s) for s in only_if)
        query = sql.SQL(
            "update preview_sessions set {} where id = %(id)s"
            " and (%(only_if)s::text[] is null or status = any(%(only_if)s)) returning *"
        ).format(
            sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
            )
        )
        rows = await self._rows(query, params)
        if rows:
            return PreviewSession.model_validate(rows[0])
        await self.get_session(session_id)  # NotFound when it does not exist at all
        return None

    async def list_live(self) -> list[PreviewSession]:
        """Every live session, oldest first."""
        rows = await self._rows(
            "select * from preview_sessions where status = any(%s) order by created_at, id",
            (_LIVE,),
        )
        return [PreviewSession.model_validate(r) for r in rows]

    async def list_expired(self, now: datetime) -> list[PreviewSession]:
        """Live sessions whose `expires_at` is at or before `now`."""
        rows = await self._rows(
            "select * from preview_sessions where status = any(%s) and expires_at <= %s"
            " order by expires_at, id",
            (_LIVE, now),
        )
        return [PreviewSession.model_validate(r) for r in rows]

    async def count_live(self, user_id: UUID | None) -> int:
        """How many live sessions `user_id` holds."""
        rows = await self._rows(
            "select count(*) as n from preview_sessions"
            " where user_id is not distinct from %s and status = any(%s)",
            (user_id, _LIVE),
        )
        return int(rows[0]["n"])

    # project files ----------------------------------------------------------------------

    async def put_file(self, project_id: UUID, path: str, content: str) -> ProjectFile:
        """Insert or replace one file; NotFound for an unknown project."""
        try:
            rows = await self._rows(
                "insert into project_files (project_id, path, content) values (%s, %s, %s)"
                " on conflict (project_id, path) do update set content = excluded.content"
                " returning project_id, path, content, updated_at",
                (project_id, path, content),
            )
        except NotFound as err:
            raise NotFound(f"project {project_id} not found", field="project_id") from err
        return ProjectFile.model_validate(rows[0])

    async def list_files(self, project_id: UUID) -> list[ProjectFile]:
        """Every file of the project, by path."""
        rows = await self._rows(
            "select project_id, path, content, updated_at from project_files"
            " where project_id = %s order by path",
            (project_id,),
        )
        return [ProjectFile.model_validate(r) for r in rows]

    async def log_position(self, project_id: UUID) -> Cursor:
        """Each writer's last sequence number in the project's log (an index-only scan)."""
        rows = await self._rows(
            "select writer_id, max(seq) as seq from project_logs where project_id = %s"
            " group by writer_id",
            (project_id,),
        )
        return Cursor({r["writer_id"]: int(r["seq"]) for r in rows})
