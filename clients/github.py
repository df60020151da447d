"""Async client for the GitHub REST API: repositories and the Git Database API.

Every byte goes through one `httpx.AsyncClient` (injectable, so tests plug in a transport).
Failures surface as one exception tree, mapped from responses in `error_from_response`:

    GitHubError
    ├── GitHubConnectionError        transport failure (connect, read timeout, reset)
    └── GitHubStatusError            any non-2xx answer (.status_code, .message, .errors)
        ├── GitHubUnauthorized       401
        ├── GitHubForbidden          403 that is not a rate limit
        ├── GitHubNotFound           404 (GitHub also hides private repos this way)
        ├── GitHubConflict           409 (e.g. "Git Repository is empty.")
        ├── GitHubUnprocessable      422
        │   └── GitHubRepoExists     422 whose errors say the name already exists
        ├── GitHubRateLimited        403/429 with x-ratelimit-remaining 0, retry-after,
        │                            or a secondary-limit message
        └── GitHubServerError        5xx

Retries (rules from `clients.retry`, decided by the pure `retry_delay`): transport errors and
5xx back off exponentially; rate limits wait for `retry-after`, else until `x-ratelimit-reset`
when the budget is spent, else at least a minute (GitHub's advice for secondary limits). A wait
longer than the policy allows is not slept through: it raises `GitHubRateLimited`. Other 4xx
are final. Writes go one at a time per client, as GitHub asks of integrations.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
import types
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clients.retry import RetryPolicy, backoff_delay, parse_retry_after, should_retry

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "Account",
    "Blob",
    "GitActor",
    "GitCommit",
    "GitHub",
    "GitHubConflict",
    "GitHubConnectionError",
    "GitHubError",
    "GitHubForbidden",
    "GitHubNotFound",
    "GitHubRateLimited",
    "GitHubRepoExists",
    "GitHubServerError",
    "GitHubStatusError",
    "GitHubUnauthorized",
    "GitHubUnprocessable",
    "GitObjectRef",
    "GitRef",
    "GitTree",
    "Repo",
    "ShaRef",
    "TreeEntry",
    "TreeItem",
    "User",
    "error_from_response",
    "retry_delay",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
USER_AGENT = "myyc-github-client/0.1"

#: GitHub's docs: after a secondary limit with no retry-after, "wait for at least one minute".
SECONDARY_LIMIT_MIN_WAIT = 60.0
#: `x-ratelimit-reset` has one-second resolution and clocks drift; waking a little late is
#: cheaper than burning an attempt on a window that has not quite reset.
RESET_MARGIN = 1.0

DEFAULT_GITHUB_POLICY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=8.0)

#: How often commit_files rebuilds on a branch that moved under it before giving up.
COMMIT_ATTEMPTS = 3

_SECONDARY_MARKERS = ("secondary rate limit", "abuse detection")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


# --------------------------------------------------------------------------- exceptions


class GitHubError(Exception):
    """Base of every error this client raises."""


class GitHubConnectionError(GitHubError):
    """The request never got an HTTP answer (DNS, connect, timeout, reset)."""


class GitHubStatusError(GitHubError):
    """GitHub answered with a non-success status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        errors: Sequence[Mapping[str, Any]] = (),
        documentation_url: str | None = None,
        method: str = "",
        path: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.errors: tuple[Mapping[str, Any], ...] = tuple(errors)
        self.documentation_url = documentation_url
        self.method = method
        self.path = path
        # Only the response's headers are kept: the request's would carry the token into
        # whatever logs or error reports this exception reaches.
        self.headers: Mapping[str, str] = dict(headers or {})
        details = "; ".join(str(e.get("message") or e.get("code") or e) for e in self.errors)
        where = f" on {method} {path}" if method else ""
        text = f"GitHub {status_code}{where}: {message}"
        super().__init__(f"{text} ({details})" if details else text)

    @property
    def request_id(self) -> str | None:
        """GitHub's `x-github-request-id`, what its support asks for."""
        return self.headers.get("x-github-request-id")


class GitHubUnauthorized(GitHubStatusError):
    """401: missing, expired or revoked token."""


class GitHubForbidden(GitHubStatusError):
    """403 that is not a rate limit: the token lacks a scope or permission."""


class GitHubNotFound(GitHubStatusError):
    """404: no such resource, or one the token may not see."""


class GitHubConflict(GitHubStatusError):
    """409: e.g. Git Database calls on an empty repository."""


class GitHubUnprocessable(GitHubStatusError):
    """422: validation failed (bad tree entry, not a fast forward, ...)."""


class GitHubRepoExists(GitHubUnprocessable):
    """422 from repository creation: the name is already taken on this account."""


