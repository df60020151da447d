"""The spawn benchmark's pure helpers compute what they claim (not the timings themselves)."""

from __future__ import annotations

import itertools

import pytest

from bench.spawn import (
    Summary,
    open_loop_schedule,
    parse_response_head,
    percentile,
    result_line,
    summarize,
    table,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0], 50, 1.0),  # nearest rank: ceil(0.5 * 2) = 1st
        ([1.0, 2.0, 3.0], 50, 2.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # order of arrival does not matter
        ([4.0, 1.0, 3.0, 2.0], 75, 3.0),
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 50, 50),
        (list(range(1, 1001)), 99, 990),
        (list(range(1, 51)), 99, 50),  # 50 samples: p99 is the worst one
        ([3.0, 3.0, 3.0, 9.0], 50, 3.0),
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_a_percentile_is_always_a_value_that_was_measured() -> None:
    values = [0.3, 7.1, 2.2, 9.9, 4.4]
    assert {percentile(values, q) for q in (1, 10, 33.3, 50, 90, 99, 100)} <= set(values)


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], 0), ([1.0], 101), ([1.0], -5)])
def test_percentile_refuses_what_has_no_answer(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match=r"percentile|q must"):
        percentile(values, q)


def test_summarize_counts_rate_and_latencies() -> None:
    latencies = [float(ms) for ms in range(1, 201)]  # 200 requests, 1..200 ms
    summary = summarize(latencies, seconds=0.5)
    assert summary == Summary(n=200, per_s=400.0, p50_ms=100.0, p99_ms=198.0, max_ms=200.0)


def test_summarize_refuses_a_phase_that_took_no_time() -> None:
    with pytest.raises(ValueError, match="time"):
        summarize([1.0], seconds=0.0)


def test_the_open_loop_schedule_is_steady_and_starts_at_zero() -> None:
    assert open_loop_schedule(100.0, 4) == [0.0, 0.01, 0.02, 0.03]
    schedule = open_loop_schedule(7.0, 70)
    assert len(schedule) == 70
    assert schedule[-1] == pytest.approx(69 / 7)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(schedule)}
    assert gaps == {round(1 / 7, 9)}
    assert open_loop_schedule(100.0, 0) == []
    with pytest.raises(ValueError, match="rate"):
        open_loop_schedule(0.0, 3)


def test_the_result_line_takes_the_rate_from_saturation_and_latency_from_the_others() -> None:
    saturation = Summary(n=3000, per_s=456.78, p50_ms=30.0, p99_ms=60.0, max_ms=70.0)
    open_loop = Summary(n=1000, per_s=100.0, p50_ms=4.04, p99_ms=11.26, max_ms=20.0)
    first_log = Summary(n=50, per_s=5.0, p50_ms=20.0, p99_ms=48.44, max_ms=48.44)
    assert result_line(saturation, open_loop, first_log) == (
        "spawns_per_s=457 p50_ms=4.0 p99_ms=11.3 first_log_p99_ms=48.4"
    )


def test_the_table_has_a_row_per_phase_with_its_errors() -> None:
    rows = [
        ("saturation", Summary(n=10, per_s=5.0, p50_ms=1.0, p99_ms=2.0, max_ms=3.0)),
        ("open loop", Summary(n=20, per_s=100.0, p50_ms=4.0, p99_ms=5.0, max_ms=6.0)),
    ]
    lines = table(rows, {"open loop": 2}).splitlines()
    assert lines[0].split() == ["phase", "n", "per", "s", "p50", "ms", "p99", "ms", "max", "ms",
                                "errors"]  # fmt: skip
    assert lines[1].split() == ["saturation", "10", "5.0", "1.0", "2.0", "3.0", "0"]
    assert lines[2].split() == ["open", "loop", "20", "100.0", "4.0", "5.0", "6.0", "2"]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 202 Accepted\r\ncontent-length: 88\r\ncontent-type: application/json\r\n\r\n",
         (202, 88, True)),
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", (401, 0, True)),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n", (200, 2, False)),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n", (200, 2, False)),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 2\r\n\r\n",
         (200, 2, True)),
    ],
)  # fmt: skip
def test_parse_response_head(head: bytes, expected: tuple[int, int, bool]) -> None:
    assert parse_response_head(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\ncontent-length: 1\r\n\r\n",
    ],
)
def test_parse_response_head_refuses_what_it_would_misread(head: bytes) -> None:
    with pytest.raises(ValueError, match=r"Content-Length|transfer-encoding|status line"):
        parse_response_head(head)
