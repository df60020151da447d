"""The build pipeline as a LangGraph `StateGraph`: `build_graph(deps)`.

    START → ingest_vibe → generate_plan → [backend nodes] → codegen → (github ∥ preview)
          → verify → finalize → END
    verify fails with attempts left → codegen (with the evidence)
    verify fails at the last attempt → escalate (a person) → finalize, or codegen on "retry"

- Each agent node calls its agent through the dispatcher — in production its own Modal
  function (fan-out), locally inline — and keeps the agent's result in the state. `github`
  and `preview` run in parallel after codegen; `verify` waits for both.
- A failed verification goes back to codegen with the evidence until `VERIFY_MAX_ATTEMPTS`,
  then `escalate` asks a person through a LangGraph `interrupt` (an approval with a token and a
  deadline); the decision (approve, reject, retry, or expired) resumes the graph.
- With a Postgres checkpointer (`thread_id` = the build id) a crash resumes from the last
  finished node; every node's side effects are idempotent, so the one in flight redoes its
  work once.
- `RetryPolicy` retries a node only for transient errors (the store unreachable, a dropped
  connection), never for programming errors or an agent's reported failure.
- The backend-provisioning nodes (`schemas.pipeline.PROVISIONING_STEPS`) are passed in by the
  provisioning work; without them, or for a plan without tables, the branch is skipped.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Coroutine, Hashable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, cast

from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy, interrupt

from agents.common import TRANSIENT_ERRORS
from agents.deps import AgentDeps
from schemas.errors import ErrorCode
from schemas.events import EventType
from schemas.status import RunStatus

Node = Callable[["BuildState"], Coroutine[Any, Any, dict[str, Any]]]


class BuildState(TypedDict, total=False):
    """What the graph carries from node to node (checkpointed after each)."""

    project_id: str
    build_id: str
    runs: dict[str, str]
    """Agent name → its run id in this build."""
    plan: dict[str, Any]
    """The planner's summary: feature keys, file paths, tables, provider."""
    files: list[str]
    """Paths codegen wrote in its last round."""
    repository: dict[str, Any]
    preview: dict[str, Any] | None
    """The live preview ({session_id, url}), or None when there is none."""
    verified: bool
    attempt: int
    """Verification attempts in the current round (reset by a person's retry)."""
    feedback: list[str]
    escalations: int
    decision: str | None
    """approve, reject, retry or expired: a person's answer to the last escalation."""
    note: str | None
    outcome: str
    """succeeded or failed, set by finalize."""


def _retry_on(err: Exception) -> bool:
    return isinstance(err, TRANSIENT_ERRORS)


#: Node retries: transient faults only (the default would also retry e.g. IllegalTransition).
NODE_RETRY = RetryPolicy(initial_interval=0.5, max_attempts=3, retry_on=_retry_on)


# decisions ------------------------------------------------------------------------------------


def route_after_plan(state: BuildState, *, provisioning: bool) -> str:
    """Provision a backend first when the graph has the nodes and the plan needs tables."""
    if provisioning and state.get("plan", {}).get("tables"):
        return "provision"
    return "codegen"


def route_after_verify(state: BuildState, *, max_attempts: int) -> str:
    """Passed → finalize; failed with attempts left → codegen; else a person decides."""
    if state.get("verified"):
        return "finalize"
    if state.get("attempt", 0) < max_attempts:
        return "codegen"
    return "escalate"


def route_after_decision(state: BuildState) -> str:
    """A person's `retry` goes back to codegen; approve, reject and expiry end the build."""
    return "codegen" if state.get("decision") == "retry" else "finalize"


def outcome_of(state: BuildState) -> tuple[bool, str | None, ErrorCode | None]:
    """(succeeded, error, code) of a build that reached finalize."""
    if state.get("verified"):
        return True, None, None
    decision = state.get("decision")
    if decision == "approve":
        return True, None, None
    if decision == "expired":
        return False, "the escalation expired before anyone decided", ErrorCode.approval_expired
    note = state.get("note")
    reason = "a person rejected the app after verification failed"
    return False, f"{reason}: {note}" if note else reason, ErrorCode.verification_failed


