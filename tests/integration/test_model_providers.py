"""The real OpenAI and Anthropic SDKs, through our providers, against wire-faithful fakes served
on a loopback socket: streaming, usage, structured output, every retry path, and the errors.

Retries never really wait: the providers get a `sleep` that records the delays it was asked
for, so the tests also check that `retry-after` was honoured.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from agents.providers import (
    Message,
    ModelChoice,
    ModelError,
    ModelProvider,
    ModelRequest,
    ModelUnavailable,
    Usage,
    make_provider,
)
from agents.providers.anthropic_messages import AnthropicProvider
from agents.providers.openai_chat import OpenAIProvider
from agents.providers.pricing import cost_usd
from local.server import serve
from schemas.settings import Settings
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.openai import DEFAULT_KEY, FakeOpenAI, ScriptedModelServer

ANSWER = "The quick brown fox jumps over the lazy dog, twice: the quick brown fox jumps again."
REQUEST = ModelRequest(
    purpose="plan",
    messages=[Message("system", "You plan apps."), Message("user", "a todo app please")],
    max_tokens=1000,
)
SCHEMA = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
WRONG_KEY = "sk-wrong-key-that-must-never-be-printed-9876"


@dataclass
class Consumer:
    """What a caller of `complete` sees: the text so far, and every callback in order."""

    text: str = ""
    events: list[str] = field(default_factory=list)

    async def on_text(self, piece: str) -> None:
        """Append a streamed piece."""
        self.text += piece
        self.events.append(piece)

    async def on_reset(self) -> None:
        """Forget the text so far: the call starts over."""
        self.text = ""
        self.events.append("<reset>")


@dataclass
class Rig:
    """One fake provider on a socket, and providers pointed at it."""

    kind: str
    fake: ScriptedModelServer
    url: str
    sleeps: list[float] = field(default_factory=list)
    providers: list[ModelProvider] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        """Record the wait instead of waiting."""
        self.sleeps.append(seconds)

    def provider(
        self, *, key: str = DEFAULT_KEY, timeout: float = 10.0, max_attempts: int = 4
    ) -> ModelProvider:
        """A provider for this fake with `key`, `timeout` and `max_attempts`; retries never wait."""
        p: ModelProvider
        if self.kind == "anthropic":
            p = AnthropicProvider(api_key=key, base_url=self.url, timeout=timeout,
                                  max_attempts=max_attempts, sleep=self.sleep)  # fmt: skip
        else:
            p = OpenAIProvider(api_key=key, base_url=self.url + "/v1", timeout=timeout,
                               max_attempts=max_attempts, sleep=self.sleep)  # fmt: skip
        self.providers.append(p)
        return p


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[dict[str, tuple[ScriptedModelServer, str]]]:
    """One server per fake for the module (starting uvicorn per test would double the time)."""
    openai_fake, anthropic_fake = FakeOpenAI(), FakeAnthropic()
    async with serve(openai_fake) as openai_url, serve(anthropic_fake) as anthropic_url:
        yield {"openai": (openai_fake, openai_url), "anthropic": (anthropic_fake, anthropic_url)}


@pytest.fixture(params=["openai", "anthropic"])
async def rig(
    request: pytest.FixtureRequest, servers: dict[str, tuple[ScriptedModelServer, str]]
) -> AsyncIterator[Rig]:
    """Each fake in turn (reset), and providers pointed at it that are closed afterwards."""
    fake, url = servers[request.param]
    fake.reset()
    rig = Rig(request.param, fake, url)
    yield rig
    for p in rig.providers:
        await p.close()


def pieces(text: str, size: int) -> list[str]:
    """`text` cut as the fakes cut it: `size` characters per delta."""
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- answers -----------------------------------------------------------------------------------


async def test_text_streams_in_order_and_usage_is_recorded(rig: Rig) -> None:
    """Deltas reach on_text in order; usage, cost and the request's shape are right."""
    rig.fake.script(ANSWER, chunk=4, usage=(1234, 567))
    consumer = Consumer()
    completion = await rig.provider().complete(REQUEST, on_text=consumer.on_text)

    assert consumer.events == pieces(ANSWER, 4)
    assert completion.text == ANSWER
    assert completion.usage == Usage(1234, 567)
    assert completion.attempts == 1
    assert completion.provider == rig.kind
    assert cost_usd(completion.provider, completion.model, completion.usage) == pytest.approx(
        {"openai": (1234 * 0.40 + 567 * 1.60), "anthropic": (1234 * 3 + 567 * 15)}[rig.kind] / 1e6
    )
    sent = rig.fake.last
    assert sent.headers["x-stainless-retry-count"] == "0"
    assert sent.body["stream"] is True
    if rig.kind == "openai":
        assert sent.body["model"] == completion.model == "gpt-4.1-mini"
        assert sent.body["stream_options"] == {"include_usage": True}
        assert sent.body["max_completion_tokens"] == 1000
        assert sent.body["messages"] == [
            {"role": "system", "content": "You plan apps."},
            {"role": "user", "content": "a todo app please"},
        ]
        assert "response_format" not in sent.body
    else:
        assert sent.body["model"] == completion.model == "claude-sonnet-4-6"
        assert sent.body["max_tokens"] == 1000
        assert sent.body["system"] == "You plan apps."
        assert sent.body["messages"] == [{"role": "user", "content": "a todo app please"}]
        assert "output_config" not in sent.body


