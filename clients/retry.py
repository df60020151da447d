"""Retry rules shared by every HTTP client: pure functions, table-tested.

One retry layer per failure: HTTP clients retry transport faults and the statuses below;
LangGraph's RetryPolicy retries nodes; Modal's Retries only restarts crashed containers.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how long to wait between attempts."""

    max_attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 8.0
    #: A server asking us to wait longer than this is treated as a final answer.
    max_retry_after: float = 120.0


DEFAULT_POLICY = RetryPolicy()


def is_retryable_status(status: int) -> bool:
    """Whether a response status is worth another attempt (408, 429, 5xx)."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from `retry-after-ms`, `Retry-After` (seconds or HTTP date) or None."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(
    attempt: int,
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number `attempt` (1-based): exponential with full jitter, capped.

    A server's `Retry-After` wins when given (it knows its own limits), still capped by
    `policy.max_retry_after`.
    """
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after)
    ceiling = min(policy.max_delay, policy.base_delay * (2.0 ** (attempt - 1)))
    # Half fixed, half jitter: never zero, never synchronised across writers.
    return ceiling / 2 + rand() * ceiling / 2


def should_retry(
    attempt: int,
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    status: int | None = None,
    retry_after: float | None = None,
) -> bool:
    """Whether attempt number `attempt` (1-based, just failed) should be followed by another.

    `status` None means a transport error (connect, read timeout), which is always retryable.
    """
    if attempt >= policy.max_attempts:
        return False
    if retry_after is not None and retry_after > policy.max_retry_after:
        return False
    return status is None or is_retryable_status(status)
