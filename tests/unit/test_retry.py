"""Table tests of the shared retry rules in `clients.retry`."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.retry import (
    DEFAULT_POLICY,
    RetryPolicy,
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
    should_retry,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (529, True),
        (599, True),
        (200, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (412, False),
        (422, False),
        (600, False),
    ],
)
def test_is_retryable_status(status: int, expected: bool) -> None:
    """408, 429 and 5xx are worth another attempt; other statuses are final."""
    assert is_retryable_status(status) is expected


@pytest.mark.parametrize(
    ("attempt", "status", "retry_after", "policy", "expected"),
    [
        (1, None, None, DEFAULT_POLICY, True),
        (4, None, None, DEFAULT_POLICY, True),
        (5, None, None, DEFAULT_POLICY, False),
        (9, None, None, DEFAULT_POLICY, False),
        (1, 429, None, DEFAULT_POLICY, True),
        (1, 503, None, DEFAULT_POLICY, True),
        (4, 500, None, DEFAULT_POLICY, True),
        (5, 503, None, DEFAULT_POLICY, False),
        (1, 408, None, DEFAULT_POLICY, True),
        (1, 400, None, DEFAULT_POLICY, False),
        (1, 404, None, DEFAULT_POLICY, False),
        (1, 409, None, DEFAULT_POLICY, False),
        (1, 422, None, DEFAULT_POLICY, False),
        (1, 429, 120.0, DEFAULT_POLICY, True),
        (1, 429, 120.5, DEFAULT_POLICY, False),
        (1, 429, 30.0, RetryPolicy(max_retry_after=10.0), False),
        (1, None, None, RetryPolicy(max_attempts=1), False),
        (2, 503, None, RetryPolicy(max_attempts=3), True),
        (3, 503, None, RetryPolicy(max_attempts=3), False),
    ],
)
def test_should_retry(
    attempt: int,
    status: int | None,
    retry_after: float | None,
    policy: RetryPolicy,
    expected: bool,
) -> None:
    """Attempts are bounded; transport errors and retryable statuses go again; long waits don't."""
    assert should_retry(attempt, policy, status=status, retry_after=retry_after) is expected


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 3.2), (7, 6.4), (8, 8.0), (30, 8.0)],
)
@pytest.mark.parametrize(("rand", "fraction"), [(0.0, 0.5), (0.5, 0.75), (1.0, 1.0)])
def test_backoff_delay_with_fixed_rand(
    attempt: int, ceiling: float, rand: float, fraction: float
) -> None:
    """Exponential ceiling capped at max_delay; jitter spans its upper half."""
    delay = backoff_delay(attempt, DEFAULT_POLICY, rand=lambda: rand)
    assert delay == pytest.approx(ceiling * fraction)


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(0.0, 0.0), (3.0, 3.0), (120.0, 120.0), (500.0, 120.0)]
)
def test_backoff_delay_prefers_retry_after_capped(retry_after: float, expected: float) -> None:
    """A server's Retry-After replaces the computed delay, up to max_retry_after."""
    assert backoff_delay(1, DEFAULT_POLICY, retry_after=retry_after, rand=lambda: 1.0) == expected


@given(
    attempt=st.integers(min_value=1, max_value=60),
    rand=st.floats(min_value=0.0, max_value=1.0),
    base=st.floats(min_value=0.001, max_value=2.0),
    cap=st.floats(min_value=0.01, max_value=30.0),
)
def test_backoff_delay_bounds(attempt: int, rand: float, base: float, cap: float) -> None:
    """Never zero, never above max_delay, never below half the ceiling."""
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    delay = backoff_delay(attempt, policy, rand=lambda: rand)
    assert 0 < delay <= cap
    assert ceiling / 2 - 1e-12 <= delay <= ceiling + 1e-12


def _http_date(moment: float) -> str:
    return email.utils.formatdate(moment, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER": "  12 "}, 12.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "-3"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After-Ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "soon", "Retry-After": "9"}, 9.0),
        ({"Retry-After": _http_date(NOW + 30)}, 30.0),
        ({"Retry-After": _http_date(NOW - 30)}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "Wed, 99 Foo 2015 99:99:99 GMT"}, None),
        ({"retry-after-ms": "nope"}, None),
        ({}, None),
        ({"Content-Type": "application/json"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Seconds, milliseconds or an HTTP date; garbage means no advice."""
    assert parse_retry_after(headers, NOW) == expected
    # httpx's case-insensitive headers are what the clients actually pass.
    assert parse_retry_after(httpx.Headers(headers), NOW) == expected
