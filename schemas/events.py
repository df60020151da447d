"""Events of the log (project_logs / build_events) and the resumable cursor over them."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import ConfigDict

from schemas.base import Model
from schemas.errors import ValidationFailed
from schemas.status import LogLevel

#: A message longer than this (in UTF-8 bytes) is cut and ends with TRUNCATION_MARKER.
MAX_MESSAGE_BYTES = 64 * 1024
TRUNCATION_MARKER = "… [truncated by myyc: message over 64 KiB]"


class EventType(StrEnum):
    """Event types: a plain log line, run transitions, and seed 004's build events."""

    log = "log"
    run_started = "run_started"
    run_progress = "run_progress"
    run_status = "run_status"
    project_status = "project_status"
    plan_created = "plan_created"
    environment_created = "environment_created"
    migration_started = "migration_started"
    table_created = "table_created"
    rls_enabled = "rls_enabled"
    policy_created = "policy_created"
    edge_function_deployed = "edge_function_deployed"
    analytics_configured = "analytics_configured"
    build_succeeded = "build_succeeded"
    build_failed = "build_failed"
    drift_detected = "drift_detected"
    file_update = "file:update"
    preview = "preview"
    presence = "presence"
    """Seed 004's architect presence (step, focus, progress); sent as `event: presence`."""
    build_resumed = "build_resumed"
    """A build was picked up from its last checkpoint after its owner died."""
    approval_requested = "approval_requested"
    """A build waits for a person's decision (token, URL, deadline)."""
    approval_decided = "approval_decided"
    """A person decided (approve, reject, retry), or the approval expired."""
    verification = "verification"
    """A verification attempt's result and evidence."""
    model_usage = "model_usage"
    """A model call's tokens and cost."""
    alert = "alert"
    """Something needs attention: a stalled run, a crash-looping build."""


LEVELS = frozenset(LogLevel)
EVENT_TYPES = frozenset(EventType)


class Event(Model):
    """One stored event, as readers see it."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    """The event id, derived from (writer_id, seq): the same event always has the same id."""
    project_id: UUID
    """The project the event belongs to."""
    session_id: UUID | None = None
    """The build session, for build events (seed 004)."""
    agent_name: str
    """The agent (or component) that wrote it."""
    level: LogLevel
    """info, success, warning or error."""
    type: str
    """The event type (`log` for a plain line)."""
    message: str
    """The human-readable line."""
    data: dict[str, Any] | None = None
    """Structured detail (progress, payloads)."""
    timestamp: datetime
    """When the writer logged it."""
    writer_id: UUID
    """The writer that produced it."""
    seq: int
    """The writer's sequence number: strictly increasing per writer."""

    @property
    def cursor_key(self) -> str:
        """This event's position, as one element of a Cursor."""
        return f"{self.writer_id.hex}.{self.seq}"


_CURSOR_PART = re.compile(r"^([0-9a-f]{32})\.([1-9][0-9]{0,18})$")


class Cursor:
    """A reader's position: the last sequence number seen from each writer.

    Encoded as `<writer hex>.<seq>` parts joined by `~` (empty = from the start). Because each
    writer's events commit in sequence order, "seq greater than the last seen, per writer"
    yields every later event exactly once however many writers interleave.
    """

    __slots__ = ("positions",)

    def __init__(self, positions: dict[UUID, int] | None = None) -> None:
        self.positions: dict[UUID, int] = dict(positions or {})

    @classmethod
    def parse(cls, raw: str | None, *, field: str = "after") -> Cursor:
        """Parse an encoded cursor; a malformed one raises ValidationFailed naming `field`."""
        if raw is None or raw.strip() == "":
            return cls()
        if len(raw) > 64 * 1024:
            raise ValidationFailed("cursor is too long", field=field)
        positions: dict[UUID, int] = {}
        for part in raw.strip().split("~"):
            match = _CURSOR_PART.match(part)
            if match is None:
                raise ValidationFailed(
                    f"malformed cursor part {part[:80]!r}: expected <32 hex>.<seq>", field=field
                )
            writer = UUID(hex=match.group(1))
            seq = int(match.group(2))
            if seq > 2**63 - 1:
                raise ValidationFailed("cursor sequence number out of range", field=field)
            positions[writer] = max(seq, positions.get(writer, 0))
        return cls(positions)

    def encode(self) -> str:
        """The cursor as a string (stable order)."""
        return "~".join(f"{w.hex}.{s}" for w, s in sorted(self.positions.items()))

    def advance(self, event: Event) -> None:
        """Move past `event`."""
        if event.seq > self.positions.get(event.writer_id, 0):
            self.positions[event.writer_id] = event.seq

    def seen(self, event: Event) -> bool:
        """Whether `event` is at or before this position."""
        return event.seq <= self.positions.get(event.writer_id, 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cursor) and other.positions == self.positions

    def __repr__(self) -> str:
        return f"Cursor({self.encode()!r})"


def truncate_message(message: str) -> str:
    """Cut a message over MAX_MESSAGE_BYTES (UTF-8), ending it with a visible marker."""
    # Four bytes per character at most: shorter strings cannot be over the limit.
    if len(message) * 4 <= MAX_MESSAGE_BYTES:
        return message
    raw = message.encode()
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    room = MAX_MESSAGE_BYTES - len(TRUNCATION_MARKER.encode())
    return raw[:room].decode(errors="ignore") + TRUNCATION_MARKER
