"""Statuses of every control-plane entity, and the agent-run state machine as data.

The agent-run flow is seed 001's: pending → in_progress → awaiting_verification →
verification_in_progress → verification_passed | verification_failed → completed, with a
retry (back to in_progress) or an escalation to a human after a failed verification;
`failed` and `canceled` are reachable from every live state.
"""

from __future__ import annotations

from enum import StrEnum


class ProjectStatus(StrEnum):
    """A project's life (seed 000, plus `canceled`)."""

    spawning = "spawning"
    running = "running"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


class BuildStatus(StrEnum):
    """One run of the pipeline (seed 004)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


class RunStatus(StrEnum):
    """One agent's run within a build (seed 001)."""

    pending = "pending"
    in_progress = "in_progress"
    awaiting_verification = "awaiting_verification"
    verification_in_progress = "verification_in_progress"
    verification_passed = "verification_passed"
    verification_failed = "verification_failed"
    escalated_to_human = "escalated_to_human"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


class PreviewStatus(StrEnum):
    """A preview container session (seed 003's final shape)."""

    creating = "creating"
    active = "active"
    ended = "ended"
    error = "error"


class LogLevel(StrEnum):
    """Levels of a project log line (seed 000)."""

    info = "info"
    success = "success"
    warning = "warning"
    error = "error"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.completed, RunStatus.failed, RunStatus.canceled})
LIVE_RUN_STATUSES = frozenset(set(RunStatus) - TERMINAL_RUN_STATUSES)

_FLOW: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.pending: frozenset({RunStatus.in_progress}),
    RunStatus.in_progress: frozenset({RunStatus.awaiting_verification, RunStatus.completed}),
    RunStatus.awaiting_verification: frozenset({RunStatus.verification_in_progress}),
    RunStatus.verification_in_progress: frozenset(
        {RunStatus.verification_passed, RunStatus.verification_failed}
    ),
    RunStatus.verification_passed: frozenset({RunStatus.completed}),
    # A failed verification is retried (back to work) or handed to a person.
    RunStatus.verification_failed: frozenset({RunStatus.in_progress, RunStatus.escalated_to_human}),
    # A person resolves an escalation: back to work, or accepted as done.
    RunStatus.escalated_to_human: frozenset({RunStatus.in_progress, RunStatus.completed}),
}

#: The legal agent-run transitions: status → the statuses it may move to.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    status: _FLOW.get(status, frozenset())
    | (
        frozenset({RunStatus.failed, RunStatus.canceled})
        if status in LIVE_RUN_STATUSES
        else frozenset()
    )
    for status in RunStatus
}


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    """Whether an agent run may move from `current` to `target`."""
    return target in RUN_TRANSITIONS[current]
