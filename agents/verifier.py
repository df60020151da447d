"""The verifier agent: checks the generated app and walks seed 001's verification flow.

Checks (`agents/checks.py`): the HTML parses, the JS passes `node --check` where node exists,
the app answers 200 where it is served — the build's live preview, or, without one, the
files served here on loopback — and every planned feature is present (`data-feature`).

The codegen run goes awaiting_verification → verification_in_progress → verification_passed
(→ completed) or verification_failed, with the attempt counted and its evidence kept
(`verification_attempts`, `verification_evidence`, including the feedback codegen gets next).
The graph decides what a failure leads to: another codegen round, or a person.
"""

from __future__ import annotations

import contextlib
import mimetypes
import posixpath
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agents.checks import run_checks
from agents.common import RunContext, run_reported
from agents.deps import AgentDeps
from local.server import serve
from schemas.events import EventType
from schemas.plan import Plan
from schemas.status import RunStatus

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher


async def run_verifier(
    deps: AgentDeps,
    dispatcher: Dispatcher,
    *,
    project_id: str,
    build_id: str,
    run_id: str,
    subject: str,
    preview_url: str = "",
) -> dict[str, Any]:
    """Verify the app codegen wrote; `subject` is the codegen run (a registry agent)."""

    async def body(ctx: RunContext) -> dict[str, Any]:
        return await _verify(ctx, UUID(subject), preview_url or None)

    return await run_reported(deps, "verifier", project_id=project_id, build_id=build_id,
                              run_id=run_id, body=body, complete=False)  # fmt: skip


def static_app(files: Mapping[str, str]) -> Any:
    """A tiny ASGI app serving `files` from memory (index.html at /)."""
    from starlette.applications import Starlette

    async def page(request: Request) -> Response:
        path = posixpath.normpath(request.path_params.get("path") or "index.html")
        if path in (".", ""):
            path = "index.html"
        content = files.get(path)
        if content is None:
            return Response("not found", status_code=404)
        kind = mimetypes.guess_type(path)[0] or "text/plain"
        return Response(content, media_type=kind)

    return Starlette(routes=[Route("/", page), Route("/{path:path}", page)])


@contextlib.asynccontextmanager
async def served(files: Mapping[str, str], preview_url: str | None) -> AsyncIterator[str]:
    """The URL the app is served at: the live preview's, or a loopback server of the files."""
    if preview_url:
        yield preview_url
        return
    async with serve(static_app(dict(files))) as url:
        yield url


async def _verify(ctx: RunContext, subject: UUID, preview_url: str | None) -> dict[str, Any]:
    deps = ctx.deps
    store, reporter = deps.store, deps.reporter
    session = await store.get_session(ctx.build_id)
    plan = Plan.model_validate(session.plan)
    files = await store.get_files(ctx.project_id)
    run = await store.get_run(subject)
    attempt = run.verification_attempts + 1
    await ctx.presence("verify", 0.75, focus_type="function", focus=f"attempt {attempt}")
    if run.status is RunStatus.awaiting_verification:
        await reporter.update_status(subject, RunStatus.verification_in_progress,
                                     step=f"verification {attempt}")  # fmt: skip
    elif run.status is not RunStatus.verification_in_progress:
        # Resumed after this attempt was recorded: report what was found, don't count twice.
        last = run.verification_evidence[-1] if run.verification_evidence else {}
        return {"passed": run.status is not RunStatus.verification_failed, "attempt":
                run.verification_attempts, "feedback": last.get("feedback", [])}  # fmt: skip
    await ctx.log(f"Verifying the app (attempt {attempt})")
    async with served(files, preview_url) as url:
        report = await run_checks(plan, files, base_url=url)
    evidence = {**report.evidence(), "attempt": attempt, "served_by": "preview" if preview_url
                else "verifier", "feedback": report.feedback()}  # fmt: skip
    for check in report.checks:
        mark = "✓" if check.passed else "✗"
        await ctx.log(f"{mark} {check.name}: {check.detail}",
                      "success" if check.passed else "warning")  # fmt: skip
    await reporter.record_verification(subject, passed=report.passed, evidence=evidence)
    await ctx.log(
        f"Verification {'passed' if report.passed else 'failed'} (attempt {attempt})",
        "success" if report.passed else "warning", type=EventType.verification,
        data={"passed": report.passed, "attempt": attempt, "evidence": evidence},
    )  # fmt: skip
    return {"passed": report.passed, "attempt": attempt, "feedback": report.feedback()}
