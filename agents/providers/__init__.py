"""The model port: one request in, a streamed answer and its token usage out.

Every provider — offline (the default), OpenAI, Anthropic, xAI (through the OpenAI SDK) —
implements `ModelProvider.complete`. Planning and codegen build a `ModelRequest`: chat
`messages` for the real models, plus the structured `context` (the idea, the plan, the
verifier's feedback) that the offline provider builds from without a model. Answers come back
as text — JSON for a plan, the file stream format (`agents/filestream.py`) for code — so the
same parsing, validation and repair loop runs whichever provider answered.

Errors::

    ModelError (MyycError)              code model_error: refused (400/401/403/404/422)
    ├── ModelUnavailable                code model_unavailable: 429/5xx/529/dropped, retries spent
    └── ModelOutputInvalid              code model_output_invalid: still invalid after repairs
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from schemas.errors import ErrorCode, MyycError
from schemas.settings import Settings

Purpose = Literal["plan", "code"]
Role = Literal["system", "user", "assistant"]
OnText = Callable[[str], Awaitable[None]]
"""Called with each piece of text as the model streams it."""
OnReset = Callable[[], Awaitable[None]]
"""Called when a stream broke after some text and the call starts over: forget that text."""

PROVIDERS = ("offline", "openai", "anthropic", "xai")


class ModelError(MyycError):
    """The provider refused the request; retrying the same request will not help."""

    code = ErrorCode.model_error


class ModelUnavailable(ModelError):
    """The provider kept failing (rate limits, 5xx, overloaded, dropped streams)."""

    code = ErrorCode.model_unavailable


class ModelOutputInvalid(ModelError):
    """The model's answer stayed invalid after being sent back with the errors."""

    code = ErrorCode.model_output_invalid


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What planning or codegen asks of a model."""

    purpose: Purpose
    messages: Sequence[Message]
    max_tokens: int = 16_000
    json_schema: Mapping[str, Any] | None = None
    """Ask for JSON matching this schema (structured output), when the answer is JSON."""
    schema_name: str = "answer"
    context: Mapping[str, Any] = field(default_factory=dict)
    """The request as data (idea, template, plan, feedback): what the offline provider reads."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call used."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's whole answer."""

    text: str
    usage: Usage
    provider: str
    model: str
    attempts: int = 1
    """Calls it took (retries after 429, 5xx, dropped streams)."""


class ModelProvider(Protocol):
    """A model behind one call: stream the answer to `on_text`, return it whole with usage."""

    name: str
    model: str

    async def complete(
        self,
        request: ModelRequest,
        *,
        on_text: OnText | None = None,
        on_reset: OnReset | None = None,
    ) -> Completion:
        """The model's answer to `request`; ModelError (or a subclass) when there is none.

        Text streams to `on_text` as it arrives. A retry after part of an answer was streamed
        calls `on_reset` first, so the consumer starts over with the new attempt's text.
        """
        ...

    async def close(self) -> None:
        """Release the provider's HTTP client."""
        ...


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """Which provider and model a build uses (env default, admin setting, per-project override)."""

    provider: str = "offline"
    model: str | None = None


def make_provider(settings: Settings, choice: ModelChoice | None = None) -> ModelProvider:
    """The provider for `choice` (default: the settings' MYYC_LLM_PROVIDER / MYYC_LLM_MODEL)."""
    choice = choice or ModelChoice(settings.myyc_llm_provider, settings.myyc_llm_model)
    if choice.provider == "offline":
        from local.offline_llm import OfflineProvider

        return OfflineProvider(delay=settings.offline_chunk_delay_ms / 1000.0)
    if choice.provider in ("openai", "xai"):
        from agents.providers.openai_chat import OpenAIProvider

        return OpenAIProvider.from_settings(settings, choice)
    if choice.provider == "anthropic":
        from agents.providers.anthropic_messages import AnthropicProvider

        return AnthropicProvider.from_settings(settings, choice)
    raise ModelError(
        f"unknown model provider {choice.provider!r}: expected one of {', '.join(PROVIDERS)}",
        field="provider",
    )
