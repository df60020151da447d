"""How an agent gets run: the Dispatcher port and its two adapters.

- **LocalDispatcher** runs agents as asyncio tasks in this process (the API, the CLI, tests):
  the same function bodies as production, a FIFO queue and a fixed number of workers, so a burst
  of spawns waits its turn instead of starting hundreds of agents at once.
- **ModalDispatcher** starts each agent in its own Modal function (`modal_app.py` defines one
  per agent name) with `Function.from_name(app, name).spawn.aio` / `.remote.aio`.

`make_dispatcher(services, registry)` picks one: inside a Modal container the Modal one,
anywhere else the local one. That is detected (`running_in_modal()`), never configured, so a
laptop can't accidentally fan out to production and a container can't silently run everything
in-process.

Agents are called as `await fn(services, dispatcher, **kwargs)` with string kwargs (ids): the
same call must work after a trip through Modal's serialization, so nothing richer is allowed.

Errors::

    DispatchError (MyycError)
    ├── UnknownAgent        no agent of that name in the registry
    ├── DispatcherClosed    spawn/call after close(), or a queued call dropped by close()
    ├── ModalUnavailable    Modal could not be reached (no token, app not deployed, network)
    └── AgentFailed         an agent in another container raised (its message came back)

Why AgentFailed exists: Modal retries an input whenever the function raises, but its retries
are meant for crashed containers only (an agent's own failure is final and already reported).
So an agent's Modal function returns its failure as a value (`failure_result`) instead of
raising, and `ModalDispatcher.call` turns that value back into an exception.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.errors import ErrorCode, MyycError

logger = logging.getLogger(__name__)

AgentFn = Callable[..., Awaitable[Any]]
"""An agent: `await fn(services, dispatcher, **kwargs)`."""

DEFAULT_APP_NAME = "myyc"

# Set while an agent runs under a LocalDispatcher; see LocalDispatcher.call for why.
_INSIDE_AGENT: contextvars.ContextVar[LocalDispatcher | None] = contextvars.ContextVar(
    "myyc_inside_agent", default=None
)


class DispatchError(MyycError):
    """Base of the dispatcher's errors."""

    code = ErrorCode.internal


class UnknownAgent(DispatchError):
    """No agent of that name is registered (a programming error, caught before queueing)."""


class DispatcherClosed(DispatchError):
    """The dispatcher is closed, or closed before this queued call could start."""

    code = ErrorCode.unavailable


class ModalUnavailable(DispatchError):
    """Modal did not accept the call: no token, the app is not deployed, or no network."""

    code = ErrorCode.upstream_error


