"""Async client for the Fly.io Machines API v1 (https://api.machines.dev/v1).

Fly publishes no Python SDK, so this is ours. It follows Fly's OpenAPI document
(`clients/specs/fly-machines.openapi.json`): the models below carry the document's field names,
and every request the client builds is validated against that document in
`tests/unit/test_fly_openapi.py`.

Behaviour worth knowing before calling it:

* **Auth.** A token given as `FlyV1 <macaroons>`, or a bare macaroon (`fm2_…`, `fm1a_…`, `fm1r_…`),
  is sent as `Authorization: FlyV1 …`; anything else as `Authorization: Bearer …`.
* **Retries** follow `clients.retry`: 429, 5xx and transport faults, with `Retry-After` honoured.
  Calls that must not run twice (create app, create machine, acquire lease) are retried only when
  the request provably never ran: a 429, or a failure to connect. A 408 from `/wait` is never
  retried; it becomes `FlyWaitTimeout` and the caller decides.
* **Pacing.** Fly limits each action per machine to 1 req/s (burst 3) and "get machine" to
  5 req/s (burst 10). A token bucket per (method, route, machine-or-app) spaces calls so that a bulk
  cleanup waits its turn instead of collecting 429s.
* **Leases.** Every mutating call takes `nonce=` and sends it as `fly-machine-lease-nonce`;
  `async with fly.lease(app, machine_id)` acquires one and always releases it.

Exceptions, all raised from one place (`_status_error`) or translated with `raise … from err`::

    FlyError
    ├── FlyConnectionError ............ no response: connect/read/write failure
    │   └── FlyTimeout ................ the per-call timeout expired
    ├── FlyDecodeError ................ a 2xx answer whose body does not parse
    └── FlyStatusError ................ Fly answered non-2xx (.status_code, .message, .fly_status)
        ├── FlyBadRequest ............. 400
        ├── FlyUnauthorized ........... 401, 403
        ├── FlyNotFound ............... 404
        ├── FlyWaitTimeout ............ 408 (Fly documents it only for /wait)
        ├── FlyConflict ............... 409
        │   └── FlyLeaseHeld .......... 409 "… lease currently held by …"
        ├── FlyPreconditionFailed ..... 412 (version mismatch, destroy of a running machine)
        ├── FlyInsufficientCapacity ... 409/422 with status insufficient_capacity or
        │                               volume_placement_capacity: try another region
        ├── FlyUnprocessable .......... 422
        ├── FlyRateLimited ............ 429 (.retry_after)
        └── FlyServerError ............ 5xx
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from clients.retry import (
    DEFAULT_POLICY,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
    should_retry,
)

__all__ = [
    "ACTION_LIMIT",
    "DEFAULT_BASE_URL",
    "GET_MACHINE_LIMIT",
    "NONCE_HEADER",
    "App",
    "AppOrganizationInfo",
    "CheckStatus",
    "CreateAppRequest",
    "CreateLeaseRequest",
    "CreateMachineRequest",
    "FlyBadRequest",
    "FlyConflict",
    "FlyConnectionError",
    "FlyDecodeError",
    "FlyError",
    "FlyInsufficientCapacity",
    "FlyLeaseHeld",
    "FlyMachines",
    "FlyNotFound",
    "FlyPreconditionFailed",
    "FlyRateLimited",
    "FlyServerError",
    "FlyStatusError",
    "FlyTimeout",
    "FlyUnauthorized",
    "FlyUnprocessable",
    "FlyWaitTimeout",
    "ImageRef",
    "Lease",
    "Machine",
    "MachineCheck",
    "MachineConfig",
    "MachineEvent",
    "MachineFile",
    "MachineGuest",
    "MachineInit",
    "MachineMount",
    "MachinePort",
    "MachineRestart",
    "MachineService",
    "MachineServiceConcurrency",
    "RateLimit",
    "StopConfig",
    "StopRequest",
    "UpdateMachineRequest",
    "UpsertMetadataKeyRequest",
    "WaitMachineResponse",
    "authorization_header",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://api.machines.dev/v1"
NONCE_HEADER: Final = "fly-machine-lease-nonce"
_MACAROON_PREFIXES: Final = ("fm1r_", "fm1a_", "fm2_")
#: Fly's /wait blocks for at most 60 s server side; longer asks are clamped like flyctl does.
_MAX_WAIT_S: Final = 60
#: Extra read time on top of a /wait so our timeout never fires before Fly's 408 does.
_WAIT_READ_MARGIN_S: Final = 10.0
_CAPACITY_STATUSES: Final = frozenset({"insufficient_capacity", "volume_placement_capacity"})

# Route templates, exactly as the OpenAPI document spells its paths.
_APPS: Final = "/apps"
_APP: Final = "/apps/{app_name}"
_MACHINES: Final = "/apps/{app_name}/machines"
_MACHINE: Final = "/apps/{app_name}/machines/{machine_id}"
_START: Final = "/apps/{app_name}/machines/{machine_id}/start"
_STOP: Final = "/apps/{app_name}/machines/{machine_id}/stop"
_SUSPEND: Final = "/apps/{app_name}/machines/{machine_id}/suspend"
_WAIT: Final = "/apps/{app_name}/machines/{machine_id}/wait"
_LEASE: Final = "/apps/{app_name}/machines/{machine_id}/lease"
_METADATA: Final = "/apps/{app_name}/machines/{machine_id}/metadata"
_METADATA_KEY: Final = "/apps/{app_name}/machines/{machine_id}/metadata/{key}"


# --------------------------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------------------------


class FlyError(Exception):
    """Base class of every error this client raises."""


class FlyConnectionError(FlyError):
    """No HTTP response: the connection failed, broke, or timed out."""


class FlyTimeout(FlyConnectionError):
    """The per-call timeout expired before Fly answered."""


class FlyDecodeError(FlyError):
    """Fly answered 2xx with a body that is not the documented shape."""


class FlyStatusError(FlyError):
    """Fly answered with a non-2xx status.

    `message` is the `error` field of Fly's `{"error", "status"}` body (or the raw text), and
    `fly_status` its machine-readable `status` code such as `insufficient_capacity`.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        fly_status: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.fly_status = fly_status
        #: Fly's `fly-request-id` response header; quote it to Fly support.
        self.request_id = request_id
        #: Seconds the server asked us to wait, when it said so.
        self.retry_after = retry_after


