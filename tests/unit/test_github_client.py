"""The GitHub client against the wire-faithful fake: operations, error mapping, retries.

Time is a fake clock shared by the client (its `sleep` and `clock`) and the fake service (its
rate-limit windows), so waiting out a limit takes no real time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.github import (
    GitHub,
    GitHubConflict,
    GitHubConnectionError,
    GitHubError,
    GitHubForbidden,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubRepoExists,
    GitHubServerError,
    GitHubStatusError,
    GitHubUnauthorized,
    GitHubUnprocessable,
    TreeEntry,
    error_from_response,
    retry_delay,
)
from clients.retry import RetryPolicy
from local.server import serve
from tests.fakes.github import (
    DEFAULT_LOGIN,
    DEFAULT_TOKEN,
    FakeGitHub,
    git_sha,
)

BASE_URL = "https://api.github.test"
START = 1_700_000_000.0


class FakeClock:
    """A clock whose `sleep` records the wait and jumps time forward instantly."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeGitHub:
    return FakeGitHub(clock=clock, orgs={"acme": [DEFAULT_LOGIN]})


@pytest.fixture
async def http(fake: FakeGitHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE_URL) as client:
        yield client


def make_client(
    http: httpx.AsyncClient,
    clock: FakeClock,
    *,
    token: str = DEFAULT_TOKEN,
    retry: RetryPolicy | None = None,
) -> GitHub:
    kwargs: dict[str, Any] = {"retry": retry} if retry is not None else {}
    return GitHub(
        token, base_url=BASE_URL, http_client=http, sleep=clock.sleep, clock=clock, **kwargs
    )


@pytest.fixture
async def gh(http: httpx.AsyncClient, clock: FakeClock) -> AsyncIterator[GitHub]:
    async with make_client(http, clock) as client:
        yield client


# --------------------------------------------------------------------------- operations


async def test_sends_the_documented_headers(gh: GitHub, fake: FakeGitHub) -> None:
    await gh.get_authenticated_user()
    headers = fake.requests[-1].headers
    assert headers["authorization"] == f"Bearer {DEFAULT_TOKEN}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"].startswith("myyc")


async def test_get_authenticated_user(gh: GitHub) -> None:
    user = await gh.get_authenticated_user()
    assert user.login == DEFAULT_LOGIN
    assert user.type == "User"


async def test_create_repo_returns_typed_repo_with_initial_commit(
    gh: GitHub, fake: FakeGitHub
) -> None:
    repo = await gh.create_repo("demo", description="A demo")
    assert repo.full_name == f"{DEFAULT_LOGIN}/demo"
    assert repo.owner.login == DEFAULT_LOGIN
    assert repo.private is True
    assert repo.default_branch == "main"
    assert repo.html_url == f"https://github.com/{DEFAULT_LOGIN}/demo"
    assert repo.clone_url == f"https://github.com/{DEFAULT_LOGIN}/demo.git"
    assert repo.description == "A demo"
    assert fake.commit_count(DEFAULT_LOGIN, "demo") == 1
    assert fake.files(DEFAULT_LOGIN, "demo") == {"README.md": "# demo\nA demo\n"}


async def test_create_repo_in_an_org(gh: GitHub) -> None:
    repo = await gh.create_repo("tool", org="acme")
    assert repo.full_name == "acme/tool"
    assert repo.owner.type == "Organization"
    assert (await gh.get_repo("acme", "tool")).id == repo.id


async def test_get_repo_is_case_insensitive_like_github(gh: GitHub) -> None:
    created = await gh.create_repo("Mixed-Case")
    fetched = await gh.get_repo(DEFAULT_LOGIN, "mixed-case")
    assert fetched.full_name == created.full_name == f"{DEFAULT_LOGIN}/Mixed-Case"


