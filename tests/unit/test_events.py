"""The resumable event cursor and message truncation of `schemas.events`.

Cursor: encode/parse round-trips (hypothesis), every malformed form is a ValidationFailed
naming the request field (`after` by default), and advance/seen give a reader who resumes
from an encoded cursor every later event exactly once however writers interleave.
truncate_message: messages within 64 KiB (UTF-8 bytes) pass unchanged; longer ones are cut
to at most 64 KiB, end with TRUNCATION_MARKER and never split a multi-byte character.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ErrorCode, ValidationFailed
from schemas.events import (
    MAX_MESSAGE_BYTES,
    TRUNCATION_MARKER,
    Cursor,
    Event,
    truncate_message,
)
from schemas.status import LogLevel

MAX_SEQ = 2**63 - 1
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None, max_examples=200)

W1 = uuid.UUID("a1a1a1a1-b2b2-4c3c-8d4d-e5e5e5e5e5e5")
W2 = uuid.UUID("22222222-2222-4222-8222-222222222222")
PROJECT = uuid.UUID("33333333-3333-4333-8333-333333333333")

uuids = st.uuids()
seqs = st.integers(min_value=1, max_value=MAX_SEQ)
positions = st.dictionaries(uuids, seqs, max_size=8)


def make_event(writer: uuid.UUID, seq: int) -> Event:
    return Event(
        id=uuid.uuid5(writer, str(seq)),
        project_id=PROJECT,
        agent_name="planner",
        level=LogLevel.info,
        type="log",
        message=f"event {seq}",
        timestamp=datetime(2026, 11, 21, tzinfo=UTC),
        writer_id=writer,
        seq=seq,
    )


# --------------------------------------------------------------------------- Cursor


@DETERMINISTIC
@given(positions)
def test_encode_then_parse_round_trips(pos: dict[uuid.UUID, int]) -> None:
    cursor = Cursor(pos)
    encoded = cursor.encode()
    parsed = Cursor.parse(encoded)
    assert parsed == cursor
    assert parsed.positions == pos
    # The encoding is canonical: encoding the parsed cursor gives the same string.
    assert parsed.encode() == encoded


@DETERMINISTIC
@given(positions)
def test_encoding_is_independent_of_insertion_order(pos: dict[uuid.UUID, int]) -> None:
    reversed_pos = dict(reversed(list(pos.items())))
    assert Cursor(pos).encode() == Cursor(reversed_pos).encode()


@DETERMINISTIC
@given(st.lists(st.tuples(uuids, seqs), min_size=1, max_size=8))
def test_parse_keeps_the_highest_seq_per_writer(parts: list[tuple[uuid.UUID, int]]) -> None:
    raw = "~".join(f"{w.hex}.{s}" for w, s in parts)
    expected: dict[uuid.UUID, int] = {}
    for w, s in parts:
        expected[w] = max(s, expected.get(w, 0))
    assert Cursor.parse(raw).positions == expected


def test_encoded_form_is_hex_dot_seq_joined_by_tilde() -> None:
    # Sorted by writer: W2 (2222…) before W1 (a1a1…), whatever the insertion order.
    assert Cursor({W1: 3, W2: 7}).encode() == f"{W2.hex}.7~{W1.hex}.3"
    assert Cursor().encode() == ""


@pytest.mark.parametrize("raw", [None, "", "   ", "\n"])
def test_absent_or_blank_cursor_is_the_start(raw: str | None) -> None:
    cursor = Cursor.parse(raw)
    assert cursor.positions == {}
    assert cursor == Cursor()


def test_surrounding_whitespace_is_ignored() -> None:
    assert Cursor.parse(f"  {W1.hex}.5 ").positions == {W1: 5}


def test_largest_seq_is_accepted() -> None:
    assert Cursor.parse(f"{W1.hex}.{MAX_SEQ}").positions == {W1: MAX_SEQ}


MALFORMED = {
    "bad-hex": f"{'g' * 32}.1",
    "uppercase-hex": f"{W1.hex.upper()}.1",  # W1 has letters, so upper() differs
    "short-hex": f"{W1.hex[:31]}.1",
    "long-hex": f"{W1.hex}0.1",
    "dashed-uuid": f"{W1}.1",
    "seq-zero": f"{W1.hex}.0",
    "seq-leading-zero": f"{W1.hex}.01",
    "seq-negative": f"{W1.hex}.-1",
    "seq-not-a-number": f"{W1.hex}.x",
    "seq-fraction": f"{W1.hex}.1.5",
    "seq-missing": f"{W1.hex}.",
    "missing-dot": f"{W1.hex}1",
    "writer-missing": ".1",
    "seq-over-int64": f"{W1.hex}.{MAX_SEQ + 1}",
    "seq-20-digits": f"{W1.hex}.{'9' * 20}",
    "seq-huge": f"{W1.hex}.{'9' * 400}",
    "empty-part": f"{W1.hex}.1~",
    "double-tilde": f"{W1.hex}.1~~{W2.hex}.2",
    "wrong-separator": f"{W1.hex}.1,{W2.hex}.2",
    "inner-space": f"{W1.hex}. 1",
    "too-long": "~".join([f"{W1.hex}.1"] * 2000),
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_cursor_is_a_validation_error_on_after(raw: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        Cursor.parse(raw)
    assert caught.value.field == "after"
    assert caught.value.code is ErrorCode.validation_error
    assert caught.value.detail().field == "after"


def test_malformed_cursor_names_the_given_field() -> None:
    with pytest.raises(ValidationFailed) as caught:
        Cursor.parse("nope", field="query.after")
    assert caught.value.field == "query.after"


@DETERMINISTIC
@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_fails_cleanly(raw: str) -> None:
    error: ValidationFailed | None = None
    try:
        cursor = Cursor.parse(raw)
    except ValidationFailed as exc:
        error = exc
    if error is not None:
        assert error.field == "after"
    else:
        assert Cursor.parse(cursor.encode()) == cursor


def test_advance_moves_forward_per_writer_only() -> None:
    cursor = Cursor()
    cursor.advance(make_event(W1, 3))
    assert cursor.positions == {W1: 3}
    cursor.advance(make_event(W1, 2))  # an older event never moves it back
    assert cursor.positions == {W1: 3}
    cursor.advance(make_event(W2, 1))
    cursor.advance(make_event(W1, 9))
    assert cursor.positions == {W1: 9, W2: 1}


def test_seen_is_at_or_before_the_writer_position() -> None:
    cursor = Cursor({W1: 5})
    assert cursor.seen(make_event(W1, 1))
    assert cursor.seen(make_event(W1, 5))
    assert not cursor.seen(make_event(W1, 6))
    assert not cursor.seen(make_event(W2, 1))  # another writer starts from zero


@st.composite
def interleaved_events(draw: st.DrawFn) -> list[Event]:
    """Events of a few writers, each in its own seq order, interleaved arbitrarily."""
    writers = draw(st.lists(uuids, min_size=1, max_size=4, unique=True))
    queues: dict[uuid.UUID, list[Event]] = {}
    for writer in writers:
        count = draw(st.integers(min_value=0, max_value=12))
        gaps = draw(st.lists(st.integers(1, 3), min_size=count, max_size=count))
        seq = 0
        queues[writer] = []
        for gap in gaps:
            seq += gap
            queues[writer].append(make_event(writer, seq))
    merged: list[Event] = []
    while any(queues.values()):
        live = sorted(w for w, q in queues.items() if q)
        merged.append(queues[draw(st.sampled_from(live))].pop(0))
    return merged


@DETERMINISTIC
@given(interleaved_events(), st.data())
def test_resuming_from_an_encoded_cursor_yields_each_later_event_once(
    events: list[Event], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(events)))
    cursor = Cursor()
    for event in events[:cut]:
        cursor.advance(event)
    resumed = Cursor.parse(cursor.encode())
    assert resumed == cursor
    remaining = [e for e in events if not resumed.seen(e)]
    assert remaining == events[cut:]
    assert all(resumed.seen(e) for e in events[:cut])


# --------------------------------------------------------------------------- truncation

MARKER_BYTES = len(TRUNCATION_MARKER.encode())


def test_limit_is_64_kib() -> None:
    assert MAX_MESSAGE_BYTES == 64 * 1024
    assert TRUNCATION_MARKER.encode().decode() == TRUNCATION_MARKER


@pytest.mark.parametrize(
    "message",
    [
        "",
        "hello",
        "a" * MAX_MESSAGE_BYTES,  # exactly at the limit
        "é" * (MAX_MESSAGE_BYTES // 2),  # 2-byte characters, exactly at the limit
        "😀" * (MAX_MESSAGE_BYTES // 4),  # 4-byte characters, exactly at the limit
        "€" * (MAX_MESSAGE_BYTES // 3),  # 3-byte characters, just under
    ],
    ids=["empty", "short", "ascii-at-limit", "2byte-at-limit", "4byte-at-limit", "3byte-under"],
)
def test_message_within_limit_is_unchanged(message: str) -> None:
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert truncate_message(message) == message


def _check_truncated(original: str, result: str) -> None:
    raw = result.encode()
    assert len(raw) <= MAX_MESSAGE_BYTES
    assert result.endswith(TRUNCATION_MARKER)
    head = result[: -len(TRUNCATION_MARKER)]
    # Whole characters only: the kept part is a prefix of the original string...
    assert original.startswith(head)
    # ...and at most one (≤ 4-byte) character short of the room left for the marker.
    room = MAX_MESSAGE_BYTES - MARKER_BYTES
    assert room - 3 <= len(head.encode()) <= room


@pytest.mark.parametrize(
    "message",
    [
        "a" * (MAX_MESSAGE_BYTES + 1),
        "é" * (MAX_MESSAGE_BYTES // 2 + 1),
        "€" * 30_000,
        "😀" * (MAX_MESSAGE_BYTES // 4 + 1),
        "a" + "😀" * 20_000,  # shifts the 4-byte boundary by one
        "ab" + "😀" * 20_000,
        "abc" + "😀" * 20_000,
        "x" * 10 * MAX_MESSAGE_BYTES,
    ],
    ids=["ascii+1", "2byte+1", "3byte", "4byte+1", "shift1", "shift2", "shift3", "ten-times"],
)
def test_message_over_limit_is_cut_with_marker(message: str) -> None:
    assert len(message.encode()) > MAX_MESSAGE_BYTES
    result = truncate_message(message)
    _check_truncated(message, result)


@DETERMINISTIC
@given(
    st.text(
        alphabet=st.sampled_from(["a", "é", "ß", "€", "中", "😀", "𝄞", "\n", " "]),
        min_size=1,
        max_size=40,
    ),
    st.integers(min_value=0, max_value=5),
)
def test_multibyte_messages_never_split_a_character(chunk: str, extra: int) -> None:
    repeats = MAX_MESSAGE_BYTES // len(chunk.encode()) + 1 + extra
    message = chunk * repeats
    assert len(message.encode()) > MAX_MESSAGE_BYTES
    _check_truncated(message, truncate_message(message))


@DETERMINISTIC
@given(st.text(max_size=200))
def test_short_text_is_always_unchanged(message: str) -> None:
    assert truncate_message(message) == message


def test_truncation_is_idempotent() -> None:
    once = truncate_message("€" * 30_000)
    assert truncate_message(once) == once
