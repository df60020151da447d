"""Build the preview service from Services: the driver settings choose, the Postgres store.

Kept apart from `sessions` so the logic there never imports a concrete driver.
"""

from __future__ import annotations

from typing import Protocol

from previews.fly_driver import FlyMachinesDriver
from previews.local_driver import LocalMachines
from previews.ports import MachinesDriver
from previews.sessions import PreviewSessions
from schemas.errors import ValidationFailed
from schemas.settings import Settings
from store.log_writer import LogWriter
from store.ports import Store
from store.postgres import PostgresStore
from store.preview_store import PostgresPreviewStore


class Services(Protocol):
    """What previews need of a process's services (core.services.Services has it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def writer(self) -> LogWriter: ...


def make_driver(settings: Settings) -> MachinesDriver:
    """Fly when `FLY_API_TOKEN` and `FLY_APP` are set; the local driver otherwise."""
    if (settings.fly_api_token is None) != (settings.fly_app is None):
        raise ValidationFailed("set FLY_API_TOKEN and FLY_APP together", field="fly_app")
    if settings.fly_api_token is not None:
        return FlyMachinesDriver.from_settings(settings)
    return LocalMachines(settings.myyc_data_dir)


def preview_store(services: Services) -> PostgresPreviewStore:
    """The preview store: on the services' Postgres pool, or its own pool on DATABASE_URL.

    Previews need PostgreSQL (there is no Supabase REST variant of this store yet): with the
    Supabase REST store, `DATABASE_URL` must be set too.
    """
    if isinstance(services.store, PostgresStore):
        return PostgresPreviewStore.of(services.store)
    if services.settings.database_url is not None:
        return PostgresPreviewStore.connect(services.settings.database_url)
    raise ValidationFailed(
        "previews need PostgreSQL: set DATABASE_URL (beside SUPABASE_URL)", field="database_url"
    )


def open_previews(
    services: Services,
    *,
    api_url: str | None = None,
    driver: MachinesDriver | None = None,
) -> PreviewSessions:
    """The preview session service for `services` (close it with `.close()`).

    `api_url` is where a local container reaches the myyc API (defaults to the address
    `myyc up` binds).
    """
    settings = services.settings
    if api_url is None:
        api_url = f"http://{settings.myyc_host}:{settings.myyc_port}"
    store = preview_store(services)
    return PreviewSessions(
        store=store,
        files=store,
        projects=services.store,
        driver=driver if driver is not None else make_driver(settings),
        writer=services.writer,
        settings=settings,
        api_url=api_url,
    )
