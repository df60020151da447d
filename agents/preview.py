"""The preview agent: a live preview of the app while the build goes on (seed 003).

Starts (or reuses: idempotent per project, machines found by metadata) the project's preview
session. A preview that cannot start — the owner's live-preview cap, a failed boot — is a
warning, not a failed build: the verifier then serves the files itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agents.common import RunContext, run_reported
from agents.deps import AgentDeps
from previews.ports import PreviewLimitReached
from previews.sessions import PreviewBootFailed
from previews.wiring import open_previews

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher


@dataclass(frozen=True)
class _Pipeline:
    """The pipeline acts as a server for the project's owner (counts against their cap)."""

    is_service: bool = True
    user_id: UUID | None = None


async def run_preview(
    deps: AgentDeps, dispatcher: Dispatcher, *, project_id: str, build_id: str, run_id: str
) -> dict[str, Any]:
    """Start the project's live preview (a registry agent)."""
    return await run_reported(
        deps, "preview", project_id=project_id, build_id=build_id, run_id=run_id, body=_start
    )


async def _start(ctx: RunContext) -> dict[str, Any]:
    session = await ctx.deps.store.get_session(ctx.build_id)
    if not ctx.deps.settings.myyc_build_previews or session.options.get("preview") is False:
        await ctx.log("Previews are off for this build")
        return {"preview": None, "reason": "previews off"}
    await ctx.presence("preview", 0.65, focus_type="function", focus="preview")
    await ctx.progress("starting the preview", 20)
    previews = open_previews(ctx.deps, api_url=ctx.deps.api_url)
    try:
        preview = await previews.start(ctx.project_id, _Pipeline())
    except (PreviewLimitReached, PreviewBootFailed) as err:
        await ctx.log(f"No live preview: {err.message}; the verifier serves the files itself",
                      "warning")  # fmt: skip
        return {"preview": None, "reason": err.message}
    finally:
        await previews.close()
    await ctx.log(f"Preview live at {preview.container_url}", "success",
                  data={"session_id": str(preview.id), "url": preview.container_url})  # fmt: skip
    return {"preview": {"session_id": str(preview.id), "url": preview.container_url}}