async def test_git_database_round_trip(gh: GitHub, fake: FakeGitHub) -> None:
    await gh.create_repo("db")
    ref = await gh.get_ref(DEFAULT_LOGIN, "db", "main")
    assert ref.ref == "refs/heads/main"
    head = await gh.get_commit(DEFAULT_LOGIN, "db", ref.target.sha)
    assert head.message == "Initial commit"
    assert head.parents == ()

    text_sha = await gh.create_blob(DEFAULT_LOGIN, "db", "hello world\n")
    binary_sha = await gh.create_blob(DEFAULT_LOGIN, "db", b"\x00\xff\x10")
    assert text_sha == "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"  # `git hash-object`
    assert (await gh.get_blob(DEFAULT_LOGIN, "db", binary_sha)).data() == b"\x00\xff\x10"

    tree = await gh.create_tree(
        DEFAULT_LOGIN,
        "db",
        [
            TreeEntry(path="src/hello.txt", sha=text_sha),
            TreeEntry(path="bin/data", sha=binary_sha, mode="100755"),
            TreeEntry(path="inline.md", content="inline\n"),
        ],
        base_tree=head.tree.sha,
    )
    assert {item.path for item in tree.tree} == {"README.md", "bin", "inline.md", "src"}
    listing = await gh.get_tree(DEFAULT_LOGIN, "db", tree.sha, recursive=True)
    blobs = {item.path: item for item in listing.tree if item.type == "blob"}
    assert set(blobs) == {"README.md", "bin/data", "inline.md", "src/hello.txt"}
    assert blobs["bin/data"].mode == "100755"

    commit = await gh.create_commit(
        DEFAULT_LOGIN, "db", message="Add files", tree=tree.sha, parents=[head.sha]
    )
    assert [p.sha for p in commit.parents] == [head.sha]
    assert commit.author is not None
    assert commit.author.name == DEFAULT_LOGIN
    moved = await gh.update_ref(DEFAULT_LOGIN, "db", "main", commit.sha)
    assert moved.target.sha == commit.sha == fake.head(DEFAULT_LOGIN, "db")
    assert fake.files(DEFAULT_LOGIN, "db")["src/hello.txt"] == "hello world\n"


async def test_update_ref_refuses_non_fast_forward_unless_forced(
    gh: GitHub, fake: FakeGitHub
) -> None:
    await gh.create_repo("ff")
    first = await gh.commit_files(DEFAULT_LOGIN, "ff", {"a.txt": "1"}, "one")
    initial = (await gh.get_commit(DEFAULT_LOGIN, "ff", first)).parents[0].sha
    with pytest.raises(GitHubUnprocessable, match="not a fast forward"):
        await gh.update_ref(DEFAULT_LOGIN, "ff", "main", initial)
    assert fake.calls["PATCH /repos/{owner}/{repo}/git/refs/{ref}"] == 2  # not retried
    await gh.update_ref(DEFAULT_LOGIN, "ff", "main", initial, force=True)
    assert fake.head(DEFAULT_LOGIN, "ff") == initial


async def test_commit_files_makes_exactly_one_commit_with_all_files(
    gh: GitHub, fake: FakeGitHub
) -> None:
    await gh.create_repo("app")
    before = fake.head(DEFAULT_LOGIN, "app")
    files = {
        "package.json": '{"name": "app"}\n',
        "src/pages/index.tsx": "export default () => <h1>Héllo</h1>;\n",
        "src/lib/ünï/cødé.ts": "export const ok = '✓';\n",
    }
    sha = await gh.commit_files(DEFAULT_LOGIN, "app", files, "Generate app")
    assert fake.head(DEFAULT_LOGIN, "app") == sha
    assert fake.commit_count(DEFAULT_LOGIN, "app") == 2
    assert fake.calls["POST /repos/{owner}/{repo}/git/commits"] == 1
    commit = await gh.get_commit(DEFAULT_LOGIN, "app", sha)
    assert [p.sha for p in commit.parents] == [before]
    assert commit.message == "Generate app"
    assert fake.files(DEFAULT_LOGIN, "app") == {"README.md": "# app\n", **files}


async def test_commit_files_updates_and_keeps_files(gh: GitHub, fake: FakeGitHub) -> None:
    await gh.create_repo("keep")
    await gh.commit_files(DEFAULT_LOGIN, "keep", {"a.txt": "1", "d/b.txt": "2"}, "one")
    await gh.commit_files(DEFAULT_LOGIN, "keep", {"a.txt": "uno", "c.txt": "3"}, "two")
    assert fake.files(DEFAULT_LOGIN, "keep") == {
        "README.md": "# keep\n",
        "a.txt": "uno",
        "d/b.txt": "2",
        "c.txt": "3",
    }
    assert fake.commit_count(DEFAULT_LOGIN, "keep") == 3
    files = await gh.read_files(DEFAULT_LOGIN, "keep")
    assert files["d/b.txt"] == b"2"


