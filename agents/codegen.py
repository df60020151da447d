"""The codegen agent: the model writes the app's files, and each one lands as it completes.

The answer streams in the file stream format (`agents/filestream.py`). As each file's `@@end`
arrives it is validated (a safe relative path, size and count caps), stored in
`project_files` (a file whose content did not change keeps its version) and published as
`file:update {filePath, content}` — so a preview that is already running reloads while the
build is still writing. Rejected files, or planned files the answer left out, go back to the
model with the reasons, a bounded number of times (`CODEGEN_REPAIR_ATTEMPTS`).

After a failed verification the build comes back here with the verifier's feedback (the last
`verification_evidence` entry of this run), which the next request carries. The run ends
`awaiting_verification`: the verifier moves it on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agents.common import RunContext, run_reported
from agents.deps import AgentDeps
from agents.filestream import FileStreamParser, Rejected, repair_message
from agents.modeling import call_model, note_prompt, open_model, system_prompt
from agents.providers import Message, ModelOutputInvalid, ModelRequest
from previews.realtime import broadcast_file_update
from schemas.events import EventType
from schemas.plan import Plan
from schemas.status import RunStatus

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher


async def run_codegen(
    deps: AgentDeps, dispatcher: Dispatcher, *, project_id: str, build_id: str, run_id: str
) -> dict[str, Any]:
    """Write the app's files from the plan (a registry agent)."""
    return await run_reported(deps, "codegen", project_id=project_id, build_id=build_id,
                              run_id=run_id, body=_code, complete=False)  # fmt: skip


def code_request(
    idea: dict[str, Any], plan: Plan, feedback: list[str], system: str
) -> ModelRequest:
    """The codegen request: the plan and the idea as JSON data, and any verifier feedback."""
    parts = [
        "Write every file of this plan. The plan and the idea, as JSON data:",
        json.dumps({"plan": plan.model_dump(mode="json"), "idea": idea}, ensure_ascii=False),
    ]
    if feedback:
        parts.append("The last version failed verification; fix these problems:")
        parts.extend(f"- {line}" for line in feedback)
    return ModelRequest(
        purpose="code",
        messages=[Message("system", system), Message("user", "\n".join(parts))],
        context={"idea": idea, "plan": plan.model_dump(mode="json"), "feedback": feedback},
    )


def _feedback(evidence: list[dict[str, Any]]) -> list[str]:
    if not evidence:
        return []
    last = evidence[-1]
    lines = last.get("feedback") if isinstance(last, dict) else None
    return [str(x) for x in lines][:50] if isinstance(lines, list) else []


async def publish_file(ctx: RunContext, path: str, content: str) -> None:
    """Store one file and tell previews about it (the event log; Realtime in production)."""
    await ctx.deps.store.put_files(ctx.project_id, {path: content})
    # Stored first, then logged: a reader whose cursor includes the event sees the file.
    await ctx.log(f"wrote {path} ({len(content.encode())} bytes)", type=EventType.file_update,
                  data={"filePath": path, "content": content})  # fmt: skip
    await broadcast_file_update(ctx.deps.settings, ctx.project_id, path, content)


async def _code(ctx: RunContext) -> dict[str, Any]:
    store, settings = ctx.deps.store, ctx.deps.settings
    project = await store.get_project(ctx.project_id)
    session = await store.get_session(ctx.build_id)
    if session.plan is None:
        raise ModelOutputInvalid("the build has no plan: the planner runs first", field="plan")
    plan = Plan.model_validate(session.plan)
    run = await store.get_run(ctx.run_id)
    feedback = _feedback(run.verification_evidence)
    idea = {"title": project.title, "description": project.description,
            "category": project.category}  # fmt: skip
    system, prompt = await system_prompt(ctx.deps, "codegen")
    await note_prompt(ctx, "codegen", prompt)
    request = code_request(idea, plan, feedback, system)
    planned = [f.path for f in plan.files]
    written: dict[str, str] = {}
    total = max(1, len(planned))
    await ctx.presence("codegen", 0.25, focus_type="function", focus="files")
    if feedback:
        await ctx.log(f"Fixing {len(feedback)} problem(s) the verifier found", "warning")

    model = await open_model(ctx.deps, session)
    try:
        for round_ in range(settings.codegen_repair_attempts + 1):
            parser = FileStreamParser()
            rejected: list[Rejected] = []

            async def take(items: list[Any], rejected: list[Rejected] = rejected) -> None:
                for item in items:
                    if isinstance(item, Rejected):
                        rejected.append(item)
                        where = item.path or "the answer"
                        await ctx.log(f"rejected {where}: {item.reason}", "warning")
                        continue
                    await publish_file(ctx, item.path, item.content)
                    written[item.path] = item.content
                    done = min(len(written), total) / total
                    await ctx.progress(f"wrote {item.path}", 10 + 80 * done)
                    await ctx.presence("codegen", 0.25 + 0.35 * done, focus_type="function",
                                       focus=item.path)  # fmt: skip

            async def on_text(text: str, parser: FileStreamParser = parser) -> None:
                await take(parser.feed(text))

            async def on_reset(parser: FileStreamParser = parser) -> None:
                parser.reset()

            completion = await call_model(ctx, model, request, prompt_name="codegen",
                                          prompt=prompt, on_text=on_text,
                                          on_reset=on_reset)  # fmt: skip
            await take(parser.close())
            missing = [p for p in planned if p not in written]
            if not rejected and not missing:
                break
            problem = repair_message(rejected) if rejected else ""
            if missing:
                problem += f"\nThese planned files are missing: {', '.join(missing)}."
            if round_ == settings.codegen_repair_attempts:
                raise ModelOutputInvalid(f"the model's files stayed invalid: {problem.strip()}")
            await ctx.log("Sending the problems back to the model", "warning")
            request = ModelRequest(
                purpose="code",
                messages=[*request.messages, Message("assistant", completion.text[:50_000]),
                          Message("user", problem.strip())],
                context=request.context,
            )  # fmt: skip
    finally:
        await model.close()
    await store.add_activity(ctx.project_id, "ai", "files_written",
                             {"files": sorted(written), "provider": model.name})  # fmt: skip
    await ctx.log(f"Wrote {len(written)} files", "success",
                  data={"files": sorted(written)})  # fmt: skip
    if not ctx.rerun:
        await ctx.deps.reporter.update_status(ctx.run_id, RunStatus.awaiting_verification,
                                              step="written; awaiting verification")  # fmt: skip
    return {"files": sorted(written)}
