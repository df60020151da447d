"""The plain orchestrator: runs the pipeline's agents in order and closes the build.

A failing agent fails the build and the project with its error (in the logs and the
status); the runs that did not start are canceled. The LangGraph pipeline replaces this
sequence later behind the same registry entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from schemas.errors import ErrorCode, MyycError
from schemas.events import EventType
from schemas.rows import AgentRun
from schemas.status import BuildStatus, RunStatus

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher
    from api.services import Services

#: The agents of a build, in order (each gets a pending run at spawn time).
PIPELINE: tuple[str, ...] = ("planner", "github")


async def run_build(
    services: Services, dispatcher: Dispatcher, *, project_id: str, build_id: str
) -> None:
    """Run the build's agents one after the other (a registry agent)."""
    store, writer = services.store, services.writer
    pid, bid = UUID(project_id), UUID(build_id)
    runs = {r.agent_name: r for r in await store.list_runs(project_id=pid) if r.session_id == bid}
    # A task started with POST /agents/run has a run of the orchestrator's own to report on.
    own = runs.pop("orchestrator", None)
    if own is not None:
        await services.reporter.start_or_resume(own.id)
    await store.update_session(bid, {"status": BuildStatus.running.value})
    await writer.log(pid, "orchestrator", f"Build started: {', '.join(PIPELINE)}",
                     session_id=bid)  # fmt: skip
    for i, name in enumerate(PIPELINE):
        try:
            await dispatcher.call(name, project_id=project_id, build_id=build_id,
                                  run_id=str(runs[name].id))  # fmt: skip
        except Exception as err:
            message = err.message if isinstance(err, MyycError) else f"{type(err).__name__}: {err}"
            error = f"{name} failed: {message}"
            if own is not None:
                await services.reporter.fail_run(own.id, error=error)
            await _fail(services, pid, bid, runs, error)
            return
        if own is not None:
            done = 100.0 * (i + 1) / len(PIPELINE)
            await services.reporter.update_progress(own.id, step=f"{name} done", progress=done)
    if own is not None:
        await services.reporter.complete_run(own.id, result={"agents": list(PIPELINE)})
    project = await store.get_project(pid)
    await store.update_session(
        bid, {"status": BuildStatus.succeeded.value, "outputs": {"github_url": project.github_url}}
    )
    await writer.log(pid, "orchestrator", "Build succeeded", "success",
                     type=EventType.build_succeeded, session_id=bid,
                     data={"github_url": project.github_url})  # fmt: skip


async def _fail(
    services: Services, pid: UUID, bid: UUID, runs: dict[str, AgentRun], error: str
) -> None:
    store = services.store
    for run in runs.values():
        current = await store.get_run(run.id)
        if current.status is RunStatus.pending:
            await services.reporter.cancel_run(run.id, reason="build failed earlier")
    await store.update_session(
        bid, {"status": BuildStatus.failed.value, "error": error,
              "error_code": ErrorCode.agent_failed.value},
    )  # fmt: skip
    await store.update_project(pid, {"error": error, "error_code": ErrorCode.agent_failed.value})
    await services.writer.log(pid, "orchestrator", f"Build failed: {error}", "error",
                              type=EventType.build_failed, session_id=bid)  # fmt: skip