async def test_commit_files_rebuilds_when_the_branch_moved_meanwhile(
    gh: GitHub, fake: FakeGitHub
) -> None:
    await gh.create_repo("race")
    # Two uncoordinated commits at once: one must rebuild on the other's head, not clobber it.
    await asyncio.gather(
        gh.commit_files(DEFAULT_LOGIN, "race", {"one.txt": "1"}, "one"),
        gh.commit_files(DEFAULT_LOGIN, "race", {"two.txt": "2"}, "two"),
    )
    assert fake.files(DEFAULT_LOGIN, "race") == {
        "README.md": "# race\n",
        "one.txt": "1",
        "two.txt": "2",
    }
    assert fake.commit_count(DEFAULT_LOGIN, "race") == 3
    # One PATCH was refused as a non-fast-forward and the commit rebuilt on the new head.
    assert fake.calls["PATCH /repos/{owner}/{repo}/git/refs/{ref}"] == 3


async def test_commit_files_refuses_an_empty_change(gh: GitHub) -> None:
    with pytest.raises(ValueError, match="files"):
        await gh.commit_files(DEFAULT_LOGIN, "any", {}, "nothing")


async def test_git_database_on_an_empty_repository_is_a_conflict(gh: GitHub) -> None:
    await gh.create_repo("bare", auto_init=False)
    with pytest.raises(GitHubConflict) as info:
        await gh.get_ref(DEFAULT_LOGIN, "bare", "main")
    assert info.value.message == "Git Repository is empty."
    with pytest.raises(GitHubConflict):
        await gh.create_blob(DEFAULT_LOGIN, "bare", "x")


async def test_missing_repo_is_not_found_and_not_retried(gh: GitHub, fake: FakeGitHub) -> None:
    with pytest.raises(GitHubNotFound) as info:
        await gh.get_repo(DEFAULT_LOGIN, "nope")
    assert info.value.status_code == 404
    assert info.value.message == "Not Found"
    assert info.value.request_id is not None
    assert fake.calls["GET /repos/{owner}/{repo}"] == 1


async def test_existing_name_raises_repo_exists_and_is_not_retried(
    gh: GitHub, fake: FakeGitHub
) -> None:
    await gh.create_repo("taken")
    with pytest.raises(GitHubRepoExists) as info:
        await gh.create_repo("TAKEN")
    assert isinstance(info.value, GitHubUnprocessable)
    assert info.value.message == "Repository creation failed."
    assert info.value.errors[0]["field"] == "name"
    assert "already exists" in str(info.value)
    assert fake.calls["POST /user/repos"] == 2


async def test_bad_token_is_unauthorized(
    http: httpx.AsyncClient, clock: FakeClock, fake: FakeGitHub
) -> None:
    async with make_client(http, clock, token="ghp_revoked") as gh:
        with pytest.raises(GitHubUnauthorized, match="Bad credentials"):
            await gh.get_authenticated_user()
    assert fake.calls["GET /user"] == 1


async def test_other_users_private_repo_is_hidden(gh: GitHub, fake: FakeGitHub) -> None:
    fake.add_repo("someone-else", "secret")
    fake.add_repo("someone-else", "open", private=False)
    with pytest.raises(GitHubNotFound):
        await gh.get_repo("someone-else", "secret")
    assert (await gh.get_repo("someone-else", "open")).private is False
    with pytest.raises(GitHubForbidden):
        await gh.create_blob("someone-else", "open", "x")


