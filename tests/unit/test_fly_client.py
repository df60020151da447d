"""FlyMachines against the Fly fake: every operation, errors, retries, leases, pacing, auth.

The real client talks to `tests.fakes.fly.FlyFake` through `httpx.ASGITransport` (and once over
a loopback socket). Client and fake share one `FakeClock`, so back-off, pacing, lease expiry and
`/wait` run in virtual time and nothing really sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from clients.fly_machines import (
    FlyBadRequest,
    FlyConflict,
    FlyConnectionError,
    FlyDecodeError,
    FlyError,
    FlyInsufficientCapacity,
    FlyLeaseHeld,
    FlyMachines,
    FlyNotFound,
    FlyPreconditionFailed,
    FlyRateLimited,
    FlyServerError,
    FlyStatusError,
    FlyTimeout,
    FlyUnauthorized,
    FlyUnprocessable,
    FlyWaitTimeout,
    MachineConfig,
    MachineGuest,
    MachinePort,
    MachineRestart,
    MachineService,
    StopConfig,
    authorization_header,
)
from clients.retry import RetryPolicy
from tests.fakes.fly import FakeClock, FlyFake

BASE_URL = "http://fly.test/v1"
APP = "myyc-previews"
MACHINE = "/apps/{app_name}/machines/{machine_id}"
MACHINES = "/apps/{app_name}/machines"
LEASE = "/apps/{app_name}/machines/{machine_id}/lease"
WAIT = "/apps/{app_name}/machines/{machine_id}/wait"


def preview_config(**metadata: str) -> MachineConfig:
    """A preview-container config like the orchestrator launches (seed 003)."""
    return MachineConfig(
        image="ghcr.io/myyc/preview-container:latest",
        env={"PROJECT_ID": "p-1"},
        guest=MachineGuest(cpu_kind="shared", cpus=1, memory_mb=512),
        restart=MachineRestart(policy="on-failure", max_retries=3),
        services=[
            MachineService(
                protocol="tcp",
                internal_port=8080,
                autostart=True,
                autostop="stop",
                ports=[
                    MachinePort(port=443, handlers=["tls", "http"]),
                    MachinePort(port=80, handlers=["http"], force_https=True),
                ],
            )
        ],
        stop_config=StopConfig(signal="SIGTERM", timeout="10s"),
        metadata={"role": "preview", **metadata},
        auto_destroy=True,
    )


def make_client(
    http: httpx.AsyncClient, clock: FakeClock, token: str = "test-token", **kwargs: Any
) -> FlyMachines:
    """A client on `http` running in `clock`'s virtual time, with jitter pinned to 0.5."""
    kwargs.setdefault("rand", lambda: 0.5)
    return FlyMachines(
        token, base_url=BASE_URL, http_client=http, clock=clock, sleep=clock.sleep, **kwargs
    )


@dataclass
class Env:
    """One fake, its virtual clock, and a client wired to both."""

    fake: FlyFake
    clock: FakeClock
    http: httpx.AsyncClient
    fly: FlyMachines

    def client(self, token: str = "test-token", **kwargs: Any) -> FlyMachines:
        """Another client on the same fake and clock (e.g. a second lease holder)."""
        return make_client(self.http, self.clock, token, **kwargs)

    def statuses(self, method: str, route: str) -> list[int]:
        """Statuses the fake answered for (method, route), in order."""
        return [c.status for c in self.fake.log if c.method == method and c.route == route]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    """A fake with one app and a client sharing its virtual clock."""
    clock = FakeClock()
    fake = FlyFake(clock=clock, sleep=clock.sleep)
    fake.add_app(APP, org_slug="myyc")
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        yield Env(fake, clock, http, make_client(http, clock))


def has_none(value: Any) -> bool:
    """Whether a decoded JSON value holds a null anywhere."""
    if isinstance(value, dict):
        return any(has_none(v) for v in value.values())
    if isinstance(value, list):
        return any(has_none(v) for v in value)
    return value is None


async def launch(env: Env, **kwargs: Any) -> str:
    """Create a machine and let it settle into `started`; return its ID."""
    machine = await env.fly.create_machine(APP, preview_config(), **kwargs)
    return machine.id


# ---------------------------------------------------------------------------------------------
# Happy paths
# ---------------------------------------------------------------------------------------------


