"""A wire-faithful fake of the Fly Machines API v1, as an ASGI app.

Use it in-process with `httpx.AsyncClient(transport=fake.transport())` (an `httpx.ASGITransport`
plus injectable connection faults), or over a real loopback socket with
`async with fake.serve() as base_url:`. Paths are served under `/v1` like api.machines.dev.

What it answers, following `clients/specs/fly-machines.openapi.json` for routes, bodies and success
codes (create machine 200, create lease 201, create app 201, metadata writes 204, …) and the
fact sheet (REFERENCE.md §2) where the document is silent:

* apps: create (name taken → 422 `name_taken`), get;
* machines: create/get/list (filters `include_deleted`, `region`, `state`, `metadata.{key}`),
  full-config update, start/stop/suspend/destroy on the state machine
  created → starting → started → stopping → stopped → destroying → destroyed
  (started → suspending → suspended), transient states settling after `transition_delay`;
* wait: 200 `WaitMachineResponse` once the state is reached, 408 when `timeout` passes;
* leases: 201 on acquire, 409 `aborted: machine ID … lease currently held by …` for anyone
  without the nonce, on acquire and on every mutation of a leased machine;
* metadata get/set/delete; auth (401 without a `Bearer`/`FlyV1` token); per-action per-machine
  rate limits (1 req/s burst 3; get machine 5 req/s burst 10) answering 429;
  capacity errors (`insufficient_capacity`); errors as `{"error", "status"}`.

Choices the published sources leave open (UNVERIFIED against the live API): illegal state
transitions — destroying a running machine without `force`, a `current_version` mismatch — answer
412 `failed_precondition`; 429s carry no `Retry-After` unless `rate_limit_retry_after` is set;
leases are answered flat as the document shows, or wrapped `{"status","data"}` as fly-go reads
them when `lease_envelope` is set.

Switches: `latency`, `rate_limits`, `rate_limit_retry_after`, `transition_delay`,
`lease_envelope`, `fail_next(...)`, `exhaust_capacity(...)`/`restore_capacity()`, `tokens`.
Inspection: `calls` (Counter of (method, route template)), `log` (every call with its answer),
`machines(app)`, `machine(app, id)`, `apps`, `lease_of(app, id)`.
Time: `clock`/`sleep` are injectable; `FakeClock` gives tests a virtual clock shared with the
client, so rate limits, leases, transitions and waits run without real sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import heapq
import itertools
import json
import random
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

__all__ = ["FakeClock", "FlyFake", "FlyFakeTransport", "RecordedCall"]

_PREFIX = "/v1"
_SIGNALS = frozenset({"SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM"})
_RESTART_POLICIES = frozenset({"no", "always", "on-failure", "spot-price"})
_WAIT_STATES = frozenset({"started", "stopped", "suspended", "destroyed", "failed", "settled"})
_TRANSIENT = frozenset({"creating", "starting", "stopping", "suspending", "destroying", "updating"})
_RUNNING = frozenset({"started", "starting", "stopping", "suspending", "updating"})
_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TOKEN_EPSILON = 1e-6

Handler = Callable[["_Call"], Awaitable["_Answer"]]


class FakeClock:
    """Virtual time for tests: `sleep` parks the caller and time jumps to the next wake-up.

    Time only moves when every task has had many turns without finishing its sleep, i.e. when
    the in-memory system is idle — so concurrent sleepers wake in order, and nothing really waits.
    Share one instance between the client (`clock=`, `sleep=`) and the fake.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, settle_rounds: int = 64) -> None:
        self.now = start
        self.slept: list[float] = []
        self._settle_rounds = settle_rounds
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._generation = 0

    def __call__(self) -> float:
        """The current virtual time (seconds)."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by hand, waking whoever is due."""
        self.now += seconds
        self._generation += 1
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, delay: float) -> None:
        """Sleep `delay` virtual seconds."""
        self.slept.append(delay)
        if delay <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + delay, next(self._seq), fut))
        try:
            while not fut.done():
                seen = self._generation
                for _ in range(self._settle_rounds):
                    await asyncio.sleep(0)
                    if fut.done():
                        return
                # Only one parked sleeper may move time per quiet spell, or N sleepers would
                # jump N wake-ups ahead at once.
                if self._generation == seen:
                    self._wake_earliest()
        finally:
            if not fut.done():
                fut.cancel()

    def _wake_earliest(self) -> None:
        while self._sleepers:
            wake, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self.now = max(self.now, wake)
            self._generation += 1
            fut.set_result(None)
            return


