"""The preview commands of the `myyc` CLI.

`myyc preview PROJECT [--json]`, `myyc preview stop SESSION`, `myyc cleanup [--dry-run]
[--json]`.

`register(subparsers)` adds the commands to the `myyc` argparse parser; each sets
`func(args) -> int` (build Services from settings, run, exit code). The logic lives in
coroutines taking Services (`start_preview`, `stop_preview`, `cleanup`) so tests call them
directly.

A local preview's container syncs from, and follows, the myyc API. When `myyc up` is serving
(at MYYC_HOST:MYYC_PORT) the preview uses it and the command returns at once; otherwise the
command serves the API itself and stays in the foreground until Ctrl-C or until the session
is stopped (e.g. by `myyc preview stop` from another terminal), then stops the preview.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from rich.console import Console

from previews.cleanup import CleanupReport, run_cleanup
from previews.ports import PreviewSession
from previews.wiring import open_previews
from schemas.errors import MyycError
from schemas.settings import get_settings

if TYPE_CHECKING:
    from core.services import Services

_console = Console(highlight=False)
_errors = Console(stderr=True, highlight=False)


class _Local:
    """The CLI acts as the local service: any project, the owner's cap."""

    is_service = True
    user_id: UUID | None = None


def register(subparsers: Any) -> None:
    """Add `preview` and `cleanup` to the `myyc` CLI (an argparse subparsers object)."""
    preview = subparsers.add_parser(
        "preview",
        help="start a local preview of a project (or: preview stop SESSION)",
        description="Start a project's live preview and print its URL; "
        "`myyc preview stop SESSION` ends one.",
    )
    preview.add_argument("target", nargs="+", metavar="PROJECT | stop SESSION")
    preview.add_argument(
        "--json", action="store_true", help="print {sessionId, status, containerUrl}"
    )
    preview.set_defaults(func=_preview_main)

    clean = subparsers.add_parser(
        "cleanup",
        help="end expired previews and destroy orphaned machines",
        description="End previews past their expiry, destroy machines no live session owns, "
        "and end sessions whose machine is gone.",
    )
    clean.add_argument("--dry-run", action="store_true", help="report what would be done")
    clean.add_argument("--json", action="store_true", help="print the counts as JSON")
    clean.set_defaults(func=_cleanup_main)


# ------------------------------------------------------------------------------ logic


async def start_preview(
    services: Services, project_id: UUID, *, api_url: str | None = None
) -> PreviewSession:
    """Start (or reuse) a project's preview with the configured driver."""
    previews = open_previews(services, api_url=api_url)
    try:
        return await previews.start(project_id, _Local())
    finally:
        await previews.close()


async def stop_preview(services: Services, session_id: UUID) -> PreviewSession:
    """Stop a preview session (a no-op for one that already ended)."""
    previews = open_previews(services)
    try:
        return await previews.stop(session_id, _Local())
    finally:
        await previews.close()


async def cleanup(services: Services, *, dry_run: bool = False) -> CleanupReport:
    """One cleanup run (see previews.cleanup)."""
    previews = open_previews(services)
    try:
        return await run_cleanup(previews, dry_run=dry_run)
    finally:
        await previews.close()


def session_json(session: PreviewSession) -> dict[str, Any]:
    """What `myyc preview --json` prints."""
    return {
        "sessionId": str(session.id),
        "status": str(session.status),
        "containerUrl": session.container_url,
    }


# ------------------------------------------------------------------------------ commands


def _preview_main(args: argparse.Namespace) -> int:
    target: list[str] = args.target
    if len(target) == 2 and target[0] == "stop":
        session_id = _uuid(target[1], "SESSION")
        if session_id is None:
            return 2
        return asyncio.run(_with_services(lambda s: _stop(s, session_id, args.json)))
    if len(target) != 1:
        _errors.print("usage: myyc preview PROJECT [--json] | myyc preview stop SESSION")
        return 2
    project_id = _uuid(target[0], "PROJECT")
    if project_id is None:
        return 2
    return asyncio.run(_with_services(lambda s: _start(s, project_id, args.json)))


def _cleanup_main(args: argparse.Namespace) -> int:
    return asyncio.run(_with_services(lambda s: _cleanup(s, args.dry_run, args.json)))


def _uuid(raw: str, name: str) -> UUID | None:
    try:
        return UUID(raw)
    except ValueError:
        _errors.print(f"{name} must be a UUID, got {raw!r}")
        return None


async def _with_services(body: Callable[[Services], Awaitable[int]]) -> int:
    from core.services import Services

    services = await Services.open(get_settings())
    try:
        return await body(services)
    except MyycError as err:
        _errors.print(f"error ({err.code}): {err.message}")
        return 1
    finally:
        await services.close()


async def _stop(services: Services, session_id: UUID, as_json: bool) -> int:
    session = await stop_preview(services, session_id)
    if as_json:
        _console.out(json.dumps(session_json(session)))
    else:
        _console.print(f"preview {session.id} is {session.status}")
    return 0


async def _start(services: Services, project_id: UUID, as_json: bool) -> int:
    settings = services.settings
    api_url = f"http://{settings.myyc_host}:{settings.myyc_port}"
    if await _answers(api_url):
        session = await start_preview(services, project_id, api_url=api_url)
        _report(session, as_json)
        return 0
    return await _serve_and_preview(services, project_id, api_url, as_json)


def _report(session: PreviewSession, as_json: bool) -> None:
    if as_json:
        _console.out(json.dumps(session_json(session)))
    else:
        _console.print(f"preview {session.id} is {session.status} at {session.container_url}")


async def _answers(api_url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return (await http.get(f"{api_url}/health")).status_code == 200
    except httpx.HTTPError:
        return False


async def _serve_and_preview(
    services: Services, project_id: UUID, api_url: str, as_json: bool
) -> int:
    """Serve the API here for the container, start the preview, wait, then stop it."""
    import uvicorn

    from api.app import create_app
    from api.routes import previews as preview_routes

    app = create_app(services)
    if not any(getattr(r, "path", None) == "/sessions/start" for r in app.routes):
        app.include_router(preview_routes.router)
    settings = services.settings
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.myyc_host, port=settings.myyc_port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            return 1
        await asyncio.sleep(0.02)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    previews = open_previews(services, api_url=api_url)
    session: PreviewSession | None = None
    try:
        session = await previews.start(project_id, _Local())
        _report(session, as_json)
        if not as_json:
            _console.print("serving the preview; Ctrl-C (or `myyc preview stop`) ends it")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            current = await previews.store.get_session(session.id)
            if not current.live:
                break
        return 0
    finally:
        if session is not None:
            await previews.stop(session.id, _Local())
        await previews.close()
        server.should_exit = True
        await serving


async def _cleanup(services: Services, dry_run: bool, as_json: bool) -> int:
    report = await cleanup(services, dry_run=dry_run)
    if as_json:
        data = report.to_json()
        _console.out(
            json.dumps(
                {k: data[k] for k in ("expired", "orphaned", "destroyed", "gone", "errors")}
                | {"dryRun": report.dry_run}
            )
        )
    else:
        verb = "would end" if dry_run else "ended"
        _console.print(
            f"{verb} {report.expired} expired and {report.gone} lost previews; "
            f"{report.orphaned} orphaned machines, {report.destroyed} destroyed"
            f"{' (planned)' if dry_run else ''}, {report.errors} errors"
        )
        for line in report.problems:
            _errors.print(f"  {line}")
    return 1 if report.errors else 0
