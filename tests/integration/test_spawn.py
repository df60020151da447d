"""Spawning end to end: the real API on a socket, the local dispatcher, real agents, real git."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import jwt
import orjson
import psycopg
import pytest
from pydantic import SecretStr

from agents.common import RunContext, run_reported
from agents.dispatch import LocalDispatcher
from agents.registry import AGENTS
from api.app import create_app
from api.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from core.services import Services
from local.remote import RemoteClient
from schemas.events import Cursor
from schemas.pipeline import PIPELINE
from schemas.settings import Settings
from tests.support import serve

SECRET = "test-hmac-secret-0123456789"
JWT_SECRET = "test-jwt-secret-0123456789-abcdefghijklmnop"


def _settings(db_url: str, data_dir: Path, **extra: Any) -> Settings:
    return Settings(
        database_url=db_url,
        myyc_data_dir=data_dir,
        myyc_hmac_secret=SecretStr(SECRET),
        supabase_jwt_secret=SecretStr(JWT_SECRET),
        **extra,
    )


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, Services]]:
    services = await Services.open(_settings(db_url, tmp_path))
    try:
        async with serve(create_app(services)) as base:
            yield base, services
    finally:
        await services.close()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def _user_token(user_id: UUID) -> str:
    claims = {"sub": str(user_id), "role": "authenticated", "aud": "authenticated",
              "exp": int(time.time()) + 3600}  # fmt: skip
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _signed(method: str, path: str, body: bytes = b"", ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(SECRET.encode(), ts, method, path, body),
        "content-type": "application/json",
    }


async def test_spawn_runs_the_agents_to_completion(
    api: tuple[str, Services], tmp_path: Path
) -> None:
    base, services = api
    async with RemoteClient(base, SECRET) as client:
        spawned = await client.spawn("AI Recipe App", "Save recipes and plan meals", "food-tech")
        events: list[Any] = []
        final = await asyncio.wait_for(client.follow(spawned.project_id, events.append), 60)
    assert final == "completed"
    project_id = UUID(spawned.project_id)
    # The orchestrator closes the build before the last runs complete the project: a follower
    # who stops at "completed" finds the build's outcome in place, its closing event just seen.
    session = await services.store.get_session(UUID(spawned.build_id or ""))
    assert session.status == "succeeded"
    types = [e.data.get("type") for e in events]
    assert types[-1] == "project_status"
    assert types.count("build_succeeded") == 1

    async with httpx.AsyncClient(base_url=base) as http:
        path = f"/status/{project_id}"
        status = (await http.get(path, headers=_signed("GET", path))).json()
    assert status["status"] == "completed"
    assert status["progress"] == 100
    # One run per agent of the pipeline (schemas.pipeline.PIPELINE), in its order; with
    # previews off (tests/conftest.py) the preview agent completes without starting one.
    assert [(r["agent_name"], r["status"]) for r in status["runs"]] == [
        ("planner", "completed"), ("codegen", "completed"), ("github", "completed"),
        ("preview", "completed"), ("verifier", "completed"),
    ]  # fmt: skip
    assert status["github_url"].startswith("file://")

    # The offline provider's app for this idea: the shell, the shared core, one script per
    # feature module of the plan (the entries base, and the food idea's meal plan, ingredient
    # tags and shopping list), the entry point, the README and package.json.
    app_files = [
        "README.md", "app.js", "index.html", "js/core.js", "js/entries.js",
        "js/ingredient-tags.js", "js/meal-plan.js", "js/shopping-list.js", "package.json",
        "styles.css",
    ]  # fmt: skip
    stored = await services.store.get_files(project_id)
    assert sorted(stored) == app_files
    clone = tmp_path / "clone"
    await asyncio.to_thread(_git, "clone", "-q", status["github_url"], str(clone))
    assert "AI Recipe App" in (clone / "index.html").read_text()
    tree = sorted(
        p.relative_to(clone).as_posix()
        for p in clone.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(clone).parts
    )
    assert tree == app_files
    # The repository holds exactly what project_files holds.
    assert {path: (clone / path).read_text() for path in tree} == stored
    # auto_init's README commit, then every file of the app in one commit.
    log = (await asyncio.to_thread(_git, "-C", str(clone), "log", "--format=%s")).splitlines()
    assert log == ["Initial app from myyc: AI Recipe App", "Initial commit"]
    changed = (
        await asyncio.to_thread(_git, "-C", str(clone), "show", "--name-only", "--format=", "HEAD")
    ).split()
    assert sorted(changed) == app_files
    head = (await asyncio.to_thread(_git, "-C", str(clone), "rev-parse", "HEAD")).strip()
    assert session.outputs == {
        "github_url": status["github_url"], "preview_url": None, "files": app_files,
        "commit": head, "verified": True, "decision": None, "closed": "succeeded",
    }  # fmt: skip

    plan = await services.store.list_plan(project_id)
    assert plan[0].priority == "high"
    assert any("ingredient" in p.feature for p in plan)  # the food category's extra feature
    actions = [a.action for a in await services.store.list_activity(project_id)]
    assert actions == ["plan_created", "files_written", "repository_created"]
    agents = {e.data.get("agent_name") for e in events} - {None}
    assert {"orchestrator", "planner", "codegen", "github", "preview", "verifier"} <= agents
    assert "plan_created" in types
    written = [e.data["data"]["filePath"] for e in events if e.data.get("type") == "file:update"]
    assert sorted(set(written)) == app_files
    verifications = [e.data["data"] for e in events if e.data.get("type") == "verification"]
    assert [(v["passed"], v["attempt"]) for v in verifications] == [(True, 1)]
    # Nothing comes after the project's final status: the follower saw the whole log.
    assert isinstance(services.dispatcher, LocalDispatcher)
    await asyncio.wait_for(services.dispatcher.join(), 30)
    await services.writer.flush()
    page = await services.store.read_events(project_id, after=Cursor(), limit=10_000)
    assert [str(e.id) for e in page] == [e.data["id"] for e in events]
    assert page[-1].type == "project_status"
    assert page[-1].data is not None
    assert page[-1].data["status"] == "completed"


async def test_one_idempotency_key_makes_one_project(
    api: tuple[str, Services], db_url: str
) -> None:
    base, _ = api
    body = b'{"title": "Once only", "description": "fifty clicks"}'
    async with httpx.AsyncClient(base_url=base) as http:

        async def one(i: int) -> httpx.Response:
            headers = _signed("POST", "/spawn", body, ts=int(time.time()) - i)
            headers["idempotency-key"] = "same-key-for-all"
            return await http.post("/spawn", content=body, headers=headers)

        answers = await asyncio.gather(*(one(i) for i in range(50)))
    assert sorted({a.status_code for a in answers}) == [200, 202]
    assert sum(a.status_code == 202 for a in answers) == 1
    assert len({a.json()["project_id"] for a in answers}) == 1
    with psycopg.connect(db_url) as conn:
        count = conn.execute("select count(*) from projects where title = 'Once only'").fetchone()
        sessions = conn.execute("select count(*) from build_sessions").fetchone()
    assert count == (1,)
    assert sessions == (1,)


async def test_a_failing_agent_fails_the_project_with_its_error(
    db_url: str, tmp_path: Path
) -> None:
    async def broken_github(services, dispatcher, *, project_id, build_id, run_id):  # type: ignore[no-untyped-def]
        async def body(ctx: RunContext) -> dict[str, Any]:
            await ctx.log("pushing…")
            raise RuntimeError("the forge is on fire")

        return await run_reported(services, "github", project_id=project_id,
                                  build_id=build_id, run_id=run_id, body=body)  # fmt: skip

    services = await Services.open(_settings(db_url, tmp_path))
    assert services.dispatcher is not None
    await services.dispatcher.close()
    services.dispatcher = LocalDispatcher(services, {**AGENTS, "github": broken_github})
    try:
        async with serve(create_app(services)) as base, RemoteClient(base, SECRET) as client:
            spawned = await client.spawn("Doomed", "will fail")
            events: list[Any] = []
            final = await asyncio.wait_for(client.follow(spawned.project_id, events.append), 60)
    finally:
        await services.close()
    assert final == "failed"
    project = await _project(db_url, spawned.project_id)
    assert "the forge is on fire" in project["error"]
    assert project["error_code"] == "agent_failed"
    errors = [e.data["message"] for e in events if e.data.get("level") == "error"]
    assert any("the forge is on fire" in m for m in errors)


async def _project(db_url: str, project_id: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.cursor() as cur:
        await cur.execute("select status, error, error_code from projects where id = %s",
                          (project_id,))  # fmt: skip
        row = await cur.fetchone()
    assert row is not None
    return {"status": row[0], "error": row[1], "error_code": row[2]}


@pytest.mark.parametrize(
    ("case", "skew", "signed_path", "signature"),
    [
        ("missing", None, None, None),
        ("bad signature", 0, "/spawn", "v1=00"),
        # Well past the 300 s window: timestamps are whole seconds, the clock moves on.
        ("too old", -310, "/spawn", None),
        ("from the future", 310, "/spawn", None),
        ("signed for another path", 0, "/agents/run", None),
    ],
)
async def test_unsigned_or_badly_signed_requests_are_401(
    api: tuple[str, Services],
    case: str,
    skew: int | None,
    signed_path: str | None,
    signature: str | None,
) -> None:
    base, _ = api
    body = b'{"title":"x"}'
    headers = {"content-type": "application/json"}
    if skew is not None and signed_path is not None:
        headers = _signed("POST", signed_path, body, ts=int(time.time()) + skew)
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/spawn", content=body, headers=headers)
    assert response.status_code == 401, case
    assert response.json()["error"]["code"] == "unauthorized"


async def test_a_replayed_request_is_401(api: tuple[str, Services]) -> None:
    base, _ = api
    body = b'{"title": "replay me"}'
    headers = _signed("POST", "/spawn", body)
    async with httpx.AsyncClient(base_url=base) as http:
        first = await http.post("/spawn", content=body, headers=headers)
        again = await http.post("/spawn", content=body, headers=headers)
    assert first.status_code == 202
    assert again.status_code == 401
    assert again.json()["error"]["message"] == "replayed request"


async def test_users_see_only_their_own_projects(api: tuple[str, Services]) -> None:
    base, services = api
    alice, bob = uuid4(), uuid4()
    async with await psycopg.AsyncConnection.connect(services.database_url or "") as conn:
        await conn.execute("insert into auth.users (id) values (%s), (%s)", (alice, bob))
        await conn.commit()
    async with httpx.AsyncClient(base_url=base) as http:
        as_alice = {"authorization": f"Bearer {_user_token(alice)}"}
        as_bob = {"authorization": f"Bearer {_user_token(bob)}"}
        spawned = await http.post("/spawn", json={"title": "Alice's app"}, headers=as_alice)
        assert spawned.status_code == 202
        project = spawned.json()["project_id"]
        assert (await http.get(f"/status/{project}", headers=as_alice)).status_code == 200
        for path in (f"/status/{project}", f"/projects/{project}/logs"):
            response = await http.get(path, headers=as_bob)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
        assert [
            p["project_id"] for p in (await http.get("/projects", headers=as_alice)).json()
        ] == [project]
        assert (await http.get("/projects", headers=as_bob)).json() == []
        claims = {"sub": str(bob), "role": "authenticated", "aud": "authenticated",
                  "exp": int(time.time()) - 10}  # fmt: skip
        expired = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
        response = await http.get("/projects", headers={"authorization": f"Bearer {expired}"})
        assert response.status_code == 401


async def test_the_spawn_rate_limit_answers_429_with_retry_after(
    db_url: str, tmp_path: Path
) -> None:
    services = await Services.open(_settings(db_url, tmp_path, spawn_rate_per_minute=2))
    alice, bob = uuid4(), uuid4()
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await conn.execute("insert into auth.users (id) values (%s), (%s)", (alice, bob))
        await conn.commit()
    try:
        async with serve(create_app(services)) as base, httpx.AsyncClient(base_url=base) as http:
            codes = []
            for i in range(3):
                as_alice = {"authorization": f"Bearer {_user_token(alice)}"}
                response = await http.post("/spawn", json={"title": f"b{i}"}, headers=as_alice)
                codes.append(response.status_code)
            limited = response
            # A server spawning for another user, and for no user, is not limited by Alice's.
            for user in (str(bob), None):
                body = orjson.dumps({"title": "other", "user_id": user})
                other = await http.post(
                    "/spawn", content=body, headers=_signed("POST", "/spawn", body)
                )
                codes.append(other.status_code)
    finally:
        await services.close()
    assert codes == [202, 202, 429, 202, 202]
    response = limited
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "rate_limited"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{}", 422, "body"),
        (b'{"title": ""}', 422, "body.title"),
        (b'{"title": "x", "surprise": 1}', 422, "body.surprise"),
        (b'{"title": "x", "config": {"title": "y"}}', 422, "body"),
        (b"not json", 422, "body"),
        (b'{"title": "' + b"x" * 300_000 + b'"}', 413, "body"),
    ],
)
async def test_bad_spawn_bodies_get_one_error_shape_and_write_nothing(
    api: tuple[str, Services], db_url: str, body: bytes, status: int, field: str
) -> None:
    base, _ = api
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/spawn", content=body, headers=_signed("POST", "/spawn", body))
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) <= {"code", "message", "field"}
    assert error["field"].startswith(field)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from projects").fetchone() == (0,)


async def test_the_seed_000_envelope_is_accepted(api: tuple[str, Services]) -> None:
    base, services = api
    body = orjson.dumps(
        {
            "project_id": "00000000-0000-0000-0000-000000000001",
            "config": {"title": "Envelope App", "description": "from the edge function"},
        }
    )
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/spawn", content=body, headers=_signed("POST", "/spawn", body))
    assert response.status_code == 202
    project = await services.store.get_project(UUID(response.json()["project_id"]))
    assert project.title == "Envelope App"
    assert project.description == "from the edge function"


async def test_an_unknown_owner_is_a_404_on_the_field(
    api: tuple[str, Services], db_url: str
) -> None:
    base, _ = api
    body = orjson.dumps({"title": "for nobody", "user_id": str(uuid4())})
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/spawn", content=body, headers=_signed("POST", "/spawn", body))
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found", "message": "no such user", "field": "body.user_id"
    }  # fmt: skip
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from projects").fetchone() == (0,)


async def test_agents_run_starts_the_orchestrator_on_a_task(api: tuple[str, Services]) -> None:
    base, services = api
    task = uuid4()
    body = orjson.dumps(
        {"task_description": "Build a habit tracker\nwith streaks", "task_id": str(task)}
    )
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/agents/run", content=body, headers=_signed("POST", "/agents/run", body)
        )
        assert response.status_code == 202
        run_id = UUID(response.json()["run_id"])
        run = await services.store.get_run(run_id)
        assert run.agent_name == "orchestrator"
        assert run.task_id == task
        project = await services.store.get_project(UUID(response.json()["project_id"]))
        assert project.title == "Build a habit tracker"
        assert isinstance(services.dispatcher, LocalDispatcher)
        await asyncio.wait_for(services.dispatcher.join(), 30)
        path = "/agent-runs"
        listed = (await http.get(path, headers=_signed("GET", path))).json()
    mine = next(r for r in listed if r["id"] == str(run_id))
    assert mine["status"] == "completed"
    assert mine["task_id"] == str(task)
    assert (await services.store.get_project(project.id)).status == "completed"
    # The orchestrator's own run, then one per agent of the pipeline, all completed.
    runs = {r.agent_name: r for r in await services.store.list_runs(project_id=project.id)}
    assert sorted(runs) == sorted(["orchestrator", *PIPELINE])
    assert {name: r.status for name, r in runs.items()} == dict.fromkeys(runs, "completed")
    [session_id] = {r.session_id for r in runs.values()}
    assert session_id is not None
    assert sorted(await services.store.get_files(project.id)) == [
        "README.md", "app.js", "index.html", "js/core.js", "js/entries.js",
        "js/weekly-goal.js", "package.json", "styles.css",
    ]  # fmt: skip
    actions = [a.action for a in await services.store.list_activity(project.id)]
    assert actions == ["plan_created", "files_written", "repository_created"]