# the graph ------------------------------------------------------------------------------------


class Pipeline:
    """The graph's nodes, bound to one process's deps."""

    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps

    async def _call(self, state: BuildState, agent: str, **extra: str) -> Any:
        return await self.deps.dispatcher.call(
            agent, project_id=state["project_id"], build_id=state["build_id"],
            run_id=state["runs"][agent], **extra,
        )  # fmt: skip

    async def ingest_vibe(self, state: BuildState) -> dict[str, Any]:
        """Seed 004 §6.1: the vibe in sections, a draft plan."""
        await self._call(state, "planner", step="ingest")
        return {}

    async def generate_plan(self, state: BuildState) -> dict[str, Any]:
        """Seed 004 §6.2: the plan (model, structured output), persisted."""
        return {"plan": await self._call(state, "planner", step="plan")}

    async def codegen(self, state: BuildState) -> dict[str, Any]:
        """The files, streamed into `project_files` and live previews."""
        result = await self._call(state, "codegen")
        return {"files": result["files"], "verified": False}

    async def github(self, state: BuildState) -> dict[str, Any]:
        """The repository and one commit of the files."""
        return {"repository": await self._call(state, "github")}

    async def preview(self, state: BuildState) -> dict[str, Any]:
        """The live preview (or none)."""
        result = await self._call(state, "preview")
        return {"preview": result.get("preview")}

    async def verify(self, state: BuildState) -> dict[str, Any]:
        """The checks; the codegen run walks seed 001's verification flow."""
        preview = state.get("preview") or {}
        result = await self._call(state, "verifier", subject=state["runs"]["codegen"],
                                  preview_url=str(preview.get("url") or ""))  # fmt: skip
        return {"verified": bool(result["passed"]), "attempt": state.get("attempt", 0) + 1,
                "feedback": list(result.get("feedback") or [])}  # fmt: skip

    async def escalate(self, state: BuildState) -> dict[str, Any]:
        """Hand the build to a person and wait (an interrupt) for their decision.

        Runs again from the top when resumed, so each step before `interrupt` is idempotent:
        one approval per (build, escalation), one escalation of the run, one log line.
        """
        deps = self.deps
        settings, store = deps.settings, deps.store
        number = state.get("escalations", 0) + 1
        run_id = state["runs"]["codegen"]
        run = await store.get_run(_uuid(run_id))
        reason = (
            f"verification failed {state.get('attempt', 0)} time(s): "
            + "; ".join(state.get("feedback", [])[:5])
        )[:2000]
        approval = await store.create_approval(
            {
                "token": secrets.token_urlsafe(24), "session_id": state["build_id"],
                "project_id": state["project_id"], "run_id": run_id,
                "user_id": run.user_id, "attempt": number, "reason": reason,
                "evidence": (run.verification_evidence or [{}])[-1],
                "expires_at": datetime.now(UTC)
                + timedelta(minutes=settings.approval_timeout_minutes),
            }
        )  # fmt: skip
        if approval.status == "pending":
            if run.status is RunStatus.verification_failed:
                await deps.reporter.escalate(_uuid(run_id), reason=reason)
            base = (
                settings.myyc_public_url
                or deps.api_url
                or (f"http://{settings.myyc_host}:{settings.myyc_port}")
            )
            url = f"{base.rstrip('/')}/approvals/{approval.token}"
            expires = f"{approval.expires_at:%Y-%m-%d %H:%M}Z"
            await deps.writer.log(
                _uuid(state["project_id"]), "orchestrator",
                f"Waiting for a person: approve, reject or retry with"
                f" `myyc approve {approval.token}` (expires {expires})",
                "warning", type=EventType.approval_requested, session_id=_uuid(state["build_id"]),
                data={"token": approval.token, "url": url,
                      "expires_at": approval.expires_at.isoformat(), "reason": reason},
            )  # fmt: skip
            await store.update_session(
                _uuid(state["build_id"]),
                {"presence": {"actor": "architect", "step": "waiting for approval",
                              "focus": {"type": "function", "name": "approval"},
                              "progress": 0.9}},
            )  # fmt: skip
        answer = interrupt({"token": approval.token, "reason": reason,
                            "expires_at": approval.expires_at.isoformat()})  # fmt: skip
        decision = str(answer.get("decision")) if isinstance(answer, dict) else str(answer)
        note = answer.get("note") if isinstance(answer, dict) else None
        await deps.writer.log(
            _uuid(state["project_id"]), "orchestrator",
            f"Decision on the escalation: {decision}" + (f" ({note})" if note else ""),
            "info", type=EventType.approval_decided, session_id=_uuid(state["build_id"]),
            data={"token": approval.token, "decision": decision, "note": note},
        )  # fmt: skip
        update: dict[str, Any] = {"decision": decision, "note": note, "escalations": number}
        if decision == "retry":
            update["attempt"] = 0
        return update

    async def finalize(self, state: BuildState) -> dict[str, Any]:
        """Seed 004 §6.8: close the runs and the session; emit build_succeeded/failed."""
        from agents.orchestrator import close_build

        succeeded, error, code = outcome_of(state)
        await close_build(self.deps, state, succeeded=succeeded, error=error, code=code)
        return {"outcome": "succeeded" if succeeded else "failed"}