async def test_create_app_then_get_app(env: Env) -> None:
    """A created app is visible with its org; the request names it as the document does."""
    created = await env.fly.create_app("fresh-app", "my-org", network="net-1")
    assert created.name == "fresh-app"
    assert created.organization is not None
    assert created.organization.slug == "my-org"
    assert created.id == env.fake.apps["fresh-app"]["id"]

    app = await env.fly.get_app("fresh-app")
    assert (app.name, app.network, app.machine_count) == ("fresh-app", "net-1", 0)
    assert app.organization is not None
    assert app.organization.slug == "my-org"
    sent = next(c for c in env.fake.log if c.route == "/apps")
    assert sent.body == {"name": "fresh-app", "org_slug": "my-org", "network": "net-1"}
    assert sent.status == 201


async def test_create_app_with_a_taken_name_is_unprocessable(env: Env) -> None:
    """Fly's `name_taken` 422 surfaces with its status code and is not retried."""
    with pytest.raises(FlyUnprocessable) as caught:
        await env.fly.create_app(APP, "myyc")
    assert caught.value.fly_status == "name_taken"
    assert env.fake.count("POST", "/apps") == 1


async def test_get_app_unknown_is_not_found(env: Env) -> None:
    """A missing app is FlyNotFound."""
    with pytest.raises(FlyNotFound):
        await env.fly.get_app("nope")


async def test_create_machine_returns_created_then_starts(env: Env) -> None:
    """Create answers `created`, sends the config verbatim (no nulls) and the machine boots."""
    machine = await env.fly.create_machine(APP, preview_config(), name="preview-1", region="ams")
    assert machine.state == "created"
    assert (machine.name, machine.region) == ("preview-1", "ams")
    assert machine.config is not None
    assert machine.config.guest == MachineGuest(cpu_kind="shared", cpus=1, memory_mb=512)
    sent = next(c for c in env.fake.log if c.route == MACHINES and c.method == "POST")
    assert sent.body == {
        "config": preview_config().to_json(),
        "name": "preview-1",
        "region": "ams",
    }
    assert not has_none(sent.body)
    assert (await env.fly.get_machine(APP, machine.id)).state == "started"


async def test_create_machine_skip_launch_stays_created(env: Env) -> None:
    """`skip_launch` leaves the machine in `created`."""
    machine = await env.fly.create_machine(APP, preview_config(), skip_launch=True)
    env.clock.advance(5)
    assert env.fake.machine(APP, machine.id)["state"] == "created"


async def test_create_machine_with_lease_ttl_returns_a_nonce_that_guards_it(env: Env) -> None:
    """A lease taken at creation comes back as `nonce` and is enforced."""
    machine = await env.fly.create_machine(APP, preview_config(), lease_ttl=60)
    assert machine.nonce is not None
    with pytest.raises(FlyLeaseHeld):
        await env.fly.stop_machine(APP, machine.id)
    await env.fly.stop_machine(APP, machine.id, nonce=machine.nonce)


async def test_list_machines_filters_on_the_server(env: Env) -> None:
    """metadata.{key}, region, state and include_deleted all narrow the list."""
    a = await env.fly.create_machine(APP, preview_config(project="a"), region="iad")
    b = await env.fly.create_machine(APP, preview_config(project="b"), region="ams")
    gone = await env.fly.create_machine(APP, preview_config(project="a"), skip_launch=True)
    await env.fly.destroy_machine(APP, gone.id)
    env.clock.advance(1)

    async def ids(**filters: Any) -> set[str]:
        """IDs of the machines listed with `filters`."""
        return {m.id for m in await env.fly.list_machines(APP, **filters)}

    assert await ids() == {a.id, b.id}
    assert await ids(metadata={"project": "a"}) == {a.id}
    assert await ids(metadata={"project": "a", "role": "preview"}, include_deleted=True) == {
        a.id,
        gone.id,
    }
    assert await ids(region="ams") == {b.id}
    assert await ids(state="destroyed", include_deleted=True) == {gone.id}
    queries = [c.query for c in env.fake.log if c.route == MACHINES and c.method == "GET"]
    assert {"metadata.project": ["a"]} in queries


