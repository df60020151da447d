"""Verify, retry, escalate: a model (the real OpenAI SDK against the wire-faithful fake) writes
an app that fails verification; codegen gets the evidence back; after the last attempt a person
decides through an approval — approve, reject, retry — or the approval expires."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import pytest
from pydantic import SecretStr

from agents.filestream import format_files
from api.app import create_app
from core.services import Services
from local.remote import RemoteClient, RemoteError, StreamEvent
from schemas.settings import Settings
from tests.fakes.openai import DEFAULT_KEY, FakeOpenAI
from tests.support import serve

SECRET = "test-hmac-secret-0123456789"

PLAN = {
    "summary": "A notes app",
    "features": [{"key": "notes", "feature": "Write notes", "priority": "high"}],
    "files": [{"path": "index.html", "purpose": "the page"}, {"path": "app.js", "purpose": "js"}],
    "tables": [],
}
GOOD = {
    "index.html": '<!doctype html><html><body><section data-feature="notes"><h1>Notes</h1>'
    '</section><script src="app.js"></script></body></html>\n',
    "app.js": "const notes = [];\nconsole.log(notes.length);\n",
}
# The page works but the planned feature is missing: verification fails on `features`.
MISSING = {**GOOD, "index.html": '<!doctype html><html><body><h1>Notes</h1>'
           '<script src="app.js"></script></body></html>\n'}  # fmt: skip


@pytest.fixture
async def model() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    async with serve(fake) as url:
        yield fake, url + "/v1"


@pytest.fixture
async def api(
    db_url: str, tmp_path: Path, model: tuple[FakeOpenAI, str]
) -> AsyncIterator[tuple[RemoteClient, Services, FakeOpenAI]]:
    fake, base_url = model
    settings = Settings(
        database_url=db_url, myyc_data_dir=tmp_path, myyc_hmac_secret=SecretStr(SECRET),
        myyc_build_previews=False, openai_api_key=SecretStr(DEFAULT_KEY),
        openai_base_url=base_url, verify_max_attempts=2, build_lease_seconds=1.5,
        approval_timeout_minutes=60,
    )  # fmt: skip
    services = await Services.open(settings, recover=True)
    try:
        async with serve(create_app(services)) as base:
            services.api_url = base
            async with RemoteClient(base, SECRET) as client:
                yield client, services, fake
    finally:
        await services.close()


async def start(client: RemoteClient) -> tuple[str, str, list[StreamEvent], asyncio.Task[str]]:
    created = await client.request(
        "POST", "/sessions",
        json_body={"vibeText": "Notes", "template": "saas",
                   "options": {"model": {"provider": "openai"}}},
    )  # fmt: skip
    events: list[StreamEvent] = []
    follow = asyncio.create_task(client.follow(created["projectId"], events.append))
    return created["sessionId"], created["projectId"], events, follow


async def approval_token(events: list[StreamEvent], follow: asyncio.Task[str]) -> str:
    for _ in range(600):
        for e in events:
            if e.data.get("type") == "approval_requested":
                return str(e.data["data"]["token"])
        assert not follow.done(), [e.data.get("message") for e in events]
        await asyncio.sleep(0.05)
    raise AssertionError("no approval was requested")


def script_failing_build(fake: FakeOpenAI) -> None:
    fake.script(json.dumps(PLAN), chunk=40)
    fake.script(format_files(MISSING), chunk=40)
    fake.script(format_files(MISSING), chunk=40)


async def test_a_failed_verification_goes_back_to_codegen_with_the_evidence(
    api: tuple[RemoteClient, Services, FakeOpenAI],
) -> None:
    client, services, fake = api
    fake.script(json.dumps(PLAN), chunk=40)
    fake.script(format_files(MISSING), chunk=40)
    fake.script(format_files(GOOD), chunk=40)
    sid, pid, events, follow = await start(client)
    assert await asyncio.wait_for(follow, 60) == "completed"
    session = await client.request("GET", f"/sessions/{sid}")
    assert session["status"] == "succeeded"
    # The second codegen request carried the verifier's finding.
    assert "data-feature" in json.dumps(fake.requests[2].body["messages"])
    assert "features" in json.dumps(fake.requests[2].body["messages"])
    runs = {r.agent_name: r for r in await services.store.list_runs(project_id=UUID(pid))}
    codegen = runs["codegen"]
    assert codegen.status.value == "completed"
    assert codegen.verification_attempts == 2
    assert [e["passed"] for e in codegen.verification_evidence] == [False, True]
    mine = [e.data["data"] for e in events if e.data.get("type") == "run_status"]
    flow = [d["to"] for d in mine if d.get("run_id") == str(codegen.id) and "to" in d]
    assert flow == [
        "in_progress", "awaiting_verification", "verification_in_progress",
        "verification_failed", "in_progress", "awaiting_verification",
        "verification_in_progress", "verification_passed", "completed",
    ]  # fmt: skip
    costs = await client.request("GET", f"/projects/{pid}/costs")
    assert costs["calls"] == 3
    assert costs["inputTokens"] > 0


@pytest.mark.parametrize(
    ("decision", "final", "status", "code"),
    [
        ("approve", "completed", "succeeded", None),
        ("reject", "failed", "failed", "verification_failed"),
    ],
)
async def test_after_the_last_attempt_a_person_decides(
    api: tuple[RemoteClient, Services, FakeOpenAI],
    decision: str,
    final: str,
    status: str,
    code: str | None,
) -> None:
    client, services, fake = api
    script_failing_build(fake)
    sid, pid, events, follow = await start(client)
    token = await approval_token(events, follow)
    approval = await client.request("GET", f"/approvals/{token}")
    assert approval["status"] == "pending"
    assert approval["sessionId"] == sid
    assert "features" in approval["reason"]
    run = next(r for r in await services.store.list_runs(project_id=UUID(pid))
               if r.agent_name == "codegen")  # fmt: skip
    assert run.status.value == "escalated_to_human"
    project = await client.request("GET", f"/status/{pid}")
    assert project["status"] == "running"  # a build waiting on a person is not over

    decided = await client.request(
        "POST", f"/approvals/{token}", json_body={"decision": decision, "note": "looked at it"}
    )
    assert decided["status"] == decision
    assert await asyncio.wait_for(follow, 60) == final
    session = await client.request("GET", f"/sessions/{sid}")
    assert session["status"] == status
    assert session["errorCode"] == code
    assert session["outputs"]["decision"] == decision
    # Decided once: a second decision is refused and changes nothing.
    with pytest.raises(RemoteError) as caught:
        await client.request("POST", f"/approvals/{token}", json_body={"decision": "retry"})
    assert caught.value.status == 409


async def test_retry_sends_the_build_back_to_codegen(
    api: tuple[RemoteClient, Services, FakeOpenAI],
) -> None:
    client, _, fake = api
    script_failing_build(fake)
    fake.script(format_files(GOOD), chunk=40)
    sid, _, events, follow = await start(client)
    token = await approval_token(events, follow)
    await client.request("POST", f"/approvals/{token}", json_body={"decision": "retry"})
    assert await asyncio.wait_for(follow, 60) == "completed"
    session = await client.request("GET", f"/sessions/{sid}")
    assert session["status"] == "succeeded"
    assert session["outputs"]["verified"] is True


async def test_an_expired_approval_fails_the_build_with_its_reason(
    db_url: str, tmp_path: Path, model: tuple[FakeOpenAI, str]
) -> None:
    fake, base_url = model
    settings = Settings(
        database_url=db_url, myyc_data_dir=tmp_path, myyc_hmac_secret=SecretStr(SECRET),
        myyc_build_previews=False, openai_api_key=SecretStr(DEFAULT_KEY),
        openai_base_url=base_url, verify_max_attempts=2, build_lease_seconds=1.5,
        approval_timeout_minutes=0.01,
    )  # fmt: skip
    script_failing_build(fake)
    services = await Services.open(settings, recover=True)
    try:
        async with serve(create_app(services)) as base, RemoteClient(base, SECRET) as client:
            sid, _, events, follow = await start(client)
            token = await approval_token(events, follow)
            assert await asyncio.wait_for(follow, 60) == "failed"
            session = await client.request("GET", f"/sessions/{sid}")
            assert session["status"] == "failed"
            assert session["errorCode"] == "approval_expired"
            assert "expired" in session["error"]
            approval = await client.request("GET", f"/approvals/{token}")
            assert approval["status"] == "expired"
            with pytest.raises(RemoteError) as caught:
                await client.request("POST", f"/approvals/{token}",
                                     json_body={"decision": "approve"})  # fmt: skip
            assert caught.value.status == 409
    finally:
        await services.close()


async def test_bad_decisions_are_422(api: tuple[RemoteClient, Services, FakeOpenAI]) -> None:
    client, _, _ = api
    for body, field in (({"decision": "maybe"}, "decision"), ({}, "decision"),
                        ({"decision": "approve", "note": "x" * 5001}, "note")):  # fmt: skip
        with pytest.raises(RemoteError) as caught:
            await client.request("POST", "/approvals/some-token-0123456789abcdef", json_body=body)
        assert caught.value.status == 422
        assert field in caught.value.message
