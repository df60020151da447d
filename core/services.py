"""The process's adapters, chosen by Settings and opened once: store, writer, reporter, dispatch.

Every entry point — the API's lifespan, the CLI, each agent's Modal function, the crons —
calls `Services.open(settings)`; `close()` undoes it. With `recover=True` (the API and the CLI
running builds in-process), a recovery loop reclaims builds whose owner died, expires
approvals and fails stalled runs (`agents/recovery.py`); in Modal a cron does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from uuid import UUID

from pydantic import SecretStr

from agents.dispatch import AgentFn, Dispatcher, LocalDispatcher, make_dispatcher
from agents.recovery import owner_name
from agents.registry import AGENTS
from agents.reporter import RunReporter
from local.pg import EmbeddedPostgres
from schemas.errors import ValidationFailed
from schemas.rows import BuildSession
from schemas.settings import Settings, StoreKind
from store.checkpoints import Checkpoints
from store.live import EventHub
from store.log_writer import LogWriter
from store.migrate import migrate
from store.ports import Store

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Services:
    """Everything a request handler or an agent needs, built from one Settings."""

    settings: Settings
    store: Store
    writer: LogWriter
    reporter: RunReporter
    hub: EventHub | None = None
    embedded: EmbeddedPostgres | None = None
    database_url: str | None = None
    registry: Mapping[str, AgentFn] = field(default_factory=lambda: AGENTS)
    owner: str = field(default_factory=owner_name)
    api_url: str | None = None
    dispatcher: Dispatcher = field(init=False)
    _recovery: asyncio.Task[None] | None = field(default=None, repr=False)
    _keeper: asyncio.Task[None] | None = field(default=None, repr=False)
    _checkpoints: Checkpoints | None = field(default=None, repr=False)
    _checkpoints_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.dispatcher = make_dispatcher(
            self, self.registry, max_concurrency=self.settings.myyc_max_agents
        )

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        registry: Mapping[str, AgentFn] | None = None,
        recover: bool = False,
    ) -> Services:
        """Start what local mode needs (embedded Postgres, migrations) and open the adapters.

        `recover=True` also starts the recovery loop (at once, then every third of a lease),
        so a process that runs builds picks up the ones a crashed process left behind.
        """
        from core import redact

        redact.install(settings)
        if settings.is_local and settings.myyc_hmac_secret is None:
            from local.secret import local_secret

            secret = local_secret(settings.myyc_data_dir)
            settings = settings.model_copy(update={"myyc_hmac_secret": SecretStr(secret)})
        embedded: EmbeddedPostgres | None = None
        store: Store
        hub: EventHub | None = None
        url: str | None = settings.database_url
        if settings.store_kind is StoreKind.supabase_rest:
            from store.supabase_rest import SupabaseRestStore

            assert settings.supabase_url is not None
            assert settings.supabase_service_role_key is not None
            store = SupabaseRestStore(
                settings.supabase_url, settings.supabase_service_role_key.get_secret_value()
            )
        else:
            from store.postgres import PostgresStore

            if url is None:
                embedded = EmbeddedPostgres(settings.myyc_data_dir)
                url = await asyncio.to_thread(embedded.start)
            await migrate(url)
            store = await PostgresStore.open(url)
            hub = await EventHub(url).start()
        writer = await LogWriter(
            store,
            batch_size=settings.log_batch_size,
            queue_max=settings.log_queue_max,
            linger=settings.log_linger_ms / 1000.0,
            retry_for=settings.log_retry_seconds,
            spool_dir=settings.spool_dir,
        ).start()
        services = cls(
            settings, store, writer, RunReporter(store, writer), hub, embedded, url,
            registry=registry if registry is not None else AGENTS,
        )  # fmt: skip
        if embedded is not None:
            services._keeper = asyncio.create_task(
                _keep_postgres_up(embedded), name="myyc-embedded-postgres"
            )
        # In Modal the `recover_builds` cron recovers; a local process recovers for itself.
        if recover and isinstance(services.dispatcher, LocalDispatcher):
            services.start_recovery()
        return services

    async def checkpoints(self) -> Checkpoints:
        """The LangGraph checkpointer on this process's database (opened on first use)."""
        async with self._checkpoints_lock:
            if self._checkpoints is None:
                if self.database_url is None:
                    raise ValidationFailed(
                        "the build pipeline keeps its checkpoints in PostgreSQL: set DATABASE_URL"
                        " (beside SUPABASE_URL) to run builds",
                        field="database_url",
                    )
                self._checkpoints = await Checkpoints(self.database_url).open()
            return self._checkpoints

    async def cancel_build(self, build_id: UUID, *, reason: str) -> BuildSession:
        """Cancel a live build (agents/orchestrator.py); one that ended is returned as is."""
        from agents.orchestrator import cancel_build

        return await cancel_build(self, build_id, reason=reason)

    def start_recovery(self) -> None:
        """Run the recovery loop in the background until close()."""
        if self._recovery is None:
            from agents.recovery import recovery_loop

            self._recovery = asyncio.create_task(recovery_loop(self), name="myyc-recovery")

    async def close(self) -> None:
        """Stop recovering, let agents finish, flush the log, close the store (and Postgres)."""
        if self._closed:
            return
        self._closed = True
        for task in (self._recovery, self._keeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.dispatcher.close()
        if self._checkpoints is not None:
            await self._checkpoints.close()
        await self.writer.close()
        if self.hub is not None:
            await self.hub.close()
        await self.store.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.close)


async def _keep_postgres_up(pg: EmbeddedPostgres, *, every: float = 2.0) -> None:
    """The process that owns the embedded Postgres restarts it when it dies (a crash, an OOM
    kill); the pools reconnect by themselves and the LogWriter's spool replays."""
    while True:
        await asyncio.sleep(every)
        if await asyncio.to_thread(pg.running):
            continue
        logger.warning("the embedded PostgreSQL is not running: restarting it")
        try:
            await asyncio.to_thread(pg.restart_server)
        except Exception:
            logger.exception("could not restart the embedded PostgreSQL; trying again")
        else:
            logger.info("the embedded PostgreSQL is back")
