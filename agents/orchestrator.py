"""The orchestrator: owns a build, runs its graph from the last checkpoint, closes it.

`run_build` (the registry's `orchestrator`, one Modal function in production):

1. **Claims the build's lease** (`claim_build`). Another live owner means this call is a
   duplicate (a Modal retry racing a recovery): it waits up to one lease for that owner to
   die, then leaves the build to it. Taking over an expired lease counts as a resume; a build
   resumed more than `MAX_BUILD_RESUMES` times is crash-looping and is failed.
2. **Renews the lease** every third of its length while the graph runs; if the lease is lost
   or the build was canceled, the graph is stopped.
3. **Runs the graph** with the Postgres checkpointer, `thread_id` = the build id: a fresh
   build starts from its initial state, an interrupted one continues from its checkpoint,
   one waiting on a person resumes with the decision once there is one.
4. A graph that raises (an agent failed, retries spent) **fails the build** with the error's
   stable code; the runs still live are failed or canceled with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langgraph.types import Command

from agents.common import error_of
from agents.deps import AgentDeps
from agents.graph import BuildState, build_graph
from schemas.errors import ErrorCode, IllegalTransition
from schemas.events import Cursor, EventType
from schemas.rows import BuildSession
from schemas.status import TERMINAL_RUN_STATUSES, BuildStatus, ProjectStatus, RunStatus

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher

logger = logging.getLogger(__name__)


async def run_build(
    deps: AgentDeps,
    dispatcher: Dispatcher,
    *,
    project_id: str,
    build_id: str,
    dead_owner: str = "",
) -> dict[str, Any]:
    """Own the build and run its graph until it ends or waits (a registry agent).

    `dead_owner`: the owner recovery saw die; its lease is taken without waiting it out.
    """
    pid, bid = UUID(project_id), UUID(build_id)
    session = await _claim(deps, bid, dead_owner or None)
    if session is None:
        return {"status": "not_owned"}
    try:
        if session.resume_count > deps.settings.max_build_resumes:
            message = f"the build crashed {session.resume_count} times; giving up"
            await _alert(deps, pid, bid, message, {"resume_count": session.resume_count})
            await fail_build(deps, pid, bid, message, ErrorCode.build_stalled)
            return {"status": "failed"}
        return await _run_owned(deps, pid, bid, session)
    finally:
        await deps.store.release_build_lease(bid, deps.owner)


async def _claim(deps: AgentDeps, bid: UUID, dead_owner: str | None) -> BuildSession | None:
    ttl = deps.settings.build_lease_seconds
    loop = asyncio.get_running_loop()
    give_up = loop.time() + ttl * 1.5
    while True:
        session = await deps.store.claim_build(bid, deps.owner, ttl, dead_owner=dead_owner)
        if session is not None:
            return session
        current = await deps.store.get_session(bid)
        if current.status not in (BuildStatus.queued, BuildStatus.running):
            return None
        if loop.time() >= give_up:
            logger.info("build %s is owned by %s; leaving it", bid, current.lease_owner)
            return None
        await asyncio.sleep(min(1.0, ttl / 4))


async def _run_owned(
    deps: AgentDeps, pid: UUID, bid: UUID, session: BuildSession
) -> dict[str, Any]:
    store, writer = deps.store, deps.writer
    runs = {r.agent_name: r for r in await store.list_runs(project_id=pid) if r.session_id == bid}
    # A task started with POST /agents/run has a run of the orchestrator's own to report on.
    own = runs.pop("orchestrator", None)
    if own is not None and own.status not in TERMINAL_RUN_STATUSES:
        await deps.reporter.start_or_resume(own.id)
    checkpoints = await deps.checkpoints()
    graph = build_graph(deps).compile(checkpointer=checkpoints.saver)
    config: Any = {"configurable": {"thread_id": str(bid)}, "recursion_limit": 100}
    snapshot = await graph.aget_state(config)
    start: Any
    if snapshot.interrupts:
        approval = await store.pending_approval(bid)
        if approval is None or approval.status == "pending":
            return {"status": "waiting"}  # nothing to do until a person decides
        start = Command(resume={"decision": approval.status, "note": approval.note})
    elif snapshot.next:
        start = None
        await writer.log(pid, "orchestrator",
                         f"Resuming the build from its checkpoint at {', '.join(snapshot.next)}",
                         "warning", type=EventType.build_resumed, session_id=bid,
                         data={"next": list(snapshot.next),
                               "resume_count": session.resume_count})  # fmt: skip
    elif snapshot.values.get("outcome"):
        return {"status": snapshot.values["outcome"]}
    else:
        start = BuildState(project_id=str(pid), build_id=str(bid),
                           runs={name: str(r.id) for name, r in runs.items()})  # fmt: skip
        await writer.log(pid, "orchestrator", "Build started", session_id=bid,
                         data={"agents": sorted(runs)})  # fmt: skip
    work = asyncio.create_task(graph.ainvoke(start, config), name=f"myyc-graph-{bid}")
    keeper = asyncio.create_task(_keep_lease(deps, bid, work), name=f"myyc-lease-{bid}")
    try:
        result = await work
    except asyncio.CancelledError:
        if not work.cancelled() or asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise
        return {"status": "stopped"}  # the lease was lost, or the build canceled
    except Exception as err:
        message, code = error_of(err)
        current = await store.get_session(bid)
        if current.status is BuildStatus.canceled:
            return {"status": "canceled"}
        logger.warning("build %s failed: %s", bid, message)
        await fail_build(deps, pid, bid, message, code)
        if own is not None:
            with contextlib.suppress(IllegalTransition):
                await deps.reporter.fail_run(own.id, error=message, code=code)
        return {"status": "failed", "error": message}
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    if result.get("__interrupt__"):
        return {"status": "waiting"}
    if own is not None:
        with contextlib.suppress(IllegalTransition):
            await deps.reporter.complete_run(own.id, result={"outcome": result.get("outcome")})
    return {"status": str(result.get("outcome"))}


async def _keep_lease(deps: AgentDeps, bid: UUID, work: asyncio.Task[Any]) -> None:
    ttl = deps.settings.build_lease_seconds
    while not work.done():
        await asyncio.sleep(ttl / 3)
        try:
            session = await deps.store.renew_build_lease(bid, deps.owner, ttl)
        except Exception as err:  # the store is down: keep trying until the lease runs out
            logger.warning("could not renew the lease of build %s: %s", bid, err)
            continue
        if session is None or session.status is BuildStatus.canceled:
            why = "canceled" if session is not None else "its lease was lost"
            logger.warning("stopping build %s: %s", bid, why)
            work.cancel()
            return


async def close_build(
    deps: AgentDeps,
    state: Mapping[str, Any],
    *,
    succeeded: bool,
    error: str | None,
    code: ErrorCode | None,
) -> None:
    """Finish a build that ran to the end: outputs and closing event, runs, then the session.

    Idempotent (the finalize node re-runs after a crash inside it): the closing event is
    logged once — whether it is already stored decides, not a marker written beside it,
    because a crash can lose an event still queued in the writer — and every run transition
    is guarded. The session is closed last and the project rolled up after it, so the
    project's final status is the last word: a follower who stops there finds the build's
    outcome in place, and a crash before it leaves a live, leased session that recovery
    resumes.
    """
    store, reporter = deps.store, deps.reporter
    pid, bid = UUID(state["project_id"]), UUID(state["build_id"])
    runs = {name: UUID(run_id) for name, run_id in state["runs"].items()}
    final = (BuildStatus.succeeded if succeeded else BuildStatus.failed).value
    error_code = (code or ErrorCode.agent_failed).value
    if not await _closing_logged(deps, pid, bid):
        project = await store.get_project(pid)
        preview = state.get("preview") or {}
        outputs = {
            "github_url": project.github_url,
            "preview_url": preview.get("url"),
            "files": state.get("files", []),
            "commit": (state.get("repository") or {}).get("commit"),
            "verified": bool(state.get("verified")),
            "decision": state.get("decision"),
            "closed": final,
        }
        presence = {"actor": "architect", "step": "finalize",
                    "focus": {"type": "function", "name": "build"}, "progress": 1.0}  # fmt: skip
        changes: dict[str, Any] = {"outputs": outputs, "presence": presence}
        if not succeeded:
            changes.update({"error": error, "error_code": error_code})
            await store.update_project(pid, {"error": error, "error_code": error_code})
        await store.update_session(bid, changes)
        await deps.writer.log(pid, "orchestrator", "finalize", type=EventType.presence,
                              session_id=bid, data=presence)  # fmt: skip
        if succeeded:
            await deps.writer.log(pid, "orchestrator", "Build succeeded", "success",
                                  type=EventType.build_succeeded, session_id=bid,
                                  data=outputs)  # fmt: skip
        else:
            await deps.writer.log(pid, "orchestrator", f"Build failed: {error}", "error",
                                  type=EventType.build_failed, session_id=bid,
                                  data={"error": error, "code": error_code})  # fmt: skip
        await deps.writer.flush()
    verifier = await store.get_run(runs["verifier"])
    if verifier.status not in TERMINAL_RUN_STATUSES:
        await reporter.complete_run(
            verifier.id,
            result={"passed": bool(state.get("verified")), "attempts": state.get("attempt", 0)},
        )
    codegen = await store.get_run(runs["codegen"])
    if succeeded:
        if codegen.status in (RunStatus.verification_passed, RunStatus.escalated_to_human):
            await reporter.complete_run(codegen.id, result={"files": state.get("files", [])})
    elif codegen.status not in TERMINAL_RUN_STATUSES:
        await reporter.fail_run(codegen.id, error=error or "failed", code=ErrorCode(error_code))
    await _cancel_pending(deps, pid, bid, "the build ended")
    await store.update_session(bid, {"status": final, "finished_at": datetime.now(UTC)})
    # The rollups above kept the project running while its build was live; now it ends.
    await deps.writer.flush()
    await store.rollup_project(pid)


async def _closing_logged(deps: AgentDeps, pid: UUID, bid: UUID) -> bool:
    """Whether the build's build_succeeded / build_failed event is stored already."""
    await deps.writer.flush()
    closing = {EventType.build_succeeded.value, EventType.build_failed.value}
    cursor = Cursor()
    while True:
        page = await deps.store.read_events(pid, after=cursor, agent="orchestrator", limit=1000)
        for event in page:
            cursor.advance(event)
            if event.session_id == bid and event.type in closing:
                return True
        if len(page) < 1000:
            return False