def build_graph(
    deps: AgentDeps, *, provisioning: Sequence[tuple[str, Node]] = ()
) -> StateGraph[BuildState]:
    """The build pipeline, ready to compile with a checkpointer."""
    p = Pipeline(deps)
    g: StateGraph[BuildState] = StateGraph(BuildState)
    nodes: tuple[tuple[str, Node], ...] = (
        ("ingest_vibe", p.ingest_vibe), ("generate_plan", p.generate_plan),
        ("codegen", p.codegen), ("github", p.github), ("preview", p.preview),
        ("verify", p.verify), ("finalize", p.finalize),
    )  # fmt: skip
    for name, fn in nodes:
        g.add_node(name, cast(Any, fn), retry_policy=NODE_RETRY)
    # No retry policy: its interrupt must reach the runner, and its steps are idempotent.
    g.add_node("escalate", p.escalate)
    g.add_edge(START, "ingest_vibe")
    g.add_edge("ingest_vibe", "generate_plan")
    has_backend = bool(provisioning)
    targets: dict[Hashable, str] = {"codegen": "codegen"}
    if has_backend:
        for name, fn in provisioning:
            g.add_node(name, cast(Any, fn), retry_policy=NODE_RETRY)
        names = [name for name, _ in provisioning]
        for a, b in itertools.pairwise(names):
            g.add_edge(a, b)
        g.add_edge(names[-1], "codegen")
        targets["provision"] = names[0]
    g.add_conditional_edges(
        "generate_plan", lambda s: route_after_plan(s, provisioning=has_backend), targets
    )
    g.add_edge("codegen", "github")
    g.add_edge("codegen", "preview")
    g.add_edge(["github", "preview"], "verify")
    max_attempts = deps.settings.verify_max_attempts
    g.add_conditional_edges(
        "verify", lambda s: route_after_verify(s, max_attempts=max_attempts),
        {"finalize": "finalize", "codegen": "codegen", "escalate": "escalate"},
    )  # fmt: skip
    g.add_conditional_edges(
        "escalate", route_after_decision, {"codegen": "codegen", "finalize": "finalize"}
    )
    g.add_edge("finalize", END)
    return g


def _uuid(value: str) -> Any:
    from uuid import UUID

    return UUID(value)