async def test_update_machine_replaces_the_full_config(env: Env) -> None:
    """Read-modify-write: new env lands, the version changes, unknown fields survive."""
    created = await env.fly.create_machine(
        APP, MachineConfig(image="nginx:1", future_field={"kept": True})
    )
    current = await env.fly.get_machine(APP, created.id)
    assert current.config is not None
    config = current.config.model_copy(update={"env": {"MODE": "dev"}})

    updated = await env.fly.update_machine(
        APP, created.id, config, current_version=current.instance_id
    )
    assert updated.instance_id != current.instance_id
    stored = env.fake.machine(APP, created.id)["config"]
    assert stored["env"] == {"MODE": "dev"}
    assert stored["future_field"] == {"kept": True}


async def test_update_machine_with_a_stale_version_is_refused(env: Env) -> None:
    """`current_version` protects against a concurrent writer."""
    machine_id = await launch(env)
    with pytest.raises(FlyPreconditionFailed):
        await env.fly.update_machine(
            APP, machine_id, MachineConfig(image="nginx:2"), current_version="01STALE"
        )
    assert env.fake.machine(APP, machine_id)["config"]["image"] != "nginx:2"


async def test_lifecycle_stop_start_suspend_destroy(env: Env) -> None:
    """Each transition goes through its transient state and `wait` sees the end state."""
    env.fake.transition_delay = 2.0
    machine = await env.fly.create_machine(APP, preview_config())
    assert env.fake.machine(APP, machine.id)["state"] == "starting"
    started = await env.fly.wait_machine(APP, machine.id, "started", timeout_s=10)
    assert started.ok
    assert started.state == "started"

    await env.fly.stop_machine(APP, machine.id, signal="SIGINT", timeout=1.5)
    assert env.fake.machine(APP, machine.id)["state"] == "stopping"
    stop_body = next(c.body for c in env.fake.log if c.route and c.route.endswith("/stop"))
    assert stop_body == {"signal": "SIGINT", "timeout": "1.5s"}
    await env.fly.wait_machine(APP, machine.id, "stopped", instance_id=started.version)

    await env.fly.start_machine(APP, machine.id)
    await env.fly.wait_machine(APP, machine.id, "started")
    await env.fly.suspend_machine(APP, machine.id)
    assert env.fake.machine(APP, machine.id)["state"] == "suspending"
    await env.fly.wait_machine(APP, machine.id, "suspended")

    await env.fly.destroy_machine(APP, machine.id)
    await env.fly.wait_machine(APP, machine.id, "destroyed")
    assert env.fake.machine(APP, machine.id)["state"] == "destroyed"
    assert await env.fly.list_machines(APP) == []


async def test_destroying_a_running_machine_needs_force(env: Env) -> None:
    """Without `force` Fly refuses (412); with it the machine is destroyed."""
    machine_id = await launch(env)
    with pytest.raises(FlyPreconditionFailed):
        await env.fly.destroy_machine(APP, machine_id)
    assert env.fake.machine(APP, machine_id)["state"] == "started"
    await env.fly.destroy_machine(APP, machine_id, force=True)
    env.clock.advance(1)
    assert env.fake.machine(APP, machine_id)["state"] == "destroyed"
    with pytest.raises(FlyNotFound):
        await env.fly.start_machine(APP, machine_id)


async def test_wait_408_is_fly_wait_timeout_and_not_retried(env: Env) -> None:
    """A /wait that expires is the caller's decision: one request, one typed error."""
    env.fake.transition_delay = 120.0
    machine = await env.fly.create_machine(APP, preview_config())
    before = env.clock.now
    with pytest.raises(FlyWaitTimeout) as caught:
        await env.fly.wait_machine(APP, machine.id, "started", timeout_s=5)
    assert caught.value.status_code == 408
    assert env.statuses("GET", WAIT) == [408]
    assert 5 <= env.clock.now - before < 6


async def test_wait_timeout_is_clamped_and_the_read_timeout_outlasts_it(env: Env) -> None:
    """Fly caps waits at 60 s; our read timeout must not fire before Fly answers."""
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        """Keep the request as sent."""
        seen.append(request)

    env.http.event_hooks["request"].append(record)
    machine_id = await launch(env)
    await env.fly.wait_machine(APP, machine_id, timeout_s=600)
    wait = next(r for r in seen if r.url.path.endswith("/wait"))
    assert wait.url.params["timeout"] == "60"
    assert wait.extensions["timeout"]["read"] > 60


