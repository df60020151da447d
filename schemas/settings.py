"""All of myyc's configuration in one pydantic-settings class.

Nothing set means local mode: an embedded PostgreSQL under `MYYC_DATA_DIR`, the local
dispatcher, the local forge, the offline LLM provider and the local machines driver.
Each production part switches on when its credentials are present.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
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

    myyc_hmac_secret: SecretStr | None = None
    """Shared secret server-to-server callers (edge functions, cron) sign requests with."""

    myyc_auth_disabled: bool = False
    """Turn auth off: allowed only in local mode with the API bound to loopback."""

    myyc_host: str = "127.0.0.1"
    """Where `myyc up` binds the API."""

    myyc_port: int = Field(default=8765, ge=0, le=65535)
    """The port `myyc up` binds."""

    myyc_max_agents: int = Field(default=8, ge=1, le=256)
    """Agents the local dispatcher runs at once (inside Modal each agent has its own container)."""

    spawn_rate_per_minute: int = Field(default=30, ge=1)
    """Spawns one user may make per minute (a burst of this size, refilled evenly)."""

    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    """Request bodies above this answer 413."""

    github_token: SecretStr | None = None
    """With a token, repositories are created on GitHub; without, in the local forge."""

    github_org: str | None = None
    """Create repositories under this organisation instead of the token's user."""

    github_api_url: str = "https://api.github.com"
    """The GitHub REST API base (GitHub Enterprise, or a fake in tests)."""

    log_batch_size: int = Field(default=2000, ge=1, le=50_000)
    """The most events one LogWriter flush sends."""

    log_queue_max: int = Field(default=100_000, ge=1)
    """Events a LogWriter holds in memory before `log()` waits (back-pressure, never drops)."""

    log_linger_ms: float = Field(default=0.0, ge=0.0, le=5_000.0)
    """How long an idle writer waits to fill a batch; 0 flushes a lone line at once."""

    log_retry_seconds: float = Field(default=5.0, ge=0.0)
    """How long a flush retries before its events go to the local spool."""

    supabase_anon_key: SecretStr | None = None
    """The anon key: preview containers send it as `apikey` to PostgREST and Realtime."""

    fly_api_token: SecretStr | None = None
    """A Fly token (`FlyV1 …` or a bare macaroon); with `fly_app`, previews run on Fly."""

    fly_app: str | None = None
    """The Fly app preview machines live in (its IPs and `services` route the public URL)."""

    preview_image: str = "ghcr.io/myyc/preview-container:latest"
    """The preview container image (built from previews/container/Dockerfile)."""

    preview_cpu_kind: Literal["shared", "performance"] = "shared"
    """Fly guest CPU kind for a preview machine."""

    preview_cpus: int = Field(default=1, ge=1, le=16)
    """vCPUs per preview machine."""

    preview_memory_mb: int = Field(default=512, ge=256, le=16_384, multiple_of=256)
    """Memory per preview machine (Fly wants a multiple of 256)."""

    preview_ttl_minutes: int = Field(default=60, ge=1, le=24 * 60)
    """A preview session expires this long after its last start; cleanup then ends it."""

    preview_max_live_per_user: int = Field(default=3, ge=1)
    """Live (creating or active) previews one user may hold at once."""

    preview_boot_timeout_seconds: float = Field(default=90.0, gt=0.0)
    """How long a new preview may take to answer its health probe before it is an error."""

    myyc_llm_provider: Literal["offline", "openai", "anthropic", "xai"] = "offline"
    """The model provider for planning and codegen; an admin setting in the database wins."""

    myyc_llm_model: str | None = None
    """The model name; None picks the provider's default."""

    openai_api_key: SecretStr | None = None
    """OpenAI's API key (the SDK's own variable)."""

    openai_base_url: str | None = None
    """OpenAI's API base (a proxy, or a fake in tests)."""

    anthropic_api_key: SecretStr | None = None
    """Anthropic's API key (the SDK's own variable)."""

    anthropic_base_url: str | None = None
    """Anthropic's API base (a proxy, or a fake in tests)."""

    xai_api_key: SecretStr | None = None
    """xAI's API key; xAI is reached through the OpenAI SDK at `xai_base_url`."""

    xai_base_url: str = "https://api.x.ai/v1"
    """xAI's OpenAI-compatible API base."""

    llm_timeout_seconds: float = Field(default=120.0, gt=0.0, le=3600.0)
    """Every model call gives up after this long (connect, and each read of the stream)."""

    llm_max_attempts: int = Field(default=4, ge=1, le=10)
    """Attempts per model call: 429, 5xx, 529 and dropped streams are retried within this."""

    llm_max_output_tokens: int = Field(default=16_000, ge=256, le=200_000)
    """The most tokens one model answer may use."""

    offline_chunk_delay_ms: float = Field(default=0.0, ge=0.0, le=10_000.0)
    """A pause between the offline provider's streamed chunks (to watch, or to test a crash)."""

    sse_keepalive_seconds: float = Field(default=15.0, gt=0.0, le=300.0)
    """A live stream says something this often when quiet (also while the store is down)."""

    myyc_public_url: str | None = None
    """Where people reach this API (approval links); default: http://MYYC_HOST:MYYC_PORT."""

    myyc_build_previews: bool = True
    """Builds start a live preview of the app (turn off for headless runs and tests)."""

    build_lease_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)
    """A build's owner renews its lease this often (x 1/3); an expired lease is reclaimed."""

    run_deadline_seconds: float = Field(default=900.0, ge=5.0)
    """A live agent run whose heartbeat is older than this is failed as stalled."""

    max_build_resumes: int = Field(default=5, ge=1, le=100)
    """A build reclaimed more often than this (a crash loop) is failed instead."""

    verify_max_attempts: int = Field(default=3, ge=1, le=10)
    """Verification attempts before a build is escalated to a person."""

    approval_timeout_minutes: float = Field(default=24 * 60.0, gt=0.0)
    """How long an escalation waits for a decision before the build fails."""

    codegen_repair_attempts: int = Field(default=2, ge=0, le=10)
    """Times invalid model output goes back to the model with the error."""

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        secrets = ("supabase_service_role_key", "supabase_jwt_secret", "myyc_hmac_secret",
                   "github_token", "openai_api_key", "anthropic_api_key",
                   "xai_api_key")  # fmt: skip
        for name in secrets:
            value = getattr(self, name)
            if value is not None and value.get_secret_value().strip().lower() in _PLACEHOLDERS:
                raise ValueError(f"{name.upper()} is a placeholder; set a real secret")
        if (self.supabase_url is None) != (self.supabase_service_role_key is None):
            raise ValueError(
                "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY go together: set both (the REST"
                " writer) or neither (DATABASE_URL or the embedded database)"
            )
        if self.myyc_auth_disabled and not (self.is_local and self.myyc_host in _LOOPBACK):
            raise ValueError("MYYC_AUTH_DISABLED is allowed only in local mode on loopback")
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
    def forge_dir(self) -> Path:
        """Where the local forge keeps its bare git repositories."""
        return self.myyc_data_dir / "forge"

    @property
    def spool_dir(self) -> Path:
        """Where LogWriters spool events while the store is down."""
        return self.myyc_data_dir / "spool"


class ConfigError(Exception):
    """The environment's configuration is invalid: one line per problem, no value shown."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def describe(err: ValidationError) -> list[str]:
    """One line per problem: the variable, what is wrong — never the value (it may be a key)."""
    lines = []
    for problem in err.errors(include_input=False, include_url=False, include_context=False):
        loc = problem.get("loc") or ()
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        name = str(loc[0]).upper() if loc else None
        lines.append(f"{name}: {message}" if name else message)
    return lines


def load_settings() -> Settings:
    """Settings from the environment; ConfigError (no traceback, no secrets) when invalid."""
    try:
        return Settings()
    except ValidationError as err:
        raise ConfigError(describe(err)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once (ConfigError when the environment is invalid)."""
    return load_settings()