class AgentFailed(DispatchError):
    """An agent run by Modal raised; `message` is its error as the agent's caller would word it."""

    code = ErrorCode.agent_failed

    def __init__(
        self,
        message: str,
        *,
        agent: str,
        error_type: str,
        error_code: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.agent = agent
        self.error_type = error_type
        self.error_code = error_code


_FAILURE_KEY = "__myyc_agent_failure__"


def failure_result(name: str, err: BaseException) -> dict[str, Any]:
    """The value an agent's Modal function returns instead of raising `err` (JSON-safe)."""
    if isinstance(err, MyycError):
        message, code, field_ = err.message, err.code.value, err.field
    else:
        message, code, field_ = f"{type(err).__name__}: {err}", None, None
    return {
        _FAILURE_KEY: {
            "agent": name,
            "type": type(err).__name__,
            "message": message,
            "code": code,
            "field": field_,
        }
    }


def raise_for_failure(value: Any) -> Any:
    """`value` itself, unless it is a `failure_result`: then raise it as AgentFailed."""
    if isinstance(value, dict) and isinstance(value.get(_FAILURE_KEY), dict):
        failure = value[_FAILURE_KEY]
        raise AgentFailed(
            str(failure.get("message")),
            agent=str(failure.get("agent")),
            error_type=str(failure.get("type")),
            error_code=failure.get("code"),
            field=failure.get("field"),
        )
    return value


class Dispatcher(Protocol):
    """Starts agents; the port every caller (API routes, the orchestrator) depends on."""

    async def spawn(self, name: str, **kwargs: str) -> str:
        """Start agent `name` and return a call id at once, without waiting for it."""
        ...

    async def call(self, name: str, **kwargs: str) -> Any:
        """Run agent `name` and return its result; its exception propagates."""
        ...

    async def close(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (a grace period)
        """Stop taking work; let running agents finish for up to `timeout`; then return."""
        ...


class _Flushable(Protocol):
    async def flush(self) -> None: ...


class ServicesLike(Protocol):
    """What the local dispatcher itself touches on Services: the log writer, to flush it."""

    @property
    def writer(self) -> _Flushable: ...


def _check_kwargs(name: str, kwargs: Mapping[str, object]) -> None:
    # Enforce the contract locally too: a UUID would work in-process and then fail (or change
    # meaning) once the same call crosses Modal's serialization.
    for key, value in kwargs.items():
        if not isinstance(value, str):
            raise TypeError(
                f"agent {name!r}: argument {key!r} must be a str, not {type(value).__name__}"
            )


# ---------------------------------------------------------------------------------------------
# Local: asyncio tasks in this process


@dataclass(eq=False)
class _Job:
    call_id: str
    name: str
    kwargs: dict[str, str]
    # Only call() has someone waiting; a spawned job's outcome goes to the log instead, so an
    # unread exception never sits in a Future ("exception was never retrieved").
    result: asyncio.Future[Any] | None = field(default=None, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class LocalDispatcher:
    """Runs agents as asyncio tasks here, at most `max_concurrency` at a time, first come first.

    - `spawn()` queues and returns a call id; `call()` queues and waits for the result.
    - `pause()` holds queued agents (running ones go on); `resume()` lets them start. The spawn
      benchmark uses this to measure the API alone.
    - An agent that raises is logged (`logging.exception`) and the workers go on.
    - `close()` refuses new work, drops queued calls, waits for running agents up to its
      timeout, cancels the rest, then flushes `services.writer`.
    """

    def __init__(
        self,
        services: ServicesLike,
        registry: Mapping[str, AgentFn],
        *,
        max_concurrency: int = 8,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._services = services
        self._registry = registry
        self._max = max_concurrency
        # asyncio primitives bind to a loop on first use, so building them here is safe even
        # when the dispatcher is constructed outside one.
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._go = asyncio.Event()
        self._go.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._outstanding = 0
        self._held: set[_Job] = set()
        self._running: dict[asyncio.Task[None], _Job] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._ids = itertools.count(1)
        self._prefix = f"local-{uuid.uuid4().hex[:12]}-"

    # -- the port ------------------------------------------------------------------------------

    async def spawn(self, name: str, **kwargs: str) -> str:
        """Queue agent `name`; return its call id without waiting for it to start."""
        job = self._job(name, kwargs)
        self._enqueue(job)
        return job.call_id

    async def call(self, name: str, **kwargs: str) -> Any:
        """Run agent `name` and return its result; the agent's exception propagates.

        Called from inside an agent this dispatcher runs (the orchestrator calling the planner),
        the callee runs at once in the caller's task, on the caller's slot: queueing it would
        deadlock as soon as every worker held a parent waiting for a queued child.
        """
        job = self._job(name, kwargs)
        if _INSIDE_AGENT.get() is self:
            return await self._agent(name)(self._services, self, **job.kwargs)
        job.result = asyncio.get_running_loop().create_future()
        self._enqueue(job)
        try:
            return await job.result
        except asyncio.CancelledError:
            # Nobody is left to want the result: stop the agent too (a queued one is skipped).
            if job.task is not None:
                job.task.cancel()
            raise

    async def close(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (a grace period)
        """Refuse new work and drop queued calls; give running agents `timeout` seconds to
        finish, cancel the rest; stop the workers; flush the log writer."""
        if self._closed:
            return
        self._closed = True
        while not self._queue.empty():
            self._drop(self._queue.get_nowait())
        # Workers holding a job at the pause gate see `_closed` once let through, and drop it.
        self._go.set()
        await asyncio.sleep(0)
        running = set(self._running)
        if running:
            _, late = await asyncio.wait(running, timeout=timeout)
            for task in late:
                job = self._running[task]
                logger.warning("agent %s (%s) still running after %.1fs: canceling it",
                               job.name, job.call_id, timeout)  # fmt: skip
                task.cancel()
            if late:
                await asyncio.wait(late)
        for worker in self._workers:
            worker.cancel()
        if self._workers:
            await asyncio.wait(self._workers)
        self._workers.clear()
        await self._services.writer.flush()

    # -- holding the queue ---------------------------------------------------------------------

    def pause(self) -> None:
        """Hold queued agents in the queue; running ones carry on."""
        self._go.clear()

    def resume(self) -> None:
        """Let queued agents start again."""
        self._go.set()

    @property
    def paused(self) -> bool:
        """Whether queued agents are being held."""
        return not self._go.is_set()

    @property
    def queued(self) -> int:
        """Calls accepted but not started yet."""
        return self._queue.qsize() + len(self._held)

    @property
    def running(self) -> int:
        """Agents running now (a nested call runs inside its caller and is not counted)."""
        return len(self._running)

    async def join(self) -> None:
        """Wait until every accepted call has finished (while paused, that waits for resume)."""
        await self._idle.wait()

    # -- internals -----------------------------------------------------------------------------

    def _agent(self, name: str) -> AgentFn:
        try:
            return self._registry[name]
        except KeyError:
            known = ", ".join(sorted(self._registry)) or "none"
            raise UnknownAgent(f"no agent named {name!r} (known: {known})") from None

    def _job(self, name: str, kwargs: dict[str, str]) -> _Job:
        if self._closed:
            raise DispatcherClosed("the dispatcher is closed")
        _check_kwargs(name, kwargs)
        self._agent(name)  # an unknown name fails here, in the caller, not in a worker's log
        return _Job(self._prefix + str(next(self._ids)), name, dict(kwargs))

    def _enqueue(self, job: _Job) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._worker(), name=f"myyc-dispatch-worker-{i}")
                for i in range(self._max)
            ]
        self._outstanding += 1
        self._idle.clear()
        self._queue.put_nowait(job)

    def _finished(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()

    def _drop(self, job: _Job) -> None:
        logger.warning("agent %s (%s) dropped before it started: dispatcher closing",
                       job.name, job.call_id)  # fmt: skip
        if job.result is not None and not job.result.done():
            job.result.set_exception(
                DispatcherClosed(f"the dispatcher closed before {job.name} started")
            )
        self._finished()

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            self._held.add(job)
            try:
                await self._go.wait()
            except asyncio.CancelledError:
                self._held.discard(job)
                self._drop(job)  # its caller must not wait forever
                raise
            self._held.discard(job)
            if self._closed:
                self._drop(job)
                continue
            if job.result is not None and job.result.done():
                self._finished()  # its caller was canceled while it waited
                continue
            task = asyncio.create_task(self._run(job), name=f"myyc-agent-{job.call_id}")
            job.task = task
            self._running[task] = job
            try:
                # asyncio.wait, not `await task`: canceling a worker must not cancel its agent;
                # close() alone decides when agents are canceled.
                await asyncio.wait({task})
            finally:
                del self._running[task]
                self._finished()

    async def _run(self, job: _Job) -> None:
        _INSIDE_AGENT.set(self)  # this task's own context: children it starts inherit it
        try:
            value = await self._agent(job.name)(self._services, self, **job.kwargs)
        except asyncio.CancelledError:
            if job.result is not None and not job.result.done():
                job.result.set_exception(
                    DispatcherClosed(f"{job.name} was canceled: the dispatcher closed")
                )
            raise
        except Exception as err:
            if job.result is None:
                logger.exception("agent %s (%s) failed", job.name, job.call_id)
            elif not job.result.done():
                job.result.set_exception(err)
        else:
            if job.result is not None and not job.result.done():
                job.result.set_result(value)


# ---------------------------------------------------------------------------------------------
# Modal: one Modal function per agent (see modal_app.py)


class ModalDispatcher:
    """Starts agents as Modal function calls of the deployed app `app_name`.

    Function handles are looked up once per name and cached. The first lookup of a name is
    bounded by `lookup_timeout`, so an unreachable Modal fails fast with ModalUnavailable
    instead of hanging the request that asked for the agent.
    """

    def __init__(
        self,
        app_name: str = DEFAULT_APP_NAME,
        *,
        environment_name: str | None = None,
        lookup_timeout: float = 30.0,
    ) -> None:
        self._app_name = app_name
        self._environment = environment_name
        self._timeout = lookup_timeout
        self._functions: dict[str, Any] = {}
        self._closed = False

    async def spawn(self, name: str, **kwargs: str) -> str:
        """Start agent `name` in its Modal function; return the FunctionCall id."""
        fn = await self._function(name, kwargs)
        import modal.exception

        try:
            call = await asyncio.wait_for(fn.spawn.aio(**kwargs), self._timeout)
        except TimeoutError as err:
            raise ModalUnavailable(
                f"Modal did not accept {self._where(name)} within {self._timeout:g}s "
                "(it may still start)"
            ) from err
        except (modal.exception.Error, OSError) as err:
            raise ModalUnavailable(f"could not spawn {self._where(name)}: {err}") from err
        return str(call.object_id)

    async def call(self, name: str, **kwargs: str) -> Any:
        """Run agent `name` in its Modal function and return its result.

        The agent's failure comes back as AgentFailed (see the module docstring); Modal's
        failures to run the call at all become ModalUnavailable.
        """
        fn = await self._function(name, kwargs)
        import modal.exception as mx

        infra: tuple[type[BaseException], ...] = (
            mx.AuthError, mx.ConnectionError, mx.NotFoundError, mx.PermissionDeniedError,
            mx.InternalError, mx.ServiceError, mx.ResourceExhaustedError, mx.ClientClosed,
        )  # fmt: skip
        try:
            value = await fn.remote.aio(**kwargs)
        except infra as err:
            raise ModalUnavailable(f"could not run {self._where(name)}: {err}") from err
        return raise_for_failure(value)

    async def close(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (a grace period)
        """Forget the handles; the spawned calls run on in Modal, which owns them."""
        self._closed = True
        self._functions.clear()

    def _where(self, name: str) -> str:
        return f"Modal function {self._app_name}/{name}"

    async def _function(self, name: str, kwargs: Mapping[str, object]) -> Any:
        if self._closed:
            raise DispatcherClosed("the dispatcher is closed")
        _check_kwargs(name, kwargs)
        cached = self._functions.get(name)
        if cached is not None:
            return cached
        import modal
        import modal.exception

        fn = modal.Function.from_name(self._app_name, name, environment_name=self._environment)
        try:
            # from_name is lazy; hydrating is the first network round trip.
            await asyncio.wait_for(fn.hydrate.aio(), self._timeout)
        except TimeoutError as err:
            raise ModalUnavailable(
                f"Modal did not answer within {self._timeout:g}s looking up {self._where(name)}"
            ) from err
        except modal.exception.NotFoundError as err:
            raise ModalUnavailable(
                f"{self._where(name)} is not deployed (modal deploy modal_app.py): {err}"
            ) from err
        except (modal.exception.Error, OSError) as err:
            raise ModalUnavailable(f"could not reach Modal for {self._where(name)}: {err}") from err
        # Cached only once found, so a transient failure is retried on the next call.
        self._functions[name] = fn
        return fn


# ---------------------------------------------------------------------------------------------
# Choosing one


def running_in_modal() -> bool:
    """True inside a Modal function's container (agents and the deployed API), else False.

    Detected, not configured: `modal.is_local()` is False exactly when this process is running
    a Modal function. A Modal container runs our code from modal's own entrypoint, so when
    modal has not even been imported this cannot be one — that short cut spares the CLI and the
    local API the best part of a second importing it.
    """
    modal = sys.modules.get("modal")
    if modal is None:
        return False
    is_local = getattr(modal, "is_local", None)
    if is_local is None:  # an SDK without the public API: the container's own marker
        return bool(os.environ.get("MODAL_TASK_ID"))
    return not is_local()


def make_dispatcher(
    services: ServicesLike, registry: Mapping[str, AgentFn], *, max_concurrency: int = 8
) -> Dispatcher:
    """The dispatcher for where this process runs: Modal's inside Modal, local elsewhere.

    Inside Modal each agent name is a deployed function (modal_app.py declares one per entry
    of the same registry), so the registry itself is only needed locally.
    """
    if running_in_modal():
        return ModalDispatcher()
    return LocalDispatcher(services, registry, max_concurrency=max_concurrency)