async def test_redirects_are_followed_for_moved_repos(clock: FakeClock) -> None:
    # GitHub answers 301 for a renamed repository; the client must land on the new one.
    inner = FakeGitHub(clock=clock)
    inner.add_repo(DEFAULT_LOGIN, "new-name")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/old-name"):
            location = f"{BASE_URL}/repos/{DEFAULT_LOGIN}/new-name"
            await send(
                {
                    "type": "http.response.start",
                    "status": 301,
                    "headers": [(b"location", location.encode())],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await inner(scope, receive, send)

    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        make_client(http, clock) as gh,
    ):
        assert (await gh.get_repo(DEFAULT_LOGIN, "old-name")).name == "new-name"


# --------------------------------------------------------------------------- error mapping


def _response(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    request = httpx.Request("GET", f"{BASE_URL}/repos/o/r")
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers, request=request)
    return httpx.Response(status, json=body or {}, headers=headers, request=request)


EXISTS = {
    "message": "Repository creation failed.",
    "errors": [
        {
            "resource": "Repository",
            "code": "custom",
            "field": "name",
            "message": "name already exists on this account",
        }
    ],
}


REF_EXISTS = {
    "message": "Validation Failed",
    "errors": [{"resource": "Reference", "field": "ref", "message": "Reference already exists"}],
}


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (401, {"message": "Bad credentials"}, None, GitHubUnauthorized),
        (403, {"message": "Resource not accessible by integration"}, None, GitHubForbidden),
        (
            403,
            {"message": "API rate limit exceeded"},
            {"x-ratelimit-remaining": "0"},
            GitHubRateLimited,
        ),
        (403, {"message": "You have exceeded a secondary rate limit."}, None, GitHubRateLimited),
        (403, {"message": "Forbidden"}, {"retry-after": "30"}, GitHubRateLimited),
        (
            403,
            {"message": "You have triggered an abuse detection mechanism."},
            None,
            GitHubRateLimited,
        ),
        (429, {"message": "Too Many Requests"}, None, GitHubRateLimited),
        (404, {"message": "Not Found"}, None, GitHubNotFound),
        (409, {"message": "Git Repository is empty."}, None, GitHubConflict),
        (422, {"message": "Update is not a fast forward"}, None, GitHubUnprocessable),
        (422, EXISTS, None, GitHubRepoExists),
        (422, REF_EXISTS, None, GitHubUnprocessable),
        (500, {"message": "Server Error"}, None, GitHubServerError),
        (502, "<html><body>Unicorn!</body></html>", None, GitHubServerError),
        (503, "", None, GitHubServerError),
        (400, {"message": "Problems parsing JSON"}, None, GitHubStatusError),
        (410, {"message": "Gone"}, None, GitHubStatusError),
    ],
)
def test_error_mapping_table(
    status: int, body: Any, headers: dict[str, str] | None, expected: type[GitHubStatusError]
) -> None:
    error = error_from_response(_response(status, body, headers))
    assert type(error) is expected
    assert error.status_code == status
    assert error.method == "GET"
    assert error.path == "/repos/o/r"


def test_error_keeps_message_errors_and_no_request_headers() -> None:
    error = error_from_response(_response(422, EXISTS, {"x-github-request-id": "ABC"}))
    assert error.message == "Repository creation failed."
    assert error.errors[0]["message"] == "name already exists on this account"
    assert error.request_id == "ABC"
    assert "authorization" not in {k.lower() for k in error.headers}


def test_html_error_body_does_not_become_the_message() -> None:
    error = error_from_response(_response(502, "<html>Unicorn!</html>"))
    assert error.message == "Bad Gateway"


# --------------------------------------------------------------------------- retry rules

POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0, max_retry_after=120.0)


def _limited(headers: dict[str, str], message: str = "rate limit") -> GitHubRateLimited:
    error = error_from_response(_response(403, {"message": message}, headers))
    assert isinstance(error, GitHubRateLimited)
    return error


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (GitHubConnectionError("reset"), 1, 0.5),
        (GitHubConnectionError("reset"), 3, 2.0),
        (GitHubConnectionError("reset"), 4, None),
        (error_from_response(_response(502, "")), 1, 0.5),
        (error_from_response(_response(503, "", {"retry-after": "7"})), 2, 7.0),
        (error_from_response(_response(500, {})), 4, None),
        (_limited({"retry-after": "30"}), 1, 30.0),
        (_limited({"retry-after": "300"}), 1, None),
        (
            _limited({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(START) + 100)}),
            1,
            101.0,
        ),
        (
            _limited({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(START) - 5)}),
            1,
            1.0,
        ),
        (
            _limited({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(START) + 3600)}),
            1,
            None,
        ),
        (_limited({}, "You have exceeded a secondary rate limit"), 1, 60.0),
        (_limited({}, "You have exceeded a secondary rate limit"), 2, 120.0),
        (_limited({}, "You have exceeded a secondary rate limit"), 3, None),
        (error_from_response(_response(404, {"message": "Not Found"})), 1, None),
        (error_from_response(_response(422, EXISTS)), 1, None),
        (error_from_response(_response(401, {})), 1, None),
        (error_from_response(_response(409, {})), 1, None),
        (error_from_response(_response(408, {})), 1, None),
        (GitHubError("unexpected body"), 1, None),
    ],
)
def test_retry_delay_table(error: GitHubError, attempt: int, expected: float | None) -> None:
    assert retry_delay(error, attempt, POLICY, now=START, rand=lambda: 0.0) == expected


