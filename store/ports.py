"""The store ports: what the rest of myyc needs from persistence, and nothing more.

Two adapters implement them — Postgres (psycopg 3) and Supabase REST (PostgREST over
httpx) — and one contract suite (tests/integration/test_store_contract.py) runs on both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol
from uuid import UUID

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
from schemas.status import LogLevel, RunStatus

#: Columns a caller may set through the stores (both adapters enforce the same sets).
RUN_COLUMNS = frozenset(
    {
        "status", "current_step", "progress_percent", "result", "error", "error_code",
        "metadata", "verification_attempts", "verification_evidence", "heartbeat_at",
        "completed_at", "task_id",
    }
)  # fmt: skip
PROJECT_COLUMNS = frozenset(
    {"status", "progress", "github_url", "deployment_url", "preview_url", "error", "error_code"}
)
SESSION_COLUMNS = frozenset(
    {"status", "plan", "environment", "outputs", "error", "error_code", "template", "presence",
     "finished_at"}
)  # fmt: skip


def reference_field(detail: str) -> str | None:
    """The column a foreign-key error names ("Key (user_id)=(…) is not present…")."""
    match = re.search(r"Key \((\w+)\)=", detail)
    return match.group(1) if match else None


class EventRecord(NamedTuple):
    """One event on its way to the store (cheap to build on the hot path)."""

    id: str
    """The event id as UUID text (text because building UUID objects costs the writer)."""
    project_id: UUID
    session_id: UUID | None
    agent_name: str
    level: str
    type: str
    message: str
    data: str | None
    """JSON text, already serialised."""
    timestamp: float
    """Seconds since the epoch."""
    writer_id: UUID
    seq: int


class ProjectStore(Protocol):
    """Projects and their build sessions."""

    async def create_project(self, new: NewProject) -> Project:
        """Insert a project in status `spawning`."""
        ...

    async def get_project(self, project_id: UUID) -> Project:
        """The project; NotFound if unknown."""
        ...

    async def list_projects(
        self, *, user_id: UUID | None = None, limit: int = 100
    ) -> list[Project]:
        """Newest first; only `user_id`'s when given."""
        ...

    async def update_project(self, project_id: UUID, changes: Mapping[str, Any]) -> Project:
        """Set columns; NotFound if unknown."""
        ...

    async def rollup_project(self, project_id: UUID) -> Project:
        """Derive the project's status and progress from its runs (atomically)."""
        ...

    async def create_session(
        self, project_id: UUID, *, user_id: UUID | None, vibe_text: str | None
    ) -> BuildSession:
        """Queue a build session for a project."""
        ...


class RunStore(Protocol):
    """Agent runs (seed 001)."""

    async def create_run(self, new: NewRun) -> AgentRun:
        """Insert a run in status `pending`."""
        ...

    async def get_run(self, run_id: UUID) -> AgentRun:
        """The run; NotFound if unknown."""
        ...

    async def update_run(
        self, run_id: UUID, changes: Mapping[str, Any], *, expected_status: RunStatus | None = None
    ) -> AgentRun | None:
        """Set columns when the run is still in `expected_status`; None if it moved on.

        NotFound if the run does not exist at all.
        """
        ...

    async def list_runs(
        self,
        *,
        project_id: UUID | None = None,
        user_id: UUID | None = None,
        active: bool | None = None,
        limit: int = 100,
    ) -> list[AgentRun]:
        """Newest first, filtered."""
        ...


class EventStore(Protocol):
    """The event log (project_logs, seen as build_events too)."""

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        """Persist a batch; events already stored (same id) are skipped, not duplicated.

        Raises StoreUnavailable when the store cannot be reached (the caller retries), and
        other MyycErrors for events that can never be stored (an unknown project).
        """
        ...

    async def read_events(
        self,
        project_id: UUID,
        *,
        after: Cursor,
        limit: int = 1000,
        agent: str | None = None,
        level: LogLevel | None = None,
    ) -> list[Event]:
        """Events of a project not yet seen by `after`, each writer's in sequence order."""
        ...


class Spawned(NamedTuple):
    """The result of a spawn: the ids, and whether this call created them."""

    project_id: UUID
    build_id: UUID
    created: bool
    mismatch: bool = False
    """A repeated Idempotency-Key whose request differs from the first one's."""


