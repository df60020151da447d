"""The process's adapters, chosen by Settings and opened once: store, log writer, hub, reporter."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from agents.reporter import RunReporter
from local.pg import EmbeddedPostgres
from schemas.settings import Settings, StoreKind
from store.live import EventHub
from store.log_writer import LogWriter
from store.migrate import migrate
from store.ports import Store

if TYPE_CHECKING:
    from agents.dispatch import Dispatcher

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request handler or an agent needs, built from one Settings."""

    settings: Settings
    store: Store
    writer: LogWriter
    reporter: RunReporter
    hub: EventHub | None = None
    embedded: EmbeddedPostgres | None = None
    database_url: str | None = None
    dispatcher: Dispatcher | None = None
    _closed: bool = field(default=False, repr=False)

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        """Start what local mode needs (embedded Postgres, migrations) and open the adapters."""
        if settings.is_local and settings.myyc_hmac_secret is None:
            from local.secret import local_secret

            secret = local_secret(settings.myyc_data_dir)
            settings = settings.model_copy(update={"myyc_hmac_secret": SecretStr(secret)})
        embedded: EmbeddedPostgres | None = None
        store: Store
        hub: EventHub | None = None
        url: str | None = None
        if settings.store_kind is StoreKind.supabase_rest:
            from store.supabase_rest import SupabaseRestStore

            assert settings.supabase_url is not None
            assert settings.supabase_service_role_key is not None
            store = SupabaseRestStore(
                settings.supabase_url, settings.supabase_service_role_key.get_secret_value()
            )
        else:
            from store.postgres import PostgresStore

            if settings.database_url is None:
                embedded = EmbeddedPostgres(settings.myyc_data_dir)
                url = await asyncio.to_thread(embedded.start)
            else:
                url = settings.database_url
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
        services = cls(settings, store, writer, RunReporter(store, writer), hub, embedded, url)
        from agents.dispatch import make_dispatcher

        services.dispatcher = make_dispatcher(services, max_concurrency=settings.myyc_max_agents)
        return services

    async def close(self) -> None:
        """Flush the log, stop listening, close the store (and the embedded server)."""
        if self._closed:
            return
        self._closed = True
        if self.dispatcher is not None:
            await self.dispatcher.close()
        await self.writer.close()
        if self.hub is not None:
            await self.hub.close()
        await self.store.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.close)