class FlyBadRequest(FlyStatusError):
    """400: the request was malformed or the config invalid."""


class FlyUnauthorized(FlyStatusError):
    """401 or 403: the token is missing, invalid, or lacks access to the app."""


class FlyNotFound(FlyStatusError):
    """404: no such app, machine, lease or metadata key."""


class FlyWaitTimeout(FlyStatusError):
    """408: the machine did not reach the awaited state within the wait timeout."""


class FlyConflict(FlyStatusError):
    """409: the machine is busy or in a state that conflicts with the request."""


class FlyLeaseHeld(FlyConflict):
    """409: someone holds a lease on the machine and the request lacked its nonce."""


class FlyPreconditionFailed(FlyStatusError):
    """412: a version precondition failed, or the machine must be stopped first."""


class FlyInsufficientCapacity(FlyStatusError):
    """409/422 with a capacity status: the region (or volume host) cannot place the machine."""


class FlyUnprocessable(FlyStatusError):
    """422: the request was understood but refused (e.g. an app name already taken)."""


class FlyRateLimited(FlyStatusError):
    """429: a Fly rate limit was exceeded and retries did not get through."""


class FlyServerError(FlyStatusError):
    """5xx: Fly failed; retries were exhausted or the call was unsafe to repeat."""


_BY_STATUS: Final[Mapping[int, type[FlyStatusError]]] = {
    400: FlyBadRequest,
    401: FlyUnauthorized,
    403: FlyUnauthorized,
    404: FlyNotFound,
    408: FlyWaitTimeout,
    409: FlyConflict,
    412: FlyPreconditionFailed,
    422: FlyUnprocessable,
    429: FlyRateLimited,
}


def _status_error(response: httpx.Response, *, retry_after: float | None) -> FlyStatusError:
    """Map one non-2xx response to its exception class; the only place that does."""
    message, fly_status = _error_body(response)
    status = response.status_code
    cls: type[FlyStatusError]
    if status in (409, 422) and fly_status in _CAPACITY_STATUSES:
        cls = FlyInsufficientCapacity
    elif status == 409 and "lease currently held" in message:
        cls = FlyLeaseHeld
    elif status >= 500:
        cls = FlyServerError
    else:
        cls = _BY_STATUS.get(status, FlyStatusError)
    return cls(
        message,
        status_code=status,
        fly_status=fly_status,
        request_id=response.headers.get("fly-request-id"),
        retry_after=retry_after,
    )


def _error_body(response: httpx.Response) -> tuple[str, str | None]:
    """`(message, status)` from Fly's `{"error", "status"}` body, tolerating proxies' HTML."""
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        return (text.strip()[:500] or response.reason_phrase), None
    if not isinstance(body, dict):
        return text.strip()[:500], None
    message = body.get("error") or body.get("message") or response.reason_phrase
    fly_status = body.get("status")
    return str(message), (str(fly_status) if fly_status else None)


# --------------------------------------------------------------------------------------------
# Models (field names as in the OpenAPI document's component schemas)
# --------------------------------------------------------------------------------------------


