"""What an agent needs from its process: the small port agents depend on.

`core.services.Services` satisfies it; agents never import the composition root, so they can
run in any process (the API, the CLI, a Modal function) that hands them its parts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher
    from agents.reporter import RunReporter
    from schemas.settings import Settings
    from store.checkpoints import Checkpoints
    from store.log_writer import LogWriter
    from store.ports import Store


class AgentDeps(Protocol):
    """The parts an agent uses: settings, the store, the log writer, the reporter, dispatch."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def writer(self) -> LogWriter: ...

    @property
    def reporter(self) -> RunReporter: ...

    @property
    def dispatcher(self) -> Dispatcher: ...

    @property
    def owner(self) -> str:
        """This process's name as a build lease owner."""
        ...

    @property
    def api_url(self) -> str | None:
        """Where this process serves the API, when it does (local preview containers call it)."""
        ...

    @property
    def database_url(self) -> str | None:
        """A direct Postgres URL (the LangGraph checkpointer needs one), if configured."""
        ...

    async def checkpoints(self) -> Checkpoints:
        """The LangGraph checkpointer on the control plane's database."""
        ...
