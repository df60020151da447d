"""The cleanup decision: a table of cases, and properties over arbitrary worlds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from previews.cleanup import CleanupPlan, MachineView, SessionView, plan_cleanup

NOW = 1_000.0


def s(sid: str, status: str = "active", container: str | None = None, expires: float | None = 2e3):
    return SessionView(sid, status, container, expires)


def m(mid: str, session: str | None = None, state: str = "started") -> MachineView:
    return MachineView(mid, session, state)


CASES = [
    pytest.param([], [], CleanupPlan(), id="nothing"),
    pytest.param(
        [s("a", container="m1")], [m("m1", "a")], CleanupPlan(), id="live-session-keeps-machine"
    ),
    pytest.param(
        [s("a", container="m1", expires=NOW)],
        [m("m1", "a")],
        CleanupPlan(expire=("a",), destroy=("m1",)),
        id="expired-at-now",
    ),
    pytest.param(
        [s("a", status="ended", container="m1")],
        [m("m1", "a")],
        CleanupPlan(destroy=("m1",), orphans=("m1",)),
        id="ended-session-machine-is-orphan",
    ),
    pytest.param(
        [], [m("m9", None)], CleanupPlan(destroy=("m9",), orphans=("m9",)), id="untagged-session"
    ),
    pytest.param(
        [s("a", status="creating", container=None)],
        [m("m1", "a", "starting")],
        CleanupPlan(),
        id="booting-machine-owned-by-metadata",
    ),
    pytest.param(
        [s("a", container="m1")], [], CleanupPlan(gone=("a",)), id="active-session-machine-gone"
    ),
    pytest.param(
        [s("a", container="m1")],
        [m("m1", "a", "stopped")],
        CleanupPlan(gone=("a",)),
        id="active-session-machine-dead",
    ),
    pytest.param(
        [s("a", status="creating", container="m1")], [], CleanupPlan(), id="creating-not-gone"
    ),
    pytest.param(
        [s("a", status="error", container="m1")],
        [m("m1", "a", "destroying")],
        CleanupPlan(),
        id="already-going",
    ),
    pytest.param(
        [s("a", container="m1", expires=None)], [m("m1", "a")], CleanupPlan(), id="never-expires"
    ),
    pytest.param(
        [s("a", container="m1", expires=10), s("b", container="m2")],
        [m("m1", "a"), m("m2", "b"), m("m3", "a")],
        CleanupPlan(expire=("a",), destroy=("m1", "m3")),
        id="expired-session-all-its-machines",
    ),
]


@pytest.mark.parametrize(("sessions", "machines", "expected"), CASES)
def test_plan(sessions, machines, expected) -> None:
    assert plan_cleanup(sessions, machines, NOW) == expected


# ------------------------------------------------------------------------------ properties

IDS = st.sampled_from([f"s{i}" for i in range(6)])
MIDS = st.sampled_from([f"m{i}" for i in range(8)])
STATUSES = st.sampled_from(["creating", "active", "ended", "error"])
STATES = st.sampled_from(["created", "starting", "started", "stopped", "failed", "destroying"])
TIMES = st.one_of(st.none(), st.floats(min_value=0, max_value=2_000, allow_nan=False))

sessions_st = st.lists(
    st.builds(SessionView, IDS, STATUSES, st.one_of(st.none(), MIDS), TIMES),
    max_size=8,
    unique_by=lambda v: v.id,
)
machines_st = st.lists(
    st.builds(MachineView, MIDS, st.one_of(st.none(), IDS), STATES),
    max_size=8,
    unique_by=lambda v: v.id,
)
now_st = st.floats(min_value=0, max_value=2_000, allow_nan=False)


def _live_unexpired(view: SessionView, now: float) -> bool:
    return view.status in ("creating", "active") and (
        view.expires_at is None or view.expires_at > now
    )


@settings(max_examples=500, deadline=None)
@given(sessions_st, machines_st, now_st)
def test_never_touches_the_machine_of_a_live_unexpired_session(sessions, machines, now) -> None:
    plan = plan_cleanup(sessions, machines, now)
    by_id = {v.id: v for v in machines}
    for machine_id in plan.destroy:
        for session in sessions:
            if not _live_unexpired(session, now):
                continue
            assert session.container_id != machine_id
            assert by_id.get(machine_id, m(machine_id)).session_id != session.id


@settings(max_examples=300, deadline=None)
@given(sessions_st, machines_st, now_st)
def test_plan_is_complete_and_consistent(sessions, machines, now) -> None:
    plan = plan_cleanup(sessions, machines, now)
    listed = {v.id for v in machines}
    live = [v for v in sessions if v.status in ("creating", "active")]
    # Only listed machines are destroyed, each once; orphans are a subset.
    assert set(plan.destroy) <= listed
    assert len(set(plan.destroy)) == len(plan.destroy)
    assert set(plan.orphans) <= set(plan.destroy)
    # Exactly the live sessions past expiry are expired.
    assert set(plan.expire) == {
        v.id for v in live if v.expires_at is not None and v.expires_at <= now
    }
    # Every listed machine nobody live can own, not already going, is cleaned up.
    owners = {v.container_id for v in live} | {v.id for v in live}
    for machine in machines:
        owned = machine.id in owners or machine.session_id in {v.id for v in live}
        if not owned and machine.state != "destroying":
            assert machine.id in plan.orphans
    # Gone sessions are live, unexpired and active.
    for sid in plan.gone:
        view = next(v for v in sessions if v.id == sid)
        assert view.status == "active"
        assert _live_unexpired(view, now)


@settings(max_examples=200, deadline=None)
@given(sessions_st, machines_st, now_st)
def test_plan_is_idempotent_once_applied(sessions, machines, now) -> None:
    """Applying a plan (ending sessions, removing machines) leaves nothing more to do."""
    plan = plan_cleanup(sessions, machines, now)
    ended = set(plan.expire) | set(plan.gone)
    after_sessions = [
        SessionView(v.id, "ended", v.container_id, v.expires_at) if v.id in ended else v
        for v in sessions
    ]
    after_machines = [v for v in machines if v.id not in plan.destroy]
    again = plan_cleanup(after_sessions, after_machines, now)
    assert again.expire == ()
    assert again.gone == ()
    # Machines of sessions ended as gone become orphans on the next pass (by design, the
    # executor destroys a dead one right away); nothing else is left.
    gone_machines = {v.container_id for v in sessions if v.id in plan.gone}
    assert set(again.destroy) <= gone_machines | {
        v.id for v in machines if v.session_id in plan.gone
    }