class _FlyModel(BaseModel):
    """Shared config: keep fields Fly adds later, so a read-modify-write loses nothing."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON body for a request: unset (None) fields are left out."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


class MachineGuest(_FlyModel):
    """`fly.MachineGuest`: the VM size."""

    cpu_kind: str | None = None
    """`shared` or `performance`."""
    cpus: int | None = None
    """Number of vCPUs."""
    memory_mb: int | None = None
    """Memory in MiB; Fly wants a multiple of 256."""
    gpu_kind: str | None = None
    """GPU model, e.g. `a100-pcie-40gb`."""
    gpus: int | None = None
    """Number of GPUs."""
    kernel_args: list[str] | None = None
    """Extra kernel command line arguments."""
    host_dedication_id: str | None = None
    """Pin to a dedicated host group."""
    max_memory_mb: int | None = None
    """Upper bound when memory can grow."""
    persist_rootfs: str | None = None
    """Deprecated in favour of `MachineConfig.rootfs`: `never`, `always` or `restart`."""


class MachinePort(_FlyModel):
    """`fly.MachinePort`: one public port (or range) and how the proxy handles it."""

    port: int | None = None
    """Public port."""
    start_port: int | None = None
    """First port of a range (instead of `port`)."""
    end_port: int | None = None
    """Last port of a range."""
    handlers: list[str] | None = None
    """Proxy handlers such as `http`, `tls`, `proxy_proto`."""
    force_https: bool | None = None
    """Redirect plain HTTP to HTTPS."""
    http_options: dict[str, Any] | None = None
    """`fly.HTTPOptions`: compression, h2 backend, response headers."""
    tls_options: dict[str, Any] | None = None
    """`fly.TLSOptions`: ALPN, versions."""
    proxy_proto_options: dict[str, Any] | None = None
    """`fly.ProxyProtoOptions`: PROXY protocol version."""


class MachineServiceConcurrency(_FlyModel):
    """`fly.MachineServiceConcurrency`: load limits the proxy balances against."""

    type: str | None = None
    """`connections` or `requests`."""
    soft_limit: int | None = None
    """Load above which the proxy prefers other machines."""
    hard_limit: int | None = None
    """Load above which the proxy sends no more traffic."""


class MachineService(_FlyModel):
    """`fly.MachineService`: an internal port exposed through Fly's proxy."""

    protocol: str | None = None
    """`tcp` or `udp`."""
    internal_port: int | None = None
    """Port the process listens on inside the machine."""
    ports: list[MachinePort] | None = None
    """Public ports mapped to `internal_port`."""
    autostart: bool | None = None
    """Let the proxy start a stopped machine on incoming traffic."""
    autostop: str | bool | None = None
    """`off`, `stop` or `suspend`; Fly still answers booleans for `off`/`stop`."""
    min_machines_running: int | None = None
    """Machines autostop leaves running."""
    concurrency: MachineServiceConcurrency | None = None
    """Load limits."""
    checks: list[dict[str, Any]] | None = None
    """`fly.MachineServiceCheck` list."""
    force_instance_key: str | None = None
    """Request header whose value pins traffic to one machine."""
    force_instance_description: str | None = None
    """Human description of `force_instance_key`."""


class MachineRestart(_FlyModel):
    """`fly.MachineRestart`: what flyd does when the main process exits."""

    policy: str | None = None
    """`no`, `always`, `on-failure` (the default; flyctl's "on-fail" is not valid here) or
    `spot-price`."""
    max_retries: int | None = None
    """Restart attempts under `on-failure`."""
    gpu_bid_price: float | None = None
    """Bid for spot GPU machines."""


class StopConfig(_FlyModel):
    """`fly.StopConfig`: how the machine is stopped by default."""

    signal: str | None = None
    """One of SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGTERM."""
    timeout: str | None = None
    """Grace period as a Go duration, e.g. `10s`."""


class MachineInit(_FlyModel):
    """`fly.MachineInit`: overrides of the image's entrypoint and command."""

    exec: list[str] | None = None
    """Replace both entrypoint and command."""
    entrypoint: list[str] | None = None
    """Replace the image's entrypoint."""
    cmd: list[str] | None = None
    """Replace the image's command."""
    tty: bool | None = None
    """Allocate a TTY."""
    swap_size_mb: int | None = None
    """Swap to create at boot."""
    kernel_args: list[str] | None = None
    """Extra kernel arguments."""


class MachineMount(_FlyModel):
    """`fly.MachineMount`: a volume mounted into the machine."""

    volume: str | None = None
    """Volume ID."""
    path: str | None = None
    """Mount point."""
    name: str | None = None
    """Volume name."""
    size_gb: int | None = None
    """Size to create with."""
    encrypted: bool | None = None
    """Encrypt at rest."""
    add_size_gb: int | None = None
    """Auto-extend step."""
    extend_threshold_percent: int | None = None
    """Usage that triggers an auto-extend."""
    size_gb_limit: int | None = None
    """Auto-extend ceiling."""


class MachineCheck(_FlyModel):
    """`fly.MachineCheck`: a named top-level health check."""

    type: str | None = None
    """`tcp` or `http`."""
    port: int | None = None
    """Port to probe."""
    interval: str | None = None
    """Go duration between probes, e.g. `15s`."""
    timeout: str | None = None
    """Go duration a probe may take."""
    grace_period: str | None = None
    """Go duration to wait after boot."""
    method: str | None = None
    """HTTP method for http checks."""
    path: str | None = None
    """HTTP path for http checks."""
    protocol: str | None = None
    """`http` or `https`."""
    kind: str | None = None
    """`informational` or `readiness`."""
    headers: list[dict[str, Any]] | None = None
    """`fly.MachineHTTPHeader` list."""
    tls_server_name: str | None = None
    """SNI for https checks."""
    tls_skip_verify: bool | None = None
    """Skip certificate verification."""


