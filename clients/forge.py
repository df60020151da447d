"""The forge port: where a generated project's code lives as a git repository.

`Forge` is the port; `GitHubForge` (here, over `clients.github.GitHub`) and
`local.forge.LocalForge` (bare repositories on disk) are its adapters. Both pass one contract
suite, `tests/integration/test_forge_contract.py`, so the same agent code runs on a laptop
with no account and in production. Validation rules live here so both adapters refuse the
same names and paths with the same `ValueError`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from clients.github import GitHub, GitHubNotFound, GitHubRepoExists

__all__ = [
    "DEFAULT_BRANCH",
    "Forge",
    "GitHubForge",
    "RepoRef",
    "initial_readme",
    "validate_files",
    "validate_repo_name",
]

DEFAULT_BRANCH = "main"

# GitHub's own alphabet for repository names; a leading "-" is refused as well because the
# local adapter hands names to the git CLI, where it would read as an option.
_REPO_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class RepoRef:
    """Where a repository lives; enough to commit to it, clone it and link to it."""

    name: str
    full_name: str
    html_url: str
    clone_url: str
    default_branch: str


@runtime_checkable
class Forge(Protocol):
    """Creates repositories and writes commits to them."""

    async def ensure_repo(self, name: str, *, description: str = "") -> RepoRef:
        """The repository called `name`, created (with a README) if absent.

        Idempotent by name, case-insensitively as on GitHub: an existing repo is returned.
        """
        ...

    async def commit_files(self, repo: RepoRef, files: Mapping[str, str], *, message: str) -> str:
        """Write `files` (path → text) as one commit on the default branch; return its sha."""
        ...

    async def read_files(self, repo: RepoRef) -> dict[str, str]:
        """Every file on the default branch as path → text (for tests and previews)."""
        ...


def validate_repo_name(name: str) -> str:
    """Return `name` if it is a safe repository name, else raise ValueError naming `name`."""
    if (
        not isinstance(name, str)
        or not _REPO_NAME.fullmatch(name)
        or name in (".", "..")
        or name.lower().endswith(".git")
    ):
        raise ValueError(
            f"name: {name!r} is not a valid repository name "
            "(1-100 of A-Z a-z 0-9 . _ -, not starting with '-', not '.', '..' or '*.git')"
        )
    return name


def _validate_path(path: str) -> None:
    parts = path.split("/") if isinstance(path, str) else [""]
    if any(part in ("", ".", "..") or part.lower() == ".git" for part in parts) or any(
        ch in path for ch in "\0\\"
    ):
        raise ValueError(
            f"files: {path!r} is not a relative path "
            "(no leading '/', empty, '.', '..' or '.git' segments, no NUL or backslash)"
        )


def validate_files(files: Mapping[str, str]) -> None:
    """Raise ValueError naming `files` unless it is a non-empty map of safe relative paths."""
    if not files:
        raise ValueError("files: nothing to commit")
    for path, content in files.items():
        _validate_path(path)
        if not isinstance(content, str):
            raise ValueError(f"files: content of {path!r} must be text")


def initial_readme(name: str, description: str = "") -> str:
    """The README a new repository starts with (GitHub's `auto_init` shape)."""
    return f"# {name}\n{description}\n" if description else f"# {name}\n"


class GitHubForge:
    """The forge on GitHub: repositories of the token's user, or of `org` when given."""

    def __init__(self, github: GitHub, *, org: str | None = None, private: bool = True) -> None:
        self._github = github
        self._org = org
        self._private = private
        self._owner: str | None = org
        self._commit_locks: dict[str, asyncio.Lock] = {}

    async def _owner_login(self) -> str:
        if self._owner is None:
            self._owner = (await self._github.get_authenticated_user()).login
        return self._owner

    async def ensure_repo(self, name: str, *, description: str = "") -> RepoRef:
        """The repository called `name`, created private with a README if absent."""
        validate_repo_name(name)
        owner = await self._owner_login()
        # Look before creating: a re-run then costs one read, not a content-creating write
        # that counts against GitHub's secondary limits.
        try:
            repo = await self._github.get_repo(owner, name)
        except GitHubNotFound:
            try:
                repo = await self._github.create_repo(
                    name,
                    description=description,
                    private=self._private,
                    auto_init=True,
                    org=self._org,
                )
            except GitHubRepoExists:
                # Another worker created it between our read and our write.
                repo = await self._github.get_repo(owner, name)
        return RepoRef(
            name=repo.name,
            full_name=repo.full_name,
            html_url=repo.html_url,
            clone_url=repo.clone_url,
            default_branch=repo.default_branch,
        )

    async def commit_files(self, repo: RepoRef, files: Mapping[str, str], *, message: str) -> str:
        """One commit of `files` on the default branch via the Git Database API."""
        validate_files(files)
        owner, name = _split(repo)
        # The client rebuilds on a moved branch anyway; queueing our own commits to one repo
        # just avoids paying for that (and for the secondary-limit points it spends).
        async with self._commit_locks.setdefault(repo.full_name.lower(), asyncio.Lock()):
            return await self._github.commit_files(
                owner, name, files, message, branch=repo.default_branch
            )

    async def read_files(self, repo: RepoRef) -> dict[str, str]:
        """The default branch's files; bytes that are not UTF-8 are shown replaced."""
        owner, name = _split(repo)
        raw = await self._github.read_files(owner, name, branch=repo.default_branch)
        return {path: data.decode("utf-8", errors="replace") for path, data in raw.items()}


def _split(repo: RepoRef) -> tuple[str, str]:
    owner, _, name = repo.full_name.partition("/")
    if not owner or not name:
        raise ValueError(f"repo: {repo.full_name!r} is not owner/name")
    return owner, validate_repo_name(name)
