"""One contract every Forge adapter passes: GitHubForge (through the fake) and LocalForge.

The suite talks to adapters only through the `Forge` port; each harness also says how many
repositories its backend holds, so idempotency is checked against real state.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from clients.forge import Forge, GitHubForge, RepoRef
from clients.github import GitHub
from local.forge import LocalForge
from tests.fakes.github import DEFAULT_TOKEN, FakeGitHub


@dataclass
class Harness:
    """An adapter under test plus a view of its backend's state."""

    kind: str
    forge: Forge
    repo_count: Callable[[], int]


@pytest.fixture(params=["github", "local"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "github":
        fake = FakeGitHub()
        async with (
            httpx.AsyncClient(transport=fake.transport()) as http,
            GitHub(DEFAULT_TOKEN, base_url="https://api.github.test", http_client=http) as gh,
        ):
            yield Harness("github", GitHubForge(gh), lambda: len(fake.repos))
    else:
        root = tmp_path / "forge"
        yield Harness("local", LocalForge(root), lambda: len(list(root.glob("*.git"))))


async def test_forge_adapters_satisfy_the_protocol(harness: Harness) -> None:
    assert isinstance(harness.forge, Forge)


async def test_ensure_repo_is_idempotent(harness: Harness) -> None:
    first = await harness.forge.ensure_repo("demo-app", description="A demo")
    second = await harness.forge.ensure_repo("demo-app", description="ignored the second time")
    assert first == second
    assert harness.repo_count() == 1
    assert first.name == "demo-app"
    assert first.full_name.endswith("/demo-app")
    assert first.default_branch == "main"
    assert first.html_url
    assert first.clone_url


async def test_ensure_repo_names_are_case_insensitive(harness: Harness) -> None:
    first = await harness.forge.ensure_repo("Case-App")
    second = await harness.forge.ensure_repo("case-app")
    assert first == second
    assert first.name == "Case-App"
    assert harness.repo_count() == 1


async def test_concurrent_ensure_repo_creates_one_repo(harness: Harness) -> None:
    refs = await asyncio.gather(*(harness.forge.ensure_repo("racy") for _ in range(4)))
    assert len(set(refs)) == 1
    assert harness.repo_count() == 1


async def test_a_new_repo_starts_with_a_readme(harness: Harness) -> None:
    repo = await harness.forge.ensure_repo("fresh", description="Fresh start")
    assert await harness.forge.read_files(repo) == {"README.md": "# fresh\nFresh start\n"}


async def test_commit_then_read_round_trips_nested_paths_and_unicode(harness: Harness) -> None:
    repo = await harness.forge.ensure_repo("round-trip")
    files = {
        "package.json": '{"name": "round-trip"}\n',
        "src/app/page.tsx": "export default function Page() { return <h1>Hi</h1>; }\n",
        "docs/日本語/читать.md": "héllo — ünïcødé ✓ 🚀\n",
        "deep/a/b/c/d/e.txt": "deep\n",
        "empty.txt": "",
        "with space.txt": "no trailing newline",
        "crlf.txt": "line one\r\nline two\r\n",
    }
    sha = await harness.forge.commit_files(repo, files, message="Generate app ✨")
    assert len(sha) == 40
    assert int(sha, 16) >= 0
    assert await harness.forge.read_files(repo) == {"README.md": "# round-trip\n", **files}


async def test_a_second_commit_updates_and_adds_files(harness: Harness) -> None:
    repo = await harness.forge.ensure_repo("twice")
    first = await harness.forge.commit_files(
        repo, {"a.txt": "1", "dir/b.txt": "2"}, message="first"
    )
    second = await harness.forge.commit_files(
        repo, {"a.txt": "one", "dir/new/c.txt": "3"}, message="second"
    )
    assert first != second
    assert await harness.forge.read_files(repo) == {
        "README.md": "# twice\n",
        "a.txt": "one",
        "dir/b.txt": "2",
        "dir/new/c.txt": "3",
    }


async def test_concurrent_commits_both_land(harness: Harness) -> None:
    repo = await harness.forge.ensure_repo("busy")
    await asyncio.gather(
        harness.forge.commit_files(repo, {"one.txt": "1"}, message="one"),
        harness.forge.commit_files(repo, {"two.txt": "2"}, message="two"),
    )
    files = await harness.forge.read_files(repo)
    assert (files["one.txt"], files["two.txt"]) == ("1", "2")


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../evil",
        "a/b",
        "a\\b",
        "-rf",
        "x" * 101,
        "has space",
        "ünïcødé",
        "evil.git",
        "nul\0byte",
    ],
)
async def test_bad_repo_names_are_rejected(harness: Harness, name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        await harness.forge.ensure_repo(name)
    assert harness.repo_count() == 0


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../up.txt", "a/../../b", "a//b", "dir/", "./x", ".git/config", "a\\b"],
)
async def test_bad_file_paths_are_rejected(harness: Harness, path: str) -> None:
    repo = await harness.forge.ensure_repo("paths")
    with pytest.raises(ValueError, match="files"):
        await harness.forge.commit_files(repo, {path: "x"}, message="bad")
    assert await harness.forge.read_files(repo) == {"README.md": "# paths\n"}


