"""The planner agent: from the idea, a plan — features, files, tables — and the app's files.

Writes `project_plan` rows and `activity_log` entries (seed 002), keeps the plan (with the
files) on the build session for the next agents, and emits seed 004's `plan_created`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.common import RunContext, run_reported
from agents.providers import make_provider
from schemas.api import SpawnConfig
from schemas.events import EventType

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher
    from api.services import Services


async def run_planner(
    services: Services, dispatcher: Dispatcher, *, project_id: str, build_id: str, run_id: str
) -> dict[str, Any]:
    """Plan the project (a registry agent)."""
    return await run_reported(
        services, "planner", project_id=project_id, build_id=build_id, run_id=run_id, body=_plan
    )


async def _plan(ctx: RunContext) -> dict[str, Any]:
    store = ctx.services.store
    project = await store.get_project(ctx.project_id)
    provider = make_provider(ctx.services.settings)
    await ctx.log(f"Reading the idea: {project.title}")
    await ctx.progress("reading the idea", 10)
    idea = SpawnConfig(title=project.title, description=project.description,
                       category=project.category)  # fmt: skip
    plan = await provider.plan(idea)
    await ctx.progress("writing the plan", 60)
    await store.add_plan(ctx.project_id, plan.features)
    # The app's files: what previews serve and the github agent commits.
    await store.put_files(ctx.project_id, {f.path: f.content for f in plan.files})
    await store.update_session(ctx.build_id, {"plan": plan.model_dump(mode="json")})
    await store.add_activity(
        ctx.project_id, "ai", "plan_created",
        {"provider": provider.name, "features": len(plan.features), "files": len(plan.files)},
    )  # fmt: skip
    for feature in plan.features:
        await ctx.log(f"[{feature.priority}] {feature.feature}")
    for file in plan.files:
        await ctx.log(f"planned file {file.path} ({len(file.content.encode())} bytes)")
    await ctx.log(
        f"Plan ready: {len(plan.features)} features, {len(plan.files)} files,"
        f" {len(plan.tables)} tables", "success", type=EventType.plan_created,
        data={"features": [f.feature for f in plan.features],
              "files": [f.path for f in plan.files], "tables": [t.name for t in plan.tables]},
    )  # fmt: skip
    return {"features": len(plan.features), "files": [f.path for f in plan.files],
            "tables": [t.name for t in plan.tables], "provider": provider.name}  # fmt: skip