async def test_wait_for_stopped_without_a_version_is_a_bad_request(env: Env) -> None:
    """Fly needs the instance version to wait for `stopped`."""
    machine_id = await launch(env)
    with pytest.raises(FlyBadRequest):
        await env.fly.wait_machine(APP, machine_id, "stopped")


async def test_metadata_set_get_delete(env: Env) -> None:
    """Metadata round-trips and is what list filters on."""
    machine_id = await launch(env)
    await env.fly.set_metadata(APP, machine_id, "session", "s-42")
    assert (await env.fly.get_metadata(APP, machine_id))["session"] == "s-42"
    assert [m.id for m in await env.fly.list_machines(APP, metadata={"session": "s-42"})] == [
        machine_id
    ]
    await env.fly.delete_metadata(APP, machine_id, "session")
    assert "session" not in await env.fly.get_metadata(APP, machine_id)


# ---------------------------------------------------------------------------------------------
# Leases
# ---------------------------------------------------------------------------------------------


async def test_lease_acquire_refresh_release(env: Env) -> None:
    """The nonce header refreshes the lease; release frees the machine."""
    machine_id = await launch(env)
    lease = await env.fly.acquire_lease(APP, machine_id, ttl=30, description="cleanup")
    assert lease.expires_at == int(env.clock.now + 30)
    assert lease.description == "cleanup"
    assert env.fake.lease_of(APP, machine_id) is not None

    env.clock.advance(20)
    refreshed = await env.fly.refresh_lease(APP, machine_id, lease.nonce, ttl=30)
    assert refreshed.nonce == lease.nonce
    assert refreshed.expires_at == int(env.clock.now + 30)
    refresh = [c for c in env.fake.log if c.route == LEASE and c.method == "POST"][-1]
    assert refresh.headers["fly-machine-lease-nonce"] == lease.nonce
    assert (await env.fly.get_lease(APP, machine_id)).nonce == lease.nonce

    await env.fly.release_lease(APP, machine_id, lease.nonce)
    assert env.fake.lease_of(APP, machine_id) is None
    with pytest.raises(FlyNotFound):
        await env.fly.get_lease(APP, machine_id)


async def test_mutations_on_a_leased_machine_need_the_nonce(env: Env) -> None:
    """Without the nonce: 409 lease held; with it: the call goes through."""
    machine_id = await launch(env)
    lease = await env.fly.acquire_lease(APP, machine_id)
    with pytest.raises(FlyLeaseHeld) as caught:
        await env.fly.stop_machine(APP, machine_id)
    assert isinstance(caught.value, FlyConflict)
    assert "lease currently held by" in caught.value.message
    assert env.fake.machine(APP, machine_id)["state"] == "started"

    await env.fly.stop_machine(APP, machine_id, nonce=lease.nonce)
    await env.fly.set_metadata(APP, machine_id, "k", "v", nonce=lease.nonce)
    stop = next(
        c for c in env.fake.log if c.route and c.route.endswith("/stop") and c.status == 200
    )
    assert stop.headers["fly-machine-lease-nonce"] == lease.nonce
    env.clock.advance(1)
    assert env.fake.machine(APP, machine_id)["state"] == "stopped"


async def test_another_holder_gets_lease_held_without_retries(env: Env) -> None:
    """A second client's acquire is refused once; the lease stays with the first."""
    machine_id = await launch(env)
    mine = await env.fly.acquire_lease(APP, machine_id)
    other = env.client("someone-elses-token")
    with pytest.raises(FlyLeaseHeld):
        await other.acquire_lease(APP, machine_id)
    with pytest.raises(FlyLeaseHeld):
        await other.destroy_machine(APP, machine_id, force=True)
    assert env.statuses("POST", LEASE) == [201, 409]
    held = env.fake.lease_of(APP, machine_id)
    assert held is not None
    assert held["nonce"] == mine.nonce


async def test_an_expired_lease_stops_blocking(env: Env) -> None:
    """After `ttl` the machine is free again."""
    machine_id = await launch(env)
    await env.fly.acquire_lease(APP, machine_id, ttl=10)
    env.clock.advance(11)
    await env.fly.stop_machine(APP, machine_id)


