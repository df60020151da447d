"""The preview ports: where preview machines run, and where sessions and project files live.

Two `MachinesDriver` adapters implement the machine port — Fly Machines (`fly_driver`) and
local subprocesses on loopback (`local_driver`, the embedded default) — and one contract
suite (tests/integration/test_machines_driver_contract.py) runs against both.

A *machine* here is whatever runs one preview container. Every machine a driver creates is
tagged with `PREVIEW_TAG` plus the session and project it serves, so a sweep can tell ours
from everything else and find the session that owns it even before the session row knows
the machine's id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol
from uuid import UUID

from pydantic import ConfigDict

from schemas.base import Model
from schemas.errors import Conflict, ErrorCode, MyycError
from schemas.events import Cursor
from schemas.status import PreviewStatus

#: Metadata every preview machine carries; `list_ours` filters on it.
PREVIEW_TAG: Final = {"myyc": "preview"}
#: Metadata keys naming what a machine serves.
META_SESSION: Final = "session_id"
META_PROJECT: Final = "project_id"

#: A session in one of these holds (or is about to hold) a machine.
LIVE_STATUSES: Final = frozenset({PreviewStatus.creating, PreviewStatus.active})

#: The port a preview container's dev server listens on inside its machine.
CONTAINER_PORT: Final = 8080


# ------------------------------------------------------------------------------ errors


class DriverError(MyycError):
    """A machines driver could not do what was asked (the provider refused or failed)."""

    code = ErrorCode.upstream_error


class MachineBusy(DriverError):
    """Someone else holds the machine (a Fly lease); try again once it is released."""

    code = ErrorCode.conflict


class CapacityUnavailable(DriverError):
    """The provider has no room for another machine right now."""


class PreviewLimitReached(MyycError):
    """The user already holds the most live previews settings allow."""

    code = ErrorCode.rate_limited


class LiveSessionExists(Conflict):
    """The project already has a live session (the one-live-per-project index said so)."""


# ------------------------------------------------------------------------------ machines


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """What a preview machine runs with."""

    session_id: UUID
    """The session the machine serves (becomes metadata)."""
    project_id: UUID
    """The project whose files the container syncs (becomes metadata)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment of the container entrypoint."""
    cpu_kind: str = "shared"
    """`shared` or `performance` (Fly); recorded by the local driver."""
    cpus: int = 1
    """vCPUs."""
    memory_mb: int = 512
    """Memory in MiB."""

    def metadata(self) -> dict[str, str]:
        """The tags the machine carries."""
        return {
            **PREVIEW_TAG,
            META_SESSION: str(self.session_id),
            META_PROJECT: str(self.project_id),
        }


@dataclass(frozen=True, slots=True)
class MachineInfo:
    """A machine as a driver sees it now."""

    id: str
    """The provider's machine id (the session's `container_id`)."""
    state: str
    """Fly's vocabulary: created, starting, started, stopping, stopped, destroying, destroyed,
    failed, … The local driver answers `started`, `stopped` or `destroyed`."""
    url: str
    """The container URL a browser opens (the session's `container_url`)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The tags given at creation."""
    health_url: str = ""
    """Where to probe the dev server."""
    health_headers: Mapping[str, str] = field(default_factory=dict)
    """Headers the probe must send (Fly: `fly-force-instance-id`)."""
    created_at: float | None = None
    """Unix seconds, when known."""
    detail: str | None = None
    """What the driver knows about a failure (exit code, last log lines)."""

    @property
    def session_id(self) -> str | None:
        """The session this machine was created for, from its metadata."""
        return self.metadata.get(META_SESSION)

    @property
    def alive(self) -> bool:
        """Whether the machine still exists and is not on its way out."""
        return self.state not in ("destroyed", "destroying")


class MachinesDriver(Protocol):
    """Runs preview containers: Fly Machines in production, subprocesses locally."""

    name: str
    """`fly` or `local`."""

    async def create(self, spec: MachineSpec) -> MachineInfo:
        """Create and start a machine for `spec`.

        Idempotent per session: when a machine tagged with `spec.session_id` exists already
        (a retried start, an answer lost on the way back), that machine is returned.
        Raises CapacityUnavailable or DriverError.
        """
        ...

    async def get(self, machine_id: str) -> MachineInfo | None:
        """The machine now; None when it does not exist (or was destroyed)."""
        ...

    async def destroy(self, machine_id: str) -> bool:
        """Destroy a machine (stopping it first if needed) while holding it exclusively.

        True when this call destroyed it; False when it was already gone. Raises MachineBusy
        when someone else holds it, DriverError when the provider fails.
        """
        ...

    async def list_ours(self) -> list[MachineInfo]:
        """Every live machine tagged as a myyc preview."""
        ...

    async def close(self) -> None:
        """Release clients (running machines are left alone)."""
        ...


# ------------------------------------------------------------------------------ rows


class PreviewSession(Model):
    """A row of `preview_sessions` (seed 003's final shape)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: UUID
    """The session id."""
    user_id: UUID | None = None
    """The owner (the project's owner)."""
    project_id: UUID
    """The project previewed."""
    container_id: str | None = None
    """The machine id, once created."""
    container_url: str | None = None
    """The URL a browser opens, once created."""
    status: PreviewStatus
    """creating → active → ended, or error."""
    error_message: str | None = None
    """Why the session is in `error` (or ended abnormally)."""
    error_code: str | None = None
    """The ErrorCode of `error_message`."""
    expires_at: datetime | None = None
    """After this, cleanup ends the session and destroys its machine."""
    created_at: datetime
    """When the session was requested."""
    ended_at: datetime | None = None
    """When it ended."""
    updated_at: datetime
    """When it last changed."""

    @property
    def live(self) -> bool:
        """Whether the session holds (or is about to hold) a machine."""
        return self.status in LIVE_STATUSES


class ProjectFile(Model):
    """A row of `project_files`: one file of a project's source tree."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    project_id: UUID
    """The project."""
    path: str
    """Relative POSIX path inside the project (validated: never escapes it)."""
    content: str
    """The file's text."""
    updated_at: datetime
    """When it last changed."""


# ------------------------------------------------------------------------------ stores


class PreviewStore(Protocol):
    """Preview sessions."""

    async def create_session(
        self,
        project_id: UUID,
        *,
        user_id: UUID | None,
        expires_at: datetime,
        live_cap: int | None = None,
    ) -> PreviewSession:
        """Insert a session in `creating`.

        Raises LiveSessionExists when the project already has a live session, and
        PreviewLimitReached when `user_id` already holds `live_cap` live sessions (checked
        atomically with the insert); NotFound for an unknown project.
        """
        ...

    async def get_session(self, session_id: UUID) -> PreviewSession:
        """The session; NotFound if unknown."""
        ...

    async def find_live(self, project_id: UUID) -> PreviewSession | None:
        """The project's live session, if any."""
        ...

    async def update_session(
        self,
        session_id: UUID,
        changes: Mapping[str, object],
        *,
        only_if: frozenset[PreviewStatus] | None = None,
    ) -> PreviewSession | None:
        """Set columns when the session's status is in `only_if` (any status when None).

        None when the status had moved on; NotFound when the session does not exist.
        """
        ...

    async def list_live(self) -> list[PreviewSession]:
        """Every live session."""
        ...

    async def list_expired(self, now: datetime) -> list[PreviewSession]:
        """Live sessions whose `expires_at` is at or before `now`."""
        ...

    async def count_live(self, user_id: UUID | None) -> int:
        """How many live sessions `user_id` holds (None: sessions without an owner)."""
        ...

    async def close(self) -> None:
        """Release what the store opened itself (a pool it shares is left alone)."""
        ...


class ProjectFileStore(Protocol):
    """A project's source files: what preview containers sync from."""

    async def put_file(self, project_id: UUID, path: str, content: str) -> ProjectFile:
        """Insert or replace one file; NotFound for an unknown project."""
        ...

    async def list_files(self, project_id: UUID) -> list[ProjectFile]:
        """Every file of the project, by path."""
        ...

    async def log_position(self, project_id: UUID) -> Cursor:
        """The event log's current end for the project.

        Read it *before* listing files: following the log from this cursor then replays
        every change the listing might have missed (and possibly a few it already has,
        which rewrite the same content).
        """
        ...