async def test_retries_502_then_succeeds(gh: GitHub, fake: FakeGitHub, clock: FakeClock) -> None:
    fake.fail_next(2, status=502)
    assert (await gh.get_authenticated_user()).login == DEFAULT_LOGIN
    assert fake.calls["GET /user"] == 3
    assert len(clock.sleeps) == 2


async def test_persistent_5xx_gives_up_after_the_policy(
    http: httpx.AsyncClient, fake: FakeGitHub, clock: FakeClock
) -> None:
    fake.fail_next(10, status=503)
    async with make_client(http, clock, retry=RetryPolicy(max_attempts=3)) as gh:
        with pytest.raises(GitHubServerError):
            await gh.get_authenticated_user()
    assert fake.calls["GET /user"] == 3


async def test_retries_connection_errors(gh: GitHub, fake: FakeGitHub, clock: FakeClock) -> None:
    fake.disconnect_next(2)
    await gh.get_authenticated_user()
    assert fake.calls["GET /user"] == 1  # the dropped attempts never reached the server
    assert len(clock.sleeps) == 2


async def test_connection_errors_surface_typed_when_retries_run_out(
    gh: GitHub, fake: FakeGitHub
) -> None:
    fake.disconnect_next(100)
    with pytest.raises(GitHubConnectionError) as info:
        await gh.get_authenticated_user()
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_primary_limit_waits_until_reset(
    http: httpx.AsyncClient, fake: FakeGitHub, clock: FakeClock
) -> None:
    fake.exhaust_rate_limit(reset_in=1800)
    patient = RetryPolicy(max_retry_after=3600)
    async with make_client(http, clock, retry=patient) as gh:
        assert (await gh.get_authenticated_user()).login == DEFAULT_LOGIN
    assert clock.sleeps == [1801.0]
    assert fake.calls["GET /user"] == 2


async def test_primary_limit_beyond_the_policy_raises_without_waiting(
    gh: GitHub, fake: FakeGitHub, clock: FakeClock
) -> None:
    fake.exhaust_rate_limit(reset_in=3600)
    with pytest.raises(GitHubRateLimited) as info:
        await gh.get_authenticated_user()
    assert info.value.remaining == 0
    assert info.value.reset_at == int(START) + 3600
    assert not info.value.is_secondary
    assert clock.sleeps == []
    assert fake.calls["GET /user"] == 1


async def test_secondary_limit_honours_retry_after(
    gh: GitHub, fake: FakeGitHub, clock: FakeClock
) -> None:
    await gh.create_repo("sec")
    fake.rate_limit_next(1, retry_after=17)
    sha = await gh.create_blob(DEFAULT_LOGIN, "sec", "x")
    assert sha == git_sha("blob", b"x")
    assert clock.sleeps == [17.0]


async def test_secondary_limit_without_headers_waits_a_minute(
    gh: GitHub, fake: FakeGitHub, clock: FakeClock
) -> None:
    fake.rate_limit_next(1, retry_after=None)
    await gh.get_authenticated_user()
    assert clock.sleeps == [60.0]


async def test_content_creation_limit_is_waited_out(clock: FakeClock) -> None:
    fake = FakeGitHub(clock=clock, content_per_minute=3)
    async with (
        httpx.AsyncClient(transport=fake.transport()) as http,
        make_client(http, clock) as gh,
    ):
        await gh.create_repo("busy")  # write 1
        sha = await gh.commit_files(DEFAULT_LOGIN, "busy", {"a": "1", "b": "2"}, "m")  # 5 more
    assert fake.head(DEFAULT_LOGIN, "busy") == sha
    assert clock.sleeps
    assert all(0 < s <= 60 for s in clock.sleeps)


