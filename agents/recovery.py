"""Recovery: nothing live without an owner.

One pass (`recover_once`), run by every process that runs builds (at start, then every third
of a lease: `recovery_loop`) and in production by the `recover_builds` Modal cron:

1. **Expired approvals** become `expired` and their builds resume, to fail with the reason.
2. **Stalled runs** — live, silent past `RUN_DEADLINE_SECONDS` while their build's owner is
   alive (a hung agent) — are failed with `run_stalled`, and an `alert` event says so.
3. **Ownerless builds** — live, with an expired lease (their process died) or never claimed —
   are handed to an orchestrator, which resumes each from its last checkpoint. An owner on
   this host whose process is gone is dead now: its builds are taken at once, without waiting
   out its lease (a `kill -9` and a restart resume in about a second, not a lease later).

Everything here is idempotent: two processes recovering at once race on the lease, and one
wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from uuid import UUID

from agents.deps import AgentDeps
from schemas.errors import ErrorCode, IllegalTransition, MyycError
from schemas.events import EventType

logger = logging.getLogger(__name__)


def owner_name() -> str:
    """A lease owner's name for this process: host, pid, and a nonce for this start."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str, *, host: str | None = None) -> bool:
    """Whether `owner` (see owner_name) ran on this host in a process that is gone.

    Only a same-host owner can be judged; any other is alive until its lease says otherwise.
    A zombie (exited, not yet reaped by its parent) counts as dead.
    """
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != (host or socket.gethostname()[:60]):
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    # The state follows the command name's closing parenthesis: "pid (comm) S …".
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] in ("Z", "X")


@dataclass
class Recovered:
    """What one pass did."""

    expired_approvals: int = 0
    stalled_runs: int = 0
    resumed_builds: int = 0


async def recover_once(deps: AgentDeps, *, recent: dict[UUID, float] | None = None) -> Recovered:
    """One recovery pass; see the module docstring.

    `recent` (kept by a long-lived loop) remembers the builds this process handed out lately,
    so a build still waiting in the local queue is not handed out twice.
    """
    store, settings, dispatcher = deps.store, deps.settings, deps.dispatcher
    done = Recovered()
    now = time.monotonic()
    if recent is not None:
        for bid in [b for b, t in recent.items() if now - t > 2 * settings.build_lease_seconds]:
            del recent[bid]
    for approval in await store.expire_approvals():
        done.expired_approvals += 1
        await deps.writer.log(
            approval.project_id, "watchdog",
            "The escalation expired before anyone decided", "warning",
            type=EventType.approval_decided, session_id=approval.session_id,
            data={"token": approval.token, "decision": "expired"},
        )  # fmt: skip
        await dispatcher.spawn("orchestrator", project_id=str(approval.project_id),
                               build_id=str(approval.session_id))  # fmt: skip
    for run in await store.stalled_runs(settings.run_deadline_seconds):
        message = (
            f"{run.agent_name} sent no heartbeat for {settings.run_deadline_seconds:g}s:"
            " failed as stalled"
        )
        with contextlib.suppress(IllegalTransition):
            await deps.reporter.fail_run(run.id, error=message, code=ErrorCode.run_stalled)
            done.stalled_runs += 1
            if run.project_id is not None:
                await deps.writer.log(run.project_id, "watchdog", message, "error",
                                      type=EventType.alert, session_id=run.session_id,
                                      data={"run_id": str(run.id),
                                            "code": ErrorCode.run_stalled.value})  # fmt: skip
    dead = [o for o in await store.build_lease_owners() if owner_is_dead(o)]
    for session in await store.reclaimable_builds(settings.build_lease_seconds, dead_owners=dead):
        if session.project_id is None or (recent is not None and session.id in recent):
            continue
        if recent is not None:
            recent[session.id] = now
        done.resumed_builds += 1
        logger.info("resuming build %s (owner %s gone)", session.id, session.lease_owner)
        dead_owner = session.lease_owner if session.lease_owner in dead else ""
        await dispatcher.spawn("orchestrator", project_id=str(session.project_id),
                               build_id=str(session.id), dead_owner=dead_owner or "")  # fmt: skip
    return done


async def recovery_loop(deps: AgentDeps) -> None:
    """`recover_once` now, then every third of a lease, until canceled; errors are logged."""
    interval = max(0.5, deps.settings.build_lease_seconds / 3)
    recent: dict[UUID, float] = {}
    while True:
        try:
            await recover_once(deps, recent=recent)
        except MyycError as err:
            logger.warning("recovery pass failed: %s", err.message)
        except Exception:
            logger.exception("recovery pass failed")
        await asyncio.sleep(interval)
