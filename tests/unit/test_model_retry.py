"""Table tests of the model retry layer (`agents.providers.retrying`): the decision, the reading
of the SDKs' exceptions, the errors raised, and the attempt loop with a scripted attempt."""

from __future__ import annotations

import json

import anthropic
import httpx2
import openai
import pytest

from agents.providers import ModelError, ModelUnavailable
from agents.providers.retrying import (
    MODEL_POLICY,
    Failure,
    StreamBroken,
    describe,
    is_retryable,
    retry_delay,
    to_model_error,
    with_retries,
)
from clients.retry import RetryPolicy

REQUEST = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
KEY = "sk-live-do-not-print-0123456789"


def response(status: int, **headers: str) -> httpx2.Response:
    """An httpx2 response with `status` and `headers`, as the SDKs attach to errors."""
    return httpx2.Response(status, headers=headers, request=REQUEST)


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (Failure(None), True),  # connection error, timeout, broken stream
        (Failure(408), True),
        (Failure(409), True),  # the providers' lock timeout; both SDKs retry it
        (Failure(429), True),
        (Failure(429, error_code="insufficient_quota"), False),  # out of credit: waiting won't help
        (Failure(500), True),
        (Failure(502), True),
        (Failure(503), True),
        (Failure(504), True),
        (Failure(529, error_type="overloaded_error"), True),
        (Failure(400), False),
        (Failure(401), False),
        (Failure(403), False),
        (Failure(404, error_code="model_not_found"), False),
        (Failure(413), False),
        (Failure(422), False),
        (Failure(200, error_type="overloaded_error"), True),  # an error event mid-stream
        (Failure(200, error_type="api_error"), True),
        (Failure(200, error_type="server_error"), True),
        (Failure(200, error_type="invalid_request_error"), False),
        (Failure(200), True),  # an error event that does not say why: like a dropped stream
        (Failure(400, should_retry=True), True),  # the server's x-should-retry wins
        (Failure(503, should_retry=False), False),
    ],
)
def test_is_retryable(failure: Failure, expected: bool) -> None:
    """Transport faults, 408/409/429/5xx/529 and busy-server stream events retry; others don't."""
    assert is_retryable(failure) is expected


WIDE = RetryPolicy(max_attempts=20, base_delay=0.5, max_delay=8.0, max_retry_after=120.0)


@pytest.mark.parametrize(
    ("attempt", "failure", "policy", "rand", "expected"),
    [
        (1, Failure(429, retry_after=0.01), MODEL_POLICY, 0.5, 0.01),  # the server knows best
        (3, Failure(429, retry_after=2.5), MODEL_POLICY, 0.5, 2.5),
        (1, Failure(429, retry_after=120.0), MODEL_POLICY, 0.5, 120.0),
        (1, Failure(429, retry_after=121.0), MODEL_POLICY, 0.5, None),  # too long: give up
        (1, Failure(500), MODEL_POLICY, 0.0, 0.25),  # half the ceiling fixed…
        (1, Failure(500), MODEL_POLICY, 1.0, 0.5),  # …half jitter
        (2, Failure(None), MODEL_POLICY, 1.0, 1.0),
        (3, Failure(529), MODEL_POLICY, 1.0, 2.0),
        (6, Failure(503), WIDE, 1.0, 8.0),  # capped at max_delay
        (4, Failure(503), MODEL_POLICY, 0.5, None),  # the 4th attempt was the last
        (1, Failure(401), MODEL_POLICY, 0.5, None),  # final
        (1, Failure(400, retry_after=1.0), MODEL_POLICY, 0.5, None),
        (1, Failure(429, error_code="insufficient_quota"), MODEL_POLICY, 0.5, None),
    ],
)
def test_retry_delay(
    attempt: int, failure: Failure, policy: RetryPolicy, rand: float, expected: float | None
) -> None:
    """How long to wait after a failed attempt, or None to stop."""
    assert retry_delay(attempt, failure, policy, rand=lambda: rand) == expected


