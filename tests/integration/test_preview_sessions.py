"""The preview session API (seed 003's contract) on real Postgres, with Fly through FlyFake."""

from __future__ import annotations

import asyncio
import uuid

from previews.ports import PreviewSession
from schemas.status import PreviewStatus
from tests.integration.preview_rig import FlyStack, stack_fixture  # noqa: F401 - the fixture

START = "/sessions/start"
STOP = "/sessions/stop"


def status_url(session_id: object) -> str:
    return f"/sessions/{session_id}/status"


async def test_start_boots_a_machine_and_answers_the_contract(stack: FlyStack) -> None:
    user = await stack.user()
    project = await stack.project(user)

    response = await stack.client.post(
        START, json={"projectId": str(project.id)}, headers=stack.auth(user)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"sessionId", "containerUrl"}
    assert body["status"] == "active"
    machines = stack.ours_alive()
    assert len(machines) == 1
    assert (
        body["containerUrl"] == f"https://myyc-previews.fly.dev/?_myyc_instance={machines[0]['id']}"
    )
    status = await stack.client.get(status_url(body["sessionId"]), headers=stack.auth(user))
    assert status.status_code == 200
    assert {
        k: status.json()[k] for k in ("sessionId", "status", "containerUrl", "containerId")
    } == {
        "sessionId": body["sessionId"],
        "status": "active",
        "containerUrl": body["containerUrl"],
        "containerId": machines[0]["id"],
    }
    assert (await stack.store.get_project(project.id)).preview_url == body["containerUrl"]
    config = machines[0]["config"]
    assert config["metadata"]["session_id"] == body["sessionId"]
    assert config["env"]["MYYC_SESSION_ID"] == body["sessionId"]
    assert config["env"]["MYYC_PREVIEW_TOKEN"]  # the owner-scoped token for the container


async def test_every_lifecycle_step_is_logged(stack: FlyStack) -> None:
    project = await stack.project()
    session = await stack.previews.start(project.id, _service())
    await stack.previews.stop(session.id, _service())

    events = await stack.events(project.id)

    assert {e.type for e in events} == {"preview"}
    messages = [e.message for e in events]
    assert messages[0] == "creating a preview"
    assert any(m.startswith("machine ") and m.endswith("created (fly)") for m in messages)
    assert any(m.startswith("preview active at") for m in messages)
    assert "preview stopped" in messages
    assert messages[-1].endswith("destroyed")
    assert all(e.data and e.data["sessionId"] == str(session.id) for e in events)


async def test_start_is_idempotent_per_project(stack: FlyStack) -> None:
    user = await stack.user()
    project = await stack.project(user)
    first = await stack.client.post(
        START, json={"projectId": str(project.id)}, headers=stack.auth(user)
    )
    stack.clock.advance(60)
    second = await stack.client.post(
        START, json={"projectId": str(project.id)}, headers=stack.auth(user)
    )

    assert second.json()["sessionId"] == first.json()["sessionId"]
    assert second.json()["containerUrl"] == first.json()["containerUrl"]
    assert len(stack.ours_alive()) == 1
    # Reuse pushes the expiry back.
    row = await stack.previews_store.get_session(uuid.UUID(first.json()["sessionId"]))
    assert row.expires_at is not None
    assert row.expires_at.timestamp() == stack.clock() + 30 * 60


async def test_concurrent_starts_share_one_session(stack: FlyStack) -> None:
    project = await stack.project()
    results = await asyncio.gather(
        *(stack.previews.start(project.id, _service()) for _ in range(4))
    )
    assert len({r.id for r in results}) == 1
    assert len(stack.ours_alive()) == 1


async def test_per_user_cap_on_live_previews(stack: FlyStack) -> None:
    user = await stack.user()
    projects = [await stack.project(user) for _ in range(3)]
    started = []
    for project in projects[:2]:
        r = await stack.client.post(
            START, json={"projectId": str(project.id)}, headers=stack.auth(user)
        )
        assert r.status_code == 200
        started.append(r.json()["sessionId"])

    refused = await stack.client.post(
        START, json={"projectId": str(projects[2].id)}, headers=stack.auth(user)
    )

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert len(stack.ours_alive()) == 2
    # Another user is not affected; stopping one frees a slot.
    other = await stack.user()
    mine = await stack.project(other)
    ok = await stack.client.post(START, json={"projectId": str(mine.id)}, headers=stack.auth(other))
    assert ok.status_code == 200
    await stack.client.post(STOP, json={"sessionId": started[0]}, headers=stack.auth(user))
    again = await stack.client.post(
        START, json={"projectId": str(projects[2].id)}, headers=stack.auth(user)
    )
    assert again.status_code == 200