class GitHubRateLimited(GitHubStatusError):
    """403 or 429 from a primary or secondary rate limit."""

    @property
    def remaining(self) -> int | None:
        """`x-ratelimit-remaining`, when sent."""
        return _int_header(self.headers, "x-ratelimit-remaining")

    @property
    def reset_at(self) -> float | None:
        """`x-ratelimit-reset` (epoch seconds) when the primary budget refills, when sent."""
        reset = _int_header(self.headers, "x-ratelimit-reset")
        return float(reset) if reset is not None else None

    @property
    def is_secondary(self) -> bool:
        """Whether this is a secondary (abuse) limit rather than the hourly budget."""
        return self.remaining != 0


class GitHubServerError(GitHubStatusError):
    """5xx: GitHub or something in front of it failed."""


_BY_STATUS: dict[int, type[GitHubStatusError]] = {
    401: GitHubUnauthorized,
    403: GitHubForbidden,
    404: GitHubNotFound,
    409: GitHubConflict,
    422: GitHubUnprocessable,
}


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def _error_items(raw: object) -> list[Mapping[str, Any]]:
    # GitHub's `errors` is usually a list of objects, occasionally a list of strings.
    if not isinstance(raw, list):
        return []
    return [item if isinstance(item, Mapping) else {"message": str(item)} for item in raw]


def _is_rate_limit(status: int, headers: Mapping[str, str], message: str) -> bool:
    if status == 429:
        return True
    if status != 403:
        return False
    # A 403 is also what a missing permission gets: only these signs make it a rate limit.
    lowered = message.lower()
    return (
        headers.get("x-ratelimit-remaining", "").strip() == "0"
        or "retry-after" in headers
        or "rate limit" in lowered
        or any(marker in lowered for marker in _SECONDARY_MARKERS)
    )


def _says_name_taken(error: Mapping[str, Any]) -> bool:
    # Only a taken *name* means "repo exists"; e.g. "Reference already exists" must not.
    text = str(error.get("message", "")).lower()
    return "already exists" in text and (error.get("field") == "name" or "name" in text)


def error_from_response(response: httpx.Response) -> GitHubStatusError:
    """Map a non-success response to the one exception class that describes it."""
    status = response.status_code
    headers = {k.lower(): v for k, v in response.headers.items()}
    message = response.reason_phrase or f"HTTP {status}"
    errors: list[Mapping[str, Any]] = []
    documentation_url: str | None = None
    try:
        body = response.json()
    except ValueError:
        # Proxies in front of GitHub answer 502/504 with HTML; keep a short, readable excerpt.
        text = response.text.strip()
        if text and not text.startswith("<"):
            message = text[:200]
    else:
        if isinstance(body, Mapping):
            message = str(body.get("message") or message)
            errors = _error_items(body.get("errors"))
            doc = body.get("documentation_url")
            documentation_url = str(doc) if doc else None
    try:
        method, path = response.request.method, response.request.url.path
    except RuntimeError:
        method, path = "", ""

    cls: type[GitHubStatusError]
    if _is_rate_limit(status, headers, message):
        cls = GitHubRateLimited
    elif status == 422 and any(_says_name_taken(e) for e in errors):
        cls = GitHubRepoExists
    elif status >= 500:
        cls = GitHubServerError
    else:
        cls = _BY_STATUS.get(status, GitHubStatusError)
    return cls(
        message,
        status_code=status,
        errors=errors,
        documentation_url=documentation_url,
        method=method,
        path=path,
        headers=headers,
    )


