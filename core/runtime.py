"""The body every agent's Modal function runs: open Services, run the agent, close them.

`modal_app.py` declares one Modal function per agent and each calls `run_agent(name, **kwargs)`,
so the wiring file holds no logic and every agent starts and stops the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.dispatch import AgentFn
    from schemas.settings import Settings

logger = logging.getLogger(__name__)


async def run_agent(name: str, **kwargs: str) -> Any:
    """Run agent `name` with this process's settings: the body of its Modal function.

    An exception the agent raises is logged and *returned* as `failure_result` (which
    `ModalDispatcher.call` raises again as AgentFailed): Modal retries any input that raises,
    and its retries are for crashed containers, not for an agent's reported failure. A failure
    to start (settings, the store) still raises, so Modal does retry that.
    """
    return await run_agent_with(name, kwargs, contain_failures=True)


async def run_agent_with(
    name: str,
    kwargs: Mapping[str, str],
    *,
    registry: Mapping[str, AgentFn] | None = None,
    settings: Settings | None = None,
    contain_failures: bool = False,
) -> Any:
    """`run_agent` with its parts injectable; by default the agent's exception propagates."""
    # Imported here: this runs in a fresh container, and only the agent's own path should load.
    from agents.dispatch import UnknownAgent, failure_result
    from core.services import Services
    from schemas.settings import get_settings

    _configure_logging()
    if registry is None:
        from agents.registry import AGENTS

        registry = AGENTS
    fn = registry.get(name)
    if fn is None:
        raise UnknownAgent(f"no agent named {name!r} (known: {', '.join(sorted(registry))})")
    services = await Services.open(settings or get_settings(), registry=registry)
    try:
        try:
            return await fn(services, services.dispatcher, **kwargs)
        except Exception as err:
            if not contain_failures:
                raise
            logger.exception("agent %s failed", name)
            return failure_result(name, err)
    finally:
        await services.close()


async def run_recovery(settings: Settings | None = None) -> dict[str, int]:
    """The `recover_builds` cron's body: one recovery pass (agents/recovery.py)."""
    from agents.recovery import recover_once
    from core.services import Services
    from schemas.settings import get_settings

    _configure_logging()
    services = await Services.open(settings or get_settings())
    try:
        done = await recover_once(services)
        return {"expired_approvals": done.expired_approvals, "stalled_runs": done.stalled_runs,
                "resumed_builds": done.resumed_builds}  # fmt: skip
    finally:
        await services.close()


def _configure_logging() -> None:
    # A Modal container starts with a bare root logger (WARNING, no handler): give agents'
    # info lines somewhere to go, unless the host process already configured logging.
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