class MachineFile(_FlyModel):
    """`fly.File`: a file written into the machine at boot."""

    guest_path: str | None = None
    """Absolute path inside the machine."""
    raw_value: str | None = None
    """Base64 contents."""
    secret_name: str | None = None
    """App secret holding base64 contents."""
    image_config: str | None = None
    """Use an image's OCI config as contents."""
    mode: int | None = None
    """chmod(2) mode bits."""


class MachineConfig(_FlyModel):
    """`fly.MachineConfig`: everything a machine runs with. Updates replace it whole."""

    image: str | None = None
    """Docker image to run (required to create)."""
    env: dict[str, str] | None = None
    """Environment variables."""
    guest: MachineGuest | None = None
    """VM size; mutually exclusive with the deprecated `size`."""
    init: MachineInit | None = None
    """Entrypoint/command overrides."""
    metadata: dict[str, str] | None = None
    """Key/value labels; also what `list_machines(metadata=…)` filters on."""
    restart: MachineRestart | None = None
    """Restart policy."""
    services: list[MachineService] | None = None
    """Ports exposed through the proxy."""
    checks: dict[str, MachineCheck] | None = None
    """Named health checks."""
    stop_config: StopConfig | None = None
    """Default stop signal and grace period."""
    auto_destroy: bool | None = None
    """Destroy the machine once its main process exits."""
    mounts: list[MachineMount] | None = None
    """Volumes."""
    files: list[MachineFile] | None = None
    """Files written at boot."""
    schedule: str | None = None
    """`hourly`, `daily`, `weekly` or `monthly`."""
    size: str | None = None
    """Deprecated preset such as `shared-cpu-1x`; use `guest`."""
    processes: list[dict[str, Any]] | None = None
    """`fly.MachineProcess` list."""
    dns: dict[str, Any] | None = None
    """`fly.DNSConfig`."""
    metrics: dict[str, Any] | None = None
    """`fly.MachineMetrics`."""
    statics: list[dict[str, Any]] | None = None
    """`fly.Static` list."""
    standbys: list[str] | None = None
    """Machines this one stands by for."""
    containers: list[dict[str, Any]] | None = None
    """`fly.ContainerConfig` list (restricted to some organizations)."""
    rootfs: dict[str, Any] | None = None
    """`fly.MachineRootfs`."""
    cache_drive: dict[str, Any] | None = None
    """`fly.MachineCacheDrive`."""
    disable_machine_autostart: bool | None = None
    """Deprecated: use `MachineService.autostart`."""


class ImageRef(_FlyModel):
    """`ImageRef`: the resolved image."""

    registry: str | None = None
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    labels: dict[str, str] | None = None


class MachineEvent(_FlyModel):
    """`MachineEvent`: one lifecycle event."""

    id: str | None = None
    type: str | None = None
    status: str | None = None
    source: str | None = None
    timestamp: int | None = None
    """Unix milliseconds."""
    request: dict[str, Any] | None = None


class CheckStatus(_FlyModel):
    """`CheckStatus`: the latest result of one health check."""

    name: str | None = None
    status: str | None = None
    output: str | None = None
    updated_at: str | None = None


class Machine(_FlyModel):
    """`Machine`: a machine as Fly reports it."""

    id: str
    """14-hex-digit machine ID."""
    name: str | None = None
    """Unique name within the app."""
    state: str | None = None
    """created, starting, started, stopping, stopped, suspending, suspended, destroying,
    destroyed, failed, …"""
    region: str | None = None
    """Region code, e.g. `iad`."""
    instance_id: str | None = None
    """Version of the machine; changes on every update. Pass it to `wait_machine`."""
    private_ip: str | None = None
    """6PN address."""
    config: MachineConfig | None = None
    """Current config."""
    incomplete_config: MachineConfig | None = None
    """Config of an update still in progress."""
    image_ref: ImageRef | None = None
    """Resolved image."""
    events: list[MachineEvent] | None = None
    """Recent events, newest first."""
    checks: list[CheckStatus] | None = None
    """Health check results."""
    host_status: str | None = None
    """`ok`, `unknown` or `unreachable`."""
    nonce: str | None = None
    """Lease nonce, only on a create that asked for `lease_ttl`."""
    created_at: str | None = None
    updated_at: str | None = None


class CreateMachineRequest(_FlyModel):
    """`CreateMachineRequest`: body of `POST /apps/{app_name}/machines`."""

    config: MachineConfig
    name: str | None = None
    region: str | None = None
    skip_launch: bool | None = None
    """Create without starting."""
    skip_service_registration: bool | None = None
    lease_ttl: int | None = None
    """Seconds of lease taken at creation; the nonce comes back in `Machine.nonce`."""
    lsvd: bool | None = None
    min_secrets_version: int | None = None
    skip_secrets: bool | None = None


