"""The build pipeline end to end: seed 004's sessions API, the LangGraph graph on the Postgres
checkpointer, the offline provider, verification, prompts from the database, the cost ledger,
cancel, and bad input — real API on a socket, real Postgres, real git."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from pydantic import SecretStr

from api.app import create_app
from core.services import Services
from local.remote import RemoteClient, RemoteError
from schemas.settings import Settings
from tests.support import serve

SECRET = "test-hmac-secret-0123456789"


def pipeline_settings(db_url: str, data_dir: Path, **extra: Any) -> Settings:
    """Settings for a build on the test database (no live preview unless asked)."""
    values: dict[str, Any] = {
        "database_url": db_url, "myyc_data_dir": data_dir,
        "myyc_hmac_secret": SecretStr(SECRET), "myyc_build_previews": False,
    }  # fmt: skip
    values.update(extra)
    return Settings(**values)


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[RemoteClient, Services]]:
    services = await Services.open(pipeline_settings(db_url, tmp_path), recover=True)
    try:
        async with serve(create_app(services)) as base:
            services.api_url = base
            async with RemoteClient(base, SECRET) as client:
                yield client, services
    finally:
        await services.close()


async def build(client: RemoteClient, vibe: str, template: str = "saas", **options: Any) -> Any:
    """Create a session, follow its project to the end, return (session, events)."""
    created = await client.request(
        "POST", "/sessions", json_body={"vibeText": vibe, "template": template,
                                        "options": options},
    )  # fmt: skip
    events: list[Any] = []
    await asyncio.wait_for(client.follow(created["projectId"], events.append), 90)
    session = await client.request("GET", f"/sessions/{created['sessionId']}")
    return session, events


async def test_a_build_session_runs_the_graph_to_a_verified_app(
    api: tuple[RemoteClient, Services],
) -> None:
    client, services = api
    session, events = await build(client, "Team notes\nShare notes with my team, plan sprints")
    assert session["status"] == "succeeded", session
    assert session["template"] == "saas"
    assert session["vibeText"].startswith("Team notes")
    assert session["options"]["environmentMode"] == "branch"
    assert session["outputs"]["verified"] is True
    assert session["outputs"]["github_url"].startswith("file://")
    assert session["presence"]["progress"] == 1.0

    types = [e.data["type"] for e in events]
    for expected in ("plan_created", "file:update", "verification", "build_succeeded"):
        assert expected in types, expected
    # The graph's steps in order, as presence reports them.
    steps = [e.data["data"]["step"] for e in events if e.data["type"] == "presence"]
    order = ["ingest_vibe", "generate_plan", "codegen", "verify", "finalize"]
    seen = [s for s in dict.fromkeys(steps) if s in order]
    assert seen == order

    sid = UUID(session["id"])
    project_id = UUID(session["projectId"])
    timeline = await client.request("GET", f"/sessions/{sid}/events")
    assert [e["ts"] for e in timeline] == sorted(e["ts"] for e in timeline)
    assert {"plan_created", "build_succeeded"} <= {e["type"] for e in timeline}
    assert "presence" not in {e["type"] for e in timeline}

    runs = {r.agent_name: r for r in await services.store.list_runs(project_id=project_id)}
    assert {name: r.status.value for name, r in runs.items()} == {
        "planner": "completed", "codegen": "completed", "github": "completed",
        "preview": "completed", "verifier": "completed",
    }  # fmt: skip
    codegen = runs["codegen"]
    assert codegen.verification_attempts == 1
    assert codegen.verification_evidence[-1]["passed"] is True
    assert codegen.metadata["prompts"] == {"codegen": 1}
    assert runs["planner"].metadata["prompts"] == {"planner": 1}

    files = await services.store.get_files(project_id)
    assert {"index.html", "app.js"} <= set(files)
    assert set(await services.store.file_versions(project_id)) == set(files)

    costs = await client.request("GET", f"/projects/{project_id}/costs")
    assert costs["calls"] == 2
    assert {line["agent"] for line in costs["lines"]} == {"planner", "codegen"}
    assert costs["outputTokens"] > 0
    assert costs["costUsd"] == 0.0
    status = await client.request("GET", f"/status/{project_id}")
    assert status["status"] == "completed"
    assert status["progress"] == 100


async def test_a_new_active_prompt_applies_to_the_next_build(
    api: tuple[RemoteClient, Services], db_url: str
) -> None:
    client, services = api
    first, _ = await build(client, "Habit tracker")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update prompts set is_active = false where name = 'codegen'")
        conn.execute(
            "insert into prompts (name, version, content, is_active)"
            " values ('codegen', 2, 'Write the files. Mark features with data-feature.', true)"
        )
    second, _ = await build(client, "Habit tracker")
    runs = {}
    for session in (first, second):
        for r in await services.store.list_runs(project_id=UUID(session["projectId"])):
            if r.agent_name == "codegen":
                runs[session["id"]] = r.metadata["prompts"]["codegen"]
    assert runs == {first["id"]: 1, second["id"]: 2}
    usage = await services.store.list_usage(UUID(second["projectId"]))
    assert {(u.agent_name, u.prompt_version) for u in usage} == {("planner", 1), ("codegen", 2)}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"vibeText": "", "template": "saas"}, "vibeText"),
        ({"vibeText": "x" * 20_001, "template": "saas"}, "vibeText"),
        ({"vibeText": "ok", "template": "blog"}, "template"),
        (
            {"vibeText": "ok", "template": "saas", "options": {"enableAnalytics": "maybe"}},
            "enableAnalytics",
        ),
        (
            {"vibeText": "ok", "template": "saas", "options": {"environmentMode": "cloud"}},
            "environmentMode",
        ),
        (
            {"vibeText": "ok", "template": "saas", "options": {"model": {"provider": "gpt"}}},
            "provider",
        ),
        ({"template": "saas"}, "vibeText"),
        ({"vibeText": "ok", "template": "saas", "extra": 1}, "extra"),
    ],
)
async def test_bad_session_bodies_are_422_naming_the_field(
    api: tuple[RemoteClient, Services], body: dict[str, Any], field: str
) -> None:
    client, services = api
    before = len(await services.store.list_projects())
    with pytest.raises(RemoteError) as caught:
        await client.request("POST", "/sessions", json_body=body)
    assert caught.value.status == 422
    assert caught.value.code == "validation_error"
    assert field in caught.value.message
    assert len(await services.store.list_projects()) == before  # nothing half-written


async def test_unknown_sessions_approvals_and_builds_are_404(
    api: tuple[RemoteClient, Services],
) -> None:
    client, _ = api
    missing = "00000000-0000-0000-0000-000000000001"
    for method, path in (
        ("GET", f"/sessions/{missing}"), ("GET", f"/sessions/{missing}/events"),
        ("POST", f"/builds/{missing}/cancel"), ("POST", f"/builds/{missing}/resume"),
        ("GET", "/approvals/no-such-token-0123456789"),
    ):  # fmt: skip
        with pytest.raises(RemoteError) as caught:
            await client.request(method, path)
        assert caught.value.status == 404, path
    with pytest.raises(RemoteError) as caught:
        await client.request("POST", "/approvals/no-such-token-0123456789",
                             json_body={"decision": "approve"})  # fmt: skip
    assert caught.value.status == 404


async def test_cancel_stops_a_running_build(db_url: str, tmp_path: Path) -> None:
    settings = pipeline_settings(db_url, tmp_path, offline_chunk_delay_ms=40.0,
                                 build_lease_seconds=1.5)  # fmt: skip
    services = await Services.open(settings, recover=True)
    try:
        async with serve(create_app(services)) as base, RemoteClient(base, SECRET) as client:
            created = await client.request(
                "POST", "/sessions", json_body={"vibeText": "Slow app", "template": "saas"}
            )
            sid, pid = created["sessionId"], created["projectId"]
            events: list[Any] = []

            def cancel_once_writing(event: Any) -> None:
                events.append(event)

            follow = asyncio.create_task(client.follow(pid, cancel_once_writing))
            for _ in range(200):
                if any(e.data.get("type") == "file:update" for e in events):
                    break
                await asyncio.sleep(0.05)
            answer = await client.request("POST", f"/builds/{sid}/cancel")
            assert answer["status"] == "canceled"
            final = await asyncio.wait_for(follow, 30)
            assert final == "canceled"
            # Idempotent; the owner stops at its next lease renewal and writes no more files.
            again = await client.request("POST", f"/builds/{sid}/cancel")
            assert again["status"] == "canceled"
            await asyncio.sleep(1.5)
            session = await client.request("GET", f"/sessions/{sid}")
            assert session["status"] == "canceled"
            assert session["errorCode"] == "canceled"
            runs = await services.store.list_runs(project_id=UUID(pid))
            assert {r.status.value for r in runs} <= {"completed", "canceled"}
            with pytest.raises(RemoteError) as caught:
                await client.request("POST", f"/builds/{sid}/resume")
            assert caught.value.status == 409
    finally:
        await services.close()


async def test_a_running_preview_serves_files_while_codegen_is_still_writing(
    db_url: str, tmp_path: Path
) -> None:
    import httpx

    from previews.local_driver import LocalMachines

    settings = pipeline_settings(db_url, tmp_path, offline_chunk_delay_ms=60.0,
                                 myyc_build_previews=True)  # fmt: skip
    services = await Services.open(settings, recover=True)
    try:
        async with serve(create_app(services)) as base, RemoteClient(base, SECRET) as client:
            services.api_url = base
            created = await client.request(
                "POST", "/sessions", json_body={"vibeText": "Recipe planner", "template": "saas"}
            )
            pid = created["projectId"]
            events: list[Any] = []
            follow = asyncio.create_task(client.follow(pid, events.append))
            # A person opens the preview while the plan is being made (seed 003's start).
            for _ in range(400):
                if any(e.data.get("type") == "plan_created" for e in events):
                    break
                await asyncio.sleep(0.025)
            started = await client.request("POST", "/sessions/start", json_body={"projectId": pid})
            url = started["containerUrl"]
            served_during_build = False
            async with httpx.AsyncClient(timeout=5.0) as http:
                while not follow.done():
                    written = [e.data["data"]["filePath"] for e in events
                               if e.data.get("type") == "file:update"]  # fmt: skip
                    if "index.html" in written and not any(
                        e.data.get("type") == "build_succeeded" for e in events
                    ):
                        page = await http.get(url.rstrip("/") + "/index.html")
                        if page.status_code == 200 and "data-feature" in page.text:
                            served_during_build = True
                            break
                    await asyncio.sleep(0.02)
            assert served_during_build, "the preview never served index.html before the end"
            assert await asyncio.wait_for(follow, 90) == "completed"
            session = await client.request("GET", f"/sessions/{created['sessionId']}")
            # The build reused the live preview (idempotent per project) and verified on it.
            assert session["outputs"]["preview_url"] == url
            codegen = next(r for r in await services.store.list_runs(project_id=UUID(pid))
                           if r.agent_name == "codegen")  # fmt: skip
            assert codegen.verification_evidence[-1]["served_by"] == "preview"
            await client.request(
                "POST", "/sessions/stop", json_body={"sessionId": started["sessionId"]}
            )
    finally:
        await services.close()
        machines = LocalMachines(tmp_path)
        for machine in await machines.list_ours():
            await machines.destroy(machine.id)


async def test_hostile_titles_stay_data_in_the_generated_app(
    api: tuple[RemoteClient, Services],
) -> None:
    """User text is data: through the whole pipeline, a title built to break out of a comment,
    a string or a script tag appears in no script or stylesheet, and the app still verifies."""
    client, services = api
    title = 'Notes\nalert("pwned")// \u2028</script><script>alert(1)</script> "${x}`'
    session, _ = await build(client, title + "\n\nKeep notes", template="saas")
    assert session["status"] == "succeeded", session
    files = await services.store.get_files(UUID(session["projectId"]))
    for path, content in files.items():
        if path.endswith((".js", ".css")):
            assert 'alert("pwned")' not in content, path
            assert "alert(1)" not in content, path
            assert "\u2028" not in content, path
    html = files["index.html"]
    assert "<script>alert(1)</script>" not in html
    assert '\nalert("pwned")' not in html  # no line of the page starts with the user's code
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, escaped
