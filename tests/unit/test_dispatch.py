"""The dispatchers: the local one's queue, workers, pause, failures and shutdown; the Modal one
offline; which one a process gets; and the runtime body every agent's Modal function runs.

Agents here are tiny coroutines in a test registry; the services are a stand-in whose writer
counts flushes (the local dispatcher touches nothing else on them). Nothing sleeps: tests wait
on events and conditions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import types
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agents.dispatch import (
    AgentFailed,
    DispatcherClosed,
    DispatchError,
    LocalDispatcher,
    ModalDispatcher,
    ModalUnavailable,
    UnknownAgent,
    failure_result,
    make_dispatcher,
    raise_for_failure,
    running_in_modal,
)
from core.runtime import run_agent_with
from schemas.errors import ErrorCode, MyycError, NotFound
from schemas.settings import Settings


class FakeWriter:
    """Counts flushes."""

    def __init__(self) -> None:
        self.flushes = 0

    async def flush(self) -> None:
        self.flushes += 1


@dataclass
class FakeServices:
    writer: FakeWriter = field(default_factory=FakeWriter)


class Agents:
    """A test registry and what its agents saw."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.current = 0
        self.peak = 0
        self.started: list[str] = []
        self.finished: list[str] = []
        self.canceled: list[str] = []

    async def echo(self, services: Any, dispatcher: Any, **kwargs: str) -> dict[str, str]:
        self.started.append(kwargs.get("tag", "echo"))
        self.finished.append(kwargs.get("tag", "echo"))
        return kwargs

    async def gated(self, services: Any, dispatcher: Any, tag: str = "") -> str:
        """Runs until `release` is set, tracking how many run at once."""
        self.started.append(tag)
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.canceled.append(tag)
            raise
        finally:
            self.current -= 1
        self.finished.append(tag)
        return tag

    async def boom(self, services: Any, dispatcher: Any, **kwargs: str) -> None:
        raise RuntimeError("boom: the agent failed")

    async def parent(self, services: Any, dispatcher: Any, tag: str = "") -> Any:
        """Calls a child through the dispatcher, as the orchestrator calls the planner."""
        return await dispatcher.call("echo", tag=f"child-of-{tag}")

    def registry(self) -> dict[str, Callable[..., Any]]:
        return {
            "echo": self.echo,
            "gated": self.gated,
            "boom": self.boom,
            "parent": self.parent,
        }


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Yield to the loop until `predicate()` holds (state the dispatcher has no event for)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def settle(rounds: int = 20) -> None:
    """Give every ready task a few turns (to show that something does *not* happen)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.fixture
def agents() -> Agents:
    return Agents()


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
async def dispatcher(agents: Agents, services: FakeServices) -> AsyncIterator[LocalDispatcher]:
    d = LocalDispatcher(services, agents.registry(), max_concurrency=3)
    yield d
    agents.release.set()
    await d.close(timeout=5)


# -- the local dispatcher ---------------------------------------------------------------------


async def test_never_more_than_max_concurrency_run_and_the_rest_wait_in_order(
    dispatcher: LocalDispatcher, agents: Agents
) -> None:
    for i in range(10):
        await dispatcher.spawn("gated", tag=str(i))
    await until(lambda: dispatcher.running == 3)
    await settle()
    assert dispatcher.running == 3
    assert dispatcher.queued == 7
    assert agents.started == ["0", "1", "2"]

    agents.release.set()
    await dispatcher.join()
    assert agents.peak == 3
    assert sorted(agents.finished, key=int) == [str(i) for i in range(10)]
    assert agents.started == [str(i) for i in range(10)]  # first come, first served


async def test_pause_holds_queued_agents_and_resume_lets_them_run(
    dispatcher: LocalDispatcher, agents: Agents
) -> None:
    dispatcher.pause()
    ids = [await dispatcher.spawn("echo", tag=str(i)) for i in range(5)]
    await settle()
    assert agents.started == []
    assert dispatcher.queued == 5
    assert dispatcher.paused

    dispatcher.resume()
    await dispatcher.join()
    assert sorted(agents.finished) == ["0", "1", "2", "3", "4"]
    assert len(set(ids)) == 5
    assert dispatcher.queued == 0


async def test_pause_lets_running_agents_finish(
    dispatcher: LocalDispatcher, agents: Agents
) -> None:
    await dispatcher.spawn("gated", tag="running")
    await until(lambda: dispatcher.running == 1)
    dispatcher.pause()
    await dispatcher.spawn("echo", tag="held")
    agents.release.set()
    await until(lambda: dispatcher.running == 0)
    assert agents.finished == ["running"]
    assert dispatcher.queued == 1


async def test_a_failing_spawned_agent_is_logged_and_the_dispatcher_keeps_working(
    dispatcher: LocalDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="agents.dispatch")
    call_id = await dispatcher.spawn("boom")
    await dispatcher.join()

    [record] = [r for r in caplog.records if r.name == "agents.dispatch"]
    assert record.levelno == logging.ERROR
    assert "boom" in record.getMessage()
    assert call_id in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)

    assert await dispatcher.call("echo", tag="after") == {"tag": "after"}


async def test_call_returns_the_result_and_raises_the_agents_exception(
    dispatcher: LocalDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    assert await dispatcher.call("echo", project_id="p", build_id="b") == {
        "project_id": "p",
        "build_id": "b",
    }
    with pytest.raises(RuntimeError, match="boom"):
        await dispatcher.call("boom")
    # The caller has the exception; it is not logged a second time.
    assert not [r for r in caplog.records if r.name == "agents.dispatch"]


async def test_a_nested_call_runs_in_its_callers_slot_instead_of_deadlocking(
    agents: Agents, services: FakeServices
) -> None:
    d = LocalDispatcher(services, agents.registry(), max_concurrency=1)
    try:
        async with asyncio.timeout(5):
            assert await d.call("parent", tag="p") == {"tag": "child-of-p"}
    finally:
        await d.close()


async def test_canceling_a_caller_cancels_its_running_agent(
    dispatcher: LocalDispatcher, agents: Agents
) -> None:
    waiter = asyncio.create_task(dispatcher.call("gated", tag="abandoned"))
    await until(lambda: dispatcher.running == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await until(lambda: dispatcher.running == 0)
    assert agents.canceled == ["abandoned"]


async def test_call_ids_are_unique(agents: Agents, services: FakeServices) -> None:
    first = LocalDispatcher(services, agents.registry())
    second = LocalDispatcher(services, agents.registry())
    first.pause()
    second.pause()
    ids = [await d.spawn("echo") for d in (first, second) for _ in range(200)]
    assert len(set(ids)) == 400
    await first.close()
    await second.close()


async def test_unknown_agents_and_non_string_arguments_are_refused_up_front(
    dispatcher: LocalDispatcher,
) -> None:
    with pytest.raises(UnknownAgent, match="no agent named 'nope'") as info:
        await dispatcher.spawn("nope")
    assert isinstance(info.value, DispatchError)
    assert isinstance(info.value, MyycError)
    with pytest.raises(TypeError, match="'project_id' must be a str"):
        await dispatcher.spawn("echo", project_id=123)  # type: ignore[arg-type]
    assert dispatcher.queued == 0


async def test_close_lets_running_agents_finish_then_flushes_the_writer(
    agents: Agents, services: FakeServices
) -> None:
    d = LocalDispatcher(services, agents.registry(), max_concurrency=2)
    await d.spawn("gated", tag="a")
    await d.spawn("gated", tag="b")
    await until(lambda: d.running == 2)

    closing = asyncio.create_task(d.close(timeout=30))
    await settle()
    assert not closing.done()  # waiting for the two agents
    with pytest.raises(DispatcherClosed):
        await d.spawn("echo")  # no new work while closing
    agents.release.set()
    await closing

    assert sorted(agents.finished) == ["a", "b"]
    assert agents.canceled == []
    assert services.writer.flushes == 1


async def test_close_cancels_stragglers_after_the_timeout_and_drops_the_queue(
    agents: Agents, services: FakeServices, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agents.dispatch")
    d = LocalDispatcher(services, agents.registry(), max_concurrency=1)
    await d.spawn("gated", tag="stuck")
    await until(lambda: d.running == 1)
    queued_call = asyncio.create_task(d.call("echo", tag="never"))
    await d.spawn("echo", tag="never-either")
    await until(lambda: d.queued == 2)

    async with asyncio.timeout(5):
        await d.close(timeout=0.05)

    assert agents.canceled == ["stuck"]
    assert agents.started == ["stuck"]  # the queued ones never started
    with pytest.raises(DispatcherClosed):
        await queued_call
    assert services.writer.flushes == 1
    assert d.running == 0
    assert d.queued == 0
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "canceling" in messages
    assert "dropped before it started" in messages
    with pytest.raises(DispatcherClosed):
        await d.call("echo")
    await d.close()  # a second close is a no-op
    assert services.writer.flushes == 1


async def test_close_drops_agents_held_by_pause(agents: Agents, services: FakeServices) -> None:
    d = LocalDispatcher(services, agents.registry(), max_concurrency=2)
    d.pause()
    for i in range(4):
        await d.spawn("echo", tag=str(i))
    waiting = asyncio.create_task(d.call("echo", tag="waiting"))
    await settle()
    await d.close(timeout=1)
    assert agents.started == []
    with pytest.raises(DispatcherClosed):
        await waiting
    assert services.writer.flushes == 1


async def test_join_returns_at_once_when_idle(dispatcher: LocalDispatcher) -> None:
    async with asyncio.timeout(1):
        await dispatcher.join()


def test_max_concurrency_must_be_positive(services: FakeServices) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LocalDispatcher(services, {}, max_concurrency=0)


# -- choosing a dispatcher ---------------------------------------------------------------------


async def test_not_running_in_modal_here(services: FakeServices, agents: Agents) -> None:
    import modal  # imported or not, this process runs no Modal function

    assert modal.is_local()
    assert running_in_modal() is False
    d = make_dispatcher(services, agents.registry(), max_concurrency=2)
    assert isinstance(d, LocalDispatcher)
    try:
        # The local dispatcher runs the registry it was given.
        assert await d.call("echo", tag="local") == {"tag": "local"}
        assert agents.finished == ["local"]
    finally:
        await d.close(timeout=5)


@pytest.mark.parametrize(
    ("module", "task_env", "expected"),
    [
        (None, "ta-123", False),  # modal not imported: no Modal function runs this process
        (types.SimpleNamespace(is_local=lambda: False), None, True),  # inside a container
        (types.SimpleNamespace(is_local=lambda: True), "ta-123", False),  # the public API wins
        (types.SimpleNamespace(), "ta-123", True),  # an SDK without is_local: the env marker
        (types.SimpleNamespace(), None, False),
    ],
)
def test_running_in_modal_is_detected(
    monkeypatch: pytest.MonkeyPatch, module: Any, task_env: str | None, expected: bool
) -> None:
    if module is None:
        monkeypatch.delitem(sys.modules, "modal", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "modal", module)
    if task_env is None:
        monkeypatch.delenv("MODAL_TASK_ID", raising=False)
    else:
        monkeypatch.setenv("MODAL_TASK_ID", task_env)
    assert running_in_modal() is expected


def test_inside_modal_the_dispatcher_is_modals(
    monkeypatch: pytest.MonkeyPatch, services: FakeServices, agents: Agents
) -> None:
    monkeypatch.setitem(sys.modules, "modal", types.SimpleNamespace(is_local=lambda: False))
    assert isinstance(
        make_dispatcher(services, agents.registry(), max_concurrency=2), ModalDispatcher
    )


# -- the Modal dispatcher, offline --------------------------------------------------------------


@pytest.fixture
def no_modal_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "absent.toml"))


@pytest.mark.usefixtures("no_modal_token")
@pytest.mark.parametrize("method", ["spawn", "call"])
async def test_modal_dispatcher_without_a_token_raises_a_typed_error_quickly(method: str) -> None:
    d = ModalDispatcher("myyc", lookup_timeout=20)
    async with asyncio.timeout(30):  # a hang fails the test instead of stalling the suite
        with pytest.raises(ModalUnavailable, match="myyc/orchestrator") as info:
            await getattr(d, method)("orchestrator", project_id="p", build_id="b")
    assert info.value.code is ErrorCode.upstream_error
    import modal.exception

    assert isinstance(info.value.__cause__, modal.exception.AuthError)
    await d.close()


async def test_modal_dispatcher_checks_arguments_and_refuses_work_after_close() -> None:
    d = ModalDispatcher()
    with pytest.raises(TypeError, match="must be a str"):
        await d.spawn("planner", run_id=1)  # type: ignore[arg-type]
    await d.close()
    with pytest.raises(DispatcherClosed):
        await d.spawn("planner", run_id="r")


# -- agent failures across Modal -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "message", "code"),
    [
        (RuntimeError("disk full"), "RuntimeError: disk full", None),
        (NotFound("project p not found", field="project_id"), "project p not found", "not_found"),
    ],
)
def test_a_failure_result_comes_back_as_agent_failed(
    error: Exception, message: str, code: str | None
) -> None:
    value = failure_result("planner", error)
    json.dumps(value)  # it crosses Modal as a plain value
    with pytest.raises(AgentFailed) as info:
        raise_for_failure(value)
    assert info.value.message == message
    assert info.value.agent == "planner"
    assert info.value.error_type == type(error).__name__
    assert info.value.error_code == code
    assert info.value.code is ErrorCode.agent_failed


@pytest.mark.parametrize(
    "value", [None, "done", {"github_url": "x"}, {"__myyc_agent_failure__": 1}]
)
def test_other_results_pass_through(value: Any) -> None:
    assert raise_for_failure(value) == value


# -- the runtime body of every agent's Modal function -------------------------------------------


async def test_run_agent_opens_services_runs_the_agent_and_closes_them(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, Any] = {}

    async def probe(services: Any, dispatcher: Any, **kwargs: str) -> str:
        seen.update(services=services, dispatcher=dispatcher, kwargs=kwargs)
        return "done"

    async def failing(services: Any, dispatcher: Any, **kwargs: str) -> None:
        seen["failing_services"] = services
        raise RuntimeError("agent broke")

    settings = Settings(database_url=db_url, myyc_data_dir=tmp_path)
    registry = {"probe": probe, "failing": failing}

    async def run(name: str, **kw: Any) -> Any:
        return await run_agent_with(
            name, {"project_id": "p"}, registry=registry, settings=settings, **kw
        )

    assert await run("probe") == "done"
    assert seen["kwargs"] == {"project_id": "p"}
    assert isinstance(seen["dispatcher"], LocalDispatcher)  # not in Modal: local
    assert seen["dispatcher"] is seen["services"].dispatcher
    assert seen["services"]._closed

    with pytest.raises(RuntimeError, match="agent broke"):
        await run("failing")
    assert seen["failing_services"]._closed

    # As a Modal body: the failure is logged and returned, so Modal does not retry it.
    caplog.set_level(logging.ERROR, logger="core.runtime")
    contained = await run("failing", contain_failures=True)
    with pytest.raises(AgentFailed, match="RuntimeError: agent broke"):
        raise_for_failure(contained)
    assert [r.getMessage() for r in caplog.records if r.name == "core.runtime"] == [
        "agent failing failed"
    ]

    with pytest.raises(UnknownAgent):
        await run("nope")
