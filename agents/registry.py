"""The agents by name: what the dispatcher runs, locally or as one Modal function each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agents.github import run_github
from agents.orchestrator import run_build
from agents.planner import run_planner

#: Called as `await fn(services, dispatcher, **kwargs)` with string kwargs (ids).
AgentFn = Callable[..., Awaitable[Any]]

AGENTS: Mapping[str, AgentFn] = {
    "orchestrator": run_build,
    "planner": run_planner,
    "github": run_github,
}
