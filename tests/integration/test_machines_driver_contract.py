"""One contract for every MachinesDriver: Fly (through FlyFake, virtual time) and local (real
subprocesses running the real container entrypoint against a fake file source).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from previews.fly_driver import FlyMachinesDriver
from previews.local_driver import LocalMachines
from previews.ports import PREVIEW_TAG, MachineBusy, MachinesDriver, MachineSpec
from schemas.settings import Settings
from tests.fakes.fly import FakeClock, FlyFake
from tests.fakes.previews import FileSourceFake
from tests.support import serve

APP = "myyc-previews"


@dataclass
class Rig:
    """A driver under test and how to reach what it drives."""

    kind: str
    driver: MachinesDriver
    env: dict[str, str]
    fly: FlyFake | None = None
    clock: FakeClock | None = None


def fly_settings(**overrides: object) -> Settings:
    """Settings that select the Fly driver (the fake accepts any token)."""
    values: dict[str, object] = {
        "fly_api_token": "fm2_test-token",
        "fly_app": APP,
        "preview_boot_timeout_seconds": 30.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def fly_rig(clock: FakeClock, fake: FlyFake) -> FlyMachinesDriver:
    """A Fly driver wired to `fake` in virtual time."""
    http = httpx.AsyncClient(transport=fake.transport())
    return FlyMachinesDriver.from_settings(
        fly_settings(),
        http_client=http,
        base_url="http://fly.test/v1",
        clock=clock,
        sleep=clock.sleep,
    )


@pytest.fixture(params=["fly", "local"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "fly":
        clock = FakeClock()
        fake = FlyFake(clock=clock, sleep=clock.sleep)
        fake.add_app(APP)
        driver = fly_rig(clock, fake)
        try:
            yield Rig("fly", driver, {}, fake, clock)
        finally:
            await driver.close()
        return
    source = FileSourceFake({"index.html": "<html><body>hello</body></html>"})
    driver = LocalMachines(tmp_path)
    async with serve(source) as base:
        try:
            yield Rig("local", driver, {"MYYC_SOURCE": "api", "MYYC_API_URL": base})
        finally:
            for machine in await driver.list_ours():
                await driver.destroy(machine.id)
            await driver.close()


def spec(rig: Rig, session: uuid.UUID | None = None) -> MachineSpec:
    return MachineSpec(
        session_id=session or uuid.uuid4(),
        project_id=uuid.uuid4(),
        env=rig.env,
        cpu_kind="shared",
        cpus=1,
        memory_mb=512,
    )


async def test_create_tags_the_machine_and_starts_it(rig: Rig) -> None:
    s = spec(rig)
    machine = await rig.driver.create(s)
    assert machine.state == "started"
    assert machine.url
    assert machine.health_url
    assert dict(machine.metadata) == {
        **PREVIEW_TAG,
        "session_id": str(s.session_id),
        "project_id": str(s.project_id),
    }
    assert machine.session_id == str(s.session_id)
    got = await rig.driver.get(machine.id)
    assert got is not None
    assert got.id == machine.id
    assert got.url == machine.url


async def test_create_is_idempotent_per_session(rig: Rig) -> None:
    s = spec(rig)
    first = await rig.driver.create(s)
    second = await rig.driver.create(s)
    assert second.id == first.id
    assert [m.id for m in await rig.driver.list_ours()] == [first.id]


async def test_list_ours_lists_every_live_preview(rig: Rig) -> None:
    made = {(await rig.driver.create(spec(rig))).id for _ in range(3)}
    assert {m.id for m in await rig.driver.list_ours()} == made


async def test_destroy_removes_the_machine_once(rig: Rig) -> None:
    machine = await rig.driver.create(spec(rig))
    assert await rig.driver.destroy(machine.id) is True
    assert await rig.driver.get(machine.id) is None
    assert await rig.driver.list_ours() == []
    assert await rig.driver.destroy(machine.id) is False


async def test_unknown_machines_are_absent(rig: Rig) -> None:
    unknown = "0123456789abcd" if rig.kind == "fly" else "local-00000000000000"
    assert await rig.driver.get(unknown) is None
    assert await rig.driver.destroy(unknown) is False


async def test_a_destroyed_sessions_next_create_makes_a_new_machine(rig: Rig) -> None:
    s = spec(rig)
    first = await rig.driver.create(s)
    await rig.driver.destroy(first.id)
    second = await rig.driver.create(s)
    assert second.id != first.id


# ------------------------------------------------------------------------------ Fly only


@pytest.fixture
async def fly() -> AsyncIterator[Rig]:
    clock = FakeClock()
    fake = FlyFake(clock=clock, sleep=clock.sleep)
    fake.add_app(APP)
    driver = fly_rig(clock, fake)
    try:
        yield Rig("fly", driver, {}, fake, clock)
    finally:
        await driver.close()


async def test_fly_config_carries_limits_services_and_policies(fly: Rig) -> None:
    assert fly.fly is not None
    machine = await fly.driver.create(spec(fly))
    config = fly.fly.machine(APP, machine.id)["config"]
    assert config["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512}
    assert config["auto_destroy"] is True
    assert config["restart"] == {"policy": "on-failure", "max_retries": 3}
    service = config["services"][0]
    assert service["internal_port"] == 8080
    assert {p["port"] for p in service["ports"]} == {80, 443}
    assert config["env"]["PORT"] == "8080"
    assert machine.url == f"https://{APP}.fly.dev/?_myyc_instance={machine.id}"
    assert machine.health_headers == {"fly-force-instance-id": machine.id}


async def test_fly_list_ignores_machines_that_are_not_ours(fly: Rig) -> None:
    assert fly.fly is not None
    fly.fly.add_app("other")
    ours = await fly.driver.create(spec(fly))
    # Someone else's machine in the same app, untagged.
    http = httpx.AsyncClient(transport=fly.fly.transport())
    await http.post(
        f"http://fly.test/v1/apps/{APP}/machines",
        json={"config": {"image": "nginx"}},
        headers={"Authorization": "Bearer other"},
    )
    await http.aclose()
    assert [m.id for m in await fly.driver.list_ours()] == [ours.id]


async def test_fly_destroy_holds_a_lease_and_sends_its_nonce(fly: Rig) -> None:
    assert fly.fly is not None
    machine = await fly.driver.create(spec(fly))
    await fly.driver.destroy(machine.id)
    calls = [(c.method, c.route, c.headers.get("fly-machine-lease-nonce")) for c in fly.fly.log]
    lease = next(c for c in fly.fly.log if c.method == "POST" and c.route and "lease" in c.route)
    destroy = calls[-1]
    assert destroy[:2] == ("DELETE", "/apps/{app_name}/machines/{machine_id}")
    assert destroy[2] == lease.response["nonce"]
    assert fly.fly.machine(APP, machine.id)["state"] == "destroyed"


async def test_fly_destroy_of_a_machine_someone_else_leased_is_busy(fly: Rig) -> None:
    assert fly.fly is not None
    machine = await fly.driver.create(spec(fly))
    http = httpx.AsyncClient(transport=fly.fly.transport())
    held = await http.post(
        f"http://fly.test/v1/apps/{APP}/machines/{machine.id}/lease",
        json={"ttl": 60},
        headers={"Authorization": "Bearer someone-else"},
    )
    await http.aclose()
    assert held.status_code == 201
    with pytest.raises(MachineBusy):
        await fly.driver.destroy(machine.id)
    assert fly.fly.machine(APP, machine.id)["state"] == "started"


# ------------------------------------------------------------------------------ local only


async def test_local_machine_serves_the_synced_project(tmp_path: Path) -> None:
    source = FileSourceFake({"index.html": "<html><body>hello</body></html>"})
    driver = LocalMachines(tmp_path)
    async with serve(source) as base, httpx.AsyncClient() as http:
        machine = await driver.create(
            MachineSpec(uuid.uuid4(), uuid.uuid4(), {"MYYC_API_URL": base})
        )
        try:
            body = await _eventually_get(http, machine.url)
            assert "hello" in body
            assert "/__myyc/livereload" in body
        finally:
            await driver.destroy(machine.id)
            await driver.close()


async def test_local_machines_are_seen_and_destroyed_from_another_process(
    tmp_path: Path,
) -> None:
    source = FileSourceFake({"index.html": "x"})
    starter = LocalMachines(tmp_path)
    async with serve(source) as base:
        machine = await starter.create(
            MachineSpec(uuid.uuid4(), uuid.uuid4(), {"MYYC_API_URL": base})
        )
        # A second driver on the same data directory is what `myyc cleanup` runs.
        other = LocalMachines(tmp_path)
        assert [m.id for m in await other.list_ours()] == [machine.id]
        assert await other.destroy(machine.id) is True
        assert await starter.get(machine.id) is None
        assert not _exists(tmp_path / "previews" / machine.id)
        await starter.close()


async def test_local_machine_that_exits_reports_why(tmp_path: Path) -> None:
    driver = LocalMachines(tmp_path)
    # No API URL: the entrypoint refuses its configuration and exits.
    machine = await driver.create(MachineSpec(uuid.uuid4(), uuid.uuid4(), {}))
    try:
        for _ in range(500):
            info = await driver.get(machine.id)
            assert info is not None
            if info.state == "stopped":
                break
            await _pause()
        assert info.state == "stopped"
        assert info.detail is not None
        assert "MYYC_API_URL is required" in info.detail
    finally:
        await driver.destroy(machine.id)
        await driver.close()


def _exists(path: Path) -> bool:
    return path.exists()


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.01)


async def _eventually_get(http: httpx.AsyncClient, url: str, attempts: int = 500) -> str:
    for _ in range(attempts):
        try:
            response = await http.get(url)
            if response.status_code == 200:
                return response.text
        except httpx.TransportError:
            pass
        await _pause()
    raise AssertionError(f"{url} never answered")