async def test_an_empty_commit_is_rejected(harness: Harness) -> None:
    repo = await harness.forge.ensure_repo("nothing")
    with pytest.raises(ValueError, match="files"):
        await harness.forge.commit_files(repo, {}, message="nothing")


async def test_a_forged_repo_ref_cannot_escape(harness: Harness) -> None:
    evil = RepoRef("../../etc", "x/../../etc", "file:///etc", "file:///etc", "main")
    with pytest.raises(ValueError, match="name"):
        await harness.forge.commit_files(evil, {"a.txt": "x"}, message="escape")


# --------------------------------------------------------------------------- LocalForge only


def _run_git(*args: str, cwd: Path) -> str:
    # No user config: the check must not depend on the machine it runs on.
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True)
    return result.stdout.decode()


async def test_local_forge_repos_are_real_bare_repos_that_clone(tmp_path: Path) -> None:
    forge = LocalForge(tmp_path / "forge")
    repo = await forge.ensure_repo("clone-me", description="Cloned")
    files = {"src/main.py": "print('hi')\n", "docs/ünï.md": "✓\n"}
    sha = await forge.commit_files(repo, files, message="Add code")

    bare = tmp_path / "forge" / "clone-me.git"
    assert repo.clone_url == bare.as_uri() == repo.html_url
    assert _run_git("rev-parse", "--is-bare-repository", cwd=bare).strip() == "true"
    assert _run_git("rev-parse", "refs/heads/main", cwd=bare).strip() == sha

    _run_git("clone", "--quiet", repo.clone_url, str(tmp_path / "checkout"), cwd=tmp_path)
    checkout = tmp_path / "checkout"
    assert (checkout / "src" / "main.py").read_text(encoding="utf-8") == "print('hi')\n"
    assert (checkout / "docs" / "ünï.md").read_text(encoding="utf-8") == "✓\n"
    assert (checkout / "README.md").read_text(encoding="utf-8") == "# clone-me\nCloned\n"
    log = _run_git("log", "--format=%s|%an <%ae>", cwd=checkout).splitlines()
    assert log == ["Add code|myyc <myyc@localhost>", "Initial commit|myyc <myyc@localhost>"]


async def test_local_forge_works_without_any_git_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A machine with no git config at all, and a stray GIT_DIR that must not redirect writes.
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    for name in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
    ):
        monkeypatch.delenv(name, raising=False)
    forge = LocalForge(tmp_path / "forge")
    repo = await forge.ensure_repo("no-identity")
    await forge.commit_files(repo, {"a.txt": "a"}, message="m")
    assert (await forge.read_files(repo))["a.txt"] == "a"
    assert not (tmp_path / "elsewhere").exists()


async def test_local_forge_leaves_no_staging_debris(tmp_path: Path) -> None:
    forge = LocalForge(tmp_path / "forge")
    await asyncio.gather(*(forge.ensure_repo(f"r{i}") for i in range(3)))
    assert sorted(p.name for p in (tmp_path / "forge").iterdir()) == [
        ".staging",
        "r0.git",
        "r1.git",
        "r2.git",
    ]
    assert list((tmp_path / "forge" / ".staging").iterdir()) == []


async def test_local_forge_two_instances_on_one_root_share_repos(tmp_path: Path) -> None:
    # Separate instances stand in for separate processes: no shared in-memory lock.
    one, two = LocalForge(tmp_path / "forge"), LocalForge(tmp_path / "forge")
    a, b = await asyncio.gather(one.ensure_repo("shared"), two.ensure_repo("shared"))
    assert a == b
    await asyncio.gather(
        one.commit_files(a, {"one.txt": "1"}, message="one"),
        two.commit_files(b, {"two.txt": "2"}, message="two"),
    )
    files = await one.read_files(a)
    assert (files["one.txt"], files["two.txt"]) == ("1", "2")