async def test_the_default_answer_echoes_and_counts_deltas(rig: Rig) -> None:
    """Unscripted, the fakes echo the last user message and count its deltas as tokens."""
    completion = await rig.provider().complete(REQUEST)
    assert completion.text == "echo: a todo app please"
    # The fake's stand-in counts: the prompt's words in, one token per 5-character delta out.
    assert completion.usage == Usage(input_tokens=7, output_tokens=5)


async def test_structured_output_asks_for_the_schema(rig: Rig) -> None:
    """A json_schema becomes response_format (OpenAI) or output_config (Anthropic)."""
    request = ModelRequest("plan", REQUEST.messages, json_schema=SCHEMA, schema_name="plan")
    completion = await rig.provider().complete(request)

    assert json.loads(completion.text) == {"echo": "a todo app please"}
    if rig.kind == "openai":
        assert rig.fake.last.body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "plan", "schema": SCHEMA, "strict": False},
        }
    else:
        assert rig.fake.last.body["output_config"] == {
            "format": {"type": "json_schema", "schema": SCHEMA}
        }


# -- retries -----------------------------------------------------------------------------------


async def test_429_waits_as_retry_after_says_then_succeeds(rig: Rig) -> None:
    """A 429 waits retry-after-ms, then retries, telling the server which retry it is."""
    rig.fake.fail(429, retry_after=0.01)
    completion = await rig.provider().complete(REQUEST)

    assert completion.text == "echo: a todo app please"
    assert completion.attempts == 2
    assert rig.sleeps == [0.01]
    assert [r.headers["x-stainless-retry-count"] for r in rig.fake.requests] == ["0", "1"]


@pytest.mark.parametrize("status", [500, 503, 529, 408, 409])
async def test_a_server_error_is_retried(rig: Rig, status: int) -> None:
    """408, 409, 5xx and 529 are retried after an exponential, jittered wait."""
    rig.fake.fail(status)
    completion = await rig.provider().complete(REQUEST)
    assert (completion.text, completion.attempts) == ("echo: a todo app please", 2)
    assert len(rig.sleeps) == 1
    assert 0.25 <= rig.sleeps[0] <= 0.5  # backoff, with jitter


async def test_an_overloaded_event_mid_stream_is_retried(rig: Rig) -> None:
    """An error event after some text resets the consumer and retries."""
    overloaded = "overloaded_error" if rig.kind == "anthropic" else "server_error"
    rig.fake.fail(529, after_chunks=2, error_type=overloaded, message="Overloaded")
    consumer = Consumer()
    completion = await rig.provider().complete(
        REQUEST, on_text=consumer.on_text, on_reset=consumer.on_reset
    )
    assert consumer.events == ["echo:", " a to", "<reset>", *pieces("echo: a todo app please", 5)]
    assert consumer.text == completion.text == "echo: a todo app please"
    assert completion.attempts == 2


async def test_a_dropped_stream_resets_the_consumer_and_is_retried(rig: Rig) -> None:
    """A connection dropped mid-stream: on_reset, then the whole answer exactly once."""
    rig.fake.disconnect_after(3, text=ANSWER, chunk=6)
    rig.fake.script(ANSWER, chunk=6)
    consumer = Consumer()
    completion = await rig.provider().complete(
        REQUEST, on_text=consumer.on_text, on_reset=consumer.on_reset
    )

    assert consumer.events == [*pieces(ANSWER, 6)[:3], "<reset>", *pieces(ANSWER, 6)]
    assert consumer.text == completion.text == ANSWER  # the full text, exactly once
    assert completion.attempts == 2


async def test_malformed_stream_data_is_retried(rig: Rig) -> None:
    """Data that is not JSON mid-stream is a broken stream: reset and retry."""
    rig.fake.garbage(after_chunks=1)
    consumer = Consumer()
    completion = await rig.provider().complete(
        REQUEST, on_text=consumer.on_text, on_reset=consumer.on_reset
    )
    assert consumer.events[:2] == ["echo:", "<reset>"]
    assert consumer.text == completion.text == "echo: a todo app please"


