"""The local forge: real bare git repositories under a directory, written with the git CLI.

The embedded stand-in for GitHub (see `clients.forge`). Each repository is `root/<name>.git`;
commits are built with plumbing (`hash-object`, a throwaway index, `write-tree`,
`commit-tree`, `update-ref`), so no work tree, network or user git config is involved and a
commit costs a fixed handful of processes however many files it carries.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from clients.forge import (
    DEFAULT_BRANCH,
    RepoRef,
    initial_readme,
    validate_files,
    validate_repo_name,
)

__all__ = ["LocalForge", "LocalForgeError"]

_ZERO_SHA = "0" * 40
_STAGING = ".staging"
_COMMIT_ATTEMPTS = 3


class LocalForgeError(RuntimeError):
    """A git command failed; the message carries its stderr."""


class LocalForge:
    """Bare repositories under `root`, one per project, default branch `main`."""

    def __init__(
        self,
        root: Path,
        *,
        git: str = "git",
        author_name: str = "myyc",
        author_email: str = "myyc@localhost",
    ) -> None:
        self.root = Path(root).resolve()
        self._git_bin = git
        self._env = _git_env(author_name, author_email)
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"LocalForge(root={str(self.root)!r})"

    # ------------------------------------------------------------------ the port

    async def ensure_repo(self, name: str, *, description: str = "") -> RepoRef:
        """The bare repository `root/<name>.git`, created with a README commit if absent."""
        validate_repo_name(name)
        async with self._lock(name):
            existing = self._find(name)
            if existing is not None:
                return self._ref(existing)
            await self._create(name, description)
            found = self._find(name)
            assert found is not None, "a created repository must be found"
            return self._ref(found)

    async def commit_files(self, repo: RepoRef, files: Mapping[str, str], *, message: str) -> str:
        """One commit of `files` on top of the default branch; returns its sha."""
        validate_files(files)
        git_dir = self._existing_dir(repo)
        async with self._lock(repo.name):
            return await self._commit(git_dir, files, message)

    async def read_files(self, repo: RepoRef) -> dict[str, str]:
        """The default branch's files; bytes that are not UTF-8 are shown replaced."""
        git_dir = self._existing_dir(repo)
        head = await self._head(git_dir)
        if head is None:
            return {}
        listing = await self._git(git_dir, "ls-tree", "-r", "-z", "--full-tree", head)
        paths: list[str] = []
        shas: list[bytes] = []
        for record in listing.split(b"\0"):
            if not record:
                continue
            meta, _, path = record.partition(b"\t")
            _mode, kind, sha = meta.split()
            if kind == b"blob":
                paths.append(path.decode("utf-8", errors="surrogateescape"))
                shas.append(sha)
        if not shas:
            return {}
        batch = await self._git(git_dir, "cat-file", "--batch", stdin=b"\n".join(shas) + b"\n")
        contents = _parse_cat_file_batch(batch, len(shas))
        return {
            path: data.decode("utf-8", errors="replace")
            for path, data in zip(paths, contents, strict=True)
        }

    # ------------------------------------------------------------------ helpers

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name.lower(), asyncio.Lock())

    def _find(self, name: str) -> Path | None:
        # Names are case-insensitive, as on GitHub, even on a case-sensitive file system.
        wanted = f"{name}.git".lower()
        if not self.root.is_dir():
            return None
        for child in self.root.iterdir():
            if child.name.lower() == wanted and (child / "HEAD").is_file():
                return child
        return None

    def _existing_dir(self, repo: RepoRef) -> Path:
        validate_repo_name(repo.name)
        found = self._find(repo.name)
        if found is None:
            raise LookupError(f"repo: {repo.full_name!r} does not exist under {self.root}")
        return found

    def _ref(self, git_dir: Path) -> RepoRef:
        name = git_dir.name.removesuffix(".git")
        url = git_dir.as_uri()
        return RepoRef(
            name=name,
            full_name=f"local/{name}",
            html_url=url,
            clone_url=url,
            default_branch=DEFAULT_BRANCH,
        )

    async def _create(self, name: str, description: str) -> None:
        staging = self.root / _STAGING
        staging.mkdir(parents=True, exist_ok=True)
        # Build in a staging directory and rename into place: a crash mid-way never leaves a
        # half-made repository under the real name, and the rename settles races between
        # processes (the loser finds the directory already there).
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=staging))
        try:
            await self._git(
                None, "init", "--bare", "--quiet", f"--initial-branch={DEFAULT_BRANCH}", str(tmp)
            )
            (tmp / "description").write_text(f"{description or name}\n", encoding="utf-8")
            readme = {"README.md": initial_readme(name, description)}
            await self._commit(tmp, readme, "Initial commit")
            if not _publish(tmp, self.root / f"{name}.git") and self._find(name) is None:
                raise LocalForgeError(f"could not move {tmp} into place as {name}.git")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def _head(self, git_dir: Path) -> str | None:
        ref = f"refs/heads/{DEFAULT_BRANCH}^{{commit}}"
        code, out = await self._run(git_dir, "rev-parse", "--verify", "--quiet", ref)
        return out.decode().strip() if code == 0 else None

    async def _commit(self, git_dir: Path, files: Mapping[str, str], message: str) -> str:
        with tempfile.TemporaryDirectory(prefix="myyc-forge-") as tmp:
            work = Path(tmp)
            blob_files = []
            for i, content in enumerate(files.values()):
                blob_file = work / f"blob-{i}"
                blob_file.write_bytes(content.encode("utf-8"))
                blob_files.append(str(blob_file))
            # --no-filters: store the bytes given, whatever autocrlf or attributes would say.
            hashed = await self._git(
                git_dir,
                "hash-object",
                "-w",
                "--no-filters",
                "--stdin-paths",
                stdin="\n".join(blob_files).encode() + b"\n",
            )
            shas = hashed.decode().split()
            index_info = b"".join(
                f"100644 {sha}\t".encode() + path.encode("utf-8") + b"\0"
                for sha, path in zip(shas, files, strict=True)
            )
            index_env = {"GIT_INDEX_FILE": str(work / "index")}
            for _attempt in range(_COMMIT_ATTEMPTS):
                head = await self._head(git_dir)
                read_tree = ["read-tree", head] if head else ["read-tree", "--empty"]
                await self._git(git_dir, *read_tree, env=index_env)
                # --replace: a new file may stand where a directory was, or the reverse.
                await self._git(
                    git_dir,
                    "update-index",
                    "-z",
                    "--replace",
                    "--index-info",
                    stdin=index_info,
                    env=index_env,
                )
                tree = (await self._git(git_dir, "write-tree", env=index_env)).decode().strip()
                if head is not None:
                    head_tree = await self._git(git_dir, "rev-parse", f"{head}^{{tree}}")
                    if head_tree.decode().strip() == tree:
                        # Commit by tree: the same files again (a resumed build) add nothing.
                        return head
                parents = ["-p", head] if head else []
                commit_out = await self._git(
                    git_dir,
                    "commit-tree",
                    "--no-gpg-sign",
                    tree,
                    *parents,
                    stdin=message.encode("utf-8"),
                )
                commit = commit_out.decode().strip()
                # Compare-and-swap on the old head: another process that committed meanwhile
                # makes this fail, and we rebuild on top of its commit instead of losing it.
                code, _ = await self._run(
                    git_dir,
                    "update-ref",
                    "-m",
                    "myyc: commit_files",
                    f"refs/heads/{DEFAULT_BRANCH}",
                    commit,
                    head or _ZERO_SHA,
                )
                if code == 0:
                    return commit
        raise LocalForgeError(f"{git_dir}: branch kept moving; gave up after {_COMMIT_ATTEMPTS}")

    async def _git(
        self,
        git_dir: Path | None,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> bytes:
        _, out = await self._run(git_dir, *args, stdin=stdin, env=env, check=True)
        return out

    async def _run(
        self,
        git_dir: Path | None,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = False,
    ) -> tuple[int, bytes]:
        argv: Sequence[str] = [self._git_bin]
        if git_dir is not None:
            argv = [*argv, f"--git-dir={git_dir}"]
        argv = [*argv, *args]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**self._env, **(env or {})},
        )
        out, err = await process.communicate(stdin)
        code = process.returncode if process.returncode is not None else -1
        if check and code != 0:
            raise LocalForgeError(
                f"git {' '.join(args[:2])} failed ({code}): {err.decode(errors='replace').strip()}"
            )
        return code, out


def _publish(staged: Path, final: Path) -> bool:
    """Rename `staged` to `final`; False when `final` already exists (another creator won)."""
    # Plain sync calls: a rename on local disk takes microseconds, less than a thread hop.
    try:
        staged.rename(final)
    except OSError:
        return False
    return True


def _git_env(author_name: str, author_email: str) -> dict[str, str]:
    # Drop inherited GIT_* variables (a GIT_DIR or GIT_INDEX_FILE from a hook would redirect
    # our writes) and ignore user and system config (commit.gpgSign, autocrlf, hooks paths),
    # so the forge behaves the same on every machine, including one with no git identity.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
        }
    )
    return env


def _parse_cat_file_batch(output: bytes, count: int) -> list[bytes]:
    """Split `git cat-file --batch` output ("<sha> <type> <size>\\n<data>\\n" each)."""
    contents: list[bytes] = []
    pos = 0
    for _ in range(count):
        newline = output.index(b"\n", pos)
        header = output[pos:newline].split()
        if len(header) != 3:
            raise LocalForgeError(f"cat-file: unexpected header {header!r}")
        size = int(header[2])
        start = newline + 1
        contents.append(output[start : start + size])
        pos = start + size + 1
    return contents
