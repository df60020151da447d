"""The cleanup executor on real Postgres: Fly through FlyFake, and the local driver."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from previews.cleanup import run_cleanup, run_scheduled_cleanup
from previews.local_driver import LocalMachines
from previews.ports import MachineSpec
from schemas.settings import get_settings
from schemas.status import PreviewStatus
from tests.fakes.previews import FileSourceFake
from tests.integration.preview_rig import APP, FlyStack, stack_fixture  # noqa: F401 - the fixture
from tests.support import serve


class _Service:
    is_service = True
    user_id = None


async def _orphan(stack: FlyStack) -> str:
    """A machine tagged as ours whose session no row knows."""
    machine = await stack.previews.driver.create(MachineSpec(uuid.uuid4(), uuid.uuid4()))
    return machine.id


async def test_expired_sessions_are_ended_and_their_machines_destroyed(stack: FlyStack) -> None:
    project = await stack.project()
    session = await stack.previews.start(project.id, _Service())
    keeper = await stack.previews.start((await stack.project()).id, _Service())
    stack.clock.advance(20 * 60)
    # The keeper is started again before it expires: that pushes its expiry back.
    await stack.previews.start(keeper.project_id, _Service())
    stack.clock.advance(11 * 60)

    report = await run_cleanup(stack.previews, now=stack.clock())

    assert (report.expired, report.orphaned, report.destroyed, report.errors) == (1, 0, 1, 0)
    row = await stack.previews_store.get_session(session.id)
    assert row.status == PreviewStatus.ended
    assert row.error_message == "expired"
    assert (await stack.store.get_project(project.id)).preview_url is None
    assert [m["id"] for m in stack.ours_alive()] == [keeper.container_id]
    events = await stack.events(project.id)
    assert events[-1].message == "preview ended: expired"


async def test_orphans_are_destroyed_and_live_machines_kept(stack: FlyStack) -> None:
    live = await stack.previews.start((await stack.project()).id, _Service())
    ended = await stack.previews.start((await stack.project()).id, _Service())
    await stack.previews_store.update_session(ended.id, {"status": PreviewStatus.ended})
    orphans = {await _orphan(stack) for _ in range(3)} | {ended.container_id}

    report = await run_cleanup(stack.previews, now=stack.clock())

    assert (report.orphaned, report.destroyed, report.errors) == (4, 4, 0)
    assert [m["id"] for m in stack.ours_alive()] == [live.container_id]
    destroyed = {m["id"] for m in stack.fly.machines(APP) if m["state"] == "destroyed"}
    assert orphans <= destroyed


async def test_sessions_whose_machine_is_gone_are_ended(stack: FlyStack) -> None:
    session = await stack.previews.start((await stack.project()).id, _Service())
    assert session.container_id is not None
    await stack.previews.driver.destroy(session.container_id)  # behind our back

    report = await run_cleanup(stack.previews, now=stack.clock())

    assert report.gone == 1
    row = await stack.previews_store.get_session(session.id)
    assert row.status == PreviewStatus.ended
    assert row.error_message == "machine gone"


async def test_cleanup_is_idempotent(stack: FlyStack) -> None:
    await stack.previews.start((await stack.project()).id, _Service())
    await _orphan(stack)
    stack.clock.advance(31 * 60)
    first = await run_cleanup(stack.previews, now=stack.clock())
    calls = len(stack.fly.log)

    second = await run_cleanup(stack.previews, now=stack.clock())

    assert (first.expired, first.orphaned, first.destroyed) == (1, 1, 2)
    assert second.to_json() == {
        "expired": 0, "orphaned": 0, "destroyed": 0, "gone": 0, "errors": 0,
        "dry_run": False, "problems": [],
    }  # fmt: skip
    assert len(stack.fly.log) == calls + 1  # the one list call
    assert stack.ours_alive() == []


async def test_dry_run_changes_nothing(stack: FlyStack) -> None:
    session = await stack.previews.start((await stack.project()).id, _Service())
    await _orphan(stack)
    stack.clock.advance(31 * 60)

    report = await run_cleanup(stack.previews, now=stack.clock(), dry_run=True)

    assert (report.expired, report.orphaned, report.destroyed, report.dry_run) == (1, 1, 2, True)
    assert len(stack.ours_alive()) == 2
    assert (await stack.previews_store.get_session(session.id)).status == PreviewStatus.active


async def test_a_machine_created_during_the_sweep_is_not_touched(stack: FlyStack) -> None:
    """Machines are listed before sessions: a session started in between keeps its machine."""
    project = await stack.project()
    machines = await stack.previews.driver.list_ours()
    session = await stack.previews.start(project.id, _Service())
    from previews.cleanup import MachineView, SessionView, plan_cleanup

    sessions = await stack.previews_store.list_live()
    plan = plan_cleanup(
        [SessionView.of(s) for s in sessions], [MachineView.of(m) for m in machines], stack.clock()
    )
    # The session is active with a machine absent from the (earlier) listing: "gone"
    # candidates are confirmed against the driver before anything is ended.
    assert plan.gone == (str(session.id),)
    report = await run_cleanup(stack.previews, now=stack.clock())
    assert report.gone == 0
    assert (await stack.previews_store.get_session(session.id)).status == PreviewStatus.active


async def test_local_cleanup_sees_previews_started_by_another_process(
    tmp_path: Path, stack: FlyStack
) -> None:
    source = FileSourceFake({"index.html": "x"})
    async with serve(source) as base:
        starter = LocalMachines(tmp_path / "local")
        machine = await starter.create(
            MachineSpec(uuid.uuid4(), uuid.uuid4(), {"MYYC_API_URL": base})
        )
        stack.previews.driver = LocalMachines(tmp_path / "local")  # what `myyc cleanup` builds
        report = await run_cleanup(stack.previews)
        assert (report.orphaned, report.destroyed) == (1, 1)
        assert await starter.get(machine.id) is None
        await starter.close()


async def test_scheduled_cleanup_builds_everything_from_settings(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("MYYC_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    source = FileSourceFake({"index.html": "x"})
    try:
        async with serve(source) as base:
            orphan = await LocalMachines(tmp_path).create(
                MachineSpec(uuid.uuid4(), uuid.uuid4(), {"MYYC_API_URL": base})
            )
            report = await run_scheduled_cleanup()
    finally:
        get_settings.cache_clear()
    assert report["orphaned"] == 1
    assert report["destroyed"] == 1
    assert await LocalMachines(tmp_path).get(orphan.id) is None