def retry_delay(
    error: GitHubError,
    attempt: int,
    policy: RetryPolicy = DEFAULT_GITHUB_POLICY,
    *,
    now: float,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before retrying after `error` on attempt `attempt` (1-based), or None.

    None means the error is final: not retryable, out of attempts, or the server wants a wait
    longer than `policy.max_retry_after` (the caller would rather fail fast than hang).
    """
    if isinstance(error, GitHubConnectionError):
        return backoff_delay(attempt, policy, rand=rand) if should_retry(attempt, policy) else None
    if isinstance(error, GitHubRateLimited):
        wait = _rate_limit_wait(error, attempt, now=now)
        # A 403 rate limit is a 429 in all but name: same rule.
        if not should_retry(attempt, policy, status=429, retry_after=wait):
            return None
        return backoff_delay(attempt, policy, retry_after=wait)
    if isinstance(error, GitHubServerError):
        server_wait = parse_retry_after(error.headers, now)
        if not should_retry(attempt, policy, status=error.status_code, retry_after=server_wait):
            return None
        return backoff_delay(attempt, policy, retry_after=server_wait, rand=rand)
    return None


def _rate_limit_wait(error: GitHubRateLimited, attempt: int, *, now: float) -> float:
    told = parse_retry_after(error.headers, now)
    if told is not None:
        return told
    if error.remaining == 0 and error.reset_at is not None:
        return max(0.0, error.reset_at - now) + RESET_MARGIN
    # GitHub: "wait for at least one minute", growing exponentially if it keeps failing.
    return SECONDARY_LIMIT_MIN_WAIT * 2.0 ** (attempt - 1)


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )


class Account(_Model):
    """A user or organisation as GitHub embeds it in other objects."""

    login: str
    """The handle, e.g. `octocat`."""
    id: int
    """GitHub's numeric id; stable across renames."""
    type: str = "User"
    """`User`, `Organization` or `Bot`."""


class User(Account):
    """The authenticated user (`GET /user`)."""

    name: str | None = None
    """The display name, if set."""


class Repo(_Model):
    """A repository (`GET /repos/{owner}/{repo}`)."""

    id: int
    """GitHub's numeric id."""
    name: str
    """The repository name as GitHub spells it (creation may normalise it)."""
    full_name: str
    """`owner/name`."""
    owner: Account
    """Who owns the repository."""
    private: bool
    """Whether only collaborators can see it."""
    html_url: str
    """Where people browse it."""
    clone_url: str
    """The HTTPS clone URL."""
    default_branch: str
    """The branch `commit_files` writes when none is named."""
    description: str | None = None
    """The one-line description."""


class GitObjectRef(_Model):
    """What a ref points at."""

    sha: str
    """The object's SHA-1."""
    type: str = "commit"
    """Usually `commit`."""


class GitRef(_Model):
    """A ref such as `refs/heads/main`."""

    ref: str
    """The full ref name."""
    target: GitObjectRef = Field(alias="object")
    """The object the ref points at (`object` on the wire)."""


class ShaRef(_Model):
    """A bare pointer to a git object."""

    sha: str
    """The object's SHA-1."""


class GitActor(_Model):
    """Author or committer of a commit."""

    name: str
    """Display name."""
    email: str
    """Email address."""
    date: str | None = None
    """ISO 8601 timestamp."""


class GitCommit(_Model):
    """A commit from the Git Database API."""

    sha: str
    """The commit's SHA-1."""
    message: str
    """The commit message."""
    tree: ShaRef
    """The root tree."""
    parents: tuple[ShaRef, ...] = ()
    """Parent commits, first parent first."""
    author: GitActor | None = None
    """Who wrote the change."""
    committer: GitActor | None = None
    """Who recorded the commit."""


class TreeItem(_Model):
    """One entry of a tree as GitHub returns it."""

    path: str
    """Name within the tree, or the full path for recursive listings."""
    mode: str
    """`100644`, `100755`, `040000`, `160000` or `120000`."""
    type: str
    """`blob`, `tree` or `commit`."""
    sha: str
    """The entry's object SHA-1."""
    size: int | None = None
    """Blob size in bytes (blobs only)."""


class GitTree(_Model):
    """A tree from the Git Database API."""

    sha: str
    """The tree's SHA-1."""
    tree: tuple[TreeItem, ...] = ()
    """The entries."""
    truncated: bool = False
    """True when a recursive listing hit GitHub's size limit and is incomplete."""


class Blob(_Model):
    """A blob with its content (`GET /git/blobs/{sha}`)."""

    sha: str
    """The blob's SHA-1."""
    content: str
    """The content in `encoding`."""
    encoding: str = "base64"
    """`base64` or `utf-8`."""
    size: int | None = None
    """Decoded size in bytes."""

    def data(self) -> bytes:
        """The decoded bytes."""
        if self.encoding == "base64":
            # GitHub wraps base64 at 60 columns; b64decode ignores the newlines only when told.
            return base64.b64decode("".join(self.content.split()))
        return self.content.encode()


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One change for `create_tree`: set `content` (inline) or `sha`; both None deletes."""

    path: str
    sha: str | None = None
    content: str | None = None
    mode: str = "100644"
    type: Literal["blob", "tree", "commit"] = "blob"

    def as_json(self) -> dict[str, Any]:
        """The wire form; GitHub reads `"sha": null` as "delete this path"."""
        body: dict[str, Any] = {"path": self.path, "mode": self.mode, "type": self.type}
        if self.content is not None:
            body["content"] = self.content
        else:
            body["sha"] = self.sha
        return body


_M = TypeVar("_M", bound=BaseModel)


def _seg(value: str) -> str:
    # Owner and repo are single path segments: never let a "/" or ".." in them reach the URL.
    return quote(value, safe="")


def _branch(value: str) -> str:
    return quote(value, safe="/")


# --------------------------------------------------------------------------- client


class GitHub:
    """An async GitHub REST client; use as `async with GitHub(token) as gh: ...`."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = DEFAULT_GITHUB_POLICY,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
    ) -> None:
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._owns_client = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self._timeout = httpx.Timeout(timeout)
        self._retry = retry
        self._sleep = sleep
        self._clock = clock
        self._write_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it (an injected one is the caller's)."""
        if self._owns_client:
            await self._http.aclose()

    def __repr__(self) -> str:
        return f"GitHub(base_url={self._base_url!r})"

    # ------------------------------------------------------------------ transport

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
        }

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        if method == "GET":
            return await self._send(method, path, json=json, params=params)
        # GitHub's best practices: concurrent writes trip secondary limits; queue them instead.
        async with self._write_lock:
            return await self._send(method, path, json=json, params=params)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
    ) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            error: GitHubError
            try:
                response = await self._http.request(
                    method,
                    self._base_url + path,
                    json=json,
                    params=params,
                    headers=self._headers(),
                    timeout=self._timeout,
                    # GitHub answers 301/307 for renamed or transferred repositories.
                    follow_redirects=True,
                )
            except httpx.UnsupportedProtocol:
                # A malformed base_url is a bug to fix, not a fault to wait out.
                raise
            except httpx.TransportError as err:
                # Retrying writes is safe even if the first attempt landed: git objects are
                # content-addressed, moving a ref to where it already points is a no-op, and
                # a repeated repo creation surfaces as GitHubRepoExists (ensure_repo's cue).
                error = GitHubConnectionError(f"{method} {path}: {type(err).__name__}: {err}")
                error.__cause__ = err
            else:
                if response.is_success:
                    return response
                error = error_from_response(response)
            delay = retry_delay(error, attempt, self._retry, now=self._clock())
            if delay is None:
                raise error
            logger.warning(
                "GitHub %s %s failed (%s); retry %d in %.1fs", method, path, error, attempt, delay
            )
            await self._sleep(delay)

    async def _get(self, model: type[_M], path: str, **params: str) -> _M:
        return _parse(model, await self._request("GET", path, params=params or None))

    # ------------------------------------------------------------------ repositories

    async def get_authenticated_user(self) -> User:
        """The user the token belongs to (`GET /user`)."""
        return await self._get(User, "/user")

    async def get_repo(self, owner: str, name: str) -> Repo:
        """One repository; raises GitHubNotFound when absent or invisible to the token."""
        return await self._get(Repo, f"/repos/{_seg(owner)}/{_seg(name)}")

    async def create_repo(
        self,
        name: str,
        *,
        description: str = "",
        private: bool = True,
        auto_init: bool = True,
        org: str | None = None,
    ) -> Repo:
        """Create a repository for the user or `org`; raises GitHubRepoExists if taken.

        `auto_init` makes GitHub write an initial commit, which the Git Database API needs:
        it answers 409 on an empty repository.
        """
        path = f"/orgs/{_seg(org)}/repos" if org else "/user/repos"
        body = {
            "name": name,
            "description": description,
            "private": private,
            "auto_init": auto_init,
        }
        return _parse(Repo, await self._request("POST", path, json=body))

    # ------------------------------------------------------------------ git database

    async def get_ref(self, owner: str, repo: str, branch: str) -> GitRef:
        """The head of `branch` (`GET /repos/{o}/{r}/git/ref/heads/{branch}`)."""
        return await self._get(GitRef, f"{_git(owner, repo)}/ref/heads/{_branch(branch)}")

    async def get_commit(self, owner: str, repo: str, sha: str) -> GitCommit:
        """A commit object."""
        return await self._get(GitCommit, f"{_git(owner, repo)}/commits/{_seg(sha)}")

    async def get_tree(
        self, owner: str, repo: str, sha: str, *, recursive: bool = False
    ) -> GitTree:
        """A tree; `recursive` lists every nested entry with its full path."""
        path = f"{_git(owner, repo)}/trees/{_seg(sha)}"
        if recursive:
            return await self._get(GitTree, path, recursive="1")
        return await self._get(GitTree, path)

    async def get_blob(self, owner: str, repo: str, sha: str) -> Blob:
        """A blob with its (base64) content."""
        return await self._get(Blob, f"{_git(owner, repo)}/blobs/{_seg(sha)}")

    async def create_blob(self, owner: str, repo: str, content: str | bytes) -> str:
        """Store a blob and return its sha; bytes travel as base64, text as UTF-8."""
        if isinstance(content, bytes):
            body = {"content": base64.b64encode(content).decode("ascii"), "encoding": "base64"}
        else:
            body = {"content": content, "encoding": "utf-8"}
        response = await self._request("POST", f"{_git(owner, repo)}/blobs", json=body)
        return _parse(ShaRef, response).sha

    async def create_tree(
        self,
        owner: str,
        repo: str,
        entries: Sequence[TreeEntry],
        *,
        base_tree: str | None = None,
    ) -> GitTree:
        """A new tree: `base_tree` with `entries` applied (nested paths create subtrees)."""
        body: dict[str, Any] = {"tree": [entry.as_json() for entry in entries]}
        if base_tree is not None:
            body["base_tree"] = base_tree
        return _parse(GitTree, await self._request("POST", f"{_git(owner, repo)}/trees", json=body))

    async def create_commit(
        self, owner: str, repo: str, *, message: str, tree: str, parents: Sequence[str]
    ) -> GitCommit:
        """A new commit object; no branch moves until `update_ref`."""
        body = {"message": message, "tree": tree, "parents": list(parents)}
        response = await self._request("POST", f"{_git(owner, repo)}/commits", json=body)
        return _parse(GitCommit, response)

    async def update_ref(
        self, owner: str, repo: str, branch: str, sha: str, *, force: bool = False
    ) -> GitRef:
        """Move `branch` to `sha`; without `force`, a non-fast-forward is a 422."""
        response = await self._request(
            "PATCH",
            f"{_git(owner, repo)}/refs/heads/{_branch(branch)}",
            json={"sha": sha, "force": force},
        )
        return _parse(GitRef, response)

    # ------------------------------------------------------------------ high level

    async def commit_files(
        self,
        owner: str,
        repo: str,
        files: Mapping[str, str],
        message: str,
        branch: str | None = None,
    ) -> str:
        """Write `files` (path → text) as one commit on `branch` and return the commit sha.

        Files not named keep their content. `branch` defaults to the repository's default.
        The Git Database API makes this one commit however many files, where the Contents
        API would make one commit (and risk a 409) per file. If someone else moves the
        branch meanwhile, the commit is rebuilt on their head rather than forced over it.
        """
        if not files:
            raise ValueError("files: nothing to commit")
        if branch is None:
            branch = (await self.get_repo(owner, repo)).default_branch
        # Blobs are content-addressed: created once, valid on whatever head wins.
        entries = [
            TreeEntry(path=path, sha=await self.create_blob(owner, repo, content))
            for path, content in files.items()
        ]
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            head = (await self.get_ref(owner, repo, branch)).target.sha
            base = await self.get_commit(owner, repo, head)
            tree = await self.create_tree(owner, repo, entries, base_tree=base.tree.sha)
            if tree.sha == base.tree.sha:
                # Commit by tree: the same files again (a resumed build) are no new commit.
                return head
            commit = await self.create_commit(
                owner, repo, message=message, tree=tree.sha, parents=[head]
            )
            try:
                await self.update_ref(owner, repo, branch, commit.sha)
            except GitHubUnprocessable as err:
                if "fast forward" not in err.message.lower() or attempt == COMMIT_ATTEMPTS:
                    raise
                logger.info("%s/%s@%s moved during commit; rebuilding", owner, repo, branch)
                continue
            return commit.sha
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def read_files(
        self, owner: str, repo: str, branch: str | None = None
    ) -> dict[str, bytes]:
        """Every file on `branch` (default: the repository's default) as path → bytes."""
        if branch is None:
            branch = (await self.get_repo(owner, repo)).default_branch
        head = (await self.get_ref(owner, repo, branch)).target.sha
        commit = await self.get_commit(owner, repo, head)
        tree = await self.get_tree(owner, repo, commit.tree.sha, recursive=True)
        if tree.truncated:
            raise GitHubError(f"{owner}/{repo}: tree too large for one recursive listing")
        files: dict[str, bytes] = {}
        # One at a time: GitHub asks integrations not to fan out requests for one user.
        for item in tree.tree:
            if item.type == "blob":
                files[item.path] = (await self.get_blob(owner, repo, item.sha)).data()
        return files


def _git(owner: str, repo: str) -> str:
    return f"/repos/{_seg(owner)}/{_seg(repo)}/git"


def _parse(model: type[_M], response: httpx.Response) -> _M:
    try:
        return model.model_validate(response.json())
    except (ValueError, ValidationError) as err:
        raise GitHubError(
            f"unexpected {model.__name__} body from {response.request.method} "
            f"{response.request.url.path}: {err}"
        ) from err
