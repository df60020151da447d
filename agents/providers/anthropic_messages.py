"""Anthropic behind the model port, through the Anthropic SDK's streamed Messages API.

System messages become `system=`; the rest alternate user / assistant as the API wants. The
SDK never retries (`max_retries=0`): `retrying.with_retries` is the one retry layer, including
529 overloaded and the `overloaded_error` event Anthropic can send inside a 200 stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

import anthropic
import httpx2
from anthropic.types import (
    MessageParam,
    OutputConfigParam,
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)

from agents.providers import (
    Completion,
    Message,
    ModelChoice,
    ModelError,
    ModelRequest,
    OnReset,
    OnText,
    Usage,
)
from agents.providers.retrying import MODEL_POLICY, Sleep, StreamBroken, with_retries
from clients.retry import RetryPolicy
from schemas.settings import Settings

log = logging.getLogger(__name__)

#: The default when no model is chosen; MYYC_LLM_MODEL, the admin setting or a build overrides.
#: (claude-sonnet-4-5 would do, but this SDK warns it is deprecated.)
DEFAULT_MODEL = "claude-sonnet-4-6"


def _split(messages: Sequence[Message]) -> tuple[str, list[MessageParam]]:
    # The top-level `system` works with every model (in-list system turns are newer).
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    chat: list[MessageParam] = []
    for m in messages:
        if m.role == "user":
            chat.append({"role": "user", "content": m.content})
        elif m.role == "assistant":
            chat.append({"role": "assistant", "content": m.content})
    return system, chat


def _billed_input(fresh: int, cache_writes: int | None, cache_reads: int | None) -> int:
    # What Anthropic bills as input: fresh tokens plus cache writes and reads.
    return fresh + (cache_writes or 0) + (cache_reads or 0)


def _output_config(request: ModelRequest) -> OutputConfigParam | anthropic.Omit:
    if request.json_schema is None:
        return anthropic.omit
    return {"format": {"type": "json_schema", "schema": dict(request.json_schema)}}


class AnthropicProvider:
    """A Claude model on Anthropic's Messages API, streamed."""

    name: str = "anthropic"

    def __init__(
        self,
        *,
        api_key: str,
        model: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_attempts: int = MODEL_POLICY.max_attempts,
        max_output_tokens: int = 16_000,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        """A provider calling `model` (default DEFAULT_MODEL) at `base_url` with `api_key`.

        `timeout` bounds connecting and every read of the stream; `max_attempts` counts every
        call (`policy` tunes the waits; `sleep` is injectable so tests need not wait);
        `http_client`, an `httpx2.AsyncClient`, replaces the SDK's own (proxies, transports).
        """
        if not api_key:
            raise ModelError("ANTHROPIC_API_KEY is not set: the anthropic provider needs it")
        self.model: str = model or DEFAULT_MODEL
        self.max_output_tokens = max_output_tokens
        self._api_key = api_key
        self._policy = dataclasses.replace(policy or MODEL_POLICY, max_attempts=max_attempts)
        self._sleep = sleep
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )

    @classmethod
    def from_settings(cls, settings: Settings, choice: ModelChoice) -> AnthropicProvider:
        """The provider for `choice`, configured from `settings`."""
        secret = settings.anthropic_api_key
        return cls(
            api_key=secret.get_secret_value() if secret is not None else "",
            model=choice.model,
            base_url=settings.anthropic_base_url,
            timeout=settings.llm_timeout_seconds,
            max_attempts=settings.llm_max_attempts,
            max_output_tokens=settings.llm_max_output_tokens,
        )

    async def complete(
        self,
        request: ModelRequest,
        *,
        on_text: OnText | None = None,
        on_reset: OnReset | None = None,
    ) -> Completion:
        """The model's streamed answer to `request` (see `ModelProvider.complete`)."""
        system, messages = _split(request.messages)
        output_config = _output_config(request)
        max_tokens = min(request.max_tokens, self.max_output_tokens)

        async def attempt(number: int, emit: OnText) -> tuple[str, Usage]:
            stream = await self._client.messages.create(
                model=self.model,
                max_tokens=max_tokens,
                messages=messages,
                system=system or anthropic.omit,
                output_config=output_config,
                stream=True,
                extra_headers={"x-stainless-retry-count": str(number - 1)},
            )
            parts: list[str] = []
            input_tokens = output_tokens = 0
            stop_reason: str | None = None
            stopped = False
            async with stream:
                async for event in stream:
                    if isinstance(event, RawContentBlockDeltaEvent):
                        if event.delta.type == "text_delta":
                            parts.append(event.delta.text)
                            await emit(event.delta.text)
                    elif isinstance(event, RawMessageStartEvent):
                        u = event.message.usage
                        input_tokens = _billed_input(
                            u.input_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens
                        )
                        output_tokens = u.output_tokens
                    elif isinstance(event, RawMessageDeltaEvent):
                        stop_reason = event.delta.stop_reason or stop_reason
                        # Cumulative counts; input appears here only when it changed.
                        d = event.usage
                        output_tokens = d.output_tokens
                        if d.input_tokens is not None:
                            input_tokens = _billed_input(
                                d.input_tokens,
                                d.cache_creation_input_tokens,
                                d.cache_read_input_tokens,
                            )
                    elif isinstance(event, RawMessageStopEvent):
                        stopped = True
            if stop_reason == "refusal":
                raise ModelError(f"anthropic ({self.model}) refused to answer")
            if not stopped:
                raise StreamBroken("the stream ended before message_stop")
            if stop_reason == "max_tokens":
                log.warning("anthropic (%s) stopped at %d tokens", self.model, max_tokens)
            return "".join(parts), Usage(input_tokens, output_tokens)

        (text, usage), attempts = await with_retries(
            attempt,
            provider=self.name,
            model=self.model,
            on_text=on_text,
            on_reset=on_reset,
            policy=self._policy,
            secrets=(self._api_key,),
            sleep=self._sleep,
        )
        return Completion(text, usage, self.name, self.model, attempts)

    async def close(self) -> None:
        """Close the SDK's HTTP client."""
        await self._client.close()
