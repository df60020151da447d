"""What every agent body shares: its run's reporting context and the run wrapper."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from schemas.errors import ErrorCode, MyycError
from schemas.events import EventType

if TYPE_CHECKING:
    from api.services import Services

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """One agent run: where it reports, and helpers to do so."""

    services: Services
    project_id: UUID
    build_id: UUID
    run_id: UUID
    agent_name: str

    async def log(
        self,
        message: str,
        level: str = "info",
        *,
        type: EventType = EventType.log,
        data: dict[str, Any] | None = None,
    ) -> None:
        """A line in the project's live terminal."""
        await self.services.writer.log(
            self.project_id, self.agent_name, message, level, type=type, data=data,
            session_id=self.build_id,
        )  # fmt: skip

    async def progress(self, step: str, percent: float) -> None:
        """Where the run is (0..100)."""
        await self.services.reporter.update_progress(self.run_id, step=step, progress=percent)


AgentBody = Callable[[RunContext], Awaitable[dict[str, Any]]]


async def run_reported(
    services: Services,
    agent_name: str,
    *,
    project_id: str,
    build_id: str,
    run_id: str,
    body: AgentBody,
) -> dict[str, Any]:
    """Start the run, execute `body`, complete the run with its result — or fail it.

    The failure is recorded (run, project, log) before the exception propagates, so the
    orchestrator and the dispatcher see it too.
    """
    ctx = RunContext(services, UUID(project_id), UUID(build_id), UUID(run_id), agent_name)
    await services.reporter.start_or_resume(ctx.run_id)
    try:
        result = await body(ctx)
    except Exception as err:
        code = err.code if isinstance(err, MyycError) else ErrorCode.agent_failed
        message = err.message if isinstance(err, MyycError) else f"{type(err).__name__}: {err}"
        logger.exception("agent %s failed on project %s", agent_name, project_id)
        await services.reporter.fail_run(ctx.run_id, error=message, code=code)
        raise
    await services.reporter.complete_run(ctx.run_id, result=result)
    return result
