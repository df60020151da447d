"""The offline model provider: deterministic templates that still produce a working app.

Same request in, same answer out — local runs and tests are reproducible with no model and no
network. It answers from `request.context`, never from the chat messages:

- `purpose="plan"`: context `idea` ({title, description, category}) and `template`
  ("marketplace", "saas" or None) → a `Plan` as JSON. Features come from a library
  (`local.offline_app.library`), chosen by keywords of the idea and by the template.
- `purpose="code"`: context `plan` (a Plan as JSON data) and `idea` → the app's files in the
  file stream format (`agents.filestream`). Every planned feature is a section marked
  `data-feature="<key>"` whose script implements it. A planned key the library does not know
  (a plan from another provider) becomes a generic notes section under that key, so the app
  still works and the verifier still finds the feature. The verifier's `feedback` is read
  but changes nothing: the output is deterministic and already passes the checks, so a repair
  simply regenerates it.

The idea's text is data: it reaches the files only HTML-escaped in the page, or inside the
page's JSON block (see `local.offline_app.render`). The answer streams to `on_text` in chunks
of 200-400 characters, `delay` seconds apart; usage is estimated at four characters a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from agents.filestream import format_files
from agents.providers import (
    Completion,
    ModelError,
    ModelRequest,
    OnReset,
    OnText,
    Usage,
)
from local.offline_app import Idea, app_files, make_plan
from schemas.plan import Plan

CHUNK_MIN = 200
CHUNK_MAX = 400


def chunks(text: str, low: int = CHUNK_MIN, high: int = CHUNK_MAX) -> list[str]:
    """`text` in pieces of `low` to `high` characters, cut at line ends where possible."""
    out: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        current += line
        while len(current) >= high:
            out.append(current[:high])
            current = current[high:]
        if len(current) >= low:
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def tokens(chars: int) -> int:
    """A token estimate: four characters a token, rounded up."""
    return (chars + 3) // 4


def _idea(context: Mapping[str, Any], *, required: bool) -> Idea:
    idea = Idea.from_context(context.get("idea"))
    if idea is not None:
        return idea
    if required:
        raise ModelError(
            "the offline provider plans from context.idea: {title, description, category}",
            field="idea",
        )
    return Idea(title="My app")


def answer(request: ModelRequest) -> str:
    """The offline answer to `request` (a Plan as JSON, or files in the stream format)."""
    context = request.context
    if request.purpose == "plan":
        template = context.get("template")
        plan = make_plan(
            _idea(context, required=True), template if isinstance(template, str) else None
        )
        text = plan.model_dump_json(indent=2)
        Plan.model_validate_json(text)
        return text + "\n"
    try:
        plan = Plan.model_validate(context.get("plan"))
    except ValueError as err:
        raise ModelError(f"the offline provider writes code from context.plan: {err}") from None
    return format_files(app_files(plan, _idea(context, required=False)))


class OfflineProvider:
    """A `ModelProvider` without a model; see the module docstring."""

    name = "offline"
    model = "offline-templates-2"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        """Seconds between streamed chunks (to watch a build, or to test a crash mid-stream)."""

    async def complete(
        self,
        request: ModelRequest,
        *,
        on_text: OnText | None = None,
        on_reset: OnReset | None = None,
    ) -> Completion:
        """The answer to `request`, streamed to `on_text` in chunks; it never needs a retry."""
        text = answer(request)
        for index, chunk in enumerate(chunks(text)):
            if index and self.delay > 0:
                await asyncio.sleep(self.delay)
            if on_text is not None:
                await on_text(chunk)
        usage = Usage(
            input_tokens=tokens(sum(len(m.content) for m in request.messages)),
            output_tokens=tokens(len(text)),
        )
        return Completion(text=text, usage=usage, provider=self.name, model=self.model)

    async def close(self) -> None:
        """Nothing to release."""
