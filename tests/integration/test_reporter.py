"""RunReporter on real Postgres: seed 001's publisher API, state machine, rollup and log."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from agents.reporter import RunReporter
from schemas.errors import IllegalTransition, NotFound, ValidationFailed
from schemas.events import Cursor, Event
from schemas.rows import NewProject, NewRun
from schemas.status import ProjectStatus, RunStatus
from store.log_writer import LogWriter
from store.postgres import PostgresStore


@pytest.fixture
async def reporter(pg_store: PostgresStore):
    writer = await LogWriter(pg_store).start()
    yield RunReporter(pg_store, writer), writer
    await writer.close()


async def _events(store: PostgresStore, project: UUID) -> list[Event]:
    return await store.read_events(project, after=Cursor(), limit=10_000)


async def test_the_seed_flow_end_to_end(pg_store: PostgresStore, reporter) -> None:
    rep, writer = reporter
    project = (await pg_store.create_project(NewProject(title="flow"))).id
    run_id = await rep.start_run(agent_name="orchestrator", project_id=project, task_id=uuid4())
    assert (await pg_store.get_project(project)).status is ProjectStatus.running

    await rep.update_progress(run_id, step="Analyzing code structure", progress=25.0)
    await rep.update_status(run_id, "awaiting_verification", step="Waiting for verification")
    await rep.update_status(run_id, RunStatus.verification_in_progress)
    await rep.record_verification(run_id, passed=False, evidence={"tests": "2 failed"})
    await rep.update_status(run_id, RunStatus.in_progress, step="retrying")
    await rep.update_status(run_id, RunStatus.awaiting_verification)
    await rep.update_status(run_id, RunStatus.verification_in_progress)
    await rep.record_verification(run_id, passed=True, evidence={"tests": "all passed"})
    run = await rep.complete_run(run_id, result={"output": "Task completed successfully"})

    assert run.status is RunStatus.completed
    assert run.result == {"output": "Task completed successfully"}
    assert run.verification_attempts == 2
    assert [e["tests"] for e in run.verification_evidence] == ["2 failed", "all passed"]
    assert run.completed_at is not None
    assert run.heartbeat_at is not None
    done = await pg_store.get_project(project)
    assert (done.status, done.progress) == (ProjectStatus.completed, 100)

    await writer.flush()
    transitions = [
        (e.data or {}).get("to") for e in await _events(pg_store, project) if e.type == "run_status"
    ]
    assert transitions == [
        "pending", "in_progress", "awaiting_verification", "verification_in_progress",
        "verification_failed", "in_progress", "awaiting_verification",
        "verification_in_progress", "verification_passed", "completed",
    ]  # fmt: skip
    kinds = [e.type for e in await _events(pg_store, project)]
    assert kinds.count("project_status") == 2  # running, then completed


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], RunStatus.completed),  # in_progress → completed is legal; from pending it is not
        ([RunStatus.awaiting_verification], RunStatus.completed),
        ([RunStatus.completed], RunStatus.in_progress),
        ([RunStatus.failed], RunStatus.canceled),
    ],
)
async def test_an_illegal_transition_raises_and_writes_nothing(
    pg_store: PostgresStore, reporter, path: list[RunStatus], illegal: RunStatus
) -> None:
    rep, writer = reporter
    project = (await pg_store.create_project(NewProject(title="illegal"))).id
    run = await rep.create_run(NewRun(agent_name="github", project_id=project))
    if path:
        await rep.start_run(run_id=run.id)
        for status in path:
            await rep.update_status(run.id, status)
    await writer.flush()
    before = await pg_store.get_run(run.id)
    count = len(await _events(pg_store, project))
    with pytest.raises(IllegalTransition) as err:
        await rep.update_status(run.id, illegal)
    assert err.value.field == "status"
    await writer.flush()
    assert await pg_store.get_run(run.id) == before
    assert len(await _events(pg_store, project)) == count


async def test_bad_input_is_a_typed_error(pg_store: PostgresStore, reporter) -> None:
    rep, _ = reporter
    project = (await pg_store.create_project(NewProject(title="bad"))).id
    run_id = await rep.start_run(agent_name="planner", project_id=project)
    with pytest.raises(ValidationFailed) as err:
        await rep.update_status(run_id, "sleeping")
    assert err.value.field == "status"
    for progress in (-1.0, 100.5, float("nan")):
        with pytest.raises(ValidationFailed) as err:
            await rep.update_progress(run_id, step="x", progress=progress)
        assert err.value.field == "progress"
    with pytest.raises(NotFound):
        await rep.update_status(uuid4(), "completed")
    with pytest.raises(ValidationFailed) as err:
        await rep.start_run(agent_name="planner")
    assert err.value.field == "project_id"


async def test_a_failing_run_fails_the_project_with_its_error(
    pg_store: PostgresStore, reporter
) -> None:
    rep, writer = reporter
    project = (await pg_store.create_project(NewProject(title="fails"))).id
    planner = await rep.start_run(agent_name="planner", project_id=project)
    github = await rep.create_run(NewRun(agent_name="github", project_id=project))
    await rep.update_progress(planner, step="planning", progress=50)
    assert (await pg_store.get_project(project)).progress == 25  # mean of 50 and 0
    await rep.fail_run(planner, error="model refused the prompt")
    assert (await pg_store.get_project(project)).status is ProjectStatus.failed
    await rep.cancel_run(github.id)
    await writer.flush()
    errors = [e for e in await _events(pg_store, project) if e.level == "error"]
    assert any("model refused the prompt" in e.message for e in errors)
    assert (await pg_store.get_project(project)).status is ProjectStatus.failed


async def test_escalation_waits_for_a_person(pg_store: PostgresStore, reporter) -> None:
    rep, _ = reporter
    project = (await pg_store.create_project(NewProject(title="escalate"))).id
    run_id = await rep.start_run(agent_name="verifier", project_id=project)
    for status in ("awaiting_verification", "verification_in_progress"):
        await rep.update_status(run_id, status)
    await rep.record_verification(run_id, passed=False, evidence={"diff": "broken"})
    run = await rep.escalate(run_id, reason="three failed verifications")
    assert run.status is RunStatus.escalated_to_human
    assert (await pg_store.get_project(project)).status is ProjectStatus.running
    await rep.complete_run(run_id, result={"approved_by": "a person"})
    assert (await pg_store.get_project(project)).status is ProjectStatus.completed


async def test_concurrent_transitions_apply_once(pg_store: PostgresStore, reporter) -> None:
    rep, _ = reporter
    project = (await pg_store.create_project(NewProject(title="race"))).id
    run_id = await rep.start_run(agent_name="codegen", project_id=project)
    results = await asyncio.gather(
        *(rep.complete_run(run_id) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, IllegalTransition) for r in results if isinstance(r, BaseException))


async def test_a_restarted_agent_resumes_its_run(pg_store: PostgresStore, reporter) -> None:
    rep, writer = reporter
    project = (await pg_store.create_project(NewProject(title="crash"))).id
    run = await rep.create_run(NewRun(agent_name="planner", project_id=project))
    await rep.start_or_resume(run.id)
    await rep.update_progress(run.id, step="half way", progress=50)
    resumed = await rep.start_or_resume(run.id)  # the container died; Modal runs it again
    assert resumed.status is RunStatus.in_progress
    assert resumed.progress_percent == 50
    await rep.complete_run(run.id)
    with pytest.raises(IllegalTransition):
        await rep.start_or_resume(run.id)  # a finished run is not started again
    await writer.flush()
    resumes = [e for e in await _events(pg_store, project) if (e.data or {}).get("resumed")]
    assert len(resumes) == 1


async def test_concurrent_agents_log_a_project_status_change_once(
    pg_store: PostgresStore, reporter
) -> None:
    rep, writer = reporter
    project = (await pg_store.create_project(NewProject(title="together"))).id
    runs = [await rep.start_run(agent_name=f"agent{i}", project_id=project) for i in range(4)]
    await asyncio.gather(*(rep.complete_run(r) for r in runs))
    await writer.flush()
    changes = [
        (e.data or {}).get("status")
        for e in await _events(pg_store, project)
        if e.type == "project_status"
    ]
    assert changes == ["running", "completed"]
