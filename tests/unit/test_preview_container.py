"""The container entrypoint's pieces: path safety, atomic writes, live-reload injection, the
static server's HTTP, Fly replay, configuration, and the Supabase source against a fake."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest

from previews.container import entrypoint as ep
from previews.realtime import broadcast_file_update
from schemas.settings import Settings

# ------------------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("index.html", "index.html"),
        ("./src//App.tsx", "src/App.tsx"),
        ("a/./b/c.css", "a/b/c.css"),
        ("dir/", "dir"),
        ("héllo wörld.txt", "héllo wörld.txt"),
        ("..hidden/.env", "..hidden/.env"),
    ],
)
def test_safe_paths_are_normalised(raw: str, normalised: str) -> None:
    assert ep.safe_relative_path(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "", ".", "./", "/etc/passwd", "../x", "a/../../x", "a/..", "..", "a\\b", "C:/x",
        "nul\x00byte", "x" * 1025, 42, None,
    ],
)  # fmt: skip
def test_unsafe_paths_are_refused(raw: object) -> None:
    with pytest.raises(ep.UnsafePath):
        ep.safe_relative_path(raw)


def test_a_symlink_out_of_the_project_is_not_a_ladder(tmp_path: Path) -> None:
    root = tmp_path / "project"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    project = ep.ProjectDir(root)
    assert project.apply("link/evil.txt", "x") is None
    assert not (outside / "evil.txt").exists()
    assert project.rejected == 1


def test_apply_writes_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    project = ep.ProjectDir(tmp_path)
    assert project.apply("src/a.js", "one") == "src/a.js"
    assert project.apply("src/a.js", "two") == "src/a.js"
    assert (tmp_path / "src" / "a.js").read_text() == "two"
    assert os.listdir(tmp_path / "src") == ["a.js"]
    assert project.apply("src/b.js", 7) is None  # content must be text


def test_a_failed_write_removes_its_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        ep.write_atomic(tmp_path / "dir", "x")  # a rename onto a directory fails
    assert os.listdir(tmp_path) == ["dir"]


# ------------------------------------------------------------------------------ reload, vite


def test_live_reload_goes_before_the_last_body_close() -> None:
    html = b"<html><body><p>x</p></BODY ></html>"
    out = ep.inject_live_reload(html)
    assert out.index(ep.LIVE_RELOAD_SNIPPET.encode()) < out.lower().index(b"</body")
    assert ep.inject_live_reload(b"<p>fragment</p>").endswith(ep.LIVE_RELOAD_SNIPPET.encode())


@pytest.mark.parametrize(
    ("package", "vite"),
    [
        ({"devDependencies": {"vite": "^6"}}, True),
        ({"dependencies": {"vite": "6"}}, True),
        ({"scripts": {"dev": "vite --open"}}, True),
        ({"dependencies": {"react": "19"}}, False),
        ([], False),
        (None, False),
    ],
)
def test_vite_is_used_when_package_json_says_so(
    tmp_path: Path, package: object, vite: bool
) -> None:
    if package is not None:
        (tmp_path / "package.json").write_text(json.dumps(package))
    assert ep.uses_vite(tmp_path) is vite


def test_a_broken_package_json_means_static(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{not json")
    assert ep.uses_vite(tmp_path) is False


# ------------------------------------------------------------------------------ config


def test_config_reads_the_environment(tmp_path: Path) -> None:
    config = ep.Config.from_env(
        {
            "MYYC_PROJECT_ID": "p",
            "MYYC_API_URL": "http://127.0.0.1:1/",
            "PORT": "9000",
            "MYYC_PROJECT_DIR": str(tmp_path),
        }
    )
    assert (config.source, config.api_url, config.port, config.host) == (
        "api", "http://127.0.0.1:1", 9000, "0.0.0.0",
    )  # fmt: skip
    supa = ep.Config.from_env(
        {"MYYC_PROJECT_ID": "p", "SUPABASE_URL": "https://x.supabase.co", "SUPABASE_ANON_KEY": "k"}
    )
    assert supa.source == "supabase"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MYYC_PROJECT_ID is required"),
        ({"MYYC_PROJECT_ID": "p"}, "MYYC_API_URL is required"),
        ({"MYYC_PROJECT_ID": "p", "MYYC_SOURCE": "ftp"}, "MYYC_SOURCE must be"),
        ({"MYYC_PROJECT_ID": "p", "MYYC_SOURCE": "supabase"}, "SUPABASE_URL and"),
        (
            {"MYYC_PROJECT_ID": "p", "MYYC_API_URL": "http://x", "MYYC_DEV_SERVER": "webpack"},
            "MYYC_DEV_SERVER must be",
        ),
    ],
)
def test_bad_configuration_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ep.Config.from_env(env)


# ------------------------------------------------------------------------------ static server


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


@pytest.fixture
async def server(tmp_path: Path):
    project = ep.ProjectDir(tmp_path)
    project.apply("index.html", "<html><body>app</body></html>")
    project.apply("assets/app.js", "run()")
    srv = ep.StaticServer(project, "127.0.0.1", 0, machine_id="m-here")
    await srv.start()
    assert srv._server is not None
    port = srv._server.sockets[0].getsockname()[1]
    yield srv, port
    await srv.close()


async def test_static_server_serves_files_with_types_and_keep_alive(server) -> None:
    _, port = server
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        js = await http.get("/assets/app.js")
        page = await http.get("/")
        spa = await http.get("/some/client/route")
        missing = await http.get("/nope.png")
        traversal = await http.get("/..%2F..%2Fetc%2Fpasswd")
        health = await http.get(ep.HEALTH_PATH)
    assert (js.status_code, js.text) == (200, "run()")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert js.headers["cache-control"] == "no-store"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert ep.RELOAD_PATH in page.text
    assert spa.status_code == 200
    assert "app" in spa.text
    assert missing.status_code == 404
    assert traversal.status_code == 404
    assert health.json() == {"status": "ok", "files": 2}


async def test_static_server_head_and_methods(server) -> None:
    _, port = server
    head = await _raw(port, b"HEAD /assets/app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    post = await _raw(
        port,
        b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    )
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: 5" in head
    assert head.endswith(b"\r\n\r\n")  # no body
    assert post.startswith(b"HTTP/1.1 405")
    assert await _raw(port, b"garbage\r\n\r\n") == b""


async def test_fly_replay_sends_requests_to_the_named_machine(server) -> None:
    _, port = server
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        elsewhere = await http.get("/?_myyc_instance=m-other")
        here = await http.get("/?_myyc_instance=m-here")
        by_cookie = await http.get("/assets/app.js", headers={"cookie": "myyc_instance=m-other"})
    assert elsewhere.headers["fly-replay"] == "instance=m-other"
    assert elsewhere.content == b""
    assert "fly-replay" not in here.headers
    assert "myyc_instance=m-here" in here.headers["set-cookie"]
    assert by_cookie.headers["fly-replay"] == "instance=m-other"


# ------------------------------------------------------------------------------ sources


class PostgrestFilesFake:
    """`project_files` as PostgREST serves it: eq filter, order, Range paging, RLS by token."""

    def __init__(self, files: dict[str, str], project: str, token: str) -> None:
        self.files = files
        self.project = project
        self.token = token
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("apikey") != "anon":
            return httpx.Response(401, json={"message": "no apikey"})
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(200, json=[])  # RLS: a stranger sees no rows
        if request.url.params.get("project_id") != f"eq.{self.project}":
            return httpx.Response(200, json=[])
        first, _, last = request.headers["range"].partition("-")
        rows = [{"path": p, "content": c} for p, c in sorted(self.files.items())]
        return httpx.Response(206, json=rows[int(first) : int(last) + 1])


async def test_supabase_source_pages_through_project_files(tmp_path: Path) -> None:
    files = {f"f{i:04}.txt": str(i) for i in range(1203)}
    fake = PostgrestFilesFake(files, "p1", "owner-jwt")
    config = ep.Config.from_env(
        {
            "MYYC_PROJECT_ID": "p1",
            "SUPABASE_URL": "https://ref.supabase.co",
            "SUPABASE_ANON_KEY": "anon",
            "MYYC_PREVIEW_TOKEN": "owner-jwt",
            "MYYC_PROJECT_DIR": str(tmp_path),
        }
    )
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(fake),
        base_url="https://ref.supabase.co",
        headers={"apikey": "anon", "Authorization": "Bearer owner-jwt"},
    )
    source = ep.SupabaseSource(config, http=http)
    snapshot = await source.snapshot()
    await source.aclose()
    assert dict(snapshot.files) == files
    assert snapshot.cursor is None
    assert [r.headers["range"] for r in fake.requests] == ["0-499", "500-999", "1000-1499"]


async def test_sync_retries_transient_failures_and_stops_on_refusal(tmp_path: Path) -> None:
    answers = [httpx.Response(503), httpx.Response(200, json={"files": [], "cursor": "c"})]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else httpx.Response(404, json={})

    config = ep.Config.from_env({"MYYC_PROJECT_ID": "p", "MYYC_API_URL": "http://api"})
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://api")
    source = ep.ApiSource(config, http=http)
    assert await ep.sync(source, ep.ProjectDir(tmp_path)) == "c"
    with pytest.raises(ep.Unsyncable):
        await ep.sync(source, ep.ProjectDir(tmp_path))
    await source.aclose()


def test_only_well_formed_file_updates_are_taken() -> None:
    good = {"type": "file:update", "data": {"filePath": "a", "content": "b"}}
    assert ep._file_update_from_event(json.dumps(good)) == ("a", "b")
    assert ep._file_update_from_event(json.dumps({**good, "type": "preview"})) is None
    assert ep._file_update_from_event(json.dumps({"type": "file:update", "data": None})) is None
    assert (
        ep._file_update_from_event(
            json.dumps({"type": "file:update", "data": {"filePath": 1, "content": "b"}})
        )
        is None
    )
    assert ep._file_update_from_event("not json") is None


# ------------------------------------------------------------------------------ broadcast


async def test_broadcast_is_a_no_op_without_supabase() -> None:
    assert await broadcast_file_update(Settings(), _uuid(), "a", "b") is False


async def test_broadcast_sends_seed_003s_message_and_retries_429() -> None:
    seen: list[dict[str, object]] = []
    answers = [httpx.Response(429, headers={"retry-after": "0"}), httpx.Response(202)]

    def realtime(request: httpx.Request) -> httpx.Response:
        seen.append({"url": str(request.url), "body": json.loads(request.content),
                     "apikey": request.headers["apikey"]})  # fmt: skip
        return answers.pop(0)

    settings = Settings(
        supabase_url="https://ref.supabase.co", supabase_service_role_key="service-key-123"
    )
    project = _uuid()
    async with httpx.AsyncClient(transport=httpx.MockTransport(realtime)) as http:
        sent = await broadcast_file_update(settings, project, "src/a.ts", "x", http=http)
    assert sent is True
    assert len(seen) == 2
    assert seen[1]["url"] == "https://ref.supabase.co/realtime/v1/api/broadcast"
    assert seen[1]["apikey"] == "service-key-123"
    assert seen[1]["body"] == {
        "messages": [
            {
                "topic": f"project:{project}",
                "event": "file:update",
                "payload": {"filePath": "src/a.ts", "content": "x"},
                "private": False,
            }
        ]
    }


def _uuid():
    import uuid

    return uuid.uuid4()


def test_the_container_signs_requests_the_way_the_api_verifies_them() -> None:
    import time as _time

    import httpx

    from api.auth import ReplayGuard, verify_signature
    from previews.container.entrypoint import HmacAuth

    request = httpx.Request("GET", "http://127.0.0.1:9/projects/p/files?after=x")
    signed = next(HmacAuth("local-secret").auth_flow(request))
    verify_signature(
        b"local-secret",
        timestamp=signed.headers["x-myyc-timestamp"],
        signature=signed.headers["x-myyc-signature"],
        nonce=signed.headers["x-myyc-nonce"],
        method="GET",
        path="/projects/p/files",
        body=b"",
        now=_time.time(),
        replays=ReplayGuard(),
    )