@dataclass
class RecordedCall:
    """One request the fake answered, with its answer."""

    at: float
    method: str
    path: str
    route: str | None
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int
    response: Any


@dataclass
class _Failure:
    remaining: int
    status: int
    method: str | None
    route: str | None
    error: str
    fly_status: str | None
    retry_after: str | None
    fault: Literal["connect", "read_timeout"] | None


@dataclass
class _Lease:
    nonce: str
    owner: str
    description: str
    expires_at: float
    version: str


@dataclass
class _App:
    id: str
    name: str
    org_slug: str
    network: str
    created_at: float


@dataclass
class _Machine:
    id: str
    app: str
    name: str
    region: str
    config: dict[str, Any]
    state: str
    instance_id: str
    private_ip: str
    created_at: str
    updated_at: str
    events: list[dict[str, Any]] = field(default_factory=list)
    target: str | None = None
    settle_at: float = 0.0
    lease: _Lease | None = None


@dataclass
class _Call:
    method: str
    route: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    owner: str

    def q(self, name: str) -> str | None:
        """The last value of query parameter `name`, or None."""
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class _Answer:
    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _Refused(Exception):
    """Raised inside handlers to answer an error."""

    def __init__(self, status: int, message: str, fly_status: str = "unknown") -> None:
        super().__init__(message)
        self.answer = _Answer(status, {"error": message, "status": fly_status})