async def test_writes_are_serialised_per_client(
    gh: GitHub, fake: FakeGitHub, http: httpx.AsyncClient
) -> None:
    await gh.create_repo("serial")
    # Control: uncoordinated writes do overlap in the fake, so the check below can fail.
    body = {"content": "raw", "encoding": "utf-8"}
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    url = f"/repos/{DEFAULT_LOGIN}/serial/git/blobs"
    await asyncio.gather(*(http.post(url, json=body, headers=headers) for _ in range(4)))
    assert fake.max_concurrent_writes > 1

    fake.max_concurrent_writes = 0
    await asyncio.gather(*(gh.create_blob(DEFAULT_LOGIN, "serial", str(i)) for i in range(6)))
    assert fake.max_concurrent_writes == 1


# --------------------------------------------------------------------------- the fake itself


async def test_fake_puts_rate_limit_headers_on_every_response(
    http: httpx.AsyncClient, fake: FakeGitHub
) -> None:
    auth = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    ok = await http.get("/user", headers=auth)
    missing = await http.get("/repos/octocat/missing", headers=auth)
    anonymous = await http.get("/user")
    unknown = await http.get("/no/such/route", headers=auth)
    assert (ok.status_code, missing.status_code, anonymous.status_code) == (200, 404, 401)
    assert anonymous.json()["message"] == "Requires authentication"
    assert unknown.status_code == 404
    assert unknown.json()["message"] == "Not Found"
    for response in (ok, missing, anonymous, unknown):
        for name in ("limit", "remaining", "used", "reset", "resource"):
            assert f"x-ratelimit-{name}" in response.headers
    assert anonymous.headers["x-ratelimit-limit"] == "60"
    assert int(missing.headers["x-ratelimit-remaining"]) == 5000 - 2
    assert fake.calls["GET /user"] == 2


def _git(
    cwd: Path, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> str:
    base = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=stdin,
        env={**base, **(env or {})},
        capture_output=True,
        check=True,
    )
    return result.stdout.decode().strip()


async def test_fake_computes_the_object_ids_real_git_does(
    gh: GitHub, fake: FakeGitHub, tmp_path: Path
) -> None:
    await gh.create_repo("same")
    files = {"src/a.py": "print(1)\n", "src/ünï.txt": "✓\n", "z.txt": "", "src-b.txt": "b"}
    sha = await gh.commit_files(DEFAULT_LOGIN, "same", files, "m")
    tree_sha = (await gh.get_commit(DEFAULT_LOGIN, "same", sha)).tree.sha

    # Same files through git's own index: same tree id (this also checks git's entry order).
    _git(tmp_path, "init", "-q", "work")
    work = tmp_path / "work"
    for path, content in {**files, "README.md": "# same\n"}.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content, encoding="utf-8")
    _git(work, "add", "-A")
    assert _git(work, "write-tree") == tree_sha

    # And the fake's initial commit is byte-for-byte what git's commit-tree makes.
    initial = (await gh.get_commit(DEFAULT_LOGIN, "same", sha)).parents[0].sha
    readme_tree = (await gh.get_commit(DEFAULT_LOGIN, "same", initial)).tree.sha
    readme_blob = git_sha("blob", b"# same\n")
    _git(work, "read-tree", "--empty")
    _git(
        work,
        "update-index",
        "--add",
        "--cacheinfo",
        f"100644,{readme_blob},README.md",
    )
    assert _git(work, "write-tree") == readme_tree
    identity = {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (
            ("NAME", DEFAULT_LOGIN),
            ("EMAIL", f"{DEFAULT_LOGIN}@users.noreply.github.com"),
            ("DATE", f"{int(START)} +0000"),
        )
    }
    commit = _git(work, "commit-tree", readme_tree, stdin=b"Initial commit", env=identity)
    assert commit == initial


async def test_fake_over_a_real_loopback_socket() -> None:
    fake = FakeGitHub()
    async with serve(fake) as base_url, GitHub(DEFAULT_TOKEN, base_url=base_url) as gh:
        assert base_url.startswith("http://127.0.0.1:")
        await gh.create_repo("wire")
        sha = await gh.commit_files(DEFAULT_LOGIN, "wire", {"dir/file.txt": "über\n"}, "m")
        files = await gh.read_files(DEFAULT_LOGIN, "wire")
    assert fake.head(DEFAULT_LOGIN, "wire") == sha
    assert files == {"README.md": b"# wire\n", "dir/file.txt": "über\n".encode()}