TIMED_OUT = Failure(None, message="timed out waiting for the provider")
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
RATE_LIMITED = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}


def _openai_status(cls: type[openai.APIStatusError], status: int, body: object, **headers: str):
    return cls("Error code", response=response(status, **headers), body=body)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            _openai_status(
                openai.RateLimitError, 429,
                RATE_LIMITED,
                **{"retry-after-ms": "10", "retry-after": "1", "x-request-id": "req_1"},
            ),
            Failure(429, "requests", "rate_limit_exceeded", 0.01, None, "Rate limit reached",
                    "req_1"),
        ),
        (
            _openai_status(openai.InternalServerError, 500, None, **{"x-should-retry": "false"}),
            Failure(500, should_retry=False, message="Error code"),
        ),
        (
            anthropic.OverloadedError(
                "Error code: 529", response=response(529, **{"request-id": "req_a"}),
                body=OVERLOADED,
            ),
            Failure(529, "overloaded_error", None, None, None, "Overloaded", "req_a"),
        ),
        (  # Anthropic's `event: error` inside a 200 stream
            anthropic.APIStatusError(
                "{...}", response=response(200),
                body=OVERLOADED,
            ),
            Failure(200, "overloaded_error", message="Overloaded"),
        ),
        (  # OpenAI's `data: {"error": ...}` inside a 200 stream
            openai.APIError("boom", REQUEST, body={"message": "boom", "type": "server_error"}),
            Failure(200, "server_error", message="boom"),
        ),
        (openai.APITimeoutError(REQUEST), TIMED_OUT),
        (anthropic.APITimeoutError(REQUEST), TIMED_OUT),
        (httpx2.ReadTimeout("", request=REQUEST), TIMED_OUT),
        (
            httpx2.RemoteProtocolError("peer closed connection", request=REQUEST),
            Failure(None, message="connection error (RemoteProtocolError: peer closed connection)"),
        ),
        (openai.APIConnectionError(request=REQUEST), Failure(None, message="connection error")),
        (StreamBroken("no message_stop"), Failure(None, message="broken stream: no message_stop")),
        (
            json.JSONDecodeError("Expecting value", "{x", 1),
            Failure(None, message="malformed stream: Expecting value"),
        ),
        (ValueError("a bug of ours"), None),
        (KeyError("x"), None),
    ],
)  # fmt: skip
def test_describe(exc: BaseException, expected: Failure | None) -> None:
    """Each SDK's exceptions read as the same Failure; anything else is not a provider fault."""
    assert describe(exc, now=0.0) == expected


@pytest.mark.parametrize(
    ("failure", "attempts", "cls", "text"),
    [
        (Failure(401, "authentication_error", message=f"bad key {KEY}"), 1, ModelError,
         "anthropic (m) refused the request: 401 authentication_error: bad key [redacted]"),
        (Failure(503, "api_error", message="down", request_id="req_9"), 4, ModelUnavailable,
         "anthropic (m) is unavailable (4 attempts): 503 api_error: down [request id req_9]"),
        (Failure(None, message="timed out waiting for the provider"), 1, ModelUnavailable,
         "anthropic (m) is unavailable (1 attempt): timed out waiting for the provider"),
        (Failure(429, retry_after=600.0, message="slow down"), 1, ModelUnavailable,
         "anthropic (m) is unavailable (it asked to wait 600 s): 429: slow down"),
    ],
)  # fmt: skip
def test_to_model_error(failure: Failure, attempts: int, cls: type, text: str) -> None:
    """Final failures are ModelError, retryable ones ModelUnavailable; keys never appear."""
    err = to_model_error("anthropic", "m", failure, attempts=attempts, secrets=(KEY,))
    assert type(err) is cls
    assert err.message == text
    assert KEY not in str(err)