async def test_no_reset_when_the_failed_attempt_streamed_nothing(rig: Rig) -> None:
    """on_reset is only for a consumer that has seen text."""
    rig.fake.fail(500)
    consumer = Consumer()
    await rig.provider().complete(REQUEST, on_text=consumer.on_text, on_reset=consumer.on_reset)
    assert "<reset>" not in consumer.events


async def test_spent_retries_raise_model_unavailable(rig: Rig) -> None:
    """After max_attempts failures the error is ModelUnavailable, saying what the server said."""
    rig.fake.fail(503, times=3, message="upstream connect error")
    rig.fake.script("never reached")
    with pytest.raises(ModelUnavailable) as info:
        await rig.provider(max_attempts=3).complete(REQUEST)

    assert len(rig.fake.requests) == 3
    assert len(rig.sleeps) == 2
    assert "(3 attempts)" in info.value.message
    assert "503" in info.value.message
    assert "upstream connect error" in info.value.message
    assert info.value.code == "model_unavailable"


async def test_a_stall_longer_than_the_timeout_is_model_unavailable(rig: Rig) -> None:
    """A server that goes quiet (before or during the stream) times out per attempt."""
    rig.fake.stall(30)
    rig.fake.stall(30, after_chunks=2)
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match=r"\(2 attempts\): timed out"):
        await rig.provider(timeout=0.2, max_attempts=2).complete(REQUEST)
    assert time.monotonic() - started < 5  # two 0.2 s timeouts, not the 30 s stalls


async def test_a_stall_mid_stream_times_out_and_the_retry_succeeds(rig: Rig) -> None:
    """A read timeout mid-stream is retried like a dropped connection."""
    rig.fake.stall(30, after_chunks=1)
    consumer = Consumer()
    completion = await rig.provider(timeout=0.2).complete(
        REQUEST, on_text=consumer.on_text, on_reset=consumer.on_reset
    )
    assert consumer.events[:2] == ["echo:", "<reset>"]
    assert consumer.text == completion.text == "echo: a todo app please"


# -- refusals ----------------------------------------------------------------------------------


async def test_a_wrong_key_is_model_error_at_once_and_never_printed(rig: Rig) -> None:
    """401 is final: one request, ModelError, and neither key in the message."""
    with pytest.raises(ModelError) as info:
        await rig.provider(key=WRONG_KEY).complete(REQUEST)

    assert type(info.value) is ModelError
    assert info.value.code == "model_error"
    assert "401" in info.value.message
    assert WRONG_KEY not in str(info.value)
    assert DEFAULT_KEY not in str(info.value)
    assert len(rig.fake.requests) == 1
    assert rig.sleeps == []


@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_a_refused_request_is_not_retried(rig: Rig, status: int) -> None:
    """400, 403, 404 (unknown model) and 422 are final ModelErrors with the provider's reason."""
    rig.fake.fail(status, message="The model `nope` does not exist", code="model_not_found")
    with pytest.raises(ModelError, match=f"refused the request: {status}.*`nope` does not exist"):
        await rig.provider().complete(REQUEST)
    assert len(rig.fake.requests) == 1


# Anthropic answers an empty balance with a 400, which is final anyway.
@pytest.mark.parametrize("rig", ["openai"], indirect=True)
async def test_out_of_credit_429_is_final(rig: Rig) -> None:
    """OpenAI's insufficient_quota 429 will not pass by waiting: ModelError at once."""
    rig.fake.fail(429, code="insufficient_quota", message="You exceeded your current quota")
    with pytest.raises(ModelError, match="exceeded your current quota") as info:
        await rig.provider().complete(REQUEST)
    assert type(info.value) is ModelError
    assert len(rig.fake.requests) == 1


async def test_a_model_refusal_is_model_error(rig: Rig) -> None:
    """The model declining to answer is a ModelError, not retried."""
    rig.fake.refuse()
    with pytest.raises(ModelError, match="refused") as info:
        await rig.provider().complete(REQUEST)
    assert type(info.value) is ModelError
    assert len(rig.fake.requests) == 1


# -- settings ----------------------------------------------------------------------------------


def settings(**values: Any) -> Settings:
    """Settings with no model keys or base URLs but `values` (whatever the environment says)."""
    unset = dict.fromkeys(
        ("openai_api_key", "anthropic_api_key", "xai_api_key", "openai_base_url",
         "anthropic_base_url")
    )  # fmt: skip
    return Settings(_env_file=None, **{**unset, **values})


async def test_xai_is_the_openai_sdk_at_the_xai_base_url() -> None:
    """make_provider('xai') talks OpenAI's wire format to XAI_BASE_URL with XAI_API_KEY."""
    fake = FakeOpenAI(api_key="xai-fake-key-0123456789")
    async with serve(fake) as url:
        provider = make_provider(
            settings(xai_api_key="xai-fake-key-0123456789", xai_base_url=url + "/v1"),
            ModelChoice("xai"),
        )
        try:
            completion = await provider.complete(REQUEST)
        finally:
            await provider.close()
    assert (completion.provider, completion.model) == ("xai", "grok-4")
    assert fake.last.body["model"] == "grok-4"
    assert fake.last.headers["authorization"] == "Bearer xai-fake-key-0123456789"
    assert cost_usd("xai", "grok-4", completion.usage) is not None


