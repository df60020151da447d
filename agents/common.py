"""What every agent body shares: its run's reporting context and the run wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from agents.deps import AgentDeps
from schemas.errors import ErrorCode, MyycError, StoreUnavailable
from schemas.events import EventType
from schemas.rows import AgentRun
from schemas.status import RunStatus

logger = logging.getLogger(__name__)

#: Errors a node is retried for (LangGraph's RetryPolicy): the run stays live for the retry.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable, ConnectionError)


def error_of(err: BaseException) -> tuple[str, ErrorCode]:
    """An exception as (message, code) the way runs, builds and logs record it."""
    if isinstance(err, MyycError):
        code = err.code
        error_code = getattr(err, "error_code", None)  # AgentFailed carries the agent's code
        if isinstance(error_code, str) and error_code in ErrorCode.__members__:
            code = ErrorCode(error_code)
        return err.message, code
    return f"{type(err).__name__}: {err}", ErrorCode.agent_failed


@dataclass(frozen=True)
class RunContext:
    """One agent run: where it reports, and helpers to do so.

    `rerun` is true when the run already completed and the agent is asked to do its work
    again (github and preview after a codegen retry): the work is redone idempotently and
    logged, but the run's status and progress stay as they are.
    """

    deps: AgentDeps
    project_id: UUID
    build_id: UUID
    run_id: UUID
    agent_name: str
    rerun: bool = False

    async def log(
        self,
        message: str,
        level: str = "info",
        *,
        type: EventType = EventType.log,
        data: dict[str, Any] | None = None,
    ) -> None:
        """A line in the project's live terminal."""
        await self.deps.writer.log(
            self.project_id, self.agent_name, message, level, type=type, data=data,
            session_id=self.build_id,
        )  # fmt: skip

    async def progress(self, step: str, percent: float) -> None:
        """Where the run is (0..100); nothing on a rerun of a completed run."""
        if not self.rerun:
            await self.deps.reporter.update_progress(self.run_id, step=step, progress=percent)

    async def presence(
        self, step: str, progress: float, *, focus_type: str = "function", focus: str = ""
    ) -> None:
        """Seed 004's architect presence on `build:{id}`: kept on the session, sent live."""
        presence = {
            "actor": "architect",
            "step": step,
            "focus": {"type": focus_type, "name": focus or step},
            "progress": round(max(0.0, min(1.0, progress)), 3),
        }
        await self.deps.store.update_session(self.build_id, {"presence": presence})
        await self.log(f"{step}", type=EventType.presence, data=presence)


AgentBody = Callable[[RunContext], Awaitable[dict[str, Any]]]


@contextlib.asynccontextmanager
async def heartbeating(deps: AgentDeps, run_id: UUID) -> AsyncIterator[None]:
    """Keep the run's heartbeat fresh while a long body works (the watchdog reads it)."""
    interval = max(1.0, deps.settings.run_deadline_seconds / 4)

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await deps.reporter.heartbeat(run_id)
            except MyycError as err:  # a missed beat is not fatal; the next one may land
                logger.warning("heartbeat of run %s failed: %s", run_id, err.message)

    task = asyncio.create_task(beat(), name=f"myyc-heartbeat-{run_id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def begin(deps: AgentDeps, run_id: UUID) -> tuple[AgentRun, bool]:
    """Start, continue or resume the run; (run, rerun).

    `rerun` is true when the run is already past its own work (completed, or handed to
    verification): the body redoes its idempotent work without moving the status. A run left
    `in_progress` (a later step of the same agent, or a resume after a crash) carries on.
    """
    run = await deps.store.get_run(run_id)
    if run.status in _PAST_WORK:
        return run, True
    if run.status in (RunStatus.verification_failed, RunStatus.escalated_to_human):
        # Back to work after a failed verification (seed 001's retry) or a person's "retry".
        return await deps.reporter.update_status(run_id, RunStatus.in_progress,
                                                 step="retrying"), False  # fmt: skip
    if run.status is RunStatus.in_progress:
        return run, False
    return await deps.reporter.start_or_resume(run_id), False


_PAST_WORK = frozenset(
    {RunStatus.completed, RunStatus.awaiting_verification, RunStatus.verification_in_progress,
     RunStatus.verification_passed}
)  # fmt: skip


async def run_reported(
    deps: AgentDeps,
    agent_name: str,
    *,
    project_id: str,
    build_id: str,
    run_id: str,
    body: AgentBody,
    complete: bool = True,
) -> dict[str, Any]:
    """Start the run, execute `body`, complete the run with its result — or fail it.

    The failure is recorded (run, project, log) before the exception propagates, so the
    orchestrator and the dispatcher see it too — except for transient errors (the store was
    unreachable), which leave the run live for the node's retry or a later resume.
    `complete=False` leaves a successful run where the body put it (codegen stays
    `awaiting_verification` for the verifier).
    """
    run, rerun = await begin(deps, UUID(run_id))
    ctx = RunContext(deps, UUID(project_id), UUID(build_id), run.id, agent_name, rerun)
    try:
        async with heartbeating(deps, ctx.run_id):
            result = await body(ctx)
    except TRANSIENT_ERRORS:
        raise
    except Exception as err:
        message, code = error_of(err)
        logger.exception("agent %s failed on project %s", agent_name, project_id)
        current = await deps.store.get_run(ctx.run_id)
        if current.status not in (RunStatus.completed, RunStatus.failed, RunStatus.canceled):
            await deps.reporter.fail_run(ctx.run_id, error=message, code=code)
        raise
    if complete and not rerun:
        await deps.reporter.complete_run(ctx.run_id, result=result)
    return result
