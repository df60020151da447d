"""The agents by name: what the dispatcher runs, locally or as one Modal function each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agents.codegen import run_codegen
from agents.github import run_github
from agents.orchestrator import run_build
from agents.planner import run_planner
from agents.preview import run_preview
from agents.verifier import run_verifier

#: Called as `await fn(deps, dispatcher, **kwargs)` with string kwargs (ids).
AgentFn = Callable[..., Awaitable[Any]]

AGENTS: Mapping[str, AgentFn] = {
    "orchestrator": run_build,
    "planner": run_planner,
    "codegen": run_codegen,
    "github": run_github,
    "preview": run_preview,
    "verifier": run_verifier,
}