async def fail_build(deps: AgentDeps, pid: UUID, bid: UUID, error: str, code: ErrorCode) -> None:
    """Fail a build that could not finish: the session, its event, the project, then the runs.

    That order is what a follower relies on: when it sees the project fail, the build's
    outcome and its reason are already there; and a project set failed first cannot be rolled
    up to "completed" from runs half canceled.
    """
    store = deps.store
    await store.update_session(
        bid, {"status": BuildStatus.failed.value, "error": error, "error_code": code.value,
              "finished_at": datetime.now(UTC)},
    )  # fmt: skip
    await deps.writer.log(pid, "orchestrator", f"Build failed: {error}", "error",
                          type=EventType.build_failed, session_id=bid,
                          data={"error": error, "code": code.value})  # fmt: skip
    await deps.writer.flush()
    await store.update_project(
        pid, {"status": ProjectStatus.failed.value, "error": error, "error_code": code.value}
    )
    for run in await store.list_runs(project_id=pid):
        if run.session_id != bid or run.status in TERMINAL_RUN_STATUSES:
            continue
        with contextlib.suppress(IllegalTransition):
            if run.status is RunStatus.pending:
                await deps.reporter.cancel_run(run.id, reason="the build failed earlier")
            else:
                await deps.reporter.fail_run(run.id, error=error, code=code)


