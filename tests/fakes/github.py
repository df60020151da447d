"""A wire-faithful fake of the GitHub REST endpoints myyc uses, as an ASGI app.

It keeps real state: repositories keyed by owner/name (case-insensitively, like GitHub), each
with its own git object store whose blob, tree and commit ids are the SHA-1s real git would
compute, and refs that only move by fast-forward unless forced. It answers with GitHub's
documented status codes and error bodies (401, 404, 409 on an empty repository, 422 for a taken
name or a non-fast-forward), puts `x-ratelimit-*` headers on every response, enforces a primary
hourly budget and a secondary per-minute limit on content-creating requests, and takes
switches that inject faults:

    fake.fail_next(n, status=502)            next n requests answer a 5xx (HTML body, as a proxy)
    fake.rate_limit_next(n, retry_after=60)  next n requests hit a secondary limit (403)
    fake.exhaust_rate_limit(login, reset_in) the primary budget is spent until the reset
    fake.disconnect_next(n)                  next n requests through `fake.transport()` never
                                             arrive: the transport raises httpx.ConnectError

Use it in-process with `httpx.AsyncClient(transport=fake.transport())` or over a real
loopback socket with `async with local.server.serve(fake) as base_url: ...`.
Inspect with `fake.calls`
(per route), `fake.requests`, `fake.files(owner, repo)`, `fake.commit_count(owner, repo)`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import math
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

DEFAULT_TOKEN = "ghp_fake0000000000000000000000000000000"
DEFAULT_LOGIN = "octocat"
DOCS = "https://docs.github.com/rest"
HTML_BASE = "https://github.com"

REPO_EXISTS_MESSAGE = "name already exists on this account"
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {request_id}."
)
EMPTY_REPO_MESSAGE = "Git Repository is empty."

_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_MODES = {
    "100644": "blob",
    "100755": "blob",
    "120000": "blob",
    "040000": "tree",
    "160000": "commit",
}


# --------------------------------------------------------------------------- git objects


def git_sha(kind: str, body: bytes) -> str:
    """The id git gives an object of `kind` ("blob", "tree", "commit") with `body`."""
    return hashlib.sha1(f"{kind} {len(body)}\0".encode() + body, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class _Entry:
    mode: str  # as the API spells it: 040000 for trees
    type: str
    sha: str


@dataclass(frozen=True)
class _Blob:
    data: bytes


@dataclass(frozen=True)
class _Tree:
    entries: Mapping[str, _Entry]


@dataclass(frozen=True)
class _Commit:
    tree: str
    parents: tuple[str, ...]
    message: str
    author: Mapping[str, str]
    committer: Mapping[str, str]


_Object = _Blob | _Tree | _Commit


def _tree_body(entries: Mapping[str, _Entry]) -> bytes:
    # git orders entries by name, comparing a tree's name as if it ended in "/".
    def key(name: str) -> bytes:
        return (name + "/" if entries[name].type == "tree" else name).encode()

    out = bytearray()
    for name in sorted(entries, key=key):
        entry = entries[name]
        mode = entry.mode.lstrip("0")
        out += f"{mode} {name}".encode() + b"\0" + bytes.fromhex(entry.sha)
    return bytes(out)


def _actor_line(actor: Mapping[str, str]) -> str:
    when = datetime.fromisoformat(actor["date"].replace("Z", "+00:00"))
    return f"{actor['name']} <{actor['email']}> {int(when.timestamp())} +0000"


def _commit_body(commit: _Commit) -> bytes:
    lines = [f"tree {commit.tree}"]
    lines += [f"parent {p}" for p in commit.parents]
    lines.append(f"author {_actor_line(commit.author)}")
    lines.append(f"committer {_actor_line(commit.committer)}")
    return ("\n".join(lines) + "\n\n" + commit.message).encode()


@dataclass
class FakeRepo:
    """One repository's metadata, objects and refs."""

    id: int
    owner: str
    name: str
    description: str
    private: bool
    created_at: str
    default_branch: str = "main"
    objects: dict[str, _Object] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        """`owner/name`."""
        return f"{self.owner}/{self.name}"

    @property
    def empty(self) -> bool:
        """True until the first commit (GitHub's Git Database API then answers 409)."""
        return not self.refs

    def put(self, obj: _Object) -> str:
        """Store an object; return its git sha."""
        if isinstance(obj, _Blob):
            sha = git_sha("blob", obj.data)
        elif isinstance(obj, _Tree):
            sha = git_sha("tree", _tree_body(obj.entries))
        else:
            sha = git_sha("commit", _commit_body(obj))
        self.objects.setdefault(sha, obj)
        return sha

    def flatten(self, tree_sha: str, prefix: str = "") -> dict[str, _Entry]:
        """Every non-tree entry under `tree_sha`, keyed by full path."""
        tree = self.objects[tree_sha]
        assert isinstance(tree, _Tree)
        out: dict[str, _Entry] = {}
        for name, entry in tree.entries.items():
            if entry.type == "tree":
                out.update(self.flatten(entry.sha, f"{prefix}{name}/"))
            else:
                out[f"{prefix}{name}"] = entry
        return out

    def build(self, flat: Mapping[str, _Entry]) -> str:
        """Store the trees for a path → entry map; return the root tree's sha."""
        here: dict[str, _Entry] = {}
        below: dict[str, dict[str, _Entry]] = {}
        for path, entry in flat.items():
            head, sep, rest = path.partition("/")
            if sep:
                below.setdefault(head, {})[rest] = entry
            else:
                here[head] = entry
        for name, sub in below.items():
            here[name] = _Entry("040000", "tree", self.build(sub))
        return self.put(_Tree(here))

    def walk(self, tree_sha: str, prefix: str = "") -> Iterable[tuple[str, _Entry]]:
        """Pre-order (path, entry) pairs, as GitHub's recursive tree listing orders them."""
        tree = self.objects[tree_sha]
        assert isinstance(tree, _Tree)
        for name in sorted(tree.entries):
            entry = tree.entries[name]
            yield f"{prefix}{name}", entry
            if entry.type == "tree":
                yield from self.walk(entry.sha, f"{prefix}{name}/")

    def is_ancestor(self, ancestor: str, sha: str) -> bool:
        """Whether commit `ancestor` is `sha` or reachable from it."""
        seen: set[str] = set()
        todo = [sha]
        while todo:
            current = todo.pop()
            if current == ancestor:
                return True
            if current in seen:
                continue
            seen.add(current)
            obj = self.objects.get(current)
            if isinstance(obj, _Commit):
                todo.extend(obj.parents)
        return False


