"""modal_app.py, imported offline: what each function declares (through `Function.info()`), that
the wiring calls the right bodies, and the `modal run` client in local/remote.py against a small
in-process stand-in of the API that checks signatures the way api/auth.py does.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import inspect
import io
import json
import subprocess
import sys
import time
import tomllib
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import modal
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import modal_app
from api import errors
from api.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, ReplayGuard, verify_signature
from local.remote import (
    API_URL_ENV,
    RemoteClient,
    RemoteError,
    StreamEvent,
    format_event,
    resolve_api_url,
    spawn_and_follow,
)
from schemas.errors import ErrorCode, ErrorDetail, NotFound
from store.migrate import MIGRATIONS_DIR

ROOT = Path(modal_app.__file__).resolve().parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def secret_names(info: Any) -> list[str]:
    return [s.removeprefix("modal.Secret.from_name('").removesuffix("')") for s in info.secrets]


# -- what each function declares ----------------------------------------------------------------

EXPECTED: dict[str, dict[str, Any]] = {
    "orchestrator_agent": {
        "modal_name": "orchestrator", "timeout": 3600, "max_retries": 2, "schedule": None,
        "secrets": ["myyc-supabase", "myyc-hmac"], "concurrency": None, "web": False,
    },
    "planner_agent": {
        "modal_name": "planner", "timeout": 600, "max_retries": 2, "schedule": None,
        "secrets": ["myyc-supabase", "myyc-llm"], "concurrency": None, "web": False,
    },
    "codegen_agent": {
        "modal_name": "codegen", "timeout": 1200, "max_retries": 2, "schedule": None,
        "secrets": ["myyc-supabase", "myyc-llm"], "concurrency": None, "web": False,
    },
    "github_agent": {
        "modal_name": "github", "timeout": 600, "max_retries": 2, "schedule": None,
        "secrets": ["myyc-supabase", "myyc-github"], "concurrency": None, "web": False,
    },
    "preview_agent": {
        "modal_name": "preview", "timeout": 600, "max_retries": 2, "schedule": None,
        "secrets": ["myyc-supabase", "myyc-fly", "myyc-hmac"], "concurrency": None,
        "web": False,
    },
    "verifier_agent": {
        "modal_name": "verifier", "timeout": 600, "max_retries": 2, "schedule": None,
        "secrets": ["myyc-supabase"], "concurrency": None, "web": False,
    },
    "web": {
        "modal_name": "web", "timeout": 3600, "max_retries": None, "schedule": None,
        "secrets": ["myyc-supabase", "myyc-hmac"], "concurrency": (200, 100), "web": True,
    },
    "cleanup_orphans": {
        "modal_name": "cleanup_orphans", "timeout": 300, "max_retries": None,
        "schedule": "Cron('*/10 * * * *', UTC)", "secrets": ["myyc-supabase", "myyc-fly"],
        "concurrency": None, "web": False,
    },
    "recover_builds": {
        "modal_name": "recover_builds", "timeout": 300, "max_retries": None,
        "schedule": "Cron('* * * * *', UTC)", "secrets": ["myyc-supabase", "myyc-hmac"],
        "concurrency": None, "web": False,
    },
}  # fmt: skip


def test_the_app_is_named_myyc() -> None:
    assert modal_app.app.name == "myyc"


@pytest.mark.parametrize("attr", sorted(EXPECTED))
def test_function_settings(attr: str) -> None:
    expected = EXPECTED[attr]
    fn = getattr(modal_app, attr)
    assert isinstance(fn, modal.Function)
    # The Modal name is what ModalDispatcher and `modal run` look functions up by.
    assert repr(fn) == f"Function({expected['modal_name']})"
    info = fn.info()
    assert info.timeout == expected["timeout"]
    assert info.max_retries == expected["max_retries"]
    assert info.schedule == expected["schedule"]
    assert secret_names(info) == expected["secrets"]
    concurrency = info.concurrency_info
    if expected["concurrency"] is None:
        assert concurrency is None
    else:
        assert concurrency is not None
        assert (concurrency.max_inputs, concurrency.target_inputs) == expected["concurrency"]
    if expected["web"]:
        assert info.web_info is not None
        assert info.web_info.method is None  # an ASGI app, not a single-method endpoint
        # No Modal proxy auth: the app checks HMAC and Supabase JWTs itself (edge functions
        # cannot hold a Modal proxy token).
        assert info.web_info.unauthenticated is True
    else:
        assert info.web_info is None


def test_every_function_is_checked_above() -> None:
    declared = {
        name for name, value in vars(modal_app).items() if isinstance(value, modal.Function)
    }
    assert declared == set(EXPECTED)


def test_web_label() -> None:
    # FunctionInfo has no label; the requested URL suffix is only on the private handle.
    from modal._utils.async_utils import synchronizer

    config = synchronizer._translate_in(modal_app.web)._webhook_config  # type: ignore[no-untyped-call]
    assert config.requested_suffix == "myyc-api"


def test_one_function_per_registered_agent() -> None:
    registry = pytest.importorskip("agents.registry")
    assert set(modal_app.AGENT_FUNCTIONS) == set(registry.AGENTS)
    for name in registry.AGENTS:
        assert repr(getattr(modal_app, f"{name}_agent")) == f"Function({name})"


def test_the_orchestrator_outlives_every_agent_it_waits_for() -> None:
    specs = modal_app.AGENT_FUNCTIONS
    others = [spec.timeout for name, spec in specs.items() if name != "orchestrator"]
    assert specs["orchestrator"].timeout > max(others)
    # Modal retries are for crashed containers only: small counts.
    assert all(0 <= spec.retries <= 2 for spec in specs.values())


def test_secrets_are_named_with_required_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # Secret reprs show only the name; record what modal_app asks for while importing a copy.
    asked: dict[str, list[str]] = {}
    from_name = modal.Secret.from_name

    def recording(name: str, *args: Any, required_keys: list[str] | None = None, **kw: Any):
        asked[name] = list(required_keys or [])
        return from_name(name, *args, required_keys=required_keys or [], **kw)

    monkeypatch.setattr(modal.Secret, "from_name", recording)
    spec = importlib.util.spec_from_file_location("modal_app_copy", ROOT / "modal_app.py")
    assert spec is not None
    assert spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "modal_app_copy", copy)  # dataclasses look it up
    spec.loader.exec_module(copy)

    assert asked == {
        "myyc-supabase": [
            "SUPABASE_URL",
            "SUPABASE_SERVICE_ROLE_KEY",
            "SUPABASE_JWT_SECRET",
            "DATABASE_URL",
        ],
        "myyc-hmac": ["MYYC_HMAC_SECRET"],
        "myyc-github": ["GITHUB_TOKEN"],
        "myyc-llm": [],  # either provider's key; neither is required (offline provider)
        "myyc-fly": ["FLY_API_TOKEN", "FLY_APP"],
    }


# -- the bodies: wiring only ----------------------------------------------------------------------


async def test_each_agent_function_runs_its_own_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.runtime

    calls: list[tuple[str, dict[str, str]]] = []

    async def fake_run_agent(name: str, **kwargs: str) -> str:
        calls.append((name, kwargs))
        return f"ran {name}"

    monkeypatch.setattr(core.runtime, "run_agent", fake_run_agent)
    for name in modal_app.AGENT_FUNCTIONS:
        fn = getattr(modal_app, f"{name}_agent")
        assert await fn.local(project_id="p", build_id="b") == f"ran {name}"
    # Each closure kept its own name (no late binding to the loop's last one).
    assert calls == [(n, {"project_id": "p", "build_id": "b"}) for n in modal_app.AGENT_FUNCTIONS]


async def test_the_cron_runs_with_no_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    # Modal itself refuses a schedule on a function that needs arguments (at decoration, so
    # importing modal_app proved it); here the body runs with none and reaches the cleanup.
    ran: list[bool] = []

    async def run_scheduled_cleanup() -> dict[str, int]:
        ran.append(True)
        return {"stopped": 0}

    fake = types.ModuleType("previews.cleanup")
    fake.run_scheduled_cleanup = run_scheduled_cleanup  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "previews.cleanup", fake)
    assert await modal_app.cleanup_orphans.local() == {"stopped": 0}
    assert ran == [True]


async def test_the_recovery_cron_runs_with_no_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    # As for cleanup_orphans: a scheduled function takes no arguments; its body reaches
    # core.runtime.run_recovery (looked up when it runs) and returns what that returns.
    import core.runtime

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    counts = {"expired_approvals": 0, "stalled_runs": 0, "resumed_builds": 0}

    async def fake_run_recovery(*args: Any, **kwargs: Any) -> dict[str, int]:
        calls.append((args, kwargs))
        return counts

    monkeypatch.setattr(core.runtime, "run_recovery", fake_run_recovery)
    assert await modal_app.recover_builds.local() == counts
    assert calls == [((), {})]


def test_the_real_recovery_entry_point_takes_no_arguments() -> None:
    import core.runtime

    params = inspect.signature(core.runtime.run_recovery).parameters.values()
    assert [p for p in params if p.default is inspect.Parameter.empty] == []
    assert inspect.iscoroutinefunction(core.runtime.run_recovery)


def test_the_real_cleanup_entry_point_takes_no_arguments() -> None:
    cleanup = pytest.importorskip("previews.cleanup")
    params = inspect.signature(cleanup.run_scheduled_cleanup).parameters.values()
    assert [p for p in params if p.default is inspect.Parameter.empty] == []
    assert inspect.iscoroutinefunction(cleanup.run_scheduled_cleanup)


def test_the_web_function_serves_the_api() -> None:
    app = modal_app.web.local()
    assert isinstance(app, FastAPI)
    assert "/health" in {getattr(route, "path", None) for route in app.routes}


def test_the_local_entrypoint_takes_title_description_category() -> None:
    raw = modal_app.main.info.raw_f
    assert raw is not None
    params = inspect.signature(raw).parameters
    assert list(params) == ["title", "description", "category"]
    assert params["title"].default is inspect.Parameter.empty
    assert params["description"].default == ""
    assert params["category"].default == ""
    assert all(p.annotation in (str, "str") for p in params.values())


def test_modal_run_help_lists_the_entrypoint_options() -> None:
    # `modal run … --help` works offline; it is the real mapping of the signature to flags.
    modal_cli = Path(sys.executable).with_name("modal")
    result = subprocess.run(
        [str(modal_cli), "run", "modal_app.py", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--title" in result.stdout
    assert "--description" in result.stdout
    assert "--category" in result.stdout
    assert "[required]" in result.stdout.split("--title", 1)[1].splitlines()[0]


# -- the image ----------------------------------------------------------------------------------


def test_the_image_pins_every_runtime_dependency_within_pyproject() -> None:
    pins = {canonicalize_name(Requirement(p).name): Requirement(p) for p in modal_app.RUNTIME_PINS}
    declared = [Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    skipped = {canonicalize_name(n) for n in modal_app.NOT_IN_IMAGE}
    for dep in declared:
        name = canonicalize_name(dep.name)
        if name in skipped:
            assert name not in pins
            continue
        assert name in pins, f"{dep.name} is a runtime dependency missing from the image"
        [spec] = list(pins[name].specifier)
        assert spec.operator == "==", f"{pins[name]} is not pinned"
        assert dep.specifier.contains(spec.version), f"{pins[name]} is outside {dep}"
        assert pins[name].extras == dep.extras
        # The image runs what the tests ran.
        assert importlib.metadata.version(dep.name) == spec.version, f"bump the pin of {dep.name}"
    assert set(pins) <= {canonicalize_name(d.name) for d in declared}


def test_the_image_ships_our_packages_with_their_data() -> None:
    wheel = set(PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert set(modal_app.PACKAGES) == wheel - {"bench"}  # benchmarks stay home
    ignored = modal.FilePatternMatcher(*modal_app.PACKAGE_IGNORE)
    assert not ignored(Path("store/sql/bootstrap.sql"))
    assert not ignored(Path("core/runtime.py"))
    assert ignored(Path("agents/__pycache__/runtime.cpython-311.pyc"))


def test_migrations_land_where_store_migrate_looks_for_them() -> None:
    # Packages go to /root/<package>; migrate.py reads <its package's parent>/supabase/migrations.
    assert MIGRATIONS_DIR == ROOT / "supabase" / "migrations"
    remote_migrations = Path("/root/store/migrate.py").parent.parent / "supabase" / "migrations"
    assert remote_migrations == Path(modal_app.SUPABASE_REMOTE_DIR) / "migrations"
    ignored = modal.FilePatternMatcher(*modal_app.SUPABASE_IGNORE)
    shipped = [p.relative_to(ROOT / "supabase") for p in MIGRATIONS_DIR.glob("*.sql")]
    assert shipped
    assert not any(ignored(p) for p in [*shipped, Path("seed.sql")])
    assert ignored(Path("functions/spawn_project/index.ts"))


# -- local/remote.py against a stand-in API -----------------------------------------------------

SECRET = "a-real-shared-secret-for-tests"


def event(n: int, *, type_: str = "log", data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-0000-0000-{n:012d}", "project_id": PROJECT, "agent_name": "planner",
        "level": "info", "type": type_, "message": f"line {n}", "data": data,
        "timestamp": "2026-11-02T10:11:12+00:00", "writer_id": WRITER, "seq": n,
    }  # fmt: skip


PROJECT = "11111111-1111-1111-1111-111111111111"
WRITER = "22222222-2222-2222-2222-222222222222"


def frame(n: int, body: dict[str, Any]) -> str:
    return f"id: c{n}\ndata: {json.dumps(body)}\n\n"


class StandIn:
    """The API's /spawn and /projects/{id}/stream, signature-checked like api/auth.py.

    `connections` lists what each successive stream connection sends before it ends, so a
    test can drop the stream mid-way and check the client resumes from the right event.
    """

    def __init__(self, connections: list[list[str]], *, spawn_failures: int = 0) -> None:
        self.connections = list(connections)
        self.spawn_failures = spawn_failures
        self.spawns: list[tuple[str | None, dict[str, Any]]] = []
        self.resumed_from: list[str | None] = []
        self.replays = ReplayGuard()
        self.app = FastAPI()
        errors.install(self.app)
        self.app.post("/spawn", status_code=202)(self.spawn)
        self.app.get("/projects/{project_id}/stream")(self.stream)

    async def check(self, request: Request) -> None:
        verify_signature(
            SECRET.encode(),
            timestamp=request.headers.get(TIMESTAMP_HEADER),
            signature=request.headers.get(SIGNATURE_HEADER),
            method=request.method,
            path=request.url.path,
            body=await request.body(),
            now=time.time(),
            replays=self.replays,
        )

    async def spawn(self, request: Request) -> Any:
        await self.check(request)
        self.spawns.append((request.headers.get("idempotency-key"), await request.json()))
        if self.spawn_failures:
            self.spawn_failures -= 1
            return errors.error_response(
                ErrorDetail(code=ErrorCode.store_unavailable, message="down"), 503
            )
        return {"project_id": PROJECT, "build_id": "b-1"}

    async def stream(self, project_id: str, request: Request) -> StreamingResponse:
        await self.check(request)
        if project_id != PROJECT:
            raise NotFound(f"project {project_id} not found")
        self.resumed_from.append(request.headers.get("last-event-id"))
        frames = self.connections.pop(0) if self.connections else []

        async def body() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            yield ": keepalive\n\n"
            for f in frames:
                yield f

        return StreamingResponse(body(), media_type="text/event-stream")


def client_for(stand_in: StandIn) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=stand_in.app))


COMPLETED = frame(
    3, event(3, type_="project_status", data={"status": "completed", "progress": 100})
)


async def test_spawn_and_follow_prints_the_log_until_the_project_completes() -> None:
    # The first connection drops after two events; the client resumes after the second.
    stand_in = StandIn([[frame(1, event(1)), frame(2, event(2))], [COMPLETED]])
    out = io.StringIO()
    async with client_for(stand_in) as http:
        spawned, status = await spawn_and_follow(
            "http://myyc.test", SECRET, title="AI Recipe App", description="recipes",
            category="food", out=out, http_client=http, reconnect_delay=0,
        )  # fmt: skip

    assert status == "completed"
    assert spawned.project_id == PROJECT
    assert spawned.build_id == "b-1"
    [(key, body)] = stand_in.spawns
    assert key
    assert body == {"title": "AI Recipe App", "description": "recipes", "category": "food"}
    assert stand_in.resumed_from == [None, "c2"]
    lines = out.getvalue().splitlines()
    assert lines[0] == f"project {PROJECT} (build b-1) spawned"
    assert [line.split()[-1] for line in lines[1:4]] == ["1", "2", "3"]
    assert "planner" in lines[1]
    assert lines[-1] == f"project {PROJECT} completed"


async def test_a_failed_project_ends_the_follow_with_failed() -> None:
    failed = frame(1, event(1, type_="project_status", data={"status": "failed", "progress": 40}))
    running = frame(0, event(0, type_="project_status", data={"status": "running"}))
    stand_in = StandIn([[running, failed, frame(2, event(2))]])
    out = io.StringIO()
    async with client_for(stand_in) as http:
        _, status = await spawn_and_follow(
            "http://myyc.test", SECRET, title="t", out=out, http_client=http, reconnect_delay=0
        )
    assert status == "failed"
    assert stand_in.spawns[0][1] == {"title": "t", "description": None, "category": None}
    assert "line 2" not in out.getvalue()  # stops at the terminal status


async def test_spawn_retries_unavailable_answers_with_the_same_idempotency_key() -> None:
    stand_in = StandIn([], spawn_failures=2)
    async with client_for(stand_in) as http:
        client = RemoteClient("http://myyc.test", SECRET, http_client=http, reconnect_delay=0)
        spawned = await client.spawn("t", idempotency_key="key-1")
    assert spawned.project_id == PROJECT
    assert [key for key, _ in stand_in.spawns] == ["key-1"] * 3


async def test_a_wrong_secret_is_a_remote_error_with_the_apis_code() -> None:
    stand_in = StandIn([])
    async with client_for(stand_in) as http:
        client = RemoteClient("http://myyc.test", "not-the-secret", http_client=http)
        with pytest.raises(RemoteError, match="bad signature") as info:
            await client.spawn("t")
    assert info.value.status == 401
    assert info.value.code == "unauthorized"


async def test_an_unknown_project_stream_fails_without_reconnecting() -> None:
    stand_in = StandIn([])
    async with client_for(stand_in) as http:
        client = RemoteClient("http://myyc.test", SECRET, http_client=http, reconnect_delay=0)
        with pytest.raises(RemoteError) as info:
            await client.follow("33333333-3333-3333-3333-333333333333", lambda e: None)
    assert info.value.status == 404
    assert info.value.code == "not_found"


async def test_requests_in_the_same_second_get_distinct_signatures() -> None:
    # The server refuses a signature it has seen (a replay); a quick reconnect must not be one.
    client = RemoteClient("http://myyc.test", SECRET, clock=lambda: 1_700_000_000.0)
    url = httpx.URL("http://myyc.test/projects/p/stream")
    first = client.signed_headers("GET", url, b"")
    second = client.signed_headers("GET", url, b"")
    assert first[SIGNATURE_HEADER] != second[SIGNATURE_HEADER]
    assert int(second[TIMESTAMP_HEADER]) == int(first[TIMESTAMP_HEADER]) + 1
    await client.aclose()


def test_format_event_and_final_status() -> None:
    line = format_event(StreamEvent("c1", event(1)))
    assert line.split() == ["10:11:12", "INFO", "planner", "line", "1"]
    done = StreamEvent("c2", event(2, type_="project_status", data={"status": "completed"}))
    assert done.final_status == "completed"
    assert (
        StreamEvent("c3", event(3, type_="project_status", data={"status": "running"})).final_status
        is None
    )
    assert StreamEvent("c4", event(4)).final_status is None


def test_the_api_url_comes_from_the_environment_first() -> None:
    assert resolve_api_url({API_URL_ENV: "https://example.test/"}) == "https://example.test"


async def test_the_stand_in_rejects_replays() -> None:
    # Guards the stand-in itself: the same signed request twice is refused the second time.
    stand_in = StandIn([])
    async with client_for(stand_in) as http:
        client = RemoteClient(
            "http://myyc.test", SECRET, http_client=http, clock=lambda: time.time()
        )
        url = httpx.URL("http://myyc.test/spawn")
        body = json.dumps({"title": "t", "description": None, "category": None}).encode()
        headers = {"content-type": "application/json", **client.signed_headers("POST", url, body)}
        assert (await http.post(url, content=body, headers=headers)).status_code == 202
        again = await http.post(url, content=body, headers=headers)
    assert again.status_code == 401
    assert "replayed" in again.json()["error"]["message"]
    await asyncio.sleep(0)