async def test_failed_boot_is_an_error_with_the_reason_and_no_machine(stack: FlyStack) -> None:
    user = await stack.user()
    project = await stack.project(user)
    stack.fleet.all_silent = True  # the dev server never answers

    response = await stack.client.post(
        START, json={"projectId": str(project.id)}, headers=stack.auth(user)
    )

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    sessions = await _sessions(stack, project.id)
    assert [s.status for s in sessions] == [PreviewStatus.error]
    assert sessions[0].error_message == "the dev server did not answer within 20s"
    assert sessions[0].ended_at is not None
    assert stack.ours_alive() == []
    assert (await stack.store.get_project(project.id)).preview_url is None
    # The next start is a fresh attempt.
    stack.fleet.all_silent = False
    retry = await stack.client.post(
        START, json={"projectId": str(project.id)}, headers=stack.auth(user)
    )
    assert retry.status_code == 200
    assert retry.json()["sessionId"] != str(sessions[0].id)


async def test_stop_ends_the_session_and_destroys_the_machine(stack: FlyStack) -> None:
    user = await stack.user()
    project = await stack.project(user)
    start = await stack.client.post(
        START, json={"projectId": str(project.id)}, headers=stack.auth(user)
    )
    session_id = start.json()["sessionId"]

    stopped = await stack.client.post(
        STOP, json={"sessionId": session_id}, headers=stack.auth(user)
    )

    assert stopped.status_code == 200
    assert stopped.json() == {"status": "ok"}
    row = await stack.previews_store.get_session(uuid.UUID(session_id))
    assert row.status == PreviewStatus.ended
    assert row.ended_at is not None
    assert stack.ours_alive() == []
    assert (await stack.store.get_project(project.id)).preview_url is None


async def test_stopping_an_ended_session_is_ok_and_changes_nothing(stack: FlyStack) -> None:
    user = await stack.user()
    project = await stack.project(user)
    start = await stack.client.post(
        START, json={"projectId": str(project.id)}, headers=stack.auth(user)
    )
    session_id = start.json()["sessionId"]
    await stack.client.post(STOP, json={"sessionId": session_id}, headers=stack.auth(user))
    before = await stack.previews_store.get_session(uuid.UUID(session_id))
    calls = len(stack.fly.log)

    again = await stack.client.post(STOP, json={"sessionId": session_id}, headers=stack.auth(user))

    assert again.status_code == 200
    assert again.json() == {"status": "ok"}
    assert await stack.previews_store.get_session(uuid.UUID(session_id)) == before
    assert len(stack.fly.log) == calls


async def test_unknown_sessions_are_404(stack: FlyStack) -> None:
    user = await stack.user()
    unknown = str(uuid.uuid4())
    status = await stack.client.get(status_url(unknown), headers=stack.auth(user))
    stop = await stack.client.post(STOP, json={"sessionId": unknown}, headers=stack.auth(user))
    start = await stack.client.post(START, json={"projectId": unknown}, headers=stack.auth(user))
    for response in (status, stop, start):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


async def test_someone_elses_session_and_project_are_404(stack: FlyStack) -> None:
    owner, intruder = await stack.user(), await stack.user()
    project = await stack.project(owner)
    start = await stack.client.post(
        START, json={"projectId": str(project.id)}, headers=stack.auth(owner)
    )
    session_id = start.json()["sessionId"]

    status = await stack.client.get(status_url(session_id), headers=stack.auth(intruder))
    stop = await stack.client.post(
        STOP, json={"sessionId": session_id}, headers=stack.auth(intruder)
    )
    steal = await stack.client.post(
        START, json={"projectId": str(project.id)}, headers=stack.auth(intruder)
    )
    files = await stack.client.get(f"/projects/{project.id}/files", headers=stack.auth(intruder))

    for response in (status, stop, steal, files):
        assert response.status_code == 404
    row = await stack.previews_store.get_session(uuid.UUID(session_id))
    assert row.status == PreviewStatus.active