class _Bucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float) -> float:
        """0 when a token was taken, else seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0 - _TOKEN_EPSILON:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class FlyFake:
    """The fake Fly Machines API. An ASGI app; see the module docstring for what it does."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        tokens: Iterable[str] | None = None,
        rate_limits: bool = True,
        rate_limit_retry_after: bool = False,
        transition_delay: float = 0.0,
        latency: float = 0.0,
        lease_envelope: bool = False,
        default_region: str = "iad",
        seed: int = 0,
        wait_poll_interval: float = 0.05,
    ) -> None:
        """Build an empty fake; `tokens`, when given, are the only ones accepted."""
        self.clock = clock
        self.sleep = sleep
        self.tokens = set(tokens) if tokens is not None else None
        self.rate_limits = rate_limits
        self.rate_limit_retry_after = rate_limit_retry_after
        self.transition_delay = transition_delay
        self.latency = latency
        self.lease_envelope = lease_envelope
        self.default_region = default_region
        self.wait_poll_interval = wait_poll_interval
        self.calls: Counter[tuple[str, str]] = Counter()
        self.log: list[RecordedCall] = []
        self._apps: dict[str, _App] = {}
        self._machines: dict[str, dict[str, _Machine]] = {}
        self._failures: list[_Failure] = []
        self._capacity_out: tuple[frozenset[str] | None, int, str] | None = None
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._rng = random.Random(seed)
        self._routes: list[tuple[str, str, re.Pattern[str], Handler]] = []
        for method, template, handler in self._route_table():
            pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
            self._routes.append((method, template, re.compile(f"^{pattern}$"), handler))

    # -- switches -----------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        method: str | None = None,
        route: str | None = None,
        error: str = "forced failure",
        fly_status: str | None = "unknown",
        retry_after: str | float | None = None,
        fault: Literal["connect", "read_timeout"] | None = None,
    ) -> None:
        """Make the next `count` matching requests fail.

        `route` is a template as in the OpenAPI document (`/apps/{app_name}/machines`) or None
        for any; `status`/`error`/`fly_status`/`retry_after` shape the answer. With `fault`
        the failure happens in the transport from `transport()` instead: `connect` never
        reaches the fake, `read_timeout` is processed by the fake and its answer lost.
        Failures are consumed in the order they were queued.
        """
        self._failures.append(
            _Failure(
                remaining=count,
                status=status,
                method=method.upper() if method else None,
                route=route,
                error=error,
                fly_status=fly_status,
                retry_after=None if retry_after is None else str(retry_after),
                fault=fault,
            )
        )

    def exhaust_capacity(
        self,
        regions: Iterable[str] | None = None,
        *,
        status_code: int = 422,
        fly_status: str = "insufficient_capacity",
    ) -> None:
        """Refuse machine creation (in `regions`, or everywhere) with a capacity error."""
        chosen = frozenset(regions) if regions is not None else None
        self._capacity_out = (chosen, status_code, fly_status)

    def restore_capacity(self) -> None:
        """Undo `exhaust_capacity`."""
        self._capacity_out = None

    # -- inspection and seeding -----------------------------------------------------------------

    @property
    def apps(self) -> dict[str, dict[str, Any]]:
        """Every app as `get_app` would answer it."""
        return {name: self._app_json(app) for name, app in self._apps.items()}

    def add_app(self, name: str, org_slug: str = "personal", network: str = "default") -> None:
        """Create an app directly, without a request."""
        self._apps[name] = _App(self._hex(16), name, org_slug, network, self.clock())
        self._machines.setdefault(name, {})

    def machines(self, app: str, *, include_deleted: bool = True) -> list[dict[str, Any]]:
        """The app's machines as the API would show them now (destroyed ones too by default)."""
        found = []
        for machine in self._machines.get(app, {}).values():
            self._settle(machine)
            if include_deleted or machine.state != "destroyed":
                found.append(self._machine_json(machine))
        return found

    def machine(self, app: str, machine_id: str) -> dict[str, Any]:
        """One machine as the API would show it now."""
        machine = self._machines[app][machine_id]
        self._settle(machine)
        return self._machine_json(machine)

    def lease_of(self, app: str, machine_id: str) -> dict[str, Any] | None:
        """The live lease on a machine, or None."""
        machine = self._machines[app][machine_id]
        lease = self._live_lease(machine)
        return None if lease is None else self._lease_json(lease)

    def count(self, method: str, route: str) -> int:
        """How many requests reached the fake for (method, route template)."""
        return self.calls[(method.upper(), route)]

    # -- transports -----------------------------------------------------------------------------

    def transport(self) -> FlyFakeTransport:
        """An httpx transport into this fake, honouring `fail_next(fault=...)`."""
        return FlyFakeTransport(self)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1") -> AsyncIterator[str]:
        """Serve the fake over a real loopback socket; yields the base URL (`…/v1`)."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        # Listening before uvicorn starts means early connects queue instead of failing.
        sock.listen(128)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self, lifespan="off", log_level="warning", ws="none", http="h11", access_log=False
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield f"http://{host}:{port}{_PREFIX}"
        finally:
            server.should_exit = True
            await task
            sock.close()

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw = await request.body()
        answer, route, body = await self._answer(request, raw)
        self.log.append(
            RecordedCall(
                at=self.clock(),
                method=request.method,
                path=request.url.path,
                route=route,
                query=_multi(request),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                status=answer.status,
                response=answer.payload,
            )
        )
        response: Response
        if answer.payload is None:
            response = Response(status_code=answer.status, headers=answer.headers)
        else:
            response = JSONResponse(answer.payload, status_code=answer.status)
            response.headers.update(answer.headers)
        await response(scope, receive, send)

    async def _answer(self, request: Request, raw: bytes) -> tuple[_Answer, str | None, Any]:
        method = request.method.upper()
        path = request.url.path
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return _Answer(400, {"error": "invalid JSON body", "status": "unknown"}), None, raw
        if self.latency > 0:
            await self.sleep(self.latency)
        matched = self._match(method, path)
        if matched is None:
            return _Answer(404, {"error": "not found", "status": "unknown"}), None, body
        route, params, handler = matched
        if handler is None:
            return _Answer(405, {"error": "method not allowed", "status": "unknown"}), route, body
        self.calls[(method, route)] += 1
        owner = self._authenticate(request.headers.get("authorization"))
        if owner is None:
            return _Answer(401, {"error": "unauthorized", "status": "unknown"}), route, body
        forced = self._take_failure(method, route, fault=False)
        if forced is not None:
            headers = {"retry-after": forced.retry_after} if forced.retry_after else {}
            payload: dict[str, Any] = {"error": forced.error}
            if forced.fly_status is not None:
                payload["status"] = forced.fly_status
            return _Answer(forced.status, payload, headers), route, body
        if self.rate_limits:
            subject = params.get("machine_id") or params.get("app_name", "")
            wait = self._bucket(method, route, subject).take(self.clock())
            if wait > 0:
                headers = {}
                if self.rate_limit_retry_after:
                    headers["retry-after"] = str(max(1, int(wait + 0.999)))
                answer = _Answer(
                    429, {"error": "rate limit exceeded", "status": "unknown"}, headers
                )
                return answer, route, body
        call = _Call(
            method=method,
            route=route,
            params=params,
            query=_multi(request),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            owner=owner,
        )
        try:
            return await handler(call), route, body
        except _Refused as refused:
            return refused.answer, route, body

    def _match(self, method: str, path: str) -> tuple[str, dict[str, str], Handler | None] | None:
        if not path.startswith(_PREFIX + "/"):
            return None
        path = path[len(_PREFIX) :]
        known_route: str | None = None
        for route_method, template, pattern, handler in self._routes:
            found = pattern.match(path)
            if found is None:
                continue
            known_route = template
            if route_method == method:
                return template, found.groupdict(), handler
        return None if known_route is None else (known_route, {}, None)

    def _authenticate(self, header: str | None) -> str | None:
        """The caller's identity (lease owner), or None when unauthenticated."""
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme not in ("Bearer", "FlyV1") or not token:
            return None
        if self.tokens is not None and token not in self.tokens:
            return None
        return f"user-{hashlib.sha256(token.encode()).hexdigest()[:8]}@fly.test"

    def _take_failure(self, method: str, route: str | None, *, fault: bool) -> _Failure | None:
        for failure in self._failures:
            if (failure.fault is not None) != fault:
                continue
            if failure.method is not None and failure.method != method:
                continue
            if failure.route is not None and failure.route != route:
                continue
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.remove(failure)
            return failure
        return None

    def _take_fault(self, method: str, path: str) -> _Failure | None:
        matched = self._match(method, path)
        return self._take_failure(method, matched[0] if matched else None, fault=True)

    def _bucket(self, method: str, route: str, subject: str) -> _Bucket:
        key = (method, route, subject)
        bucket = self._buckets.get(key)
        if bucket is None:
            if (method, route) == ("GET", "/apps/{app_name}/machines/{machine_id}"):
                bucket = _Bucket(5.0, 10.0, self.clock())
            else:
                bucket = _Bucket(1.0, 3.0, self.clock())
            self._buckets[key] = bucket
        return bucket

    # -- routes ---------------------------------------------------------------------------------

    def _route_table(self) -> list[tuple[str, str, Handler]]:
        machine = "/apps/{app_name}/machines/{machine_id}"
        return [
            ("POST", "/apps", self._create_app),
            ("GET", "/apps/{app_name}", self._get_app),
            ("GET", "/apps/{app_name}/machines", self._list_machines),
            ("POST", "/apps/{app_name}/machines", self._create_machine),
            ("GET", machine, self._get_machine),
            ("POST", machine, self._update_machine),
            ("DELETE", machine, self._destroy_machine),
            ("POST", machine + "/start", self._start_machine),
            ("POST", machine + "/stop", self._stop_machine),
            ("POST", machine + "/suspend", self._suspend_machine),
            ("GET", machine + "/wait", self._wait_machine),
            ("GET", machine + "/lease", self._get_lease),
            ("POST", machine + "/lease", self._acquire_lease),
            ("DELETE", machine + "/lease", self._release_lease),
            ("GET", machine + "/metadata", self._get_metadata),
            ("GET", machine + "/metadata/{key}", self._get_metadata_key),
            ("POST", machine + "/metadata/{key}", self._set_metadata_key),
            ("DELETE", machine + "/metadata/{key}", self._delete_metadata_key),
        ]

    async def _create_app(self, call: _Call) -> _Answer:
        body = _object(call.body)
        # The document names it `name`; Fly's prose docs say `app_name`. Take either.
        name = body.get("name") or body.get("app_name")
        org_slug = body.get("org_slug")
        if not isinstance(name, str) or not name:
            raise _Refused(400, "name is required")
        if not isinstance(org_slug, str) or not org_slug:
            raise _Refused(400, "org_slug is required")
        if name in self._apps:
            raise _Refused(422, "Name has already been taken", "name_taken")
        self.add_app(name, org_slug, str(body.get("network") or "default"))
        app = self._apps[name]
        return _Answer(201, {"id": app.id, "created_at": int(app.created_at * 1000)})

    async def _get_app(self, call: _Call) -> _Answer:
        return _Answer(200, self._app_json(self._app(call)))

    async def _list_machines(self, call: _Call) -> _Answer:
        app = self._app(call)
        include_deleted = (call.q("include_deleted") or "").lower() in ("true", "1")
        region = call.q("region")
        states = {s for s in (call.q("state") or "").split(",") if s}
        wanted = {
            k[len("metadata.") :]: v[-1] for k, v in call.query.items() if k.startswith("metadata.")
        }
        found = []
        for machine in self._machines[app.name].values():
            self._settle(machine)
            metadata = machine.config.get("metadata") or {}
            if machine.state == "destroyed" and not include_deleted:
                continue
            if region is not None and machine.region != region:
                continue
            if states and machine.state not in states:
                continue
            if any(metadata.get(k) != v for k, v in wanted.items()):
                continue
            found.append(self._machine_json(machine))
        return _Answer(200, found)

    async def _create_machine(self, call: _Call) -> _Answer:
        app = self._app(call)
        body = _object(call.body)
        config = _validate_config(body.get("config"))
        region = body.get("region") or self.default_region
        if self._capacity_out is not None:
            regions, status_code, fly_status = self._capacity_out
            if regions is None or region in regions:
                raise _Refused(
                    status_code,
                    "insufficient resources available to fulfill request: could not reserve "
                    f"resource for machine in {region}",
                    fly_status,
                )
        now = self.clock()
        machine_id = self._hex(14)
        machine = _Machine(
            id=machine_id,
            app=app.name,
            name=str(body.get("name") or f"machine-{machine_id[:6]}"),
            region=str(region),
            config=config,
            state="created",
            instance_id=self._ulid(),
            private_ip=f"fdaa:0:1:a7b:{self._rng.randrange(16**4):x}::{self._rng.randrange(255)}",
            created_at=_iso(now),
            updated_at=_iso(now),
        )
        self._event(machine, "launch", "created", body)
        self._machines[app.name][machine_id] = machine
        shown = self._machine_json(machine)
        lease_ttl = body.get("lease_ttl")
        if isinstance(lease_ttl, int) and lease_ttl > 0:
            lease = self._new_lease(machine, call.owner, lease_ttl, "")
            shown["nonce"] = lease.nonce
        if not body.get("skip_launch"):
            self._begin(machine, "starting", "started")
        return _Answer(200, shown)

    async def _get_machine(self, call: _Call) -> _Answer:
        machine = self._machine(call, allow_destroyed=True)
        return _Answer(200, self._machine_json(machine))

    async def _update_machine(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        self._guard_lease(machine, call)
        body = _object(call.body)
        config = _validate_config(body.get("config"))
        for immutable in ("name", "region"):
            given = body.get(immutable)
            if given is not None and given != getattr(machine, immutable):
                raise _Refused(400, f"{immutable} cannot be changed by an update")
        current = body.get("current_version")
        if current is not None and current != machine.instance_id:
            raise _Refused(
                412,
                f"failed_precondition: machine version {machine.instance_id} != {current}",
            )
        machine.config = config
        machine.instance_id = self._ulid()
        machine.updated_at = _iso(self.clock())
        self._event(machine, "update", "replaced", body)
        if not body.get("skip_launch"):
            self._begin(machine, "starting", "started")
        return _Answer(200, self._machine_json(machine))

    async def _start_machine(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        self._guard_lease(machine, call)
        previous = machine.state
        if previous in ("created", "stopped", "suspended", "failed"):
            self._event(machine, "start", "started", None)
            self._begin(machine, "starting", "started")
        elif previous not in ("started", "starting"):
            raise _Refused(412, f"failed_precondition: machine is {previous}, cannot start")
        return _Answer(200, {"previous_state": previous})

    async def _stop_machine(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        self._guard_lease(machine, call)
        body = _object(call.body) if call.body is not None else {}
        signal = body.get("signal")
        if signal is not None and signal not in _SIGNALS:
            raise _Refused(400, f"invalid signal {signal!r}")
        timeout = body.get("timeout")
        if timeout is not None and not isinstance(timeout, str):
            raise _Refused(400, "timeout must be a duration string such as '10s'")
        if machine.state in ("started", "starting", "updating"):
            self._event(machine, "exit", "stopped", body)
            self._begin(machine, "stopping", "stopped")
        elif machine.state == "suspended":
            machine.state = "stopped"
        elif machine.state not in ("stopped", "stopping", "created", "failed"):
            raise _Refused(412, f"failed_precondition: machine is {machine.state}, cannot stop")
        return _Answer(200, {"ok": True})

    async def _suspend_machine(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        self._guard_lease(machine, call)
        if machine.state == "started":
            self._event(machine, "suspend", "suspended", None)
            self._begin(machine, "suspending", "suspended")
        elif machine.state not in ("suspended", "suspending"):
            raise _Refused(412, f"failed_precondition: machine is {machine.state}, cannot suspend")
        return _Answer(200, {"ok": True})

    async def _destroy_machine(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        self._guard_lease(machine, call)
        force = (call.q("force") or "").lower() in ("true", "1")
        if machine.state in _RUNNING and not force:
            raise _Refused(
                412,
                "failed_precondition: unable to destroy machine, not currently stopped or "
                "suspended",
            )
        if machine.state != "destroying":
            self._event(machine, "destroy", "destroyed", None)
            self._begin(machine, "destroying", "destroyed")
            machine.lease = None
        return _Answer(200, {"ok": True})

    async def _wait_machine(self, call: _Call) -> _Answer:
        machine = self._machine(call, allow_destroyed=True)
        state = call.q("state") or "started"
        if state not in _WAIT_STATES:
            raise _Refused(400, f"invalid state {state!r}")
        try:
            timeout = int(call.q("timeout") or "60")
        except ValueError:
            raise _Refused(400, "timeout must be an integer number of seconds") from None
        if state == "stopped" and not (call.q("instance_id") or call.q("version")):
            raise _Refused(400, "instance_id is required when waiting for the stopped state")
        deadline = self.clock() + max(0, timeout)
        while True:
            self._settle(machine)
            reached = machine.state == state or (
                state == "settled" and machine.state not in _TRANSIENT
            )
            if reached:
                event_id = machine.events[0]["id"] if machine.events else None
                payload = {
                    "ok": True,
                    "state": machine.state,
                    "version": machine.instance_id,
                    "event_id": event_id,
                }
                return _Answer(200, payload)
            now = self.clock()
            if now >= deadline:
                raise _Refused(
                    408,
                    f"deadline_exceeded: machine {machine.id} did not reach {state} "
                    f"within {timeout}s (state {machine.state})",
                )
            step = min(self.wait_poll_interval, deadline - now)
            if machine.target is not None:
                step = min(step, max(machine.settle_at - now, 0.0))
            await self.sleep(max(step, 1e-3))

    async def _get_lease(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        lease = self._live_lease(machine)
        if lease is None:
            raise _Refused(404, "lease not found")
        return _Answer(200, self._lease_payload(lease))

    async def _acquire_lease(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        body = _object(call.body)
        ttl = body.get("ttl", 30)
        if not isinstance(ttl, int) or ttl <= 0:
            raise _Refused(400, "ttl must be a positive integer")
        description = str(body.get("description") or "")
        held = self._live_lease(machine)
        nonce = call.headers.get("fly-machine-lease-nonce")
        if held is not None:
            if nonce != held.nonce:
                raise self._lease_conflict(machine, held)
            held.expires_at = self.clock() + ttl
            if description:
                held.description = description
            return _Answer(201, self._lease_payload(held))
        if nonce:
            # Refreshing a lease that has lapsed: Fly cannot extend what no longer exists.
            raise _Refused(404, "lease not found")
        lease = self._new_lease(machine, call.owner, ttl, description)
        return _Answer(201, self._lease_payload(lease))

    async def _release_lease(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        held = self._live_lease(machine)
        if held is None:
            raise _Refused(404, "lease not found")
        if call.headers.get("fly-machine-lease-nonce") != held.nonce:
            raise self._lease_conflict(machine, held)
        machine.lease = None
        return _Answer(200, {"ok": True})

    async def _get_metadata(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        return _Answer(200, dict(machine.config.get("metadata") or {}))

    async def _get_metadata_key(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        metadata = machine.config.get("metadata") or {}
        key = call.params["key"]
        if key not in metadata:
            raise _Refused(404, f"metadata key {key!r} not found")
        return _Answer(200, {"value": metadata[key]})

    async def _set_metadata_key(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        self._guard_lease(machine, call)
        value = _object(call.body).get("value")
        if not isinstance(value, str):
            raise _Refused(400, "value must be a string")
        machine.config.setdefault("metadata", {})[call.params["key"]] = value
        return _Answer(204)

    async def _delete_metadata_key(self, call: _Call) -> _Answer:
        machine = self._machine(call)
        self._guard_lease(machine, call)
        (machine.config.get("metadata") or {}).pop(call.params["key"], None)
        return _Answer(204)

    # -- state ----------------------------------------------------------------------------------

    def _app(self, call: _Call) -> _App:
        app = self._apps.get(call.params["app_name"])
        if app is None:
            raise _Refused(404, "app not found")
        return app

    def _machine(self, call: _Call, *, allow_destroyed: bool = False) -> _Machine:
        app = self._app(call)
        machine = self._machines[app.name].get(call.params["machine_id"])
        if machine is None:
            raise _Refused(404, "machine not found")
        self._settle(machine)
        if machine.state == "destroyed" and not allow_destroyed:
            raise _Refused(404, "machine not found")
        return machine

    def _begin(self, machine: _Machine, transient: str, final: str) -> None:
        machine.state = transient
        machine.target = final
        machine.settle_at = self.clock() + self.transition_delay

    def _settle(self, machine: _Machine) -> None:
        if machine.target is not None and self.clock() >= machine.settle_at:
            machine.state = machine.target
            machine.target = None
            machine.updated_at = _iso(self.clock())

    def _event(self, machine: _Machine, kind: str, status: str, request: Any) -> None:
        event = {
            "id": self._ulid(),
            "type": kind,
            "status": status,
            "source": "user",
            "timestamp": int(self.clock() * 1000),
            "request": request if isinstance(request, dict) else {},
        }
        machine.events.insert(0, event)

    def _live_lease(self, machine: _Machine) -> _Lease | None:
        if machine.lease is not None and machine.lease.expires_at <= self.clock():
            machine.lease = None
        return machine.lease

    def _new_lease(self, machine: _Machine, owner: str, ttl: int, description: str) -> _Lease:
        machine.lease = _Lease(
            nonce=self._hex(12),
            owner=owner,
            description=description,
            expires_at=self.clock() + ttl,
            version=machine.instance_id,
        )
        return machine.lease

    def _guard_lease(self, machine: _Machine, call: _Call) -> None:
        held = self._live_lease(machine)
        if held is not None and call.headers.get("fly-machine-lease-nonce") != held.nonce:
            raise self._lease_conflict(machine, held)

    def _lease_conflict(self, machine: _Machine, held: _Lease) -> _Refused:
        expires = datetime.fromtimestamp(held.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return _Refused(
            409,
            f"aborted: machine ID {machine.id} lease currently held by {held.owner}, "
            f"expires at {expires}",
        )

    # -- JSON views -----------------------------------------------------------------------------

    def _app_json(self, app: _App) -> dict[str, Any]:
        alive = [m for m in self._machines.get(app.name, {}).values() if m.state != "destroyed"]
        return {
            "id": app.id,
            "name": app.name,
            "status": "deployed" if alive else "pending",
            "network": app.network,
            "organization": {"name": app.org_slug, "slug": app.org_slug},
            "machine_count": len(alive),
            "volume_count": 0,
        }

    def _machine_json(self, machine: _Machine) -> dict[str, Any]:
        image = str(machine.config.get("image", ""))
        repository, _, tag = image.rpartition(":") if ":" in image else (image, "", "latest")
        return {
            "id": machine.id,
            "name": machine.name,
            "state": machine.state,
            "region": machine.region,
            "instance_id": machine.instance_id,
            "private_ip": machine.private_ip,
            "config": copy.deepcopy(machine.config),
            "image_ref": {
                "registry": repository.split("/", 1)[0] if "/" in repository else "docker.io",
                "repository": repository.split("/", 1)[-1],
                "tag": tag or "latest",
                "digest": "sha256:" + "0" * 64,
                "labels": {},
            },
            "events": [dict(e) for e in machine.events],
            "checks": [],
            "host_status": "ok",
            "created_at": machine.created_at,
            "updated_at": machine.updated_at,
        }

    def _lease_json(self, lease: _Lease) -> dict[str, Any]:
        return {
            "nonce": lease.nonce,
            "expires_at": int(lease.expires_at),
            "owner": lease.owner,
            "description": lease.description,
            "version": lease.version,
        }

    def _lease_payload(self, lease: _Lease) -> dict[str, Any]:
        data = self._lease_json(lease)
        return {"status": "success", "data": data} if self.lease_envelope else data

    def _hex(self, length: int) -> str:
        return "".join(self._rng.choice("0123456789abcdef") for _ in range(length))

    def _ulid(self) -> str:
        return "01" + "".join(self._rng.choice(_ULID_ALPHABET) for _ in range(24))


class FlyFakeTransport(httpx.AsyncBaseTransport):
    """`httpx.ASGITransport` into a `FlyFake`, plus the connection faults a socket can have."""

    def __init__(self, fake: FlyFake) -> None:
        """Wrap `fake`."""
        self._fake = fake
        self._asgi = httpx.ASGITransport(app=fake)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Deliver one request, or fail it the way `fail_next(fault=...)` asked."""
        fault = self._fake._take_fault(request.method, request.url.path)
        if fault is not None and fault.fault == "connect":
            raise httpx.ConnectError("fake: connection refused", request=request)
        response = await self._asgi.handle_async_request(request)
        if fault is not None and fault.fault == "read_timeout":
            await response.aread()
            raise httpx.ReadTimeout("fake: timed out reading the response", request=request)
        return response


def _multi(request: Request) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    return query


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise _Refused(400, "request body must be a JSON object")
    return body


def _validate_config(config: Any) -> dict[str, Any]:
    """The subset of flaps' config validation that callers trip over."""
    if not isinstance(config, dict):
        raise _Refused(400, "config is required")
    if not isinstance(config.get("image"), str) or not config["image"]:
        raise _Refused(400, "invalid config.image: image is required")
    guest = config.get("guest")
    if guest is not None:
        if config.get("size"):
            raise _Refused(400, "guest and size are mutually exclusive")
        memory = guest.get("memory_mb") if isinstance(guest, dict) else None
        if memory is not None and (not isinstance(memory, int) or memory % 256):
            raise _Refused(400, f"invalid memory size {memory}; must be a multiple of 256")
    restart = config.get("restart")
    if isinstance(restart, dict) and restart.get("policy") not in (None, *_RESTART_POLICIES):
        raise _Refused(400, f"invalid restart policy {restart.get('policy')!r}")
    return copy.deepcopy(config)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
