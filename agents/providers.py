"""The plan provider port: an idea in, a Plan out. LLM providers plug in behind it."""

from __future__ import annotations

from typing import Protocol

from schemas.api import SpawnConfig
from schemas.plan import Plan
from schemas.settings import Settings


class PlanProvider(Protocol):
    """Turns an idea into a plan and the files of a small working app."""

    name: str

    async def plan(self, idea: SpawnConfig) -> Plan:
        """The plan for `idea`."""
        ...


def make_provider(settings: Settings) -> PlanProvider:
    """The provider the settings select (today: the offline one)."""
    from local.offline_llm import OfflineProvider

    return OfflineProvider()