async def test_lease_context_releases_after_success(env: Env) -> None:
    """`async with fly.lease()` hands out the nonce and releases it afterwards."""
    machine_id = await launch(env)
    async with env.fly.lease(APP, machine_id, ttl=15) as lease:
        assert env.fake.lease_of(APP, machine_id) is not None
        await env.fly.stop_machine(APP, machine_id, nonce=lease.nonce)
    assert env.fake.lease_of(APP, machine_id) is None
    releases = [c for c in env.fake.log if c.route == LEASE and c.method == "DELETE"]
    assert [c.headers["fly-machine-lease-nonce"] for c in releases] == [lease.nonce]


async def test_lease_context_releases_when_the_body_raises(env: Env) -> None:
    """The body's error propagates and the lease is still released."""
    machine_id = await launch(env)

    class Boom(Exception):
        """The body's own failure."""

    with pytest.raises(Boom):
        async with env.fly.lease(APP, machine_id):
            raise Boom
    assert env.fake.lease_of(APP, machine_id) is None


async def test_lease_context_tolerates_a_machine_destroyed_inside(env: Env) -> None:
    """Destroying the leased machine inside the block is not an error on exit."""
    machine_id = await launch(env)
    async with env.fly.lease(APP, machine_id) as lease:
        await env.fly.destroy_machine(APP, machine_id, force=True, nonce=lease.nonce)
    env.clock.advance(1)
    assert env.fake.machine(APP, machine_id)["state"] == "destroyed"


async def test_lease_in_fly_go_envelope_is_understood(env: Env) -> None:
    """fly-go reads `{"status":"success","data":{…}}`; the client accepts it as well."""
    env.fake.lease_envelope = True
    machine_id = await launch(env)
    lease = await env.fly.acquire_lease(APP, machine_id)
    held = env.fake.lease_of(APP, machine_id)
    assert held is not None
    assert lease.nonce == held["nonce"]


# ---------------------------------------------------------------------------------------------
# Error mapping
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "fly_status", "expected"),
    [
        (400, "invalid config", "unknown", FlyBadRequest),
        (401, "unauthorized", None, FlyUnauthorized),
        (403, "forbidden", None, FlyUnauthorized),
        (404, "machine not found", "unknown", FlyNotFound),
        (408, "deadline_exceeded", None, FlyWaitTimeout),
        (409, "machine is busy", "unknown", FlyConflict),
        (
            409,
            "aborted: machine ID 1 lease currently held by a@b, expires at x",
            None,
            FlyLeaseHeld,
        ),
        (409, "insufficient CPUs", "insufficient_capacity", FlyInsufficientCapacity),
        (422, "no room on volume host", "volume_placement_capacity", FlyInsufficientCapacity),
        (412, "failed_precondition", "unknown", FlyPreconditionFailed),
        (422, "unprocessable", "unknown", FlyUnprocessable),
        (429, "rate limit exceeded", None, FlyRateLimited),
        (500, "internal error", None, FlyServerError),
        (502, "bad gateway", None, FlyServerError),
        (503, "unavailable", None, FlyServerError),
        (418, "teapot", None, FlyStatusError),
    ],
)
async def test_status_maps_to_exception(
    env: Env, status: int, error: str, fly_status: str | None, expected: type[FlyStatusError]
) -> None:
    """One status (plus body) → one exception class, carrying Fly's message and status."""
    fly = env.client(retry=RetryPolicy(max_attempts=1))
    env.fake.fail_next(status=status, route=MACHINE, error=error, fly_status=fly_status)
    with pytest.raises(FlyStatusError) as caught:
        await fly.get_machine(APP, "0123456789abcd")
    err = caught.value
    assert type(err) is expected
    assert isinstance(err, FlyError)
    assert (err.status_code, err.message, err.fly_status) == (status, error, fly_status)


async def test_non_json_error_body_keeps_the_text() -> None:
    """A proxy's HTML 502 still maps by status and keeps a readable message."""

    def handler(request: httpx.Request) -> httpx.Response:
        """A proxy in front of Fly failing with HTML."""
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        fly = FlyMachines("t", base_url=BASE_URL, http_client=http, retry=RetryPolicy(1))
        with pytest.raises(FlyServerError) as caught:
            await fly.get_app(APP)
    assert caught.value.message == "<html>Bad Gateway</html>"
    assert caught.value.fly_status is None


