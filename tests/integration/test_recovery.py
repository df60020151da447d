"""Nothing live without an owner: leases, dead owners, stalled runs, crash loops, model faults.

Real Postgres, the real orchestrator and graph; the crash matrix with real `kill -9` is in
test_crash_resume.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from pydantic import SecretStr

from agents.recovery import owner_is_dead, owner_name, recover_once
from api.app import create_app
from core.services import Services
from local.remote import RemoteClient
from schemas.pipeline import PIPELINE
from schemas.rows import NewProject
from schemas.settings import Settings
from tests.fakes.openai import DEFAULT_KEY, FakeOpenAI
from tests.support import serve

SECRET = "test-hmac-secret-0123456789"


def _settings(db_url: str, data_dir: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {"database_url": db_url, "myyc_data_dir": data_dir,
                              "myyc_hmac_secret": SecretStr(SECRET)}  # fmt: skip
    values.update(extra)
    return Settings(**values)


@pytest.fixture
async def services(db_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    opened = await Services.open(_settings(db_url, tmp_path, build_lease_seconds=2.0))
    try:
        yield opened
    finally:
        await opened.close()


async def _spawned(services: Services) -> tuple[UUID, UUID]:
    spawned = await services.store.spawn_build(
        NewProject(title="Recovered app"), PIPELINE, template="saas", vibe_text="Recovered app",
        options={},
    )  # fmt: skip
    return spawned.project_id, spawned.build_id


def _sql(db_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _gone_pid() -> str:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def test_an_owner_is_dead_only_when_its_process_on_this_host_is_gone() -> None:
    me = owner_name()
    assert not owner_is_dead(me)
    host = me.split(":")[0]
    gone = _gone_pid()
    assert owner_is_dead(f"{host}:{gone}:abcd1234")
    assert not owner_is_dead(f"another-host:{gone}:abcd1234")
    assert not owner_is_dead("not an owner")


async def test_a_live_lease_is_not_taken_and_an_expired_one_is_a_resume(
    services: Services, db_url: str
) -> None:
    _, bid = await _spawned(services)
    store = services.store
    first = await store.claim_build(bid, "host-a:1:aaaa", 30)
    assert first is not None
    assert first.status.value == "running"
    assert first.resume_count == 0
    assert await store.claim_build(bid, "host-b:2:bbbb", 30) is None
    assert await store.renew_build_lease(bid, "host-b:2:bbbb", 30) is None
    # A dead owner named by the caller need not be waited out.
    taken = await store.claim_build(bid, "host-b:2:bbbb", 30, dead_owner="host-a:1:aaaa")
    assert taken is not None
    assert taken.lease_owner == "host-b:2:bbbb"
    assert taken.resume_count == 1
    _sql(db_url, "update build_sessions set lease_expires_at = now() - interval '1 s'")
    assert [s.id for s in await store.reclaimable_builds(2.0)] == [bid]
    again = await store.claim_build(bid, "host-c:3:cccc", 30)
    assert again is not None
    assert again.resume_count == 2


async def test_recovery_resumes_a_build_whose_owner_died(services: Services, db_url: str) -> None:
    pid, bid = await _spawned(services)
    dead = await asyncio.to_thread(_gone_pid)
    host = services.owner.split(":")[0]
    # A build mid-flight whose owner (a process on this host) is gone, lease still "valid".
    assert await services.store.claim_build(bid, f"{host}:{dead}:deadbeef", 300) is not None
    done = await recover_once(services)
    assert done.resumed_builds == 1
    for _ in range(600):
        session = await services.store.get_session(bid)
        if session.status.value == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert session.status.value == "succeeded"
    assert session.resume_count == 1
    project = await services.store.get_project(pid)
    assert project.status.value == "completed"


async def test_a_stalled_run_of_a_live_build_is_failed_with_an_alert(
    services: Services, db_url: str
) -> None:
    pid, bid = await _spawned(services)
    assert await services.store.claim_build(bid, services.owner, 300) is not None
    run = next(r for r in await services.store.list_runs(project_id=pid)
               if r.agent_name == "codegen")  # fmt: skip
    await services.reporter.start_run(run_id=run.id)
    _sql(db_url, "update agent_runs set heartbeat_at = now() - interval '2 hours' where id = %s",
         run.id)  # fmt: skip
    done = await recover_once(services)
    assert done.stalled_runs == 1
    stalled = await services.store.get_run(run.id)
    assert stalled.status.value == "failed"
    assert stalled.error_code == "run_stalled"
    await services.writer.flush()
    alerts = _sql(db_url, "select message from project_logs where type = 'alert'"
                  " and project_id = %s", pid)  # fmt: skip
    assert len(alerts) == 1
    assert "heartbeat" in alerts[0][0]
    # Once failed it is not stalled any more: a second pass does nothing.
    assert (await recover_once(services)).stalled_runs == 0


async def test_a_build_that_keeps_crashing_is_failed_as_stalled(
    services: Services, db_url: str
) -> None:
    pid, bid = await _spawned(services)
    limit = services.settings.max_build_resumes
    _sql(db_url, "update build_sessions set resume_count = %s, lease_owner = 'h:1:x',"
         " lease_expires_at = now() - interval '1 s' where id = %s", limit, bid)  # fmt: skip
    result = await services.dispatcher.call("orchestrator", project_id=str(pid),
                                            build_id=str(bid))  # fmt: skip
    assert result["status"] == "failed"
    session = await services.store.get_session(bid)
    assert session.status.value == "failed"
    assert session.error_code == "build_stalled"
    project = await services.store.get_project(pid)
    assert project.status.value == "failed"
    runs = await services.store.list_runs(project_id=pid)
    assert {r.status.value for r in runs} == {"canceled"}


@pytest.fixture
async def model() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    async with serve(fake) as url:
        yield fake, url + "/v1"


PLAN = {"summary": "s", "features": [{"key": "notes", "feature": "Notes"}],
        "files": [{"path": "index.html"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("script", "code", "words"),
    [
        # 5xx on every attempt: the provider's retries run out.
        (lambda f: f.fail(500, times=20), "model_unavailable", "500"),
        (lambda f: f.fail(429, retry_after=0.01, times=20), "model_unavailable", "429"),
        (lambda f: f.fail(401), "model_error", "401"),
        # A plan that is never valid JSON: sent back, then the run fails.
        (
            lambda f: [f.script("{not json", chunk=4) for _ in range(3)],
            "model_output_invalid",
            "plan",
        ),
        # A valid plan, then files at unsafe paths only.
        (
            lambda f: [
                f.script(json.dumps(PLAN), chunk=50),
                *[f.script("@@file ../../etc/passwd\nx\n@@end\n") for _ in range(3)],
            ],
            "model_output_invalid",
            "files",
        ),
    ],
)
async def test_a_model_that_keeps_failing_fails_the_build_with_a_stable_code(
    db_url: str,
    tmp_path: Path,
    model: tuple[FakeOpenAI, str],
    script: Any,
    code: str,
    words: str,
) -> None:
    fake, base_url = model
    script(fake)
    settings = _settings(db_url, tmp_path, openai_api_key=SecretStr(DEFAULT_KEY),
                         openai_base_url=base_url, llm_max_attempts=3)  # fmt: skip
    services = await Services.open(settings, recover=True)
    try:
        async with serve(create_app(services)) as base, RemoteClient(base, SECRET) as client:
            created = await client.request(
                "POST", "/sessions", json_body={"vibeText": "Notes", "template": "saas",
                                                "options": {"model": {"provider": "openai"}}},
            )  # fmt: skip
            events: list[Any] = []
            final = await asyncio.wait_for(client.follow(created["projectId"], events.append), 60)
            assert final == "failed"
            session = await client.request("GET", f"/sessions/{created['sessionId']}")
    finally:
        await services.close()
    assert session["status"] == "failed"
    assert session["errorCode"] == code
    assert words in session["error"]
    assert DEFAULT_KEY not in json.dumps(session)
    errors = [e.data["message"] for e in events if e.data.get("level") == "error"]
    assert errors
    assert all(DEFAULT_KEY not in m for m in errors)
