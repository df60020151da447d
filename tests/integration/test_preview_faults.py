"""Preview sessions under Fly faults: 429 bursts, 5xx, lost answers, lease conflicts, wait
timeouts and capacity errors. Every session ends in a correct state, and after cleanup the
fake holds none of our machines.
"""

from __future__ import annotations

import random

import pytest

from previews.cleanup import run_cleanup
from previews.ports import PreviewLimitReached
from previews.sessions import PreviewBootFailed
from schemas.status import PreviewStatus
from tests.integration.preview_rig import APP, FlyStack, stack_fixture  # noqa: F401 - the fixture

CREATE = "/apps/{app_name}/machines"
MACHINE = "/apps/{app_name}/machines/{machine_id}"
LEASE = "/apps/{app_name}/machines/{machine_id}/lease"
WAIT = "/apps/{app_name}/machines/{machine_id}/wait"


class _Service:
    is_service = True
    user_id = None


SERVICE = _Service()


async def _settle(stack: FlyStack) -> None:
    """Cleanup until nothing is left (leases held by others expire in between)."""
    for _ in range(3):
        report = await run_cleanup(stack.previews, now=stack.clock())
        if report.errors == 0:
            break
        stack.clock.advance(61)
    # Destroys settle after the fake's transition delay.
    stack.clock.advance(stack.fly.transition_delay + 1)
    assert stack.ours_alive() == []


async def _all_rows(stack: FlyStack) -> list:
    rows = await stack.store._rows("select id from preview_sessions order by created_at", ())
    return [await stack.previews_store.get_session(r["id"]) for r in rows]


async def test_a_429_burst_on_create_is_waited_out(stack: FlyStack) -> None:
    stack.fly.fail_next(3, status=429, method="POST", route=CREATE)
    session = await stack.previews.start((await stack.project()).id, SERVICE)
    assert session.status == PreviewStatus.active
    assert len(stack.ours_alive()) == 1


async def test_5xx_on_reads_is_retried(stack: FlyStack) -> None:
    stack.fly.fail_next(2, status=502, method="GET", route=CREATE)  # the list
    stack.fly.fail_next(2, status=503, method="GET", route=WAIT)
    session = await stack.previews.start((await stack.project()).id, SERVICE)
    assert session.status == PreviewStatus.active


async def test_a_5xx_on_create_is_an_error_without_a_machine(stack: FlyStack) -> None:
    stack.fly.fail_next(1, status=503, method="POST", route=CREATE)
    project = await stack.project()
    with pytest.raises(PreviewBootFailed) as failed:
        await stack.previews.start(project.id, SERVICE)
    assert failed.value.session.status == PreviewStatus.error
    assert "could not create a preview machine" in (failed.value.session.error_message or "")
    assert stack.ours_alive() == []
    # The next start works.
    assert (await stack.previews.start(project.id, SERVICE)).status == PreviewStatus.active


async def test_a_create_whose_answer_is_lost_adopts_the_machine(stack: FlyStack) -> None:
    stack.fly.fail_next(1, method="POST", route=CREATE, fault="read_timeout")
    session = await stack.previews.start((await stack.project()).id, SERVICE)
    assert session.status == PreviewStatus.active
    machines = stack.ours_alive()
    assert [m["id"] for m in machines] == [session.container_id]


async def test_capacity_errors_fail_the_boot(stack: FlyStack) -> None:
    stack.fly.exhaust_capacity()
    with pytest.raises(PreviewBootFailed) as failed:
        await stack.previews.start((await stack.project()).id, SERVICE)
    assert failed.value.session.status == PreviewStatus.error
    assert "no capacity" in (failed.value.session.error_message or "")
    assert stack.ours_alive() == []


async def test_a_machine_that_never_starts_fails_the_boot_and_is_destroyed(
    stack: FlyStack,
) -> None:
    stack.fly.transition_delay = 10_000.0  # stuck in `starting`: every /wait answers 408
    with pytest.raises(PreviewBootFailed) as failed:
        await stack.previews.start((await stack.project()).id, SERVICE)
    assert "did not start within 20s" in (failed.value.session.error_message or "")
    assert stack.fly.count("GET", WAIT) >= 1
    await _settle(stack)


async def test_a_lease_held_elsewhere_delays_the_destroy_until_cleanup(stack: FlyStack) -> None:
    session = await stack.previews.start((await stack.project()).id, SERVICE)
    assert session.container_id is not None
    # Someone else (an operator, another tool) leases the machine for 60 s.
    async with stack.previews.driver._fly.lease(APP, session.container_id, ttl=60):  # type: ignore[attr-defined]
        pass
    held = await _lease_elsewhere(stack, session.container_id)

    stopped = await stack.previews.stop(session.id, SERVICE)

    assert stopped.status == PreviewStatus.ended  # the row says ended at once
    assert len(stack.ours_alive()) == 1  # the machine waits for the lease
    busy = await run_cleanup(stack.previews, now=stack.clock())
    assert (busy.orphaned, busy.destroyed, busy.errors) == (1, 0, 1)
    assert held
    stack.clock.advance(61)
    done = await run_cleanup(stack.previews, now=stack.clock())
    assert (done.destroyed, done.errors) == (1, 0)
    assert stack.ours_alive() == []


async def _lease_elsewhere(stack: FlyStack, machine_id: str) -> bool:
    import httpx

    async with httpx.AsyncClient(transport=stack.fly.transport()) as http:
        response = await http.post(
            f"http://fly.test/v1/apps/{APP}/machines/{machine_id}/lease",
            json={"ttl": 60},
            headers={"Authorization": "Bearer an-operator"},
        )
    return response.status_code == 201


@pytest.mark.parametrize("seed", range(4))
async def test_random_faults_never_leak_a_machine_or_a_live_row(stack: FlyStack, seed: int) -> None:
    rng = random.Random(seed)
    projects = [await stack.project() for _ in range(5)]
    faults = [
        lambda: stack.fly.fail_next(rng.randint(1, 4), status=429),
        lambda: stack.fly.fail_next(1, status=rng.choice([500, 502, 503])),
        lambda: stack.fly.fail_next(1, method="POST", route=CREATE, fault="read_timeout"),
        lambda: stack.fly.fail_next(1, method="DELETE", route=MACHINE, status=503),
        lambda: stack.fly.fail_next(1, method="POST", route=LEASE, status=500),
        lambda: stack.fly.exhaust_capacity(),
        lambda: stack.fly.restore_capacity(),
        lambda: setattr(stack.fleet, "all_silent", rng.random() < 0.3),
    ]
    for _ in range(12):
        rng.choice(faults)()
        project = rng.choice(projects)
        try:
            if rng.random() < 0.6:
                await stack.previews.start(project.id, SERVICE)
            else:
                live = await stack.previews_store.find_live(project.id)
                if live is not None:
                    await stack.previews.stop(live.id, SERVICE)
        except (PreviewBootFailed, PreviewLimitReached):
            pass
        if rng.random() < 0.2:
            stack.clock.advance(rng.choice([60, 31 * 60]))
    stack.fly.restore_capacity()
    stack.fleet.all_silent = False
    for project in projects:
        live = await stack.previews_store.find_live(project.id)
        if live is not None:
            await stack.previews.stop(live.id, SERVICE)

    await _settle(stack)

    rows = await _all_rows(stack)
    assert rows
    for row in rows:
        assert row.status in (PreviewStatus.ended, PreviewStatus.error), row
        assert row.ended_at is not None
        if row.status == PreviewStatus.error:
            assert row.error_message