async def test_settings_choose_the_model_base_url_and_attempts() -> None:
    """from_settings honours the base URL, model, LLM_MAX_ATTEMPTS and the output cap."""
    fake = FakeAnthropic(api_key="sk-ant-fake-0123456789")
    async with serve(fake) as url:
        provider = make_provider(
            settings(anthropic_api_key="sk-ant-fake-0123456789", anthropic_base_url=url,
                     llm_max_attempts=1, llm_max_output_tokens=300),
            ModelChoice("anthropic", "claude-haiku-4-5"),
        )  # fmt: skip
        try:
            fake.fail(529)
            with pytest.raises(ModelUnavailable, match=r"\(1 attempt\)"):
                await provider.complete(REQUEST)
            completion = await provider.complete(REQUEST)
        finally:
            await provider.close()
    assert completion.model == fake.last.body["model"] == "claude-haiku-4-5"
    assert fake.last.body["max_tokens"] == 300  # the settings' cap wins over the request's 1000


@pytest.mark.parametrize(
    ("provider", "variable"),
    [("openai", "OPENAI_API_KEY"), ("xai", "XAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")],
)
def test_a_missing_key_is_model_error_naming_the_variable(provider: str, variable: str) -> None:
    """No key: ModelError naming the environment variable to set."""
    with pytest.raises(ModelError, match=variable):
        make_provider(settings(), ModelChoice(provider))


# -- the fakes speak the real wire formats ------------------------------------------------------


async def test_the_openai_fake_answers_without_streaming_too() -> None:
    """The OpenAI fake's non-streamed chat.completion parses in the real SDK."""
    fake = FakeOpenAI()
    async with serve(fake) as url:
        client = openai.AsyncOpenAI(api_key=DEFAULT_KEY, base_url=url + "/v1", max_retries=0)
        try:
            answer = await client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "hi there"}]
            )
        finally:
            await client.close()
    assert answer.choices[0].message.content == "echo: hi there"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 2


async def test_the_anthropic_fake_takes_x_api_key_and_answers_without_streaming() -> None:
    """The Anthropic fake: x-api-key auth, 401 and 400 bodies, a non-streamed message."""
    fake = FakeAnthropic()
    async with serve(fake) as url, httpx2.AsyncClient(base_url=url) as http:
        body = {"model": "claude-haiku-4-5", "max_tokens": 50,
                "messages": [{"role": "user", "content": "hi there"}]}  # fmt: skip
        version = {"anthropic-version": "2023-06-01"}
        ok = await http.post(
            "/v1/messages", json=body, headers={"x-api-key": DEFAULT_KEY, **version}
        )
        wrong = await http.post("/v1/messages", json=body, headers={"x-api-key": "no", **version})
        unversioned = await http.post("/v1/messages", json=body, headers={"x-api-key": DEFAULT_KEY})
        client = anthropic.AsyncAnthropic(api_key=DEFAULT_KEY, base_url=url, max_retries=0)
        try:
            message = await client.messages.create(
                model="claude-haiku-4-5", max_tokens=50,
                messages=[{"role": "user", "content": "hi there"}],
            )  # fmt: skip
        finally:
            await client.close()
    assert ok.status_code == 200
    assert ok.json()["content"][0]["text"] == "echo: hi there"
    assert wrong.status_code == 401
    assert wrong.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    assert unversioned.status_code == 400
    assert message.content[0].type == "text"
    assert message.stop_reason == "end_turn"


# -- pricing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("offline", "templates", 0.0),
        ("openai", "gpt-4.1-mini", 0.40 + 1.60),
        ("openai", "gpt-4.1-mini-2025-04-14", 0.40 + 1.60),  # a snapshot costs as its alias
        ("anthropic", "claude-haiku-4-5-20251001", 1.0 + 5.0),
        ("anthropic", "claude-sonnet-4-6", 3.0 + 15.0),
        ("xai", "grok-4", 3.0 + 15.0),
        ("openai", "a-model-nobody-priced", None),
        ("anthropic", "gpt-4.1", None),  # prices are per provider
    ],
)
def test_cost_is_list_price_per_million_tokens(
    provider: str, model: str, expected: float | None
) -> None:
    """Cost is list price x tokens / 1e6; snapshots price as their alias; unknown is None."""
    cost = cost_usd(provider, model, Usage(1_000_000, 1_000_000))
    assert cost == (pytest.approx(expected) if expected is not None else None)