async def test_routes_require_auth(stack: FlyStack) -> None:
    project = await stack.project()
    for method, url, body in (
        ("POST", START, {"projectId": str(project.id)}),
        ("POST", STOP, {"sessionId": str(uuid.uuid4())}),
        ("GET", status_url(uuid.uuid4()), None),
        ("GET", f"/projects/{project.id}/files", None),
        ("POST", f"/projects/{project.id}/files", {"filePath": "a", "content": ""}),
    ):
        response = await stack.client.request(method, url, json=body)
        assert response.status_code == 401, url
        assert response.json()["error"]["code"] == "unauthorized"


async def test_bad_bodies_are_422(stack: FlyStack) -> None:
    user = await stack.user()
    for body in ({}, {"projectId": "not-a-uuid"}, {"projectId": str(uuid.uuid4()), "x": 1}):
        response = await stack.client.post(START, json=body, headers=stack.auth(user))
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"


async def test_an_expired_live_session_is_replaced_on_start(stack: FlyStack) -> None:
    project = await stack.project()
    first = await stack.previews.start(project.id, _service())
    stack.clock.advance(31 * 60)

    second = await stack.previews.start(project.id, _service())

    assert second.id != first.id
    old = await stack.previews_store.get_session(first.id)
    assert old.status == PreviewStatus.ended
    assert old.error_message == "expired"
    assert [m["id"] for m in stack.ours_alive()] == [second.container_id]


async def test_a_stop_during_boot_leaves_no_machine(stack: FlyStack) -> None:
    project = await stack.project()
    stack.fleet.all_silent = True
    boot = asyncio.create_task(stack.previews.start(project.id, _service()))
    for _ in range(100_000):
        if stack.ours_alive():
            break
        await asyncio.sleep(0)
    live = await stack.previews_store.find_live(project.id)
    assert live is not None
    await stack.previews.stop(live.id, _service())
    stack.fleet.all_silent = False
    result = await boot
    assert result.status == PreviewStatus.ended
    assert stack.ours_alive() == []


async def test_project_files_round_trip_and_publish_file_update(stack: FlyStack) -> None:
    user = await stack.user()
    project = await stack.project(user)
    url = f"/projects/{project.id}/files"

    put = await stack.client.post(
        url, json={"filePath": "./src//App.tsx", "content": "export {}"}, headers=stack.auth(user)
    )
    listed = await stack.client.get(url, headers=stack.auth(user))

    assert put.status_code == 200
    assert put.json()["filePath"] == "src/App.tsx"
    assert put.json()["broadcast"] is False  # no Supabase locally
    body = listed.json()
    assert [(f["path"], f["content"]) for f in body["files"]] == [("src/App.tsx", "export {}")]
    events = await stack.events(project.id)
    assert [(e.type, e.data) for e in events] == [
        ("file:update", {"filePath": "src/App.tsx", "content": "export {}"})
    ]
    # The listing's cursor is the log's end when it was taken.
    later = await stack.client.get(url, headers=stack.auth(user))
    assert later.json()["cursor"] == f"{events[0].writer_id.hex}.{events[0].seq}"


async def test_file_paths_escaping_the_project_are_refused(stack: FlyStack) -> None:
    user = await stack.user()
    project = await stack.project(user)
    for path in ("../etc/passwd", "/etc/passwd", "a/../../b", "a\\b", "", "."):
        response = await stack.client.post(
            f"/projects/{project.id}/files",
            json={"filePath": path, "content": "x"},
            headers=stack.auth(user),
        )
        assert response.status_code == 422, path
        assert response.json()["error"]["field"] == "body.filePath"
    nul = await stack.client.post(
        f"/projects/{project.id}/files",
        json={"filePath": "a.txt", "content": "a\x00b"},
        headers=stack.auth(user),
    )
    assert nul.status_code == 422
    assert nul.json()["error"]["field"] == "body.content"
    assert await stack.previews_store.list_files(project.id) == []


class _Service:
    is_service = True
    user_id = None


def _service() -> _Service:
    return _Service()


async def _sessions(stack: FlyStack, project_id: uuid.UUID) -> list[PreviewSession]:
    """Every session of the project, oldest first (read straight from the table)."""
    rows = await stack.store._rows(
        "select id from preview_sessions where project_id = %s order by created_at", (project_id,)
    )
    return [await stack.previews_store.get_session(r["id"]) for r in rows]