class Script:
    """An attempt function that fails as scripted (after streaming some text), then answers."""

    def __init__(self, *faults: BaseException, stream_before_fault: bool = True) -> None:
        self.faults = list(faults)
        self.stream_before_fault = stream_before_fault
        self.calls: list[int] = []

    async def __call__(self, number: int, emit) -> str:
        self.calls.append(number)
        if self.faults:
            if self.stream_before_fault:
                await emit("partial ")
            raise self.faults.pop(0)
        await emit("whole answer")
        return "whole answer"


async def run(script: Script, *, max_attempts: int = 4):
    """Run `script` through with_retries; return its result, the consumer's events, the waits."""
    events: list[str] = []
    sleeps: list[float] = []

    async def on_text(piece: str) -> None:
        """Append a streamed piece."""
        events.append(f"text:{piece}")

    async def on_reset() -> None:
        """Forget the text so far: the call starts over."""
        events.append("reset")

    async def sleep(seconds: float) -> None:
        """Record the wait instead of waiting."""
        sleeps.append(seconds)

    result = await with_retries(
        script, provider="p", model="m", on_text=on_text, on_reset=on_reset,
        policy=RetryPolicy(max_attempts=max_attempts, base_delay=0.5, max_delay=8.0),
        sleep=sleep, rand=lambda: 1.0,
    )  # fmt: skip
    return result, events, sleeps


async def test_a_retry_after_streamed_text_resets_the_consumer_first() -> None:
    """A failure after text: on_reset before the retry, which streams the answer."""
    (value, attempts), events, sleeps = await run(Script(StreamBroken("cut")))
    assert (value, attempts) == ("whole answer", 2)
    assert events == ["text:partial ", "reset", "text:whole answer"]
    assert sleeps == [0.5]


async def test_no_reset_when_nothing_was_streamed() -> None:
    """Failures before any text need no reset; retry-after-ms sets each wait."""
    faults = [_openai_status(openai.RateLimitError, 429, None, **{"retry-after-ms": "10"})] * 2
    (_, attempts), events, sleeps = await run(Script(*faults, stream_before_fault=False))
    assert attempts == 3
    assert events == ["text:whole answer"]
    assert sleeps == [0.01, 0.01]


async def test_retries_spent_raise_model_unavailable_chained_to_the_sdk_error() -> None:
    """The last failure is reported and chained as the cause."""
    last = httpx2.RemoteProtocolError("peer closed connection", request=REQUEST)
    with pytest.raises(ModelUnavailable, match=r"\(2 attempts\): connection error") as info:
        await run(Script(StreamBroken("cut"), last, StreamBroken("never")), max_attempts=2)
    assert info.value.__cause__ is last


async def test_a_final_status_is_not_retried() -> None:
    """A 401 stops at the first attempt with a ModelError."""
    script = Script(_openai_status(openai.AuthenticationError, 401, {"message": "no"}))
    with pytest.raises(ModelError, match="refused the request: 401: no") as info:
        await run(script)
    assert type(info.value) is ModelError
    assert script.calls == [1]


@pytest.mark.parametrize("exc", [ModelError("the model refused"), TypeError("a bug")])
async def test_refusals_and_bugs_pass_through_untouched(exc: Exception) -> None:
    """Our own ModelError (a refusal) and programming errors are not retried or wrapped."""
    script = Script(exc)
    with pytest.raises(type(exc)) as info:
        await run(script)
    assert info.value is exc
    assert script.calls == [1]


async def test_an_error_in_on_text_is_the_callers_not_a_bad_stream() -> None:
    """A consumer's JSONDecodeError is raised as is, not retried as malformed stream data."""
    mistake = json.JSONDecodeError("Expecting value", "", 0)

    async def on_text(piece: str) -> None:
        raise mistake

    with pytest.raises(json.JSONDecodeError) as info:
        await with_retries(Script(), provider="p", model="m", on_text=on_text)
    assert info.value is mistake