async def cancel_build(deps: AgentDeps, bid: UUID, *, reason: str = "canceled") -> BuildSession:
    """Cancel a live build: the session, its runs, the project. Its owner stops at its next
    lease renewal. A build that already ended is returned as it is."""
    store = deps.store
    session = await store.get_session(bid)
    if session.status not in (BuildStatus.queued, BuildStatus.running):
        return session
    session = await store.update_session(
        bid, {"status": BuildStatus.canceled.value, "error": reason,
              "error_code": ErrorCode.canceled.value, "finished_at": datetime.now(UTC)},
    )  # fmt: skip
    assert session.project_id is not None
    pid = session.project_id
    await deps.writer.log(pid, "orchestrator", f"Build canceled: {reason}", "warning",
                          type=EventType.build_failed, session_id=bid,
                          data={"code": ErrorCode.canceled.value, "error": reason})  # fmt: skip
    await deps.writer.flush()
    # The project before the runs: rolled up from runs half canceled, it could read
    # "completed".
    await store.update_project(pid, {"status": ProjectStatus.canceled.value})
    for run in await store.list_runs(project_id=pid):
        if run.session_id == bid and run.status not in TERMINAL_RUN_STATUSES:
            with contextlib.suppress(IllegalTransition):
                await deps.reporter.cancel_run(run.id, reason=reason)
    return session


async def _cancel_pending(deps: AgentDeps, pid: UUID, bid: UUID, reason: str) -> None:
    for run in await deps.store.list_runs(project_id=pid):
        if run.session_id == bid and run.status is RunStatus.pending:
            with contextlib.suppress(IllegalTransition):
                await deps.reporter.cancel_run(run.id, reason=reason)


async def _alert(
    deps: AgentDeps, pid: UUID, bid: UUID | None, message: str, data: dict[str, Any]
) -> None:
    await deps.writer.log(pid, "watchdog", message, "error", type=EventType.alert,
                          session_id=bid, data=data)  # fmt: skip
