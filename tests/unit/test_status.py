"""The agent-run state machine of seed 001 (`schemas.status`), as a table test.

The expected table below is written out by hand from seed 001's status flow (and
ARCHITECTURE.md: `failed` and `canceled` from any live state, nothing out of a terminal
state). Every one of the 10 x 10 (current, target) pairs is checked against it, so a
transition added to or dropped from `RUN_TRANSITIONS` fails here.
"""

from __future__ import annotations

import itertools

import pytest

from schemas.status import (
    LIVE_RUN_STATUSES,
    RUN_TRANSITIONS,
    TERMINAL_RUN_STATUSES,
    RunStatus,
    can_transition,
)

S = RunStatus

#: The seed flow, one edge per line.
FLOW_EDGES: list[tuple[RunStatus, RunStatus]] = [
    (S.pending, S.in_progress),
    (S.in_progress, S.awaiting_verification),
    (S.awaiting_verification, S.verification_in_progress),
    (S.verification_in_progress, S.verification_passed),
    (S.verification_in_progress, S.verification_failed),
    (S.verification_passed, S.completed),
    (S.verification_failed, S.in_progress),  # retry
    (S.verification_failed, S.escalated_to_human),
    (S.escalated_to_human, S.in_progress),
    (S.escalated_to_human, S.completed),
    (S.in_progress, S.completed),  # work that needs no verification
]

LIVE = [
    S.pending,
    S.in_progress,
    S.awaiting_verification,
    S.verification_in_progress,
    S.verification_passed,
    S.verification_failed,
    S.escalated_to_human,
]
TERMINAL = [S.completed, S.failed, S.canceled]

#: failed and canceled are reachable from every live state.
ABORT_EDGES: list[tuple[RunStatus, RunStatus]] = [
    (live, end) for live in LIVE for end in (S.failed, S.canceled)
]

LEGAL: frozenset[tuple[RunStatus, RunStatus]] = frozenset(FLOW_EDGES + ABORT_EDGES)

ILLEGAL_SAMPLE: list[tuple[RunStatus, RunStatus]] = [
    (S.pending, S.completed),
    (S.pending, S.awaiting_verification),
    (S.pending, S.verification_passed),
    (S.completed, S.in_progress),
    (S.completed, S.failed),
    (S.failed, S.in_progress),
    (S.canceled, S.pending),
    (S.awaiting_verification, S.completed),
    (S.awaiting_verification, S.verification_passed),
    (S.verification_in_progress, S.completed),
    (S.verification_passed, S.in_progress),
    (S.verification_failed, S.completed),
    (S.verification_failed, S.verification_passed),
    (S.escalated_to_human, S.verification_passed),
    (S.in_progress, S.pending),
    (S.in_progress, S.in_progress),
]


def _pair_id(pair: tuple[RunStatus, RunStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_live_and_terminal_partition_every_status() -> None:
    assert set(LIVE_RUN_STATUSES) == set(LIVE)
    assert set(TERMINAL_RUN_STATUSES) == set(TERMINAL)
    assert set(LIVE) | set(TERMINAL) == set(RunStatus)
    assert len(RunStatus) == 10


def test_transition_table_has_every_status_as_a_key() -> None:
    assert set(RUN_TRANSITIONS) == set(RunStatus)


@pytest.mark.parametrize("pair", FLOW_EDGES, ids=_pair_id)
def test_seed_flow_transition_is_legal(pair: tuple[RunStatus, RunStatus]) -> None:
    current, target = pair
    assert can_transition(current, target)
    assert target in RUN_TRANSITIONS[current]


@pytest.mark.parametrize("pair", ABORT_EDGES, ids=_pair_id)
def test_failed_and_canceled_from_every_live_state(pair: tuple[RunStatus, RunStatus]) -> None:
    current, target = pair
    assert can_transition(current, target)


@pytest.mark.parametrize("terminal", TERMINAL, ids=lambda s: s.value)
def test_nothing_leaves_a_terminal_state(terminal: RunStatus) -> None:
    assert RUN_TRANSITIONS[terminal] == frozenset()
    for target in RunStatus:
        assert not can_transition(terminal, target), target


@pytest.mark.parametrize("pair", ILLEGAL_SAMPLE, ids=_pair_id)
def test_illegal_transition_is_rejected(pair: tuple[RunStatus, RunStatus]) -> None:
    current, target = pair
    assert pair not in LEGAL  # the sample itself must not contradict the table
    assert not can_transition(current, target)
    assert target not in RUN_TRANSITIONS[current]


@pytest.mark.parametrize("pair", list(itertools.product(RunStatus, RunStatus)), ids=_pair_id)
def test_every_pair_matches_the_expected_table(pair: tuple[RunStatus, RunStatus]) -> None:
    current, target = pair
    assert can_transition(current, target) is (pair in LEGAL)


def test_no_status_moves_to_itself() -> None:
    for status in RunStatus:
        assert not can_transition(status, status)


def test_every_status_is_reachable_from_pending() -> None:
    reached = {S.pending}
    frontier = [S.pending]
    while frontier:
        current = frontier.pop()
        for target in RUN_TRANSITIONS[current]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(RunStatus)


@pytest.mark.parametrize("live", LIVE, ids=lambda s: s.value)
def test_completed_is_reachable_from_every_live_state(live: RunStatus) -> None:
    reached = {live}
    frontier = [live]
    while frontier:
        for target in RUN_TRANSITIONS[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert S.completed in reached


def test_accepts_plain_strings_of_the_enum() -> None:
    # StrEnum values compare equal to their strings; callers holding DB strings get answers.
    assert can_transition(RunStatus("pending"), RunStatus("in_progress"))
    with pytest.raises(ValueError, match="bogus"):
        RunStatus("bogus")
