"""The preview session service: start, stop and status of a project's live preview.

Lifecycle (seed 003), every step logged to the project's event log (agent `preview`, type
`preview`, the session id in `data`):

* **start** — idempotent per project: a live, unexpired session is returned (and its expiry
  pushed back); an expired one is ended first. Otherwise a row is inserted in `creating`
  (the per-user cap is checked atomically with the insert: PreviewLimitReached → 429), a
  machine is created for it, and the dev server is probed until it answers. Then the row
  becomes `active` and the project's `preview_url` points at the container. A boot that
  fails (no capacity, the machine never starts, the dev server never answers, the process
  exits) becomes `error` with the reason, its machine is destroyed, and PreviewBootFailed
  (502) is raised.
* **stop** — the row becomes `ended` (with `ended_at`) *before* the machine is destroyed, so
  a destroy that fails leaves an orphan the cleanup sweep removes, never a live row without a
  machine. Stopping a session that already ended (or failed) changes nothing.
* **status** — the row as it is.

A user sees only sessions of their own projects (others' are NotFound, like unknown ids);
server callers act for any project and count against the project owner's cap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import httpx
import jwt

from previews.ports import (
    LIVE_STATUSES,
    DriverError,
    LiveSessionExists,
    MachineInfo,
    MachinesDriver,
    MachineSpec,
    PreviewLimitReached,
    PreviewSession,
    PreviewStore,
    ProjectFileStore,
)
from schemas.errors import Conflict, ErrorCode, MyycError, NotFound
from schemas.events import EventType
from schemas.rows import Project
from schemas.settings import Settings
from schemas.status import PreviewStatus
from store.log_writer import LogWriter
from store.ports import ProjectStore

logger = logging.getLogger(__name__)

AGENT = "preview"
#: How long the container's owner-scoped token lives (it only reads the owner's files).
TOKEN_LIFETIME = timedelta(hours=24)


class Actor(Protocol):
    """Who asks (api.auth.Caller fits): a server/local caller, or one signed-in user."""

    @property
    def is_service(self) -> bool:
        """True for servers and local mode: they act for any project."""
        ...

    @property
    def user_id(self) -> UUID | None:
        """The signed-in user, for user callers."""
        ...


class PreviewBootFailed(MyycError):
    """The preview did not come up; the session is in `error` with the reason."""

    code = ErrorCode.upstream_error

    def __init__(self, session: PreviewSession, reason: str) -> None:
        super().__init__(f"preview session {session.id} failed to start: {reason}")
        self.session = session


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class PreviewSessions:
    """Starts, stops and reports preview sessions; see the module docstring."""

    def __init__(
        self,
        *,
        store: PreviewStore,
        projects: ProjectStore,
        driver: MachinesDriver,
        writer: LogWriter,
        settings: Settings,
        api_url: str | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        files: ProjectFileStore | None = None,
    ) -> None:
        """Wire the service; `api_url` is what a local container reaches the API at."""
        self.store = store
        #: Where the project files previews sync from live (the routes serve them).
        self.files = files
        self.projects = projects
        self.driver = driver
        self.writer = writer
        self.settings = settings
        self.api_url = api_url.rstrip("/") if api_url else None
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(2.0))
        self._clock = clock
        self._sleep = sleep

    async def close(self) -> None:
        """Close the probe client if this service created it, the driver and the store."""
        if self._owns_http:
            await self._http.aclose()
        await self.driver.close()
        await self.store.close()

    # the API ------------------------------------------------------------------------------

    async def start(self, project_id: UUID, actor: Actor) -> PreviewSession:
        """Start (or reuse) the project's preview; see the module docstring."""
        project = await self.projects.get_project(project_id)
        if not self._may_see(project.user_id, actor):
            raise NotFound(f"project {project_id} not found", field="projectId")
        for _ in range(3):
            live = await self.store.find_live(project_id)
            if live is not None:
                reused = await self._reuse(live, project)
                if reused is not None:
                    return reused
                continue
            try:
                session = await self.store.create_session(
                    project_id,
                    user_id=project.user_id,
                    expires_at=self._now() + self._ttl,
                    live_cap=self.settings.preview_max_live_per_user,
                )
            except LiveSessionExists:
                continue  # a concurrent start won: its session is our answer
            except PreviewLimitReached as err:
                await self._log(project_id, None, f"preview refused: {err.message}", "warning")
                raise
            await self._log(project_id, session, "creating a preview")
            return await self._boot(session, project)
        # Three rounds of losing races to concurrent starts and stops: let the caller retry.
        raise Conflict(
            f"the preview of project {project_id} is changing right now; try again",
            field="projectId",
        )

    async def stop(self, session_id: UUID, actor: Actor) -> PreviewSession:
        """End the session and destroy its machine; an ended session is left as it is."""
        session = await self._visible(session_id, actor)
        if not session.live:
            return session
        ended = await self.store.update_session(
            session_id,
            {"status": PreviewStatus.ended, "ended_at": self._now()},
            only_if=LIVE_STATUSES,
        )
        if ended is None:  # someone else ended it first
            return await self.store.get_session(session_id)
        await self._log(ended.project_id, ended, "preview stopped")
        await self._release(ended)
        return ended

    async def status(self, session_id: UUID, actor: Actor) -> PreviewSession:
        """The session (NotFound when unknown or someone else's)."""
        return await self._visible(session_id, actor)

    async def end_expired(self, session: PreviewSession) -> PreviewSession | None:
        """End a session past `expires_at` and destroy its machine; None if it moved on."""
        ended = await self.mark_ended(session.id, reason="expired", code=ErrorCode.timeout)
        if ended is not None and ended.container_id is not None:
            await self._destroy(ended, ended.container_id)
        return ended

    async def mark_ended(
        self, session_id: UUID, *, reason: str, code: ErrorCode | None = None
    ) -> PreviewSession | None:
        """End a live session without touching its machine (the caller decides that).

        Logs the reason and takes the session's URL off the project. None when the session
        was no longer live.
        """
        ended = await self.store.update_session(
            session_id,
            {
                "status": PreviewStatus.ended,
                "ended_at": self._now(),
                "error_message": reason,
                "error_code": code,
            },
            only_if=LIVE_STATUSES,
        )
        if ended is not None:
            await self._log(ended.project_id, ended, f"preview ended: {reason}")
            await self._unlink_url(ended)
        return ended

    # lifecycle ----------------------------------------------------------------------------

    async def _reuse(self, live: PreviewSession, project: Project) -> PreviewSession | None:
        """The live session, its expiry pushed back; None when it expired (and was ended).

        A session still `creating` may be one whose starter died mid-boot (a crashed build):
        it is booted to the end here — the drivers find the session's machine by metadata, so
        a machine that was made is reused, not made twice.
        """
        now = self._now()
        if live.expires_at is not None and live.expires_at <= now:
            await self.end_expired(live)
            return None
        touched = await self.store.update_session(
            live.id, {"expires_at": now + self._ttl}, only_if=LIVE_STATUSES
        )
        if touched is None:
            return None
        if touched.status is PreviewStatus.creating:
            await self._log(touched.project_id, touched, "finishing the boot of this preview")
            return await self._boot(touched, project)
        await self._log(touched.project_id, touched, "reusing the live preview")
        return touched

    async def _boot(self, session: PreviewSession, project: Project) -> PreviewSession:
        started = self._clock()
        spec = MachineSpec(
            session_id=session.id,
            project_id=session.project_id,
            env=self._container_env(session, project),
            cpu_kind=self.settings.preview_cpu_kind,
            cpus=self.settings.preview_cpus,
            memory_mb=self.settings.preview_memory_mb,
        )
        try:
            machine = await self.driver.create(spec)
        except DriverError as err:
            failure = await self._fail(session, None, err.message, err.code)
            if failure is None:
                return await self.store.get_session(session.id)
            raise failure from err
        recorded = await self.store.update_session(
            session.id,
            {"container_id": machine.id, "container_url": machine.url},
            only_if=frozenset({PreviewStatus.creating}),
        )
        if recorded is None:
            return await self._booted_elsewhere(session, machine.id)
        await self._log(
            session.project_id, session, f"machine {machine.id} created ({self.driver.name})"
        )
        reason = await self._wait_healthy(machine)
        if reason is not None:
            failure = await self._fail(session, machine.id, reason, ErrorCode.upstream_error)
            if failure is None:
                return await self.store.get_session(session.id)
            raise failure
        active = await self.store.update_session(
            session.id,
            {"status": PreviewStatus.active},
            only_if=frozenset({PreviewStatus.creating}),
        )
        if active is None:
            return await self._booted_elsewhere(session, machine.id)
        await self.projects.update_project(session.project_id, {"preview_url": machine.url})
        took = self._clock() - started
        await self._log(
            session.project_id,
            active,
            f"preview active at {machine.url} after {took * 1000:.0f} ms",
            "success",
        )
        return active

    async def _wait_healthy(self, machine: MachineInfo) -> str | None:
        """Probe the dev server until it answers (< 500); the failure reason otherwise."""
        timeout = self.settings.preview_boot_timeout_seconds
        deadline = self._clock() + timeout
        delay = 0.01
        next_state_check = self._clock() + 0.5
        while True:
            try:
                response = await self._http.get(
                    machine.health_url, headers=dict(machine.health_headers)
                )
                if response.status_code < 500:
                    return None
            except httpx.HTTPError:
                pass  # not listening yet
            now = self._clock()
            if now >= next_state_check:
                # A dead machine will never answer: fail now rather than at the deadline.
                next_state_check = now + 0.5
                current = await self.driver.get(machine.id)
                if current is None:
                    return f"machine {machine.id} disappeared while booting"
                if current.state in ("stopped", "failed", "destroyed", "destroying"):
                    return current.detail or f"machine {machine.id} is {current.state}"
            if now >= deadline:
                return f"the dev server did not answer within {timeout:g}s"
            await self._sleep(min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 1.5, 0.5)

    async def _fail(
        self, session: PreviewSession, machine_id: str | None, reason: str, code: ErrorCode
    ) -> PreviewBootFailed | None:
        """Mark the session `error` and destroy its machine; the exception to raise.

        None when the session was stopped meanwhile: then the failure is moot (the machine
        is still destroyed) and the caller answers with the ended session.
        """
        failed = await self.store.update_session(
            session.id,
            {
                "status": PreviewStatus.error,
                "error_message": reason[:2000],
                "error_code": code,
                "ended_at": self._now(),
            },
            only_if=LIVE_STATUSES,
        )
        current = failed or await self.store.get_session(session.id)
        if failed is not None:
            await self._log(session.project_id, current, f"preview failed: {reason}", "error")
        if machine_id is not None:
            await self._destroy(current, machine_id)
        return None if failed is None else PreviewBootFailed(failed, reason)

    async def _booted_elsewhere(self, session: PreviewSession, machine_id: str) -> PreviewSession:
        """The row moved on while we booted: a concurrent start finished the same machine
        (keep it), or the session was stopped (then the machine is ours alone to remove)."""
        current = await self.store.get_session(session.id)
        if current.status is PreviewStatus.active and current.container_id == machine_id:
            return current
        return await self._stopped_while_booting(session, machine_id)

    async def _stopped_while_booting(
        self, session: PreviewSession, machine_id: str
    ) -> PreviewSession:
        """The row was ended while we booted: the machine is ours alone to remove."""
        current = await self.store.get_session(session.id)
        await self._destroy(current, machine_id)
        return current

    async def _release(self, session: PreviewSession) -> None:
        """Destroy an ended session's machine and take its URL off the project."""
        if session.container_id is not None:
            await self._destroy(session, session.container_id)
        await self._unlink_url(session)

    async def _unlink_url(self, session: PreviewSession) -> None:
        """Clear the project's `preview_url` when it still points at this session."""
        if session.container_url is not None:
            try:
                project = await self.projects.get_project(session.project_id)
                if project.preview_url == session.container_url:
                    await self.projects.update_project(session.project_id, {"preview_url": None})
            except NotFound:
                pass  # the project is gone, and its URL with it

    async def _destroy(self, session: PreviewSession, machine_id: str) -> None:
        try:
            destroyed = await self.driver.destroy(machine_id)
        except DriverError as err:
            # The row is no longer live, so the cleanup sweep treats the machine as an orphan.
            await self._log(
                session.project_id,
                session,
                f"could not destroy machine {machine_id} ({err.message}); cleanup will retry",
                "warning",
            )
            return
        if destroyed:
            await self._log(session.project_id, session, f"machine {machine_id} destroyed")

    # helpers ----------------------------------------------------------------------------

    @property
    def _ttl(self) -> timedelta:
        return timedelta(minutes=self.settings.preview_ttl_minutes)

    def _now(self) -> datetime:
        return _utc(self._clock())

    @staticmethod
    def _may_see(owner: UUID | None, actor: Actor) -> bool:
        return actor.is_service or (actor.user_id is not None and actor.user_id == owner)

    async def _visible(self, session_id: UUID, actor: Actor) -> PreviewSession:
        session = await self.store.get_session(session_id)
        if not self._may_see(session.user_id, actor):
            raise NotFound(f"preview session {session_id} not found", field="sessionId")
        return session

    def _container_env(self, session: PreviewSession, project: Project) -> dict[str, str]:
        """What the container needs to sync and follow: a source and a scoped token."""
        env: dict[str, str] = {"MYYC_SESSION_ID": str(session.id)}
        token = self.preview_token(project)
        if token is not None:
            env["MYYC_PREVIEW_TOKEN"] = token
        s = self.settings
        if self.driver.name != "local" and s.supabase_url and s.supabase_anon_key:
            env.update(
                MYYC_SOURCE="supabase",
                SUPABASE_URL=s.supabase_url,
                SUPABASE_ANON_KEY=s.supabase_anon_key.get_secret_value(),
            )
        elif self.api_url is not None:
            env.update(MYYC_SOURCE="api", MYYC_API_URL=self.api_url)
            # A local preview is our own process on loopback: it signs like our servers.
            # Never a remote machine: the shared secret stays on our side.
            if self.driver.name == "local" and s.myyc_hmac_secret is not None:
                env["MYYC_HMAC_SECRET"] = s.myyc_hmac_secret.get_secret_value()
        return env

    def preview_token(self, project: Project) -> str | None:
        """A JWT for the project's owner (role `authenticated`), or None without a secret.

        It lets the container read the owner's files — through the myyc API or PostgREST
        under RLS — and nothing else: the owner could read them anyway.
        """
        secret = self.settings.supabase_jwt_secret
        if secret is None or project.user_id is None:
            return None
        now = self._clock()
        claims = {
            "sub": str(project.user_id),
            "role": "authenticated",
            "aud": "authenticated",
            "iat": int(now),
            "exp": int(now + TOKEN_LIFETIME.total_seconds()),
            "myyc_preview_project": str(project.id),
        }
        return jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")

    async def _log(
        self,
        project_id: UUID,
        session: PreviewSession | None,
        message: str,
        level: str = "info",
    ) -> None:
        data: Mapping[str, Any] = {}
        if session is not None:
            data = {
                "sessionId": str(session.id),
                "status": str(session.status),
                "containerId": session.container_id,
                "containerUrl": session.container_url,
            }
        try:
            await self.writer.log(
                project_id, AGENT, message, level, type=EventType.preview, data=data
            )
        except RuntimeError:  # the writer is closing (shutdown): the row still tells the story
            logger.info("preview %s: %s", project_id, message)