class BuildStore(Protocol):
    """Spawning, build sessions, and seed 002's plan and activity log."""

    async def spawn_project(self, new: NewProject, agents: Sequence[str]) -> Spawned:
        """In one transaction: project, build session, one pending run per agent.

        A repeated `new.idempotency_key` (per owner) returns the first spawn's ids.
        """
        ...

    async def get_session(self, build_id: UUID) -> BuildSession:
        """The build session; NotFound if unknown."""
        ...

    async def update_session(self, build_id: UUID, changes: Mapping[str, Any]) -> BuildSession:
        """Set columns (status, plan, environment, outputs, error, error_code)."""
        ...

    async def add_plan(self, project_id: UUID, features: Sequence[Feature]) -> None:
        """Append features to the project's plan (a feature already planned is kept as is)."""
        ...

    async def list_plan(self, project_id: UUID) -> list[PlanItem]:
        """The project's plan in order."""
        ...

    async def add_activity(
        self, project_id: UUID, actor: str, action: str, details: Mapping[str, Any]
    ) -> None:
        """Append to the project's activity log (actor: ai, user or system)."""
        ...

    async def put_files(self, project_id: UUID, files: Mapping[str, str]) -> None:
        """Write the project's files (`project_files`, what previews serve): one upsert."""
        ...

    async def list_activity(self, project_id: UUID) -> list[Activity]:
        """The project's activity log, oldest first."""
        ...


class PipelineStore(Protocol):
    """What the build pipeline needs beyond rows: leases, approvals, the ledger, settings."""

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
        """`spawn_project` with seed 004's template, vibe text and options on the session.

        `fingerprint` identifies the request: a repeated idempotency key with another
        fingerprint creates nothing and answers `mismatch`.
        """
        ...

    async def claim_build(
        self, build_id: UUID, owner: str, ttl: float, *, dead_owner: str | None = None
    ) -> BuildSession | None:
        """Take or keep the build's lease; None when it is over or another owner is live.

        `dead_owner`: an owner the caller knows is dead, whose lease need not be waited out.
        """
        ...

    async def renew_build_lease(
        self, build_id: UUID, owner: str, ttl: float
    ) -> BuildSession | None:
        """Extend the lease `owner` holds; None when it was lost."""
        ...

    async def release_build_lease(self, build_id: UUID, owner: str) -> None:
        """Give the lease up (the build waits on a person, or ended)."""
        ...

    async def reclaimable_builds(
        self, grace: float, limit: int = 50, *, dead_owners: Sequence[str] = ()
    ) -> list[BuildSession]:
        """Live builds whose lease expired (or that nobody claimed within `grace` seconds),
        or whose owner is one of `dead_owners`."""
        ...

    async def build_lease_owners(self) -> list[str]:
        """The owners of live leases now."""
        ...

    async def stalled_runs(self, deadline: float, limit: int = 50) -> list[AgentRun]:
        """Live runs silent for `deadline` seconds while their build's owner is alive."""
        ...

    async def create_approval(self, approval: Mapping[str, Any]) -> Approval:
        """Insert an approval; the one already made for (session, attempt) is returned as is."""
        ...

    async def get_approval(self, token: str) -> Approval:
        """The approval; NotFound if unknown."""
        ...

    async def pending_approval(self, build_id: UUID) -> Approval | None:
        """The build's latest approval, if one exists (any status)."""
        ...

    async def decide_approval(self, token: str, decision: str, note: str | None) -> Approval | None:
        """Record the decision on a pending approval; None when it was not pending."""
        ...

    async def expire_approvals(self, limit: int = 50) -> list[Approval]:
        """Mark pending approvals past their deadline expired, and return them."""
        ...

    async def record_usage(self, usage: ModelUsage) -> None:
        """Append a model call to the cost ledger."""
        ...

    async def list_usage(self, project_id: UUID) -> list[ModelUsage]:
        """The project's ledger, oldest first."""
        ...

    async def get_setting(self, key: str) -> Any | None:
        """An admin setting's JSON value; None when unset."""
        ...

    async def put_setting(self, key: str, value: Any) -> None:
        """Set an admin setting."""
        ...

    async def active_prompt(self, name: str) -> Prompt | None:
        """The active version of prompt `name`, if any."""
        ...

    async def get_files(self, project_id: UUID) -> dict[str, str]:
        """The project's files, path → content."""
        ...

    async def file_versions(self, project_id: UUID) -> dict[str, int]:
        """Each file's version (it moves only when the content changes)."""
        ...

    async def put_spec_chunks(self, build_id: UUID, chunks: Sequence[str]) -> None:
        """Store the vibe's sections (`spec_chunks`); a chunk already stored is kept."""
        ...


class Store(ProjectStore, RunStore, EventStore, BuildStore, PipelineStore, Protocol):
    """Everything the control plane persists."""

    async def close(self) -> None:
        """Release connections."""
        ...
