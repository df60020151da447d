"""The one retry layer for model calls: the SDKs are built with `max_retries=0` and we retry here.

A model call is one streamed HTTP request. It is retried, within `llm_max_attempts`, after a
connection error, a timeout, a stream that broke off (dropped connection, malformed data, no
end marker), an error event inside the stream that says the server is busy, and the statuses
408, 409, 429, 5xx and 529. The wait honours the server's `retry-after-ms` / `retry-after`;
otherwise it is exponential with jitter (`clients.retry`). Everything else is final.

How an SDK exception becomes our error::

    openai / anthropic exception ──describe()──> Failure ──retry_delay()──> seconds | None
                                                        └──to_model_error()──> ModelError
                                                                               └ ModelUnavailable

`describe` reads the exception; `is_retryable` and `retry_delay` are pure and table-tested
(tests/unit/test_model_retry.py); `with_retries` runs attempts and does the I/O (sleep, reset).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anthropic
import httpx2
import openai

from agents.providers import ModelError, ModelUnavailable, OnReset, OnText
from clients.retry import RetryPolicy, backoff_delay, is_retryable_status, parse_retry_after

__all__ = [
    "MODEL_POLICY",
    "Failure",
    "Sleep",
    "StreamBroken",
    "describe",
    "is_retryable",
    "retry_delay",
    "to_model_error",
    "with_retries",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

#: The SDKs' own constants (0.5 s doubling to 8 s) — the providers tuned them to their limits.
MODEL_POLICY = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=8.0, max_retry_after=120.0)

#: Error types, inside a 200 stream, that say "the server, not the request": worth another try.
RETRYABLE_ERROR_TYPES = frozenset(
    {"api_error", "overloaded_error", "rate_limit_error", "server_error", "timeout_error"}
)
#: A 429 that waiting does not fix: the account is out of credit.
FINAL_ERROR_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})

_MAX_MESSAGE = 500


class StreamBroken(Exception):
    """The stream ended without its end marker (finish reason, message_stop): retry it."""


class _ConsumerFailed(Exception):
    """`on_text` raised: the caller's own error, never a provider fault to retry."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, in the terms the retry decision needs."""

    status: int | None
    """The HTTP status; None for a transport fault or a broken stream (always retryable)."""
    error_type: str | None = None
    """The provider's error type (`overloaded_error`, `rate_limit_error`, …), when it said."""
    error_code: str | None = None
    """The provider's finer error code (`insufficient_quota`, `model_not_found`, …)."""
    retry_after: float | None = None
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after`)."""
    should_retry: bool | None = None
    """The server's explicit `x-should-retry`, which overrides the status."""
    message: str = ""
    """What the provider said (never contains a key: see `to_model_error`)."""
    request_id: str | None = None
    """The provider's request id, for their support."""

    def summary(self) -> str:
        """`429 rate_limit_error: <message>`, `error in the stream (…): …`, or the message."""
        if self.status is None:
            return self.message
        if 200 <= self.status < 300:
            head = f"error in the stream ({self.error_type or 'unknown'})"
        else:
            head = f"{self.status} {self.error_type or ''}".rstrip()
        rid = f" [request id {self.request_id}]" if self.request_id else ""
        return f"{head}: {self.message}{rid}" if self.message else f"{head}{rid}"


# -- the decision (pure) -----------------------------------------------------------------------


def is_retryable(failure: Failure) -> bool:
    """Whether another attempt of the same request may succeed."""
    if failure.should_retry is not None:
        return failure.should_retry
    if failure.error_code in FINAL_ERROR_CODES:
        return False
    if failure.status is None:
        return True
    if 200 <= failure.status < 300:
        # An error event after a 200 head: its type is all we know. No type = a broken stream.
        return failure.error_type is None or failure.error_type in RETRYABLE_ERROR_TYPES
    # 409 is a lock timeout on the provider's side; both SDKs retry it.
    return failure.status == 409 or is_retryable_status(failure.status)


def retry_delay(
    attempt: int,
    failure: Failure,
    policy: RetryPolicy = MODEL_POLICY,
    *,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait after attempt number `attempt` (1-based) failed, or None to give up.

    None when the failure is final, the attempts are spent, or the server asks for a wait
    longer than `policy.max_retry_after` (waiting that long inside a build helps nobody).
    """
    if not is_retryable(failure) or attempt >= policy.max_attempts:
        return None
    if failure.retry_after is not None and failure.retry_after > policy.max_retry_after:
        return None
    return backoff_delay(attempt, policy, retry_after=failure.retry_after, rand=rand)


# -- reading the SDKs' exceptions --------------------------------------------------------------


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-should-retry")
    return {"true": True, "false": False}.get(value.lower()) if value else None


def _error_fields(body: object) -> tuple[str | None, str | None, str | None]:
    """(type, code, message) from an OpenAI error object or an Anthropic error body."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]  # Anthropic's {"type": "error", "error": {...}}
    if not isinstance(body, Mapping):
        return None, None, body if isinstance(body, str) and body else None

    def text(key: str) -> str | None:
        value = body.get(key)
        return str(value) if value is not None else None

    return text("type"), text("code"), text("message")


def describe(exc: BaseException, *, now: float | None = None) -> Failure | None:
    """The Failure `exc` stands for, or None when it is not a provider fault (a bug: re-raise)."""
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        headers = exc.response.headers
        error_type, code, message = _error_fields(exc.body)
        return Failure(
            status=exc.status_code,
            error_type=error_type,
            error_code=code,
            retry_after=parse_retry_after(headers, time.time() if now is None else now),
            should_retry=_should_retry_header(headers),
            message=message or exc.message,
            request_id=headers.get("x-request-id") or headers.get("request-id"),
        )
    # Anthropic's stream lets a dropped connection or a read timeout through unwrapped.
    timeouts = (openai.APITimeoutError, anthropic.APITimeoutError, httpx2.TimeoutException)
    if isinstance(exc, timeouts):
        return Failure(status=None, message="timed out waiting for the provider")
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError):
        cause = exc.__cause__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return Failure(status=None, message=f"connection error{detail}")
    if isinstance(exc, httpx2.TransportError):
        return Failure(status=None, message=f"connection error ({type(exc).__name__}: {exc})")
    if isinstance(exc, openai.APIError):
        # OpenAI's error event inside a 200 stream: `data: {"error": {...}}`.
        error_type, code, message = _error_fields(exc.body)
        return Failure(status=200, error_type=error_type, error_code=code, message=message or "")
    if isinstance(exc, StreamBroken):
        return Failure(status=None, message=f"broken stream: {exc}")
    if isinstance(exc, json.JSONDecodeError):
        return Failure(status=None, message=f"malformed stream: {exc.msg}")
    return None


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text[:_MAX_MESSAGE]


def to_model_error(
    provider: str,
    model: str,
    failure: Failure,
    *,
    attempts: int,
    policy: RetryPolicy = MODEL_POLICY,
    secrets: Sequence[str] = (),
) -> ModelError:
    """The error to raise for `failure`: ModelUnavailable when it was worth retrying.

    The provider's message is kept (it says what to fix), with any of `secrets` blanked out.
    """
    summary = _redact(failure.summary(), secrets)
    if is_retryable(failure):
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        waited = failure.retry_after
        if waited is not None and waited > policy.max_retry_after:
            tries = f"it asked to wait {waited:.0f} s"
        return ModelUnavailable(f"{provider} ({model}) is unavailable ({tries}): {summary}")
    return ModelError(f"{provider} ({model}) refused the request: {summary}")


# -- the loop (I/O) ----------------------------------------------------------------------------


async def with_retries(
    attempt_fn: Callable[[int, OnText], Awaitable[T]],
    *,
    provider: str,
    model: str,
    on_text: OnText | None = None,
    on_reset: OnReset | None = None,
    policy: RetryPolicy = MODEL_POLICY,
    secrets: Sequence[str] = (),
    sleep: Sleep = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> tuple[T, int]:
    """Run `attempt_fn(attempt_number, emit)` until it succeeds; return (its result, attempts).

    `attempt_fn` streams text through `emit` (which forwards to `on_text`). When an attempt
    that already emitted text fails and another follows, `on_reset` is awaited first. Provider
    faults become ModelError / ModelUnavailable; a ModelError raised by `attempt_fn` (a refusal),
    whatever `on_text` raises, and any other exception (a bug) pass through untouched.
    """
    attempt = 0
    while True:
        attempt += 1
        streamed = False

        async def emit(piece: str) -> None:
            nonlocal streamed
            streamed = True
            if on_text is not None:
                try:
                    await on_text(piece)
                except Exception as exc:
                    # Kept apart so a consumer's JSONDecodeError is not taken for a bad stream.
                    raise _ConsumerFailed(exc) from exc

        try:
            return await attempt_fn(attempt, emit), attempt
        except _ConsumerFailed as failed:
            raise failed.error from None
        except ModelError:
            raise
        except Exception as exc:
            failure = describe(exc)
            if failure is None:
                raise
            delay = retry_delay(attempt, failure, policy, rand=rand)
            if delay is None:
                raise to_model_error(
                    provider, model, failure, attempts=attempt, policy=policy, secrets=secrets
                ) from exc
        log.warning(
            "%s (%s) attempt %d/%d failed, retrying in %.2f s: %s",
            provider, model, attempt, policy.max_attempts, delay,
            _redact(failure.summary(), secrets),
        )  # fmt: skip
        if streamed and on_reset is not None:
            await on_reset()
        await sleep(delay)