# --------------------------------------------------------------------------- plumbing


class _Fail(Exception):
    """Raised by a handler to answer with a GitHub error body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, **extra, "documentation_url": DOCS}


@dataclass
class _Budget:
    limit: int
    used: int = 0
    reset: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    route: str
    headers: Mapping[str, str]


_Handler = Callable[..., Awaitable[Response]]


class FakeGitHub:
    """The fake service; an ASGI app (`await fake(scope, receive, send)`)."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        orgs: Mapping[str, Iterable[str]] | None = None,
        rate_limit: int = 5000,
        anonymous_rate_limit: int = 60,
        content_per_minute: int = 80,
        primary_limit_status: int = 403,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users: dict[str, str] = dict(users or {DEFAULT_TOKEN: DEFAULT_LOGIN})
        self.orgs: dict[str, set[str]] = {k: set(v) for k, v in (orgs or {}).items()}
        self.rate_limit = rate_limit
        self.anonymous_rate_limit = anonymous_rate_limit
        self.content_per_minute = content_per_minute
        self.primary_limit_status = primary_limit_status
        self.clock = clock
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.calls: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        self.max_concurrent_writes = 0
        self._writes_in_flight = 0
        self._budgets: dict[str, _Budget] = {}
        self._content_times: dict[str, deque[float]] = {}
        self._faults: deque[tuple[str, int, int | None]] = deque()
        self._disconnects = 0
        self._ids = itertools.count(1000)
        self._request_ids = itertools.count(1)
        self._account_ids: dict[str, int] = {}
        self.app = Starlette(routes=self._routes())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # ------------------------------------------------------------------ switches

    def fail_next(self, n: int = 1, *, status: int = 502) -> None:
        """The next `n` requests answer `status` with an HTML body, as GitHub's edge does."""
        self._faults.extend(("server", status, None) for _ in range(n))

    def rate_limit_next(
        self, n: int = 1, *, retry_after: int | None = 60, status: int = 403
    ) -> None:
        """The next `n` requests hit a secondary limit; `retry_after` None sends no header."""
        self._faults.extend(("secondary", status, retry_after) for _ in range(n))

    def exhaust_rate_limit(self, login: str = DEFAULT_LOGIN, *, reset_in: int = 3600) -> None:
        """Spend `login`'s primary budget; it refills `reset_in` seconds from now."""
        budget = self._budget(login)
        budget.used = budget.limit
        budget.reset = int(self.clock()) + reset_in

    def disconnect_next(self, n: int = 1) -> None:
        """The next `n` requests through `transport()` fail with httpx.ConnectError."""
        self._disconnects += n

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process httpx transport to this fake that honours `disconnect_next`."""
        return _FakeTransport(self)

    # ------------------------------------------------------------------ inspection

    def repo(self, owner: str, name: str) -> FakeRepo:
        """The stored repository (KeyError if absent)."""
        return self.repos[(owner.lower(), name.lower())]

    def head(self, owner: str, name: str, branch: str = "main") -> str:
        """The commit sha `branch` points at."""
        return self.repo(owner, name).refs[f"refs/heads/{branch}"]

    def files(self, owner: str, name: str, branch: str = "main") -> dict[str, str]:
        """path → text of every file on `branch` (bytes that are not UTF-8 shown replaced)."""
        repo = self.repo(owner, name)
        commit = repo.objects[self.head(owner, name, branch)]
        assert isinstance(commit, _Commit)
        out: dict[str, str] = {}
        for path, entry in repo.flatten(commit.tree).items():
            blob = repo.objects[entry.sha]
            assert isinstance(blob, _Blob)
            out[path] = blob.data.decode(errors="replace")
        return out

    def commit_count(self, owner: str, name: str, branch: str = "main") -> int:
        """Commits reachable from `branch` (0 for an empty repository)."""
        repo = self.repo(owner, name)
        sha = repo.refs.get(f"refs/heads/{branch}")
        seen: set[str] = set()
        todo = [sha] if sha else []
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                commit = repo.objects[current]
                assert isinstance(commit, _Commit)
                todo.extend(commit.parents)
        return len(seen)

    def add_repo(
        self,
        owner: str,
        name: str,
        *,
        description: str = "",
        private: bool = True,
        auto_init: bool = True,
    ) -> FakeRepo:
        """Seed a repository directly (e.g. one that belongs to someone else)."""
        now = self.clock()
        repo = FakeRepo(
            id=next(self._ids),
            owner=owner,
            name=name,
            description=description,
            private=private,
            created_at=_iso(now),
        )
        self.repos[(owner.lower(), name.lower())] = repo
        if auto_init:
            readme = f"# {name}\n{description}\n" if description else f"# {name}\n"
            blob = repo.put(_Blob(readme.encode()))
            tree = repo.build({"README.md": _Entry("100644", "blob", blob)})
            actor = self._actor(owner, now)
            commit = repo.put(_Commit(tree, (), "Initial commit", actor, actor))
            repo.refs[f"refs/heads/{repo.default_branch}"] = commit
        return repo

    # ------------------------------------------------------------------ request pipeline

    def _routes(self) -> list[Route]:
        table: list[tuple[str, str, _Handler]] = [
            ("GET", "/user", self._get_user),
            ("POST", "/user/repos", self._create_user_repo),
            ("POST", "/orgs/{org}/repos", self._create_org_repo),
            ("GET", "/repos/{owner}/{repo}", self._get_repo),
            ("GET", "/repos/{owner}/{repo}/git/ref/{ref}", self._get_ref),
            ("PATCH", "/repos/{owner}/{repo}/git/refs/{ref}", self._update_ref),
            ("POST", "/repos/{owner}/{repo}/git/blobs", self._create_blob),
            ("GET", "/repos/{owner}/{repo}/git/blobs/{sha}", self._get_blob),
            ("POST", "/repos/{owner}/{repo}/git/trees", self._create_tree),
            ("GET", "/repos/{owner}/{repo}/git/trees/{sha}", self._get_tree),
            ("POST", "/repos/{owner}/{repo}/git/commits", self._create_commit),
            ("GET", "/repos/{owner}/{repo}/git/commits/{sha}", self._get_commit),
        ]
        routes = [self._route(method, path, handler) for method, path, handler in table]
        # Anything else is GitHub's JSON 404, not Starlette's plain-text one.
        routes.append(
            Route(
                "/{rest:path}",
                self._endpoint("* unknown", self._unknown),
                methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            )
        )
        return routes

    def _route(self, method: str, template: str, handler: _Handler) -> Route:
        path = template.replace("{ref}", "{ref:path}")
        return Route(path, self._endpoint(f"{method} {template}", handler), methods=[method])

    def _endpoint(self, label: str, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._handle(request, label, handler)

        return endpoint

    def _budget(self, identity: str) -> _Budget:
        now = self.clock()
        limit = self.anonymous_rate_limit if identity == "" else self.rate_limit
        budget = self._budgets.setdefault(identity, _Budget(limit))
        if now >= budget.reset:
            budget.used = 0
            budget.reset = int(now) + 3600
        return budget

    async def _handle(self, request: Request, label: str, handler: _Handler) -> Response:
        self.calls[label] += 1
        self.requests.append(
            RecordedRequest(request.method, request.url.path, label, dict(request.headers))
        )
        request_id = f"FAKE:{next(self._request_ids):06d}"
        login = self._login(request)
        budget = self._budget(login or "")
        write = request.method in _WRITE_METHODS
        response: Response
        if login is None:
            budget.used += 1
            message = "Bad credentials" if "authorization" in request.headers else None
            response = _error(401, message or "Requires authentication")
        elif self._faults:
            kind, status, retry_after = self._faults.popleft()
            if kind == "server":
                response = _edge_error(status)
            else:
                response = _secondary(status, retry_after, request_id)
        elif budget.used >= budget.limit:
            response = _error(
                self.primary_limit_status,
                f"API rate limit exceeded for user ID {self._account_id(login)}. If you reach "
                "out to GitHub Support for help, please include the request ID "
                f"{request_id} and timestamp {_iso(self.clock())}.",
                doc=f"{DOCS}/overview/rate-limits-for-the-rest-api",
            )
        elif write and (wait := self._content_wait(login)) is not None:
            response = _secondary(403, wait, request_id)
        else:
            budget.used += 1
            if write:
                self._content_times[login].append(self.clock())
            response = await self._run(request, login, handler, write=write)
        response.headers.update(
            {
                "x-ratelimit-limit": str(budget.limit),
                "x-ratelimit-remaining": str(max(0, budget.limit - budget.used)),
                "x-ratelimit-used": str(budget.used),
                "x-ratelimit-reset": str(budget.reset),
                "x-ratelimit-resource": "core",
                "x-github-request-id": request_id,
                "x-github-api-version-selected": "2022-11-28",
            }
        )
        return response

    async def _run(
        self, request: Request, login: str, handler: _Handler, *, write: bool
    ) -> Response:
        if write:
            self._writes_in_flight += 1
            self.max_concurrent_writes = max(self.max_concurrent_writes, self._writes_in_flight)
        try:
            if write:
                # Yield once so that overlapping writes from a careless client overlap here.
                await asyncio.sleep(0)
            return await handler(request, login, **request.path_params)
        except _Fail as fail:
            return JSONResponse(fail.body, status_code=fail.status)
        finally:
            if write:
                self._writes_in_flight -= 1

    def _content_wait(self, login: str) -> int | None:
        now = self.clock()
        times = self._content_times.setdefault(login, deque())
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) < self.content_per_minute:
            return None
        return max(1, math.ceil(times[0] + 60 - now))

    def _login(self, request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return self.users.get(token.strip())

    def _account_id(self, login: str) -> int:
        return self._account_ids.setdefault(login.lower(), 1 + len(self._account_ids))

    def _actor(self, login: str, now: float) -> dict[str, str]:
        return {"name": login, "email": f"{login}@users.noreply.github.com", "date": _iso(now)}

    # ------------------------------------------------------------------ JSON shapes

    def _account_json(self, request: Request, login: str) -> dict[str, Any]:
        kind = "Organization" if login.lower() in {o.lower() for o in self.orgs} else "User"
        return {
            "login": login,
            "id": self._account_id(login),
            "node_id": f"U_{self._account_id(login)}",
            "type": kind,
            "site_admin": False,
            "url": f"{_api(request)}/users/{login}",
            "html_url": f"{HTML_BASE}/{login}",
        }

    def _repo_json(self, request: Request, repo: FakeRepo) -> dict[str, Any]:
        api = f"{_api(request)}/repos/{repo.full_name}"
        return {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "visibility": "private" if repo.private else "public",
            "owner": self._account_json(request, repo.owner),
            "html_url": f"{HTML_BASE}/{repo.full_name}",
            "description": repo.description or None,
            "fork": False,
            "url": api,
            "git_refs_url": f"{api}/git/refs{{/sha}}",
            "clone_url": f"{HTML_BASE}/{repo.full_name}.git",
            "git_url": f"git://github.com/{repo.full_name}.git",
            "ssh_url": f"git@github.com:{repo.full_name}.git",
            "default_branch": repo.default_branch,
            "created_at": repo.created_at,
            "size": 0,
        }

    def _commit_json(self, request: Request, repo: FakeRepo, sha: str) -> dict[str, Any]:
        commit = repo.objects[sha]
        assert isinstance(commit, _Commit)
        git = f"{_api(request)}/repos/{repo.full_name}/git"
        return {
            "sha": sha,
            "node_id": f"C_{sha[:12]}",
            "url": f"{git}/commits/{sha}",
            "html_url": f"{HTML_BASE}/{repo.full_name}/commit/{sha}",
            "author": dict(commit.author),
            "committer": dict(commit.committer),
            "message": commit.message,
            "tree": {"sha": commit.tree, "url": f"{git}/trees/{commit.tree}"},
            "parents": [
                {
                    "sha": p,
                    "url": f"{git}/commits/{p}",
                    "html_url": f"{HTML_BASE}/{repo.full_name}/commit/{p}",
                }
                for p in commit.parents
            ],
            "verification": {"verified": False, "reason": "unsigned", "signature": None},
        }

    def _entry_json(
        self, request: Request, repo: FakeRepo, path: str, entry: _Entry
    ) -> dict[str, Any]:
        kind = {"blob": "blobs", "tree": "trees"}.get(entry.type)
        item: dict[str, Any] = {
            "path": path,
            "mode": entry.mode,
            "type": entry.type,
            "sha": entry.sha,
        }
        if entry.type == "blob":
            blob = repo.objects[entry.sha]
            assert isinstance(blob, _Blob)
            item["size"] = len(blob.data)
        if kind:
            item["url"] = f"{_api(request)}/repos/{repo.full_name}/git/{kind}/{entry.sha}"
        return item

    def _tree_json(
        self, request: Request, repo: FakeRepo, sha: str, *, recursive: bool
    ) -> dict[str, Any]:
        tree = repo.objects[sha]
        assert isinstance(tree, _Tree)
        pairs = (
            repo.walk(sha)
            if recursive
            else ((name, tree.entries[name]) for name in sorted(tree.entries))
        )
        return {
            "sha": sha,
            "url": f"{_api(request)}/repos/{repo.full_name}/git/trees/{sha}",
            "tree": [self._entry_json(request, repo, p, e) for p, e in pairs],
            "truncated": False,
        }

    def _ref_json(self, request: Request, repo: FakeRepo, ref: str) -> dict[str, Any]:
        sha = repo.refs[ref]
        api = f"{_api(request)}/repos/{repo.full_name}/git"
        return {
            "ref": ref,
            "node_id": f"REF_{ref}",
            "url": f"{api}/{ref}",
            "object": {"sha": sha, "type": "commit", "url": f"{api}/commits/{sha}"},
        }

    # ------------------------------------------------------------------ access

    def _can_write(self, login: str, owner: str) -> bool:
        if owner.lower() == login.lower():
            return True
        members = next((m for o, m in self.orgs.items() if o.lower() == owner.lower()), set())
        return login.lower() in {m.lower() for m in members}

    def _find(self, login: str, owner: str, name: str, *, write: bool = False) -> FakeRepo:
        repo = self.repos.get((owner.lower(), name.lower()))
        # Private repositories the token cannot see are indistinguishable from absent ones.
        if repo is None or (repo.private and not self._can_write(login, repo.owner)):
            raise _Fail(404, "Not Found")
        if write and not self._can_write(login, repo.owner):
            raise _Fail(403, "Resource not accessible by personal access token")
        return repo

    def _git_repo(self, login: str, owner: str, name: str, *, write: bool = False) -> FakeRepo:
        repo = self._find(login, owner, name, write=write)
        if repo.empty:
            raise _Fail(409, EMPTY_REPO_MESSAGE)
        return repo

    # ------------------------------------------------------------------ handlers

    async def _unknown(self, request: Request, login: str, rest: str) -> Response:
        raise _Fail(404, "Not Found")

    async def _get_user(self, request: Request, login: str) -> Response:
        body = self._account_json(request, login)
        body["name"] = login.title()
        return JSONResponse(body)

    async def _create_user_repo(self, request: Request, login: str) -> Response:
        return await self._create_repo(request, login, owner=login)

    async def _create_org_repo(self, request: Request, login: str, org: str) -> Response:
        known = next((o for o in self.orgs if o.lower() == org.lower()), None)
        if known is None:
            raise _Fail(404, "Not Found")
        if not self._can_write(login, known):
            raise _Fail(
                403,
                "You need admin access to the organization before adding a repository to it.",
            )
        return await self._create_repo(request, login, owner=known)

    async def _create_repo(self, request: Request, login: str, *, owner: str) -> Response:
        body = await _json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _Fail(
                422,
                "Repository creation failed.",
                errors=[
                    {"resource": "Repository", "code": "missing_field", "field": "name"},
                ],
            )
        # GitHub replaces characters it does not allow with "-" rather than refusing.
        name = re.sub(r"[^A-Za-z0-9._-]", "-", name.strip())
        if name in (".", "..") or len(name) > 100:
            raise _Fail(
                422,
                "Repository creation failed.",
                errors=[
                    {
                        "resource": "Repository",
                        "code": "custom",
                        "field": "name",
                        "message": "name is invalid",
                    }
                ],
            )
        if (owner.lower(), name.lower()) in self.repos:
            raise _Fail(
                422,
                "Repository creation failed.",
                errors=[
                    {
                        "resource": "Repository",
                        "code": "custom",
                        "field": "name",
                        "message": REPO_EXISTS_MESSAGE,
                    }
                ],
            )
        description = body.get("description") or ""
        repo = self.add_repo(
            owner,
            name,
            description=str(description),
            private=bool(body.get("private", False)),
            auto_init=bool(body.get("auto_init", False)),
        )
        return JSONResponse(self._repo_json(request, repo), status_code=201)

    async def _get_repo(self, request: Request, login: str, owner: str, repo: str) -> Response:
        return JSONResponse(self._repo_json(request, self._find(login, owner, repo)))

    async def _get_ref(
        self, request: Request, login: str, owner: str, repo: str, ref: str
    ) -> Response:
        found = self._git_repo(login, owner, repo)
        full = f"refs/{ref}"
        if full not in found.refs:
            raise _Fail(404, "Not Found")
        return JSONResponse(self._ref_json(request, found, full))

    async def _update_ref(
        self, request: Request, login: str, owner: str, repo: str, ref: str
    ) -> Response:
        found = self._git_repo(login, owner, repo, write=True)
        body = await _json_body(request)
        sha = body.get("sha")
        if not isinstance(sha, str):
            raise _Fail(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
        full = f"refs/{ref}"
        if full not in found.refs:
            raise _Fail(422, "Reference does not exist")
        if not isinstance(found.objects.get(sha), _Commit):
            raise _Fail(422, "Object does not exist")
        if not body.get("force", False) and not found.is_ancestor(found.refs[full], sha):
            raise _Fail(422, "Update is not a fast forward")
        found.refs[full] = sha
        return JSONResponse(self._ref_json(request, found, full))

    async def _create_blob(self, request: Request, login: str, owner: str, repo: str) -> Response:
        found = self._git_repo(login, owner, repo, write=True)
        body = await _json_body(request)
        content = body.get("content")
        if not isinstance(content, str):
            raise _Fail(422, 'Invalid request.\n\n"content" wasn\'t supplied.')
        encoding = body.get("encoding", "utf-8")
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=False)
            except binascii.Error as err:
                raise _Fail(422, "content is not valid Base64") from err
        elif encoding in ("utf-8", "utf8"):
            data = content.encode()
        else:
            raise _Fail(422, f"encoding {encoding!r} is not supported")
        sha = found.put(_Blob(data))
        url = f"{_api(request)}/repos/{found.full_name}/git/blobs/{sha}"
        return JSONResponse({"url": url, "sha": sha}, status_code=201)

    async def _get_blob(
        self, request: Request, login: str, owner: str, repo: str, sha: str
    ) -> Response:
        found = self._git_repo(login, owner, repo)
        blob = found.objects.get(sha)
        if not isinstance(blob, _Blob):
            raise _Fail(404, "Not Found")
        encoded = base64.b64encode(blob.data).decode()
        # GitHub wraps the base64 at 60 columns.
        wrapped = "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))
        return JSONResponse(
            {
                "sha": sha,
                "node_id": f"B_{sha[:12]}",
                "size": len(blob.data),
                "url": f"{_api(request)}/repos/{found.full_name}/git/blobs/{sha}",
                "content": wrapped,
                "encoding": "base64",
            }
        )

    async def _create_tree(self, request: Request, login: str, owner: str, repo: str) -> Response:
        found = self._git_repo(login, owner, repo, write=True)
        body = await _json_body(request)
        items = body.get("tree")
        if not isinstance(items, list):
            raise _Fail(422, 'Invalid request.\n\n"tree" wasn\'t supplied.')
        flat: dict[str, _Entry] = {}
        base = body.get("base_tree")
        if base is not None:
            if not isinstance(found.objects.get(base), _Tree):
                raise _Fail(422, "base_tree is not a valid tree oid")
            flat = found.flatten(base)
        for item in items:
            _apply_tree_item(found, flat, item)
        sha = found.build(flat)
        return JSONResponse(self._tree_json(request, found, sha, recursive=False), status_code=201)

    async def _get_tree(
        self, request: Request, login: str, owner: str, repo: str, sha: str
    ) -> Response:
        found = self._git_repo(login, owner, repo)
        if not isinstance(found.objects.get(sha), _Tree):
            raise _Fail(404, "Not Found")
        # GitHub's docs: any value of `recursive` (even "false") turns recursion on.
        recursive = "recursive" in request.query_params
        return JSONResponse(self._tree_json(request, found, sha, recursive=recursive))

    async def _create_commit(self, request: Request, login: str, owner: str, repo: str) -> Response:
        found = self._git_repo(login, owner, repo, write=True)
        body = await _json_body(request)
        message, tree, parents = body.get("message"), body.get("tree"), body.get("parents", [])
        if not isinstance(message, str):
            raise _Fail(422, 'Invalid request.\n\n"message" wasn\'t supplied.')
        if not isinstance(tree, str) or not isinstance(found.objects.get(tree), _Tree):
            raise _Fail(422, "Tree SHA does not exist")
        if not isinstance(parents, list) or not all(
            isinstance(p, str) and isinstance(found.objects.get(p), _Commit) for p in parents
        ):
            raise _Fail(422, "Parent SHA does not exist or is not a commit object")
        default = self._actor(login, self.clock())
        author = {**default, **_actor_override(body.get("author"))}
        committer = {**default, **_actor_override(body.get("committer"))}
        sha = found.put(_Commit(tree, tuple(parents), message, author, committer))
        return JSONResponse(self._commit_json(request, found, sha), status_code=201)

    async def _get_commit(
        self, request: Request, login: str, owner: str, repo: str, sha: str
    ) -> Response:
        found = self._git_repo(login, owner, repo)
        if not isinstance(found.objects.get(sha), _Commit):
            raise _Fail(404, "Not Found")
        return JSONResponse(self._commit_json(request, found, sha))


def _apply_tree_item(repo: FakeRepo, flat: dict[str, _Entry], item: Any) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
        raise _Fail(422, 'Invalid request.\n\n"path" wasn\'t supplied.')
    path: str = item["path"]
    parts = path.split("/")
    if any(part in ("", ".", "..", ".git") for part in parts):
        raise _Fail(422, f"tree.path contains a malformed path component: {path!r}")
    mode, kind = item.get("mode", "100644"), item.get("type", "blob")
    if _MODES.get(mode) != kind:
        raise _Fail(422, f"tree.mode {mode!r} does not match tree.type {kind!r}")
    below = path + "/"
    for existing in [p for p in flat if p == path or p.startswith(below)]:
        del flat[existing]
    if "content" in item:
        if kind != "blob" or not isinstance(item["content"], str):
            raise _Fail(422, "tree.content is only allowed for blobs")
        flat[path] = _Entry(mode, "blob", repo.put(_Blob(item["content"].encode())))
        return
    if "sha" not in item:
        raise _Fail(422, "Must supply either tree.sha or tree.content")
    sha = item["sha"]
    if sha is None:
        return  # GitHub: a null sha deletes the path.
    obj = repo.objects.get(sha) if isinstance(sha, str) else None
    if kind == "blob" and not isinstance(obj, _Blob):
        raise _Fail(422, f"tree.sha {sha} is not a valid blob")
    if kind == "tree":
        if not isinstance(obj, _Tree):
            raise _Fail(422, f"tree.sha {sha} is not a valid tree")
        for sub, entry in repo.flatten(sha).items():
            flat[f"{path}/{sub}"] = entry
        return
    flat[path] = _Entry(mode, kind, str(sha))


def _actor_override(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {k: str(raw[k]) for k in ("name", "email", "date") if raw.get(k)}


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as err:
        raise _Fail(400, "Problems parsing JSON") from err
    if not isinstance(body, dict):
        raise _Fail(400, "Problems parsing JSON")
    return body


def _api(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str, *, doc: str = DOCS) -> JSONResponse:
    return JSONResponse({"message": message, "documentation_url": doc}, status_code=status)


def _edge_error(status: int) -> Response:
    html = f"<!DOCTYPE html><html><head><title>{status}</title></head><body>Unicorn!</body></html>"
    return Response(html, status_code=status, media_type="text/html")


def _secondary(status: int, retry_after: int | None, request_id: str) -> Response:
    response = _error(
        status,
        SECONDARY_MESSAGE.format(request_id=request_id),
        doc=f"{DOCS}/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
    )
    if retry_after is not None:
        response.headers["retry-after"] = str(retry_after)
    return response


class _FakeTransport(httpx.ASGITransport):
    def __init__(self, fake: FakeGitHub) -> None:
        super().__init__(app=fake)
        self._fake = fake

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._fake._disconnects > 0:
            self._fake._disconnects -= 1
            raise httpx.ConnectError("fake: connection refused", request=request)
        return await super().handle_async_request(request)
