"""Orphan cleanup: end expired previews, destroy machines nobody owns, settle lost rows.

`plan_cleanup` is the decision, a pure function of (sessions, machines, now); a property
test proves it never touches the machine of a live, unexpired session. `run_cleanup` is the
executor; `run_scheduled_cleanup` the zero-argument entry point the Modal cron calls (and
`myyc cleanup` runs).

Ownership: a machine belongs to a session when the session's `container_id` is the
machine's id, *or* the machine's metadata names the session — a machine whose session is
still `creating` may not be recorded on the row yet, and must be left alone.

The executor lists machines **before** sessions. A machine created after the listing is not
in it (so not touched), and every listed machine's session row existed before the machine
did (the row is inserted first), so the session listing that follows sees its owner.

What one run does:

* **expired** — live sessions past `expires_at` are ended (`error_message` "expired") and
  their machines destroyed;
* **orphaned** — machines tagged as ours that no live session owns are destroyed;
* **gone** — `active` sessions whose machine is not in the listing are checked once more
  (it may be brand new) and, when really gone or dead, ended (a dead machine is then
  destroyed too);
* every destroy holds a Fly lease (the driver's), and a machine already gone counts as done,
  so a second run finds nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from previews.ports import (
    LIVE_STATUSES,
    DriverError,
    MachineBusy,
    MachineInfo,
    PreviewSession,
)
from previews.sessions import PreviewSessions
from schemas.errors import ErrorCode, MyycError
from schemas.status import PreviewStatus

logger = logging.getLogger(__name__)

_DEAD_STATES = frozenset({"stopped", "failed", "destroyed", "destroying"})
_GOING = frozenset({"destroyed", "destroying"})


# ------------------------------------------------------------------------------ the decision


@dataclass(frozen=True, slots=True)
class SessionView:
    """What the decision needs of a session row."""

    id: str
    status: str
    container_id: str | None
    expires_at: float | None
    """Unix seconds; None never expires."""

    @classmethod
    def of(cls, session: PreviewSession) -> SessionView:
        """The view of a stored session."""
        expires = None if session.expires_at is None else session.expires_at.timestamp()
        return cls(str(session.id), str(session.status), session.container_id, expires)

    @property
    def live(self) -> bool:
        """Creating or active."""
        return self.status in LIVE_STATUSES


@dataclass(frozen=True, slots=True)
class MachineView:
    """What the decision needs of a machine."""

    id: str
    session_id: str | None
    state: str

    @classmethod
    def of(cls, machine: MachineInfo) -> MachineView:
        """The view of a listed machine."""
        return cls(machine.id, machine.session_id, machine.state)


@dataclass(frozen=True, slots=True)
class CleanupPlan:
    """What one cleanup run should do."""

    expire: tuple[str, ...] = ()
    """Live sessions past `expires_at`: end them."""
    destroy: tuple[str, ...] = ()
    """Machines to destroy: those of expired sessions, and orphans."""
    orphans: tuple[str, ...] = ()
    """The machines in `destroy` that no live session owns."""
    gone: tuple[str, ...] = ()
    """Active, unexpired sessions whose machine is missing or dead: confirm, then end."""


def plan_cleanup(
    sessions: Iterable[SessionView], machines: Iterable[MachineView], now: float
) -> CleanupPlan:
    """Decide what to clean up; pure, and never touches a live unexpired session's machine."""
    session_list = list(sessions)
    machine_list = list(machines)
    live = [s for s in session_list if s.live]
    expired = [s for s in live if s.expires_at is not None and s.expires_at <= now]
    expired_ids = {s.id for s in expired}
    keep = [s for s in live if s.id not in expired_ids]
    keep_ids = {s.id for s in keep}
    live_ids = {s.id for s in live}
    # Protection first: whatever a live unexpired session could own is off limits.
    protected = {s.container_id for s in keep if s.container_id is not None}
    protected |= {m.id for m in machine_list if m.session_id in keep_ids}
    owned_by_live = {s.container_id for s in live if s.container_id is not None}
    owned_by_live |= {m.id for m in machine_list if m.session_id in live_ids}

    listed = {m.id: m for m in machine_list}
    destroy: dict[str, None] = {}
    for s in expired:
        mine = [m.id for m in machine_list if m.session_id == s.id]
        if s.container_id is not None and s.container_id in listed:
            mine.insert(0, s.container_id)
        for machine_id in mine:
            if machine_id not in protected:
                destroy[machine_id] = None
    orphans = [
        m.id
        for m in machine_list
        if m.id not in owned_by_live and m.id not in protected and m.state not in _GOING
    ]
    for machine_id in orphans:
        destroy[machine_id] = None

    gone: list[str] = []
    for s in keep:
        if s.status != PreviewStatus.active or s.container_id is None:
            continue
        machine = listed.get(s.container_id)
        if machine is None or machine.state in _DEAD_STATES:
            gone.append(s.id)
    return CleanupPlan(
        expire=tuple(s.id for s in expired),
        destroy=tuple(destroy),
        orphans=tuple(orphans),
        gone=tuple(gone),
    )