class UpdateMachineRequest(_FlyModel):
    """`UpdateMachineRequest`: body of `POST /apps/{app_name}/machines/{machine_id}`."""

    config: MachineConfig
    current_version: str | None = None
    """Refuse the update unless the machine is still at this `instance_id`."""
    skip_launch: bool | None = None
    skip_service_registration: bool | None = None
    lease_ttl: int | None = None
    lsvd: bool | None = None
    min_secrets_version: int | None = None
    skip_secrets: bool | None = None
    name: str | None = None
    """Immutable: must match the existing name if given."""
    region: str | None = None
    """Immutable: must match the existing region if given."""


class StopRequest(_FlyModel):
    """`StopRequest`: optional body of `POST …/stop`."""

    signal: str | None = None
    timeout: str | None = None
    """Go duration, e.g. `30s`."""


class CreateLeaseRequest(_FlyModel):
    """`CreateLeaseRequest`: body of `POST …/lease`."""

    ttl: int | None = None
    """Seconds the lease stays valid."""
    description: str | None = None


class Lease(_FlyModel):
    """`Lease`: an exclusive lock on mutating one machine."""

    nonce: str
    """Send as `fly-machine-lease-nonce` on every mutation while the lease is held."""
    expires_at: int | None = None
    """Unix seconds."""
    owner: str | None = None
    """Who holds it."""
    description: str | None = None
    version: str | None = None
    """Machine version when the lease was taken."""


class WaitMachineResponse(_FlyModel):
    """`WaitMachineResponse`: answer of `GET …/wait` once the state is reached."""

    ok: bool | None = None
    state: str | None = None
    version: str | None = None
    event_id: str | None = None


class UpsertMetadataKeyRequest(_FlyModel):
    """`upsertMetadataKeyRequest`: body of `POST …/metadata/{key}`."""

    value: str
    updated_at: str | None = None


class AppOrganizationInfo(_FlyModel):
    """`AppOrganizationInfo`."""

    name: str | None = None
    slug: str | None = None
    internal_numeric_id: int | None = None


class App(_FlyModel):
    """`App`: a Fly app, the namespace machines live in."""

    id: str | None = None
    name: str | None = None
    status: str | None = None
    network: str | None = None
    organization: AppOrganizationInfo | None = None
    machine_count: int | None = None
    volume_count: int | None = None
    internal_numeric_id: int | None = None


class CreateAppRequest(_FlyModel):
    """`CreateAppRequest`: body of `POST /apps` (the document names the field `name`)."""

    name: str
    org_slug: str
    network: str | None = None
    enable_subdomains: bool | None = None


# --------------------------------------------------------------------------------------------
# Pacing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket's shape: `rate` tokens per second, at most `burst` saved up."""

    rate: float
    burst: float


#: Fly's published limits: per action per machine (or app) 1 req/s burst 3; get machine 5/10.
ACTION_LIMIT: Final = RateLimit(rate=1.0, burst=3.0)
GET_MACHINE_LIMIT: Final = RateLimit(rate=5.0, burst=10.0)


class _TokenBucket:
    """A reservation-based bucket: callers take a token now and wait for it if it is owed.

    Reserving before sleeping keeps concurrent callers in order without a lock, and the
    schedule it produces is one Fly's own bucket of the same shape accepts.
    """

    __slots__ = ("_last", "_limit", "_tokens")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self._limit = limit
        self._tokens = limit.burst
        self._last = now

    def reserve(self, now: float) -> float:
        """Take one token; return how long to wait before it is really available."""
        elapsed = max(0.0, now - self._last)
        self._tokens = min(self._limit.burst, self._tokens + elapsed * self._limit.rate)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._limit.rate

    def idle(self, now: float) -> bool:
        """Whether the bucket has refilled completely (forgetting it changes nothing)."""
        missing = self._limit.burst - self._tokens
        return now - self._last >= missing / self._limit.rate


class _Pacer:
    """Token buckets keyed by (method, route, machine or app)."""

    _PRUNE_AT: Final = 1024

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], Awaitable[Any]]):
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[tuple[str, str, str], _TokenBucket] = {}

    async def wait_turn(self, method: str, route: str, subject: str) -> None:
        """Sleep until a request for (method, route, subject) fits Fly's published limits."""
        now = self._clock()
        key = (method, route, subject)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._PRUNE_AT:
                self._buckets = {k: b for k, b in self._buckets.items() if not b.idle(now)}
            limit = GET_MACHINE_LIMIT if (method, route) == ("GET", _MACHINE) else ACTION_LIMIT
            bucket = self._buckets[key] = _TokenBucket(limit, now)
        delay = bucket.reserve(now)
        if delay > 0:
            logger.debug("pacing %s %s for %s: waiting %.3fs", method, route, subject, delay)
            await self._sleep(delay)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


def authorization_header(token: str) -> str:
    """The `Authorization` value for a Fly token.

    `FlyV1 …` is kept as given; a bare macaroon (`fm2_…`, `fm1a_…`, `fm1r_…`, possibly several
    joined by commas) gets the `FlyV1` scheme it needs; `Bearer …` is kept; anything else (an
    OAuth or legacy personal token) is sent as `Bearer <token>`.
    """
    token = token.strip()
    if not token:
        raise ValueError("a Fly API token is required")
    scheme, _, rest = token.partition(" ")
    if scheme.lower() == "flyv1" and rest.strip():
        return f"FlyV1 {rest.strip()}"
    if scheme.lower() == "bearer" and rest.strip():
        return f"Bearer {rest.strip()}"
    if all(part.strip().startswith(_MACAROON_PREFIXES) for part in token.split(",")):
        return f"FlyV1 {token}"
    return f"Bearer {token}"


