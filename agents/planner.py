"""The planner agent: seed 004's `ingest_vibe` and `generate_plan` nodes.

- `ingest`: split the vibe (the idea's text) into sections, store them as `spec_chunks`, and
  emit a draft `plan_created`.
- `plan`: ask the model for a Plan (structured output, JSON), validate it — an invalid answer
  goes back to the model with the errors, a bounded number of times — and persist it: the
  build session's `plan`, `project_plan` rows and an `activity_log` entry (seed 002), then the
  final `plan_created`. A resumed run whose build already has a plan reuses it: no second
  model call, no second plan.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agents.common import RunContext, run_reported
from agents.deps import AgentDeps
from agents.modeling import call_model, note_prompt, open_model, system_prompt
from agents.providers import Message, ModelOutputInvalid, ModelRequest
from schemas.events import EventType
from schemas.plan import Plan

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher

MAX_CHUNK_CHARS = 1200


def chunk_vibe(text: str) -> list[str]:
    """The vibe's sections: paragraphs, long ones split on sentences, at most ~1,200 chars."""
    chunks: list[str] = []
    for para in re.split(r"\n\s*\n", text.strip()):
        para = para.strip()
        while len(para) > MAX_CHUNK_CHARS:
            cut = para.rfind(". ", 0, MAX_CHUNK_CHARS)
            cut = cut + 1 if cut > 0 else MAX_CHUNK_CHARS
            chunks.append(para[:cut].strip())
            para = para[cut:].strip()
        if para:
            chunks.append(para)
    return chunks or [text.strip() or "(empty)"]


async def run_planner(
    deps: AgentDeps,
    dispatcher: Dispatcher,
    *,
    project_id: str,
    build_id: str,
    run_id: str,
    step: str = "plan",
) -> dict[str, Any]:
    """Ingest the vibe (`step="ingest"`) or plan the project (`step="plan"`)."""
    if step == "ingest":
        return await run_reported(deps, "planner", project_id=project_id, build_id=build_id,
                                  run_id=run_id, body=_ingest, complete=False)  # fmt: skip
    return await run_reported(
        deps, "planner", project_id=project_id, build_id=build_id, run_id=run_id, body=_plan
    )


def _idea(project: Any, session: Any) -> dict[str, Any]:
    return {"title": project.title, "description": project.description,
            "category": project.category}  # fmt: skip


async def _ingest(ctx: RunContext) -> dict[str, Any]:
    store = ctx.deps.store
    project = await store.get_project(ctx.project_id)
    session = await store.get_session(ctx.build_id)
    vibe = session.vibe_text or "\n\n".join(filter(None, [project.title, project.description]))
    await ctx.presence("ingest_vibe", 0.05, focus_type="function", focus="vibe")
    await ctx.log(f"Reading the idea: {project.title}")
    chunks = chunk_vibe(vibe)
    await store.put_spec_chunks(ctx.build_id, chunks)
    await ctx.progress("read the idea", 20)
    await ctx.log(
        f"Draft plan: {len(chunks)} section(s) of the idea to build from",
        type=EventType.plan_created,
        data={"draft": True, "sections": len(chunks), "template": session.template},
    )
    return {"sections": len(chunks)}


def plan_request(idea: dict[str, Any], template: str | None, system: str) -> ModelRequest:
    """The planning request: the idea as JSON data (never as instructions), the Plan schema."""
    user = "Plan this app. The idea, as JSON data:\n" + json.dumps(
        {"idea": idea, "template": template}, ensure_ascii=False
    )
    return ModelRequest(
        purpose="plan",
        messages=[Message("system", system), Message("user", user)],
        json_schema=Plan.model_json_schema(),
        schema_name="plan",
        context={"idea": idea, "template": template},
    )


def parse_plan(text: str) -> Plan:
    """The model's answer as a Plan; ValueError with the reason when it is not one."""
    raw = text.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", raw, re.S)
    if fenced:
        raw = fenced.group(1)
    try:
        return Plan.model_validate_json(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in err.errors()[:10]
        )
        raise ValueError(problems) from None


async def _plan(ctx: RunContext) -> dict[str, Any]:
    store, settings = ctx.deps.store, ctx.deps.settings
    project = await store.get_project(ctx.project_id)
    session = await store.get_session(ctx.build_id)
    if session.plan is not None:  # a resumed run: the plan was made and stored already
        plan = Plan.model_validate(session.plan)
        await ctx.log("Plan already made before the restart: reusing it", "warning")
        return _summary(plan, "reused")
    await ctx.presence("generate_plan", 0.1, focus_type="function", focus="plan")
    system, prompt = await system_prompt(ctx.deps, "planner")
    await note_prompt(ctx, "planner", prompt)
    request = plan_request(_idea(project, session), session.template, system)
    model = await open_model(ctx.deps, session)
    try:
        await ctx.log(f"Planning with {model.name}/{model.model}")
        made: Plan | None = None
        for attempt in range(settings.codegen_repair_attempts + 1):
            completion = await call_model(ctx, model, request, prompt_name="planner",
                                          prompt=prompt)  # fmt: skip
            try:
                made = parse_plan(completion.text)
                break
            except ValueError as err:
                await ctx.log(f"The plan was not valid ({err}); asking again", "warning")
                request = ModelRequest(
                    purpose="plan",
                    messages=[*request.messages, Message("assistant", completion.text[:20_000]),
                              Message("user", f"That plan is invalid: {err}. Answer with the"
                                              " corrected JSON plan only.")],
                    json_schema=request.json_schema, schema_name="plan", context=request.context,
                )  # fmt: skip
                if attempt == settings.codegen_repair_attempts:
                    raise ModelOutputInvalid(f"the model's plan stayed invalid: {err}") from None
        assert made is not None
        plan = made
    finally:
        await model.close()
    await ctx.progress("writing the plan", 70)
    if plan.template is None and session.template in ("marketplace", "saas"):
        plan = plan.model_copy(update={"template": session.template})
    await store.update_session(ctx.build_id, {"plan": plan.model_dump(mode="json")})
    await store.add_plan(ctx.project_id, plan.features)
    await store.add_activity(
        ctx.project_id, "ai", "plan_created",
        {"provider": model.name, "model": model.model, "features": len(plan.features),
         "files": len(plan.files), "prompt_version": prompt.version if prompt else None},
    )  # fmt: skip
    for feature in plan.features:
        await ctx.log(f"[{feature.priority}] {feature.feature}")
    await ctx.log(
        f"Plan ready: {len(plan.features)} features, {len(plan.files)} files,"
        f" {len(plan.tables)} tables", "success", type=EventType.plan_created,
        data={"features": [f.key for f in plan.features],
              "files": [f.path for f in plan.files], "tables": [t.name for t in plan.tables]},
    )  # fmt: skip
    await ctx.presence("generate_plan", 0.2, focus_type="function", focus="plan")
    return _summary(plan, model.name)


def _summary(plan: Plan, provider: str) -> dict[str, Any]:
    return {"features": [f.key for f in plan.features], "files": [f.path for f in plan.files],
            "tables": [t.name for t in plan.tables], "provider": provider}  # fmt: skip
