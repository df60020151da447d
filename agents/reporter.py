"""RunReporter: seed 001's publisher API over the store and the LogWriter.

Every agent reports through it: `start_run`, `update_progress`, `update_status`,
`complete_run`, `fail_run`, `escalate` (and `record_verification`, `heartbeat`). It enforces
the agent-run state machine — an illegal transition raises IllegalTransition and writes
nothing — records a heartbeat with every call, re-derives the project's status and progress
from its runs, and appends every transition to the event log through the LogWriter, so the
transitions interleave in order with the agent's own log lines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from schemas.errors import Conflict, ErrorCode, IllegalTransition, ValidationFailed
from schemas.events import EventType
from schemas.rows import AgentRun, NewRun, Project
from schemas.status import TERMINAL_RUN_STATUSES, RunStatus, can_transition
from store.log_writer import LogWriter
from store.ports import ProjectStore, RunStore

_CAS_ATTEMPTS = 5


class ReporterStore(ProjectStore, RunStore, Protocol):
    """What the reporter needs: runs and projects."""


def _now() -> datetime:
    return datetime.now(UTC)


def _status(value: RunStatus | str) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        raise ValidationFailed(
            f"unknown status {value!r}: expected one of {', '.join(RunStatus)}", field="status"
        ) from None


class RunReporter:
    """Publishes an agent's run state; see the module docstring."""

    def __init__(self, store: ReporterStore, writer: LogWriter) -> None:
        self._store = store
        self._writer = writer

    async def create_run(self, new: NewRun) -> AgentRun:
        """Record a run in `pending` (a build creates its runs up front)."""
        if new.project_id is None:
            raise ValidationFailed("a reported run needs a project", field="project_id")
        run: AgentRun = await self._store.create_run(new)
        await self._log(run, f"{run.agent_name} queued", EventType.run_status,
                        {"run_id": str(run.id), "from": None, "to": run.status.value})  # fmt: skip
        return run

    async def start_run(
        self,
        *,
        agent_name: str | None = None,
        project_id: UUID | None = None,
        run_id: UUID | None = None,
        task_id: UUID | None = None,
        user_id: UUID | None = None,
        session_id: UUID | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> UUID:
        """Start a run: an existing pending one (`run_id`), or a new one; returns its id."""
        if run_id is None:
            if agent_name is None:
                raise ValidationFailed("agent_name is required", field="agent_name")
            run = await self.create_run(
                NewRun(
                    agent_name=agent_name, project_id=project_id, task_id=task_id,
                    user_id=user_id, session_id=session_id, metadata=dict(metadata or {}),
                )
            )  # fmt: skip
            run_id = run.id
        await self._transition(run_id, RunStatus.in_progress, step="started")
        return run_id

    async def start_or_resume(self, run_id: UUID) -> AgentRun:
        """Start a pending run, or resume one a crashed attempt left in progress.

        Modal restarts an agent whose container died; the retry finds its run `in_progress`
        and carries on (agents are idempotent) instead of failing on pending → in_progress.
        """
        run = await self._store.get_run(run_id)
        if run.status is not RunStatus.in_progress:
            return await self._transition(run_id, RunStatus.in_progress, step="started")
        resumed = await self._store.update_run(
            run_id, {"heartbeat_at": _now(), "current_step": "resumed after a restart"},
            expected_status=RunStatus.in_progress,
        )  # fmt: skip
        if resumed is None:  # it moved on meanwhile: let the state machine judge
            return await self._transition(run_id, RunStatus.in_progress, step="started")
        await self._log(resumed, f"{resumed.agent_name} resumed after a restart",
                        EventType.run_status, {"run_id": str(run_id), "resumed": True},
                        level="warning")  # fmt: skip
        return resumed

    async def update_progress(self, run_id: UUID, *, step: str, progress: float) -> AgentRun:
        """Record what the run is doing and how far along it is (0..100)."""
        if (
            not isinstance(progress, int | float)
            or math.isnan(progress)
            or not 0 <= progress <= 100
        ):
            raise ValidationFailed("progress must be a number from 0 to 100", field="progress")
        for _ in range(_CAS_ATTEMPTS):
            run = await self._store.get_run(run_id)
            if run.status in TERMINAL_RUN_STATUSES:
                raise IllegalTransition(
                    f"run {run_id} is {run.status}; it takes no more progress", field="status"
                )
            updated = await self._store.update_run(
                run_id,
                {"current_step": step, "progress_percent": float(progress), "heartbeat_at": _now()},
                expected_status=run.status,
            )
            if updated is not None:
                await self._log(updated, step, EventType.run_progress,
                                {"run_id": str(run_id), "progress": progress})  # fmt: skip
                await self._rollup(updated)
                return updated
        raise Conflict(f"run {run_id} kept changing; try again", field="status")

    async def update_status(
        self, run_id: UUID, status: RunStatus | str, *, step: str | None = None
    ) -> AgentRun:
        """Move the run to `status` if the state machine allows it."""
        return await self._transition(run_id, _status(status), step=step)

    async def complete_run(
        self, run_id: UUID, *, result: Mapping[str, Any] | None = None
    ) -> AgentRun:
        """Finish the run successfully with its result."""
        return await self._transition(
            run_id, RunStatus.completed, step="completed",
            extra={"result": dict(result or {}), "progress_percent": 100.0},
        )  # fmt: skip

    async def fail_run(
        self, run_id: UUID, *, error: str, code: ErrorCode = ErrorCode.agent_failed
    ) -> AgentRun:
        """Fail the run with the error (shown in the project's logs and status)."""
        return await self._transition(
            run_id, RunStatus.failed, step="failed",
            extra={"error": error[:10_000], "error_code": code.value},
        )  # fmt: skip

    async def cancel_run(self, run_id: UUID, *, reason: str = "canceled") -> AgentRun:
        """Cancel a live run."""
        return await self._transition(run_id, RunStatus.canceled, step=reason)

    async def escalate(self, run_id: UUID, *, reason: str) -> AgentRun:
        """Hand a run whose verification failed to a person."""
        return await self._transition(
            run_id, RunStatus.escalated_to_human, step=reason, extra={"error": reason[:10_000]}
        )

    async def record_verification(
        self, run_id: UUID, *, passed: bool, evidence: Mapping[str, Any]
    ) -> AgentRun:
        """Close a verification: count it, keep its evidence, pass or fail it."""
        run = await self._store.get_run(run_id)
        return await self._transition(
            run_id,
            RunStatus.verification_passed if passed else RunStatus.verification_failed,
            step="verification passed" if passed else "verification failed",
            extra={
                "verification_attempts": run.verification_attempts + 1,
                "verification_evidence": [*run.verification_evidence, dict(evidence)],
            },
        )

    async def heartbeat(self, run_id: UUID) -> None:
        """Record that the run is alive (a watchdog reads heartbeat_at)."""
        await self._store.update_run(run_id, {"heartbeat_at": _now()})

    # internals ----------------------------------------------------------------------------

    async def _transition(
        self,
        run_id: UUID,
        target: RunStatus,
        *,
        step: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> AgentRun:
        for _ in range(_CAS_ATTEMPTS):
            run = await self._store.get_run(run_id)
            if not can_transition(run.status, target):
                raise IllegalTransition(
                    f"run {run_id} cannot go from {run.status} to {target}", field="status"
                )
            changes: dict[str, Any] = {
                "status": target.value,
                "heartbeat_at": _now(),
                **(extra or {}),
            }
            if step is not None:
                changes["current_step"] = step
            if target in TERMINAL_RUN_STATUSES:
                changes["completed_at"] = _now()
            # Compare-and-set on the status we checked: a concurrent change makes us re-check.
            updated = await self._store.update_run(run_id, changes, expected_status=run.status)
            if updated is None:
                continue
            level = {RunStatus.failed: "error", RunStatus.completed: "success",
                     RunStatus.escalated_to_human: "warning",
                     RunStatus.verification_failed: "warning"}.get(target, "info")  # fmt: skip
            data = {"run_id": str(run_id), "from": run.status.value, "to": target.value}
            if updated.error and target in (RunStatus.failed, RunStatus.escalated_to_human):
                data["error"] = updated.error
            message = f"{updated.agent_name}: {run.status} → {target}"
            if target is RunStatus.failed and updated.error:
                message += f": {updated.error}"
            await self._log(updated, message, EventType.run_status, data, level=level)
            await self._rollup(updated)
            return updated
        raise Conflict(f"run {run_id} kept changing; try again", field="status")

    async def _rollup(self, run: AgentRun) -> Project | None:
        # A status change logs its own `project_status` event (a trigger on `projects`). The
        # run's lines go first, so a reader who stops at "project failed" has seen why.
        if run.project_id is None:
            return None
        await self._writer.flush()
        project: Project = await self._store.rollup_project(run.project_id)
        return project

    async def _log(
        self,
        run: AgentRun,
        message: str,
        etype: EventType,
        data: dict[str, Any],
        *,
        level: str = "info",
    ) -> None:
        if run.project_id is None:
            return
        await self._writer.log(run.project_id, run.agent_name, message, level, type=etype,
                               data=data, session_id=run.session_id)  # fmt: skip