async def test_malformed_success_body_is_a_decode_error() -> None:
    """A 200 that is not the documented shape is FlyDecodeError, not a pydantic crash."""

    def handler(request: httpx.Request) -> httpx.Response:
        """A 200 missing the machine's required `id`."""
        return httpx.Response(200, json={"state": "started"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        fly = FlyMachines("t", base_url=BASE_URL, http_client=http)
        with pytest.raises(FlyDecodeError):
            await fly.get_machine(APP, "m")


async def test_capacity_exhaustion_on_create(env: Env) -> None:
    """An exhausted region answers insufficient_capacity once; another region works."""
    env.fake.exhaust_capacity(["ord"])
    with pytest.raises(FlyInsufficientCapacity) as caught:
        await env.fly.create_machine(APP, preview_config(), region="ord")
    assert caught.value.status_code == 422
    assert caught.value.fly_status == "insufficient_capacity"
    assert env.fake.count("POST", MACHINES) == 1
    machine = await env.fly.create_machine(APP, preview_config(), region="iad")
    assert [m["id"] for m in env.fake.machines(APP)] == [machine.id]


async def test_invalid_config_is_a_bad_request(env: Env) -> None:
    """flyctl's 'on-fail' spelling is not the API's; Fly says 400 and nothing is created."""
    config = MachineConfig(image="nginx", restart=MachineRestart(policy="on-fail"))
    with pytest.raises(FlyBadRequest):
        await env.fly.create_machine(APP, config)
    assert env.fake.machines(APP) == []


# ---------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "reached_fake"),
    [
        ({"status": 429}, 3),
        ({"status": 503}, 3),
        ({"status": 500}, 3),
        ({"fault": "connect"}, 1),
        ({"fault": "read_timeout"}, 3),
    ],
)
async def test_transient_failures_are_retried_then_succeed(
    env: Env, failure: dict[str, Any], reached_fake: int
) -> None:
    """Two failures, then success; back-off follows clients.retry (rand fixed at 0.5)."""
    machine_id = await launch(env)
    env.clock.slept.clear()
    env.fake.fail_next(2, route=MACHINE, method="GET", **failure)
    machine = await env.fly.get_machine(APP, machine_id)
    assert machine.id == machine_id
    assert env.fake.count("GET", MACHINE) == reached_fake
    # base 0.1 s: attempt 1 waits 0.05 + 0.5 * 0.05, attempt 2 waits 0.1 + 0.5 * 0.1.
    assert env.clock.slept == pytest.approx([0.075, 0.15])


async def test_retry_after_is_honoured(env: Env) -> None:
    """A 429 with Retry-After waits exactly that long."""
    machine_id = await launch(env)
    env.clock.slept.clear()
    env.fake.fail_next(status=429, route=MACHINE, retry_after=7)
    before = env.clock.now
    await env.fly.get_machine(APP, machine_id)
    assert env.clock.slept == [7.0]
    assert env.clock.now - before == pytest.approx(7.0)


async def test_retry_after_beyond_the_cap_is_final(env: Env) -> None:
    """A server asking for more than max_retry_after gets no retry; the wait is reported."""
    machine_id = await launch(env)
    env.fake.fail_next(status=429, route=MACHINE, retry_after=1000)
    with pytest.raises(FlyRateLimited) as caught:
        await env.fly.get_machine(APP, machine_id)
    assert caught.value.retry_after == 1000
    assert env.statuses("GET", MACHINE) == [429]


async def test_retries_are_bounded(env: Env) -> None:
    """A persistent 503 ends after max_attempts requests."""
    machine_id = await launch(env)
    env.fake.fail_next(50, status=503, route=MACHINE)
    with pytest.raises(FlyServerError):
        await env.fly.get_machine(APP, machine_id)
    assert env.fake.count("GET", MACHINE) == RetryPolicy().max_attempts


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, FlyBadRequest), (404, FlyNotFound), (409, FlyConflict), (422, FlyUnprocessable)],
)
async def test_client_errors_are_not_retried(
    env: Env, status: int, expected: type[FlyStatusError]
) -> None:
    """4xx other than 429 is final: one request, no back-off."""
    machine_id = await launch(env)
    env.clock.slept.clear()
    env.fake.fail_next(3, status=status, route=MACHINE)
    with pytest.raises(expected):
        await env.fly.get_machine(APP, machine_id)
    assert env.fake.count("GET", MACHINE) == 1
    assert env.clock.slept == []