def _go_duration(value: float | str) -> str:
    """Seconds as the Go duration string Fly's stop/timeout fields expect (`1.5` → `1.5s`)."""
    if isinstance(value, str):
        return value
    return f"{value:g}s"


_M = TypeVar("_M", bound=BaseModel)


class FlyMachines:
    """Async client for the Fly Machines API.

    Use as `async with FlyMachines(token) as fly: ...`. Pass `http_client` to share a pool or
    plug in a test transport; the client closes only an `httpx.AsyncClient` it created.
    `sleep` and `clock` drive retry back-off and pacing, so tests can run in virtual time.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = DEFAULT_POLICY,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        pacing: bool = True,
    ) -> None:
        """Build a client; nothing is sent until the first call."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._authorization = authorization_header(token)
        self._base_url = base_url.rstrip("/")
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep
        self._rand = rand
        self._pacer = _Pacer(clock, sleep) if pacing else None

    async def __aenter__(self) -> FlyMachines:
        """Enter the context; the client is usable without it too."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the HTTP client if this object created it."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it; an injected one stays open."""
        if self._owns_http:
            await self._http.aclose()

    # -- apps ---------------------------------------------------------------------------------

    async def get_app(self, name: str) -> App:
        """`GET /apps/{app_name}`."""
        response = await self._request("GET", _APP, app=name)
        return self._parse(App, response)

    async def create_app(self, name: str, org_slug: str, network: str | None = None) -> App:
        """`POST /apps` (201). Not retried unless the request provably never ran.

        Fly's 201 body is undocumented, so the returned `App` combines what was asked for with
        whatever the answer carried (e.g. `id`).
        """
        body = CreateAppRequest(name=name, org_slug=org_slug, network=network).to_json()
        response = await self._request("POST", _APPS, app=name, json=body, idempotent=False)
        answered = self._json(response) if response.content else {}
        merged: dict[str, Any] = {
            "name": name,
            "network": network,
            "organization": {"slug": org_slug},
        }
        if isinstance(answered, dict):
            merged.update(answered)
        return self._validate(App, merged)

    # -- machines -----------------------------------------------------------------------------

    async def create_machine(
        self,
        app: str,
        config: MachineConfig,
        *,
        name: str | None = None,
        region: str | None = None,
        skip_launch: bool = False,
        lease_ttl: int | None = None,
    ) -> Machine:
        """`POST /apps/{app_name}/machines`.

        Never repeated after Fly may have acted on it (a lost answer would otherwise leave a
        duplicate, billed machine): only a 429 or a failed connect is retried.
        `FlyInsufficientCapacity` means: try another region.
        """
        request = CreateMachineRequest(
            config=config,
            name=name,
            region=region,
            skip_launch=skip_launch or None,
            lease_ttl=lease_ttl,
        )
        response = await self._request(
            "POST", _MACHINES, app=app, json=request.to_json(), idempotent=False
        )
        return self._parse(Machine, response)

    async def get_machine(self, app: str, machine_id: str) -> Machine:
        """`GET /apps/{app_name}/machines/{machine_id}`."""
        response = await self._request("GET", _MACHINE, app=app, machine_id=machine_id)
        return self._parse(Machine, response)

    async def list_machines(
        self,
        app: str,
        *,
        metadata: Mapping[str, str] | None = None,
        include_deleted: bool = False,
        region: str | None = None,
        state: str | None = None,
    ) -> list[Machine]:
        """`GET /apps/{app_name}/machines`, filtered server side.

        `metadata` becomes `metadata.{key}=value` query parameters (all must match); `state` is
        a comma-separated list such as `started,stopped`.
        """
        params: dict[str, str] = {}
        if include_deleted:
            params["include_deleted"] = "true"
        if region is not None:
            params["region"] = region
        if state is not None:
            params["state"] = state
        for key, value in (metadata or {}).items():
            params[f"metadata.{key}"] = value
        response = await self._request("GET", _MACHINES, app=app, params=params)
        payload = self._json(response)
        if not isinstance(payload, list):
            raise FlyDecodeError(f"expected a list of machines, got {type(payload).__name__}")
        return [self._validate(Machine, item) for item in payload]

    async def update_machine(
        self,
        app: str,
        machine_id: str,
        config: MachineConfig,
        *,
        current_version: str | None = None,
        skip_launch: bool = False,
        nonce: str | None = None,
    ) -> Machine:
        """`POST /apps/{app_name}/machines/{machine_id}` with the **full** new config.

        Fly has no partial update: start from `get_machine(...).config`, change it, send it
        back. `current_version` (an `instance_id`) makes Fly refuse if someone got there first.
        """
        request = UpdateMachineRequest(
            config=config, current_version=current_version, skip_launch=skip_launch or None
        )
        response = await self._request(
            "POST", _MACHINE, app=app, machine_id=machine_id, json=request.to_json(), nonce=nonce
        )
        return self._parse(Machine, response)

    async def start_machine(self, app: str, machine_id: str, *, nonce: str | None = None) -> None:
        """`POST …/start`: boot a created, stopped or suspended machine (resumes if suspended)."""
        await self._request("POST", _START, app=app, machine_id=machine_id, nonce=nonce)

    async def stop_machine(
        self,
        app: str,
        machine_id: str,
        *,
        signal: str | None = None,
        timeout: float | str | None = None,  # noqa: ASYNC109 - Fly's grace period, not ours
        nonce: str | None = None,
    ) -> None:
        """`POST …/stop`; `timeout` is seconds (or a Go duration) before Fly kills the process."""
        body = StopRequest(
            signal=signal, timeout=None if timeout is None else _go_duration(timeout)
        ).to_json()
        await self._request(
            "POST", _STOP, app=app, machine_id=machine_id, json=body or None, nonce=nonce
        )

    async def suspend_machine(self, app: str, machine_id: str, *, nonce: str | None = None) -> None:
        """`POST …/suspend`: snapshot memory and stop; the next start tries to resume."""
        await self._request("POST", _SUSPEND, app=app, machine_id=machine_id, nonce=nonce)

    async def destroy_machine(
        self, app: str, machine_id: str, *, force: bool = False, nonce: str | None = None
    ) -> None:
        """`DELETE /apps/{app_name}/machines/{machine_id}`.

        Without `force` Fly refuses to destroy a running machine (`FlyPreconditionFailed`).
        """
        params = {"force": "true"} if force else None
        await self._request(
            "DELETE", _MACHINE, app=app, machine_id=machine_id, params=params, nonce=nonce
        )

    async def wait_machine(
        self,
        app: str,
        machine_id: str,
        state: str = "started",
        *,
        timeout_s: int = 60,
        instance_id: str | None = None,
        version: str | None = None,
    ) -> WaitMachineResponse:
        """`GET …/wait`: block until the machine reaches `state` or Fly gives up.

        Fly caps the wait at 60 s (longer values are clamped) and answers 408 when it expires,
        raised as `FlyWaitTimeout` without retrying: whether to wait again is the caller's call.
        Waiting for `stopped` needs the machine version: pass `instance_id` (the deprecated
        query name) or `version`.
        """
        wait_s = max(1, min(int(timeout_s), _MAX_WAIT_S))
        params = {"state": state, "timeout": str(wait_s)}
        if instance_id is not None:
            params["instance_id"] = instance_id
        if version is not None:
            params["version"] = version
        response = await self._request(
            "GET",
            _WAIT,
            app=app,
            machine_id=machine_id,
            params=params,
            http_timeout=httpx.Timeout(self._timeout, read=wait_s + _WAIT_READ_MARGIN_S),
            never_retry=frozenset({408}),
        )
        return self._parse(WaitMachineResponse, response)

    # -- leases -------------------------------------------------------------------------------

    async def acquire_lease(
        self, app: str, machine_id: str, *, ttl: int = 30, description: str | None = None
    ) -> Lease:
        """`POST …/lease` (201). Raises `FlyLeaseHeld` when someone else holds it.

        Not retried after it may have run: a second acquire would collide with our own lease.
        """
        body = CreateLeaseRequest(ttl=ttl, description=description).to_json()
        response = await self._request(
            "POST", _LEASE, app=app, machine_id=machine_id, json=body, idempotent=False
        )
        return self._lease(response)

    async def refresh_lease(self, app: str, machine_id: str, nonce: str, *, ttl: int = 30) -> Lease:
        """`POST …/lease` with the held nonce: extend the lease by `ttl` seconds."""
        body = CreateLeaseRequest(ttl=ttl).to_json()
        response = await self._request(
            "POST", _LEASE, app=app, machine_id=machine_id, json=body, nonce=nonce
        )
        return self._lease(response)

    async def get_lease(self, app: str, machine_id: str) -> Lease:
        """`GET …/lease`: the current lease; `FlyNotFound` when there is none."""
        response = await self._request("GET", _LEASE, app=app, machine_id=machine_id)
        return self._lease(response)

    async def release_lease(self, app: str, machine_id: str, nonce: str) -> None:
        """`DELETE …/lease` with the nonce that holds it."""
        await self._request("DELETE", _LEASE, app=app, machine_id=machine_id, nonce=nonce)

    @contextlib.asynccontextmanager
    async def lease(
        self, app: str, machine_id: str, *, ttl: int = 30, description: str | None = None
    ) -> AsyncIterator[Lease]:
        """Hold a lease for the body of an `async with`, and always release it.

        Pass `lease.nonce` as `nonce=` to the mutations inside. A release that fails while the
        body is already raising is logged, not raised, so the body's error is the one you see;
        a lease or machine that is already gone counts as released.
        """
        held = await self.acquire_lease(app, machine_id, ttl=ttl, description=description)
        try:
            yield held
        except BaseException:
            try:
                await self.release_lease(app, machine_id, held.nonce)
            except FlyError as err:
                logger.warning("could not release lease on %s/%s: %s", app, machine_id, err)
            raise
        with contextlib.suppress(FlyNotFound):
            await self.release_lease(app, machine_id, held.nonce)

    # -- metadata -----------------------------------------------------------------------------

    async def get_metadata(self, app: str, machine_id: str) -> dict[str, str]:
        """`GET …/metadata`: the machine's metadata map."""
        response = await self._request("GET", _METADATA, app=app, machine_id=machine_id)
        payload = self._json(response)
        if not isinstance(payload, dict):
            raise FlyDecodeError(f"expected a metadata object, got {type(payload).__name__}")
        return {str(k): str(v) for k, v in payload.items()}

    async def set_metadata(
        self, app: str, machine_id: str, key: str, value: str, *, nonce: str | None = None
    ) -> None:
        """`POST …/metadata/{key}` (204): set one key."""
        body = UpsertMetadataKeyRequest(value=value).to_json()
        await self._request(
            "POST", _METADATA_KEY, app=app, machine_id=machine_id, key=key, json=body, nonce=nonce
        )

    async def delete_metadata(
        self, app: str, machine_id: str, key: str, *, nonce: str | None = None
    ) -> None:
        """`DELETE …/metadata/{key}` (204): remove one key."""
        await self._request(
            "DELETE", _METADATA_KEY, app=app, machine_id=machine_id, key=key, nonce=nonce
        )

    # -- plumbing -----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        route: str,
        *,
        app: str,
        machine_id: str | None = None,
        key: str | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        nonce: str | None = None,
        idempotent: bool = True,
        http_timeout: httpx.Timeout | None = None,
        never_retry: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send one API call with pacing, retries and error mapping; return a 2xx response."""
        path_params = {"app_name": app, "machine_id": machine_id, "key": key}
        url = self._base_url + route.format(
            **{k: quote(v, safe="") for k, v in path_params.items() if v is not None}
        )
        headers = {"Authorization": self._authorization, "Accept": "application/json"}
        if nonce is not None:
            headers[NONCE_HEADER] = nonce
        subject = machine_id if machine_id is not None else app
        attempt = 0
        while True:
            attempt += 1
            if self._pacer is not None:
                await self._pacer.wait_turn(method, route, subject)
            try:
                response = await self._http.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=headers,
                    timeout=http_timeout if http_timeout is not None else self._timeout,
                )
            except httpx.TransportError as err:
                # A failed connect never reached Fly; anything later may have been acted on.
                unsent = isinstance(err, httpx.ConnectError | httpx.ConnectTimeout)
                unsent = unsent or isinstance(err, httpx.PoolTimeout)
                if (idempotent or unsent) and should_retry(attempt, self._retry):
                    delay = backoff_delay(attempt, self._retry, rand=self._rand)
                    logger.info(
                        "fly %s %s: %s, retry %d in %.2fs", method, route, err, attempt, delay
                    )
                    await self._sleep(delay)
                    continue
                cls = FlyTimeout if isinstance(err, httpx.TimeoutException) else FlyConnectionError
                raise cls(f"{method} {route}: {err!r}") from err
            if response.is_success:
                return response
            status = response.status_code
            retry_after = parse_retry_after(response.headers, time.time())
            # A 429 means Fly refused before acting, so it is safe for every call.
            may_retry = status not in never_retry and (idempotent or status == 429)
            if may_retry and should_retry(
                attempt, self._retry, status=status, retry_after=retry_after
            ):
                delay = backoff_delay(
                    attempt, self._retry, retry_after=retry_after, rand=self._rand
                )
                logger.info(
                    "fly %s %s: HTTP %d, retry %d in %.2fs", method, route, status, attempt, delay
                )
                await self._sleep(delay)
                continue
            raise _status_error(response, retry_after=retry_after)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        """Decode a 2xx body, translating garbage into `FlyDecodeError`."""
        try:
            return response.json()
        except ValueError as err:
            raise FlyDecodeError(
                f"HTTP {response.status_code}: body is not JSON: {response.text[:200]!r}"
            ) from err

    @staticmethod
    def _validate(model: type[_M], payload: Any) -> _M:
        """Validate a decoded payload, translating a mismatch into `FlyDecodeError`."""
        try:
            return model.model_validate(payload)
        except ValidationError as err:
            raise FlyDecodeError(f"unexpected {model.__name__} shape: {err}") from err

    def _parse(self, model: type[_M], response: httpx.Response) -> _M:
        """Decode and validate a 2xx body as `model`."""
        return self._validate(model, self._json(response))

    def _lease(self, response: httpx.Response) -> Lease:
        """Parse a lease answer, flat as documented or wrapped as `{"status", "data"}`.

        The OpenAPI document shows a bare `Lease`; fly-go decodes `{"status":"success",
        "data":{…}}`. Both are accepted so neither reading breaks us.
        """
        payload = self._json(response)
        if isinstance(payload, dict) and "nonce" not in payload:
            data = payload.get("data")
            if isinstance(data, dict):
                payload = data
        return self._validate(Lease, payload)
