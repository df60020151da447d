"""The GitHub agent: creates the project's repository and commits the plan's files in one commit.

With GITHUB_TOKEN: GitHub's REST API (create with auto_init, then blobs → tree → commit →
ref); without: the local forge, real bare git repositories under MYYC_DATA_DIR. Idempotent by
repository name, so a retried run reuses the repository.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from agents.common import RunContext, run_reported
from clients.forge import Forge
from schemas.errors import ValidationFailed
from schemas.plan import Plan
from schemas.settings import Settings

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher
    from api.services import Services


def repo_name(title: str, project_id: str) -> str:
    """A stable, valid repository name: the title's slug and the project's short id."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "app"
    return f"{slug}-{project_id.replace('-', '')[:8]}"


def make_forge(settings: Settings) -> Forge:
    """GitHub with a token, the local forge without."""
    if settings.github_token is not None:
        from clients.forge import GitHubForge
        from clients.github import GitHub

        client = GitHub(settings.github_token.get_secret_value(), base_url=settings.github_api_url)
        return GitHubForge(client, org=settings.github_org)
    from local.forge import LocalForge

    return LocalForge(settings.forge_dir)


async def run_github(
    services: Services, dispatcher: Dispatcher, *, project_id: str, build_id: str, run_id: str
) -> dict[str, Any]:
    """Create the repository and push the files (a registry agent)."""
    return await run_reported(
        services, "github", project_id=project_id, build_id=build_id, run_id=run_id, body=_push
    )


async def _push(ctx: RunContext) -> dict[str, Any]:
    store = ctx.services.store
    session = await store.get_session(ctx.build_id)
    if session.plan is None:
        raise ValidationFailed("the build has no plan yet; the planner runs first", field="plan")
    plan = Plan.model_validate(session.plan)
    project = await store.get_project(ctx.project_id)
    forge = make_forge(ctx.services.settings)
    name = repo_name(project.title, str(ctx.project_id))
    await ctx.log(f"Creating repository {name}")
    await ctx.progress("creating the repository", 20)
    repo = await forge.ensure_repo(name, description=(project.description or project.title)[:300])
    await ctx.log(f"Repository ready: {repo.html_url}", "success")
    await ctx.progress("committing files", 50)
    files = {f.path: f.content for f in plan.files}
    for path in files:
        await ctx.log(f"adding {path}")
    sha = await forge.commit_files(repo, files, message=f"Initial app from myyc: {project.title}")
    await store.update_project(ctx.project_id, {"github_url": repo.html_url})
    await store.add_activity(
        ctx.project_id, "ai", "repository_created",
        {"repository": repo.full_name, "url": repo.html_url, "commit": sha, "files": len(files)},
    )  # fmt: skip
    await ctx.log(f"Committed {len(files)} files ({sha[:10]})", "success",
                  data={"commit": sha, "url": repo.html_url})  # fmt: skip
    return {"repository": repo.full_name, "url": repo.html_url, "commit": sha}