async def test_create_is_not_repeated_after_an_ambiguous_5xx(env: Env) -> None:
    """Fly may have acted on a failed create; repeating it could leave a duplicate machine."""
    env.fake.fail_next(status=503, route=MACHINES, method="POST")
    with pytest.raises(FlyServerError):
        await env.fly.create_machine(APP, preview_config())
    assert env.fake.count("POST", MACHINES) == 1


async def test_create_whose_answer_is_lost_is_not_repeated(env: Env) -> None:
    """A read timeout after Fly created the machine raises FlyTimeout; one machine exists."""
    env.fake.fail_next(fault="read_timeout", route=MACHINES, method="POST")
    with pytest.raises(FlyTimeout):
        await env.fly.create_machine(APP, preview_config())
    assert len(env.fake.machines(APP)) == 1


@pytest.mark.parametrize("failure", [{"status": 429}, {"fault": "connect"}])
async def test_create_is_retried_when_it_never_ran(env: Env, failure: dict[str, Any]) -> None:
    """A 429 or a refused connect means Fly did nothing: retrying is safe."""
    env.fake.fail_next(route=MACHINES, method="POST", **failure)
    machine = await env.fly.create_machine(APP, preview_config())
    assert [m["id"] for m in env.fake.machines(APP)] == [machine.id]


@pytest.mark.parametrize(
    ("fault", "expected"), [("connect", FlyConnectionError), ("read_timeout", FlyTimeout)]
)
async def test_exhausted_transport_retries_raise_connection_errors(
    env: Env, fault: str, expected: type[FlyConnectionError]
) -> None:
    """Transport faults become FlyConnectionError (FlyTimeout for timeouts), chained."""
    env.fake.fail_next(50, fault=fault, route=MACHINE)  # type: ignore[arg-type]
    with pytest.raises(expected) as caught:
        await env.fly.get_machine(APP, "0123456789abcd")
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, httpx.TransportError)


# ---------------------------------------------------------------------------------------------
# Auth and lifecycle of the client
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "header"),
    [
        ("FlyV1 fm2_abc,fm2_def", "FlyV1 fm2_abc,fm2_def"),
        ("FlyV1 opaque", "FlyV1 opaque"),
        ("fm2_abc", "FlyV1 fm2_abc"),
        ("fm1a_x,fm2_y", "FlyV1 fm1a_x,fm2_y"),
        ("personal-token", "Bearer personal-token"),
        ("Bearer already-schemed", "Bearer already-schemed"),
        ("  padded\n", "Bearer padded"),
    ],
)
async def test_token_forms(env: Env, token: str, header: str) -> None:
    """Macaroons go out as FlyV1, everything else as Bearer; the fake accepts both."""
    assert authorization_header(token) == header
    await env.client(token).get_app(APP)
    assert env.fake.log[-1].headers["authorization"] == header
    assert env.fake.log[-1].status == 200


@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_token_is_refused(token: str) -> None:
    """No token, no client."""
    with pytest.raises(ValueError, match="token"):
        FlyMachines(token)


async def test_unknown_token_is_unauthorized_and_not_retried(env: Env) -> None:
    """The fake's 401 maps to FlyUnauthorized after one request."""
    env.fake.tokens = {"the-good-one"}
    with pytest.raises(FlyUnauthorized):
        await env.client("a-bad-one").get_app(APP)
    assert env.statuses("GET", "/apps/{app_name}") == [401]
    assert (await env.client("the-good-one").get_app(APP)).name == APP


async def test_no_authorization_header_is_401(env: Env) -> None:
    """The fake itself refuses a request without credentials."""
    response = await env.http.get(f"{BASE_URL}/apps/{APP}")
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "status": "unknown"}


async def test_every_call_carries_a_timeout(env: Env) -> None:
    """Even on an injected client without its own timeout, each request has one."""
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        """Keep the request as sent."""
        seen.append(request)

    env.http.event_hooks["request"].append(record)
    machine_id = await launch(env)
    await env.fly.get_metadata(APP, machine_id)
    await env.fly.stop_machine(APP, machine_id)
    assert len(seen) == 3
    for request in seen:
        timeout = request.extensions["timeout"]
        assert all(timeout[phase] == 30.0 for phase in ("connect", "read", "write", "pool"))


