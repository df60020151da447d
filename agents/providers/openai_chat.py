"""OpenAI and xAI behind the model port, through the OpenAI SDK's streamed Chat Completions.

xAI speaks the same wire format, so it is this provider pointed at `XAI_BASE_URL` with
`XAI_API_KEY` and named "xai". The SDK never retries (`max_retries=0`): `retrying.with_retries`
is the one retry layer, and tells the server which retry this is (`x-stainless-retry-count`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat

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

OpenAIName = Literal["openai", "xai"]

#: Defaults when no model is chosen; MYYC_LLM_MODEL, the admin setting or a build overrides.
DEFAULT_MODELS: dict[str, str] = {"openai": "gpt-4.1-mini", "xai": "grok-4"}
_KEY_VARS: dict[str, str] = {"openai": "OPENAI_API_KEY", "xai": "XAI_API_KEY"}


def _messages(messages: Sequence[Message]) -> list[ChatCompletionMessageParam]:
    out: list[ChatCompletionMessageParam] = []
    for m in messages:
        if m.role == "system":
            out.append({"role": "system", "content": m.content})
        elif m.role == "user":
            out.append({"role": "user", "content": m.content})
        else:
            out.append({"role": "assistant", "content": m.content})
    return out


def _response_format(request: ModelRequest) -> ResponseFormat | openai.Omit:
    if request.json_schema is None:
        return openai.omit
    # strict=False: strict mode rejects schemas with optional fields, which ours have.
    return {
        "type": "json_schema",
        "json_schema": {
            "name": request.schema_name,
            "schema": dict(request.json_schema),
            "strict": False,
        },
    }


class OpenAIProvider:
    """A model on OpenAI's (or xAI's) Chat Completions API, streamed."""

    def __init__(
        self,
        *,
        api_key: str,
        name: OpenAIName = "openai",
        model: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_attempts: int = MODEL_POLICY.max_attempts,
        max_output_tokens: int = 16_000,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        """A provider calling `model` (default per `name`) at `base_url` with `api_key`.

        `timeout` bounds connecting and every read of the stream; `max_attempts` counts every
        call (`policy` tunes the waits; `sleep` is injectable so tests need not wait);
        `http_client`, an `httpx2.AsyncClient`, replaces the SDK's own (proxies, transports).
        """
        if not api_key:
            raise ModelError(f"{_KEY_VARS[name]} is not set: the {name} provider needs it")
        self.name: str = name
        self.model: str = model or DEFAULT_MODELS[name]
        self.max_output_tokens = max_output_tokens
        self._api_key = api_key
        self._policy = dataclasses.replace(policy or MODEL_POLICY, max_attempts=max_attempts)
        self._sleep = sleep
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )

    @classmethod
    def from_settings(cls, settings: Settings, choice: ModelChoice) -> OpenAIProvider:
        """The provider `choice` names ("openai" or "xai"), configured from `settings`."""
        if choice.provider not in ("openai", "xai"):
            raise ModelError(f"OpenAIProvider serves openai and xai, not {choice.provider!r}")
        name: OpenAIName = "xai" if choice.provider == "xai" else "openai"
        secret = settings.xai_api_key if name == "xai" else settings.openai_api_key
        return cls(
            api_key=secret.get_secret_value() if secret is not None else "",
            name=name,
            model=choice.model,
            base_url=settings.xai_base_url if name == "xai" else settings.openai_base_url,
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
        messages = _messages(request.messages)
        response_format = _response_format(request)
        max_tokens = min(request.max_tokens, self.max_output_tokens)

        async def attempt(number: int, emit: OnText) -> tuple[str, Usage]:
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_completion_tokens=max_tokens,
                response_format=response_format,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-stainless-retry-count": str(number - 1)},
            )
            parts: list[str] = []
            refusal: list[str] = []
            finish: str | None = None
            usage = Usage()
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta.content:
                            parts.append(delta.content)
                            await emit(delta.content)
                        if delta.refusal:
                            refusal.append(delta.refusal)
                        if choice.finish_reason is not None:
                            finish = choice.finish_reason
                    if chunk.usage is not None:
                        usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            if refusal:
                raise ModelError(f"{self.name} ({self.model}) refused: {''.join(refusal)}")
            if finish is None:
                raise StreamBroken("the stream ended before a finish reason")
            if finish == "content_filter":
                raise ModelError(f"{self.name} ({self.model}) withheld the answer (content filter)")
            if finish == "length":
                log.warning("%s (%s) stopped at %d tokens", self.name, self.model, max_tokens)
            return "".join(parts), usage

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
