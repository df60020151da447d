"""The Fly machines driver: preview containers as Fly Machines, through `clients.fly_machines`.

Every machine is created with:

* `metadata` `{"myyc": "preview", "session_id": …, "project_id": …}` — how `list_ours` finds
  ours (a server-side `metadata.myyc=preview` filter) and how a lost create is recognised;
* `guest` `{cpu_kind, cpus, memory_mb}` from settings (the abuse limits seed 003 asks for);
* one `services` entry: TCP 8080 inside, 443 (tls+http) and 80 (http, forced to https)
  outside, no autostop (the session decides when a preview ends);
* `auto_destroy: true` and restart policy `on-failure` (3 tries): a crashing dev server is
  restarted, a container that exits is gone rather than billed while stopped;
* an HTTP check on the container's health path, and `stop_config` SIGTERM with 5 s grace.

The container URL is `https://<app>.fly.dev/?_myyc_instance=<machine id>`. Every machine of
the app shares the hostname, so the URL names the machine: the container answers a request
that reached another machine with `fly-replay: instance=<id>` and then pins the browser with
a cookie. Programs can send `fly-force-instance-id: <id>` instead — Fly then routes to that
machine or fails, with no fallback — which is what the health probe does.

Create is idempotent per session: before creating, and after a create whose answer was lost
(a timeout or 5xx — Fly may have acted), the driver looks the session's machine up by
metadata and adopts it. Destroy holds a lease: acquire (409 → MachineBusy), then
`DELETE ?force=true` with the nonce. Fly drops a destroyed machine's lease with it, so no
release call follows a successful destroy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import httpx

from clients.fly_machines import (
    FlyConnectionError,
    FlyError,
    FlyInsufficientCapacity,
    FlyLeaseHeld,
    FlyMachines,
    FlyNotFound,
    FlyServerError,
    FlyStatusError,
    FlyUnprocessable,
    FlyWaitTimeout,
    Machine,
    MachineCheck,
    MachineConfig,
    MachineGuest,
    MachinePort,
    MachineRestart,
    MachineService,
    StopConfig,
)
from previews.container.entrypoint import HEALTH_PATH, INSTANCE_QUERY
from previews.ports import (
    CONTAINER_PORT,
    META_SESSION,
    PREVIEW_TAG,
    CapacityUnavailable,
    DriverError,
    MachineBusy,
    MachineInfo,
    MachineSpec,
)
from schemas.settings import Settings

logger = logging.getLogger(__name__)

FORCE_INSTANCE_HEADER = "fly-force-instance-id"


class FlyMachinesDriver:
    """`MachinesDriver` on Fly Machines; see the module docstring."""

    name = "fly"

    def __init__(
        self,
        fly: FlyMachines,
        app: str,
        *,
        image: str,
        region: str | None = None,
        start_timeout_s: float = 90.0,
        lease_ttl: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Drive machines of `app` through `fly` (which this driver closes)."""
        self._fly = fly
        self.app = app
        self._image = image
        self._region = region
        self._start_timeout_s = start_timeout_s
        self._lease_ttl = lease_ttl
        self._clock = clock

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        http_client: httpx.AsyncClient | None = None,
        base_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> FlyMachinesDriver:
        """The driver `FLY_API_TOKEN` + `FLY_APP` configure."""
        if settings.fly_api_token is None or settings.fly_app is None:
            raise ValueError("set FLY_API_TOKEN and FLY_APP together to run previews on Fly")
        extra: dict[str, Any] = {} if base_url is None else {"base_url": base_url}
        fly = FlyMachines(
            settings.fly_api_token.get_secret_value(),
            http_client=http_client,
            clock=clock,
            sleep=sleep,
            **extra,
        )
        return cls(
            fly,
            settings.fly_app,
            image=settings.preview_image,
            start_timeout_s=settings.preview_boot_timeout_seconds,
            clock=clock,
        )

    # the port -----------------------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> MachineInfo:
        """Create (or adopt) the session's machine and wait until Fly reports it started."""
        machine = await self._by_session(spec.session_id)
        if machine is None:
            machine = await self._create(spec)
        await self._wait_started(machine)
        # Fly just said it is started; asking again would only spend the rate limit.
        return self._info(machine.model_copy(update={"state": "started"}))

    async def get(self, machine_id: str) -> MachineInfo | None:
        """`GET` the machine; None when Fly no longer has it."""
        try:
            machine = await self._fly.get_machine(self.app, machine_id)
        except FlyNotFound:
            return None
        except FlyError as err:
            raise DriverError(f"could not read machine {machine_id}: {err}") from err
        if machine.state == "destroyed":
            return None
        return self._info(machine)

    async def destroy(self, machine_id: str) -> bool:
        """Lease, then force-destroy; see the module docstring."""
        try:
            lease = await self._fly.acquire_lease(
                self.app, machine_id, ttl=self._lease_ttl, description="myyc: destroy preview"
            )
        except FlyNotFound:
            return False
        except FlyLeaseHeld as err:
            raise MachineBusy(f"machine {machine_id} is leased by someone else: {err}") from err
        except FlyError as err:
            raise DriverError(f"could not lease machine {machine_id}: {err}") from err
        try:
            await self._fly.destroy_machine(self.app, machine_id, force=True, nonce=lease.nonce)
        except FlyNotFound:
            return False
        except FlyError as err:
            with contextlib.suppress(FlyError):
                await self._fly.release_lease(self.app, machine_id, lease.nonce)
            raise DriverError(f"could not destroy machine {machine_id}: {err}") from err
        logger.info("destroyed fly machine %s/%s", self.app, machine_id)
        return True

    async def list_ours(self) -> list[MachineInfo]:
        """One list call, filtered by Fly on our metadata tag (destroyed ones excluded)."""
        try:
            machines = await self._fly.list_machines(self.app, metadata=PREVIEW_TAG)
        except FlyError as err:
            raise DriverError(f"could not list machines of {self.app}: {err}") from err
        return [self._info(m) for m in machines if m.state not in ("destroyed", "destroying")]

    async def close(self) -> None:
        """Close the Fly client."""
        await self._fly.aclose()

    # helpers ----------------------------------------------------------------------------

    def config(self, spec: MachineSpec) -> MachineConfig:
        """The full machine config for `spec` (see the module docstring)."""
        return MachineConfig(
            image=self._image,
            env={**spec.env, "PORT": str(CONTAINER_PORT), "HOST": "0.0.0.0"},
            guest=MachineGuest(cpu_kind=spec.cpu_kind, cpus=spec.cpus, memory_mb=spec.memory_mb),
            metadata=spec.metadata(),
            auto_destroy=True,
            restart=MachineRestart(policy="on-failure", max_retries=3),
            services=[
                MachineService(
                    protocol="tcp",
                    internal_port=CONTAINER_PORT,
                    ports=[
                        MachinePort(port=443, handlers=["tls", "http"]),
                        MachinePort(port=80, handlers=["http"], force_https=True),
                    ],
                    autostart=False,
                    autostop="off",
                )
            ],
            checks={
                "dev-server": MachineCheck(
                    type="http",
                    port=CONTAINER_PORT,
                    path=HEALTH_PATH,
                    interval="15s",
                    timeout="2s",
                    grace_period="10s",
                    method="GET",
                )
            },
            stop_config=StopConfig(signal="SIGTERM", timeout="5s"),
        )

    async def _create(self, spec: MachineSpec) -> Machine:
        try:
            return await self._fly.create_machine(
                self.app,
                self.config(spec),
                name=f"preview-{spec.session_id}",
                region=self._region,
            )
        except FlyInsufficientCapacity as err:
            raise CapacityUnavailable(f"Fly has no capacity for a preview: {err.message}") from err
        except (FlyServerError, FlyConnectionError, FlyUnprocessable) as err:
            # The create may have happened (a lost answer, or a name taken by our own
            # earlier attempt): adopt the session's machine if it exists.
            found = await self._by_session(spec.session_id)
            if found is not None:
                logger.info("adopted machine %s after a lost create answer", found.id)
                return found
            raise DriverError(f"could not create a preview machine: {err}") from err
        except FlyError as err:
            raise DriverError(f"could not create a preview machine: {err}") from err

    async def _by_session(self, session_id: UUID) -> Machine | None:
        try:
            found = await self._fly.list_machines(
                self.app, metadata={**PREVIEW_TAG, META_SESSION: str(session_id)}
            )
        except FlyError as err:
            raise DriverError(f"could not list machines of {self.app}: {err}") from err
        alive = [m for m in found if m.state not in ("destroyed", "destroying")]
        return alive[0] if alive else None

    async def _wait_started(self, machine: Machine) -> None:
        """Fly's `/wait` until `started`, re-asked after each 408, up to the start timeout.

        A machine that never starts is destroyed here (best effort; an orphan sweep catches
        what this misses), since the caller never learns its id.
        """
        deadline = self._clock() + self._start_timeout_s
        while True:
            left = deadline - self._clock()
            try:
                await self._fly.wait_machine(
                    self.app, machine.id, "started", timeout_s=max(1, min(60, int(left)))
                )
                return
            except FlyWaitTimeout:
                if self._clock() < deadline:
                    continue
                reason = f"machine {machine.id} did not start within {self._start_timeout_s:g}s"
            except FlyStatusError as err:
                reason = f"machine {machine.id} failed to start: {err}"
            except FlyError as err:
                reason = f"lost track of machine {machine.id} while it started: {err}"
            with contextlib.suppress(DriverError):
                await self.destroy(machine.id)
            raise DriverError(reason)

    def _info(self, machine: Machine) -> MachineInfo:
        metadata = dict((machine.config.metadata if machine.config else None) or {})
        base = f"https://{self.app}.fly.dev"
        return MachineInfo(
            id=machine.id,
            state=machine.state or "unknown",
            url=f"{base}/?{INSTANCE_QUERY}={machine.id}",
            metadata=metadata,
            health_url=f"{base}{HEALTH_PATH}",
            health_headers={FORCE_INSTANCE_HEADER: machine.id},
            detail=None,
        )