async def test_context_manager_closes_only_its_own_client(env: Env) -> None:
    """An injected client stays open; a client the object created is closed."""
    async with env.client() as fly:
        await fly.get_app(APP)
    assert not env.http.is_closed

    owned = FlyMachines("t", base_url=BASE_URL)
    async with owned:
        pass
    assert owned._http.is_closed


async def test_over_a_real_loopback_socket() -> None:
    """The same client and fake speak real HTTP over TCP."""
    fake = FlyFake(rate_limits=False)
    async with fake.serve() as base_url, FlyMachines("FlyV1 fm2_tok", base_url=base_url) as fly:
        await fly.create_app("socket-app", "personal")
        machine = await fly.create_machine("socket-app", preview_config())
        assert (await fly.get_machine("socket-app", machine.id)).state == "started"
        assert [m.id for m in await fly.list_machines("socket-app")] == [machine.id]
        await fly.destroy_machine("socket-app", machine.id, force=True)
    assert fake.log[0].headers["authorization"] == "FlyV1 fm2_tok"
    assert fake.count("POST", MACHINES) == 1


# ---------------------------------------------------------------------------------------------
# Pacing
# ---------------------------------------------------------------------------------------------


def assert_within_bucket(times: list[float], rate: float, burst: float) -> None:
    """No stretch of requests exceeds what a (rate, burst) token bucket allows."""
    times = sorted(times)
    for i, j in itertools.combinations(range(len(times)), 2):
        allowed = burst + rate * (times[j] - times[i]) + 1e-6
        assert j - i + 1 <= allowed, f"{j - i + 1} requests in {times[j] - times[i]:.3f}s"


async def test_pacing_keeps_bulk_calls_within_published_limits(env: Env) -> None:
    """A burst of concurrent calls on one machine never draws a 429 and spreads over time."""
    machine_id = await launch(env)
    start = env.clock.now
    await asyncio.gather(
        *[env.fly.stop_machine(APP, machine_id) for _ in range(10)],
        *[env.fly.get_machine(APP, machine_id) for _ in range(30)],
        *[env.fly.set_metadata(APP, machine_id, f"k{i}", "v") for i in range(8)],
    )
    assert all(call.status != 429 for call in env.fake.log)

    by_key: dict[tuple[str, str | None], list[float]] = defaultdict(list)
    for call in env.fake.log:
        if machine_id in call.path:
            by_key[(call.method, call.route)].append(call.at)
    stops = by_key[("POST", MACHINE + "/stop")]
    gets = by_key[("GET", MACHINE)]
    metadata = by_key[("POST", MACHINE + "/metadata/{key}")]
    assert (len(stops), len(gets), len(metadata)) == (10, 30, 8)
    assert_within_bucket(stops, rate=1.0, burst=3.0)
    assert_within_bucket(metadata, rate=1.0, burst=3.0)
    assert_within_bucket(gets, rate=5.0, burst=10.0)
    # 10 stops at 1/s after a burst of 3 need at least 7 s: the client really waited.
    assert max(stops) - start >= 7.0 - 1e-6
    # Per-second counts, the way an operator would read a dashboard.
    per_second: defaultdict[int, int] = defaultdict(int)
    for t in stops:
        per_second[int(t - start)] += 1
    assert max(per_second.values()) <= 3


async def test_pacing_is_per_machine(env: Env) -> None:
    """Different machines have separate buckets: a cleanup across machines is not slowed."""
    ids = [
        m.id
        for m in [
            await env.fly.create_machine(APP, preview_config(), skip_launch=True) for _ in range(3)
        ]
    ]
    start = env.clock.now
    await asyncio.gather(*[env.fly.destroy_machine(APP, i) for i in ids])
    assert env.clock.now == start
    env.clock.advance(1)
    assert {m["state"] for m in env.fake.machines(APP)} == {"destroyed"}


async def test_without_pacing_the_fake_rate_limits_and_retries_recover(env: Env) -> None:
    """The fake enforces Fly's limits (429) — pacing is what keeps us clear of them."""
    machine_id = await launch(env)
    fly = env.client(pacing=False, retry=RetryPolicy(max_attempts=10))
    await asyncio.gather(*[fly.stop_machine(APP, machine_id) for _ in range(6)])
    statuses = env.statuses("POST", MACHINE + "/stop")
    assert statuses.count(200) == 6
    assert statuses.count(429) >= 3
