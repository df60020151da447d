"""The GitHub agent: creates the project's repository and commits the app's files in one commit.

With GITHUB_TOKEN: GitHub's REST API (create with auto_init, then blobs → tree → commit →
ref); without: the local forge, real bare git repositories under MYYC_DATA_DIR. Idempotent by
repository name (a resumed run reuses the repository) and by tree (the same files again make
no new commit); after a codegen retry it commits the fixed files on top.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

from agents.common import RunContext, run_reported
from agents.deps import AgentDeps
from clients.forge import Forge
from schemas.errors import ValidationFailed
from schemas.settings import Settings

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher


def repo_name(title: str, project_id: str) -> str:
    """A stable, valid repository name: the title's slug and the project's short id.

    Accented letters keep their base letter (Ünïcødé → unicode), so a title in another
    language still names its repository.
    """
    folded = unicodedata.normalize("NFKD", title.replace("ø", "o").replace("Ø", "O"))
    ascii_ = folded.encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")[:60] or "app"
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
    deps: AgentDeps, dispatcher: Dispatcher, *, project_id: str, build_id: str, run_id: str
) -> dict[str, Any]:
    """Create the repository and push the files (a registry agent)."""
    return await run_reported(
        deps, "github", project_id=project_id, build_id=build_id, run_id=run_id, body=_push
    )


async def _push(ctx: RunContext) -> dict[str, Any]:
    store = ctx.deps.store
    files = await store.get_files(ctx.project_id)
    if not files:
        raise ValidationFailed("the project has no files yet; codegen runs first", field="files")
    project = await store.get_project(ctx.project_id)
    await ctx.presence("github", 0.65, focus_type="function", focus="repository")
    forge = make_forge(ctx.deps.settings)
    name = repo_name(project.title, str(ctx.project_id))
    await ctx.log(f"Creating repository {name}")
    await ctx.progress("creating the repository", 20)
    repo = await forge.ensure_repo(name, description=(project.description or project.title)[:300])
    await ctx.log(f"Repository ready: {repo.html_url}", "success")
    await ctx.progress("committing files", 50)
    verb = "Update" if ctx.rerun else "Initial"
    sha = await forge.commit_files(repo, files, message=f"{verb} app from myyc: {project.title}")
    await store.update_project(ctx.project_id, {"github_url": repo.html_url})
    await store.add_activity(
        ctx.project_id, "ai", "repository_created",
        {"repository": repo.full_name, "url": repo.html_url, "commit": sha, "files": len(files)},
    )  # fmt: skip
    await ctx.log(f"Committed {len(files)} files ({sha[:10]})", "success",
                  data={"commit": sha, "url": repo.html_url})  # fmt: skip
    return {"repository": repo.full_name, "url": repo.html_url, "commit": sha}
