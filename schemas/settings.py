"""All of myyc's configuration in one pydantic-settings class.

Nothing set means local mode: an embedded PostgreSQL under `MYYC_DATA_DIR`, the local
dispatcher, the local forge, the offline LLM provider and the local machines driver.
Each production part switches on when its credentials are present.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDERS = frozenset({"changeme", "change-me", "changethis", "secret", "xxx", "todo"})


class StoreKind(StrEnum):
    """Where the control-plane rows live."""

    embedded = "embedded"
    postgres = "postgres"
    supabase_rest = "supabase_rest"


class Settings(BaseSettings):
    """myyc settings, read from the environment (and `.env`) once, then injected."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    myyc_data_dir: Path = Field(default=Path(".myyc"))
    """Where local state lives: the embedded database, the local forge, spooled events."""

    database_url: str | None = None
    """A PostgreSQL URL; when unset (and Supabase is unset) the embedded server is used."""

    supabase_url: str | None = None
    """The Supabase project URL; with the service role key, rows are written through PostgREST."""

    supabase_service_role_key: SecretStr | None = None
    """The service role key (server side only; never logged)."""

    supabase_jwt_secret: SecretStr | None = None
    """The project's JWT secret, used to verify users' HS256 tokens."""

    log_batch_size: int = Field(default=2000, ge=1, le=50_000)
    """The most events one LogWriter flush sends."""

    log_queue_max: int = Field(default=100_000, ge=1)
    """Events a LogWriter holds in memory before `log()` waits (back-pressure, never drops)."""

    log_linger_ms: float = Field(default=0.0, ge=0.0, le=5_000.0)
    """How long an idle writer waits to fill a batch; 0 flushes a lone line at once."""

    log_retry_seconds: float = Field(default=5.0, ge=0.0)
    """How long a flush retries before its events go to the local spool."""

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        for name in ("supabase_service_role_key", "supabase_jwt_secret"):
            value = getattr(self, name)
            if value is not None and value.get_secret_value().strip().lower() in _PLACEHOLDERS:
                raise ValueError(f"{name} is a placeholder; set a real secret")
        if (self.supabase_url is None) != (self.supabase_service_role_key is None):
            raise ValueError("set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY together")
        return self

    @property
    def store_kind(self) -> StoreKind:
        """Which store adapter this configuration selects."""
        if self.supabase_url is not None:
            return StoreKind.supabase_rest
        if self.database_url is not None:
            return StoreKind.postgres
        return StoreKind.embedded

    @property
    def is_local(self) -> bool:
        """True when no production part is configured."""
        return self.store_kind is StoreKind.embedded

    @property
    def spool_dir(self) -> Path:
        """Where LogWriters spool events while the store is down."""
        return self.myyc_data_dir / "spool"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once."""
    return Settings()
