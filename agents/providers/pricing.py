"""What a model call cost, in US dollars, from its token usage and the providers' list prices."""

from __future__ import annotations

import re

from agents.providers import Usage

#: (provider, model) → (USD per million input tokens, USD per million output tokens).
#: These are public list prices (no batch, cache or negotiated discounts): keep them current
#: when providers change prices or we add a default model; an unlisted model costs None.
PRICES: dict[tuple[str, str], tuple[float, float]] = {
    ("openai", "gpt-4.1"): (2.00, 8.00),
    ("openai", "gpt-4.1-mini"): (0.40, 1.60),
    ("openai", "gpt-4.1-nano"): (0.10, 0.40),
    ("openai", "gpt-4o"): (2.50, 10.00),
    ("openai", "gpt-4o-mini"): (0.15, 0.60),
    ("openai", "gpt-5"): (1.25, 10.00),
    ("openai", "gpt-5-mini"): (0.25, 2.00),
    ("openai", "gpt-5-nano"): (0.05, 0.40),
    ("openai", "o4-mini"): (1.10, 4.40),
    ("anthropic", "claude-sonnet-4-6"): (3.00, 15.00),
    ("anthropic", "claude-sonnet-4-5"): (3.00, 15.00),
    ("anthropic", "claude-opus-4-5"): (5.00, 25.00),
    ("anthropic", "claude-haiku-4-5"): (1.00, 5.00),
    ("xai", "grok-4"): (3.00, 15.00),
    ("xai", "grok-3"): (3.00, 15.00),
    ("xai", "grok-3-mini"): (0.30, 0.50),
}

# A pinned snapshot costs what its alias costs: gpt-4.1-2025-04-14, claude-haiku-4-5-20251001.
_SNAPSHOT = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


def price(provider: str, model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for `model`, or None when it is not listed."""
    found = PRICES.get((provider, model))
    if found is None:
        found = PRICES.get((provider, _SNAPSHOT.sub("", model)))
    return found


def cost_usd(provider: str, model: str, usage: Usage) -> float | None:
    """The list-price cost of `usage`; 0.0 offline; None for a model without a listed price."""
    if provider == "offline":
        return 0.0
    found = price(provider, model)
    if found is None:
        return None
    per_input, per_output = found
    return (usage.input_tokens * per_input + usage.output_tokens * per_output) / 1_000_000