# ------------------------------------------------------------------------------ the executor


@dataclass
class CleanupReport:
    """What a cleanup run did (or, with `dry_run`, would do)."""

    expired: int = 0
    """Sessions ended because they were past `expires_at`."""
    orphaned: int = 0
    """Machines found that no live session owns."""
    destroyed: int = 0
    """Machines destroyed by this run."""
    gone: int = 0
    """Sessions ended because their machine was gone or dead."""
    errors: int = 0
    """Actions that failed (retried by the next run)."""
    dry_run: bool = False
    """Nothing was changed; the counts say what would have been."""
    problems: list[str] = field(default_factory=list)
    """One line per error."""

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able data (`myyc cleanup --json`, the Modal cron's result)."""
        return asdict(self)


async def run_cleanup(
    previews: PreviewSessions,
    *,
    now: float | None = None,
    dry_run: bool = False,
    concurrency: int = 16,
) -> CleanupReport:
    """List machines, then sessions; plan; act with at most `concurrency` calls in flight."""
    report = CleanupReport(dry_run=dry_run)
    driver, store = previews.driver, previews.store
    try:
        machines = await driver.list_ours()
    except MyycError as err:
        report.errors += 1
        report.problems.append(f"could not list machines: {err.message}")
        logger.error("cleanup: could not list machines: %s", err.message)
        return report
    sessions = await store.list_live()
    at = time.time() if now is None else now
    plan = plan_cleanup(
        [SessionView.of(s) for s in sessions], [MachineView.of(m) for m in machines], at
    )
    by_id = {str(s.id): s for s in sessions}
    report.orphaned = len(plan.orphans)
    if dry_run:
        report.expired = len(plan.expire)
        report.destroyed = len(plan.destroy)
        report.gone = len(plan.gone)
        return report

    for session_id in plan.expire:
        try:
            ended = await previews.mark_ended(
                by_id[session_id].id, reason="expired", code=ErrorCode.timeout
            )
        except MyycError as err:
            _problem(report, f"could not end expired session {session_id}: {err.message}")
            continue
        report.expired += ended is not None

    gate = asyncio.Semaphore(max(1, concurrency))

    async def destroy(machine_id: str) -> None:
        async with gate:
            try:
                done = await driver.destroy(machine_id)
                report.destroyed += done
            except MachineBusy as err:
                _problem(report, f"machine {machine_id} is busy: {err.message}")
            except DriverError as err:
                _problem(report, f"could not destroy machine {machine_id}: {err.message}")

    await asyncio.gather(*(destroy(machine_id) for machine_id in plan.destroy))

    for session_id in plan.gone:
        await _settle_gone(previews, by_id[session_id], report, destroy)
    logger.info(
        "cleanup: %d expired, %d orphaned, %d destroyed, %d gone, %d errors",
        report.expired, report.orphaned, report.destroyed, report.gone, report.errors,
    )  # fmt: skip
    return report


async def _settle_gone(
    previews: PreviewSessions,
    session: PreviewSession,
    report: CleanupReport,
    destroy: Callable[[str], Awaitable[None]],
) -> None:
    """End an active session whose machine really is gone (or dead); destroy a dead one."""
    assert session.container_id is not None
    try:
        current = await previews.driver.get(session.container_id)
    except DriverError as err:
        _problem(report, f"could not check machine {session.container_id}: {err.message}")
        return
    if current is not None and current.state not in _DEAD_STATES:
        return  # created after the listing: it is fine
    reason = "machine gone" if current is None else f"machine {current.state}"
    try:
        ended = await previews.mark_ended(session.id, reason=reason, code=ErrorCode.upstream_error)
    except MyycError as err:
        _problem(report, f"could not end session {session.id}: {err.message}")
        return
    if ended is None:
        return
    report.gone += 1
    if current is not None:
        await destroy(current.id)


def _problem(report: CleanupReport, line: str) -> None:
    report.errors += 1
    report.problems.append(line)
    logger.warning("cleanup: %s", line)


async def run_scheduled_cleanup() -> dict[str, Any]:
    """The cron entry point: Services from settings, one cleanup run, the report as JSON.

    Takes no arguments so `@app.function(schedule=modal.Cron(...))` can call it.
    """
    from core.services import Services
    from previews.wiring import open_previews
    from schemas.settings import get_settings

    services = await Services.open(get_settings())
    try:
        previews = open_previews(services)
        try:
            report = await run_cleanup(previews)
        finally:
            await previews.close()
    finally:
        await services.close()
    return report.to_json()
