"""The `myyc` command: run the control plane locally and drive it.

    myyc up                                  embedded Postgres + the API on 127.0.0.1
    myyc spawn "AI Recipe App" --description "…" [--category …] [--json]
    myyc logs PROJECT [--follow] [--agent NAME]
    myyc projects
    myyc migrate
    myyc build "VIBE" --template marketplace|saas [--json]
    myyc resume BUILD | myyc cancel BUILD
    myyc approve TOKEN [--reject | --retry] [--note TEXT]

`spawn`, `logs` and `projects` talk to a running `myyc up` when there is one; otherwise they
start the API in this process (same code, same database). Requests are HMAC-signed with
MYYC_HMAC_SECRET or, in local mode, the secret kept under MYYC_DATA_DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from core import redact
from local.remote import TERMINAL_STATUSES, RemoteClient, RemoteError, StreamEvent
from schemas.pipeline import STEPS
from schemas.settings import ConfigError, Settings, get_settings

LEVEL_STYLE = {"info": "cyan", "success": "green", "warning": "yellow", "error": "bold red"}

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class Api:
    """A reachable API: its URL and a signed client."""

    url: str
    client: RemoteClient
    http: httpx.AsyncClient

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """A signed GET; the JSON answer, or RemoteError with the API's message."""
        url = httpx.URL(self.url + path)
        response = await self.http.get(
            url, params=params, headers=self.client.signed_headers("GET", url, b"")
        )
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise RemoteError(f"{path}: {message}", status=response.status_code)
        return response.json()


def _secret(settings: Settings) -> str:
    if settings.myyc_hmac_secret is not None:
        return settings.myyc_hmac_secret.get_secret_value()
    if not settings.is_local:
        raise RemoteError(
            "MYYC_HMAC_SECRET is not set: with DATABASE_URL or SUPABASE_URL the CLI signs its"
            " requests with the API's shared secret; set it to the same value as the API's"
        )
    from local.secret import local_secret

    return local_secret(settings.myyc_data_dir)


async def _reachable(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return (await http.get(url + "/health")).status_code == 200
    except httpx.HTTPError:
        return False


async def _ready(url: str) -> None:
    """A running API that cannot reach its database is an error, not a place to send work."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            answer = await http.get(url + "/ready")
    except httpx.HTTPError as err:
        raise RemoteError(f"the API at {url} answers but is not ready: {err}") from err
    if answer.status_code != 200:
        raise RemoteError(
            f"the API at {url} is up but not ready (HTTP {answer.status_code}): its database"
            " is unavailable; it recovers by itself when the database is back"
        )


@contextlib.asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Api]:
    """The running API at MYYC_HOST:MYYC_PORT, or one started in this process."""
    url = f"http://{settings.myyc_host}:{settings.myyc_port}"
    async with contextlib.AsyncExitStack() as stack:
        if await _reachable(url):
            secret = _secret(settings)
            await _ready(url)
        else:
            # Nothing serves a preview once this command exits: in-process builds make none.
            changes: dict[str, Any] = {"myyc_build_previews": False}
            if settings.myyc_hmac_secret is None and not settings.is_local:
                # This process is both ends: a secret of its own signs and checks.
                changes["myyc_hmac_secret"] = SecretStr(secrets.token_urlsafe(32))
            settings = settings.model_copy(update=changes)
            secret = _secret(settings)
            url = await stack.enter_async_context(_in_process(settings, port=0))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30.0))
        client = await stack.enter_async_context(RemoteClient(url, secret, http_client=http))
        yield Api(url, client, http)


@contextlib.asynccontextmanager
async def _in_process(settings: Settings, *, port: int) -> AsyncIterator[str]:
    from api.app import create_app
    from core.services import Services
    from local.server import serve

    services = await Services.open(settings, recover=True)
    try:
        async with serve(create_app(services), settings.myyc_host, port) as url:
            services.api_url = url
            yield url
    finally:
        await services.close()


# commands -----------------------------------------------------------------------------------


async def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Run the API until interrupted."""
    port = args.port if args.port is not None else settings.myyc_port
    async with _in_process(settings, port=port) as url:
        console.print(f"[bold]myyc[/] is up at [link={url}]{url}[/]")
        console.print(f"  API docs   {url}/docs")
        console.print(f"  OpenAPI    {url}/openapi.json")
        console.print(f"  data       {settings.myyc_data_dir.resolve()}")
        console.print('  try        myyc spawn "AI Recipe App" --description "Save recipes"')
        # SIGTERM (a service manager, `kill`) stops as cleanly as Ctrl-C: agents are given
        # their grace period, the log is flushed, the embedded Postgres is stopped.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        console.print("[bold]myyc[/] is stopping")
    return 0


class Terminal:
    """The live terminal: one coloured line per event and a progress bar for the project."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress = progress
        self.task = task
        self.runs: dict[str, float] = {}

    def show(self, event: StreamEvent) -> None:
        """Print one event and move the bar."""
        e = event.data
        if e.get("type") not in ("presence", "run_progress"):  # the bar shows those
            self.progress.console.print(event_line(e))
        data = e.get("data") or {}
        run = data.get("run_id")
        if e.get("type") == "run_progress" and run:
            self.runs[run] = float(data.get("progress", 0))
        elif e.get("type") == "run_status" and run:
            self.runs.setdefault(run, 0.0)
            if data.get("to") == "completed":
                self.runs[run] = 100.0
        if e.get("type") == "project_status":
            self.progress.update(self.task, completed=float(data.get("progress", 0)))
        elif self.runs:
            self.progress.update(self.task, completed=sum(self.runs.values()) / len(self.runs))


async def cmd_spawn(settings: Settings, args: argparse.Namespace) -> int:
    """Spawn a project and show it live until it ends."""
    async with connect(settings) as api:
        spawned = await api.client.spawn(args.title, args.description or "", args.category or "")
        if args.json:
            events: list[StreamEvent] = []
            final = await api.client.follow(spawned.project_id, events.append)
        else:
            console.print(f"[bold]spawned[/] project {spawned.project_id}")
            with Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                console=console, transient=True,
            ) as progress:  # fmt: skip
                terminal = Terminal(progress, progress.add_task(args.title, total=100))
                final = await api.client.follow(spawned.project_id, terminal.show)
        status = await api.get(f"/status/{spawned.project_id}")
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        style = "green" if final == "completed" else "bold red"
        console.print(f"[{style}]{final}[/] project {status['project_id']} ({status['progress']}%)")
        if status.get("github_url"):
            console.print(f"  repository {escape(status['github_url'])}", soft_wrap=True)
        if status.get("error"):
            err_console.print(f"[bold red]error:[/] {status['error']}")
    return 0 if final == "completed" else 1


async def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    """Print a project's log (and follow it)."""
    async with connect(settings) as api:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if after:
                params["after"] = after
            if args.agent:
                params["agent"] = args.agent
            page = await api.get(f"/projects/{args.project}/logs", params)
            for event in page["events"]:
                _print_event(event)
            after = page["cursor"]
            if len(page["events"]) < 1000:
                break
        if args.follow:
            status = await api.get(f"/status/{args.project}")
            if status["status"] in TERMINAL_STATUSES:
                return 0  # nothing more will come
            async for event in api.client.stream(args.project, last_event_id=after or None):
                if args.agent is None or event.data.get("agent_name") == args.agent:
                    _print_event(event.data)
                if event.final_status is not None:
                    break
    return 0


def event_line(e: dict[str, Any]) -> str:
    """One event as a rich line: time, level in its colour, agent, message (escaped)."""
    level = str(e.get("level", "info"))
    style = LEVEL_STYLE.get(level, "white")
    stamp = str(e.get("timestamp", ""))[11:19]
    agent = escape(str(e.get("agent_name", "-")))
    return f"[dim]{stamp}[/] [{style}]{level.upper():7}[/] [magenta]{agent:12}[/] " + escape(
        str(e.get("message", ""))
    )


def _print_event(e: dict[str, Any]) -> None:
    console.print(event_line(e))


async def cmd_projects(settings: Settings, args: argparse.Namespace) -> int:
    """The portfolio as a table."""
    async with connect(settings) as api:
        rows = await api.get("/projects", {"limit": args.limit})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table("title", "status", "progress", "repository", "created")
    # The id whole and on its own column: it is what other commands take, so it must copy.
    table.add_column("project", no_wrap=True, min_width=36)
    for p in rows:
        style = {"completed": "green", "failed": "red"}.get(p["status"], "yellow")
        status = f"[{style}]{p['status']}[/]"
        repo = p.get("github_url") or ""
        table.add_row(escape(p["title"]), status, f"{p['progress']}%", repo,
                      p["created_at"][:19], p["project_id"])  # fmt: skip
    console.print(table)
    return 0


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the migrations to the configured (or embedded) database."""
    from store.migrate import migrate

    if settings.database_url is None and settings.supabase_url is not None:
        err_console.print(
            "[bold red]error:[/] myyc migrate needs DATABASE_URL: SUPABASE_URL alone gives no"
            " direct connection to the database (set DATABASE_URL to its Postgres connection"
            " string, or run `supabase db push`)"
        )
        return 2
    if settings.database_url is not None:
        applied = await migrate(settings.database_url)
    else:
        from local.pg import EmbeddedPostgres

        pg = EmbeddedPostgres(settings.myyc_data_dir)
        try:
            applied = await migrate(await asyncio.to_thread(pg.start))
        finally:
            await asyncio.to_thread(pg.close)
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none needed'}")
    return 0


class BuildView:
    """The live view of a build: the graph's steps with ticks, the files as codegen writes them,
    and the log lines that matter (progress and presence chatter left out)."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress = progress
        self.task = task
        self.step: str | None = None
        self.done: list[str] = []
        self.names = [name for name, _ in STEPS]

    def _tick(self, mark: str = "[green]✓[/]") -> None:
        if self.step is not None and self.step not in self.done:
            self.done.append(self.step)
            self.progress.console.print(f"{mark} [bold]{self.step}[/]")

    def show(self, event: StreamEvent) -> None:
        """Draw one event."""
        e = event.data
        kind = e.get("type")
        data = e.get("data") or {}
        if kind == "presence":
            step = str(data.get("step", ""))
            if step != self.step and step in self.names:
                self._tick()
                self.step = step
                self.progress.console.print(f"[cyan]◐[/] {escape(step)} …")
            self.progress.update(self.task, completed=100 * float(data.get("progress", 0)))
        elif kind == "file:update":
            size = len(str(data.get("content", "")).encode())
            path = escape(str(data.get("filePath", "")))
            self.progress.console.print(f"    [magenta]✎[/] {path} [dim]({size:,} bytes)[/]")
        elif kind in ("run_progress", "run_status"):
            return
        elif kind == "build_succeeded":
            self._tick()
            self.progress.update(self.task, completed=100)
            self.progress.console.print(event_line(e))
        elif kind == "build_failed":
            self._tick("[red]✗[/]")
            self.progress.console.print(event_line(e))
        else:
            self.progress.console.print(event_line(e))


async def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    """Create a seed 004 build session and follow it live until it ends."""
    options: dict[str, Any] = {"preview": not args.no_preview}
    if args.provider:
        options["model"] = {
            "provider": args.provider,
            **({"model": args.model} if args.model else {}),
        }
    async with connect(settings) as api:
        created = await api.client.request(
            "POST", "/sessions",
            json_body={"vibeText": args.vibe, "template": args.template, "options": options},
        )  # fmt: skip
        sid, pid = created["sessionId"], created["projectId"]
        if args.json:
            final = await api.client.follow(pid, lambda _e: None)
        else:
            console.print(f"[bold]build[/] {sid} (project {pid})")
            with Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                console=console, transient=True,
            ) as progress:  # fmt: skip
                view = BuildView(progress, progress.add_task(args.template, total=100))
                final = await api.client.follow(pid, view.show)
        session = await api.get(f"/sessions/{sid}")
    if args.json:
        print(json.dumps(session, indent=2))
    else:
        style = "green" if session["status"] == "succeeded" else "bold red"
        console.print(f"[{style}]{session['status']}[/] build {sid}")
        for key in ("github_url", "preview_url"):
            value = (session.get("outputs") or {}).get(key)
            if value:
                console.print(f"  {key.split('_')[0]:10} {escape(value)}", soft_wrap=True)
        if session.get("error"):
            err_console.print(f"[bold red]error:[/] {escape(session['error'])}")
    return 0 if final == "completed" and session["status"] == "succeeded" else 1


async def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    """Hand a live build to an orchestrator now (it continues from its checkpoint)."""
    async with connect(settings) as api:
        answer = await api.client.request("POST", f"/builds/{args.build}/resume")
    console.print(f"build {answer['sessionId']} {answer['status']}: resuming")
    return 0


async def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    """Cancel a live build."""
    async with connect(settings) as api:
        answer = await api.client.request("POST", f"/builds/{args.build}/cancel")
    console.print(f"build {answer['sessionId']} {answer['status']}")
    return 0


async def cmd_approve(settings: Settings, args: argparse.Namespace) -> int:
    """Decide an escalated build: approve (default), reject or retry."""
    decision = "reject" if args.reject else "retry" if args.retry else "approve"
    body: dict[str, Any] = {"decision": decision}
    if args.note:
        body["note"] = args.note
    async with connect(settings) as api:
        answer = await api.client.request("POST", f"/approvals/{args.token}", json_body=body)
    console.print(f"{answer['status']}: build {answer['sessionId']} resumes with it")
    return 0


COMMANDS = {
    "up": cmd_up, "spawn": cmd_spawn, "logs": cmd_logs, "projects": cmd_projects,
    "migrate": cmd_migrate, "build": cmd_build, "resume": cmd_resume, "cancel": cmd_cancel,
    "approve": cmd_approve,
}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The argument parser (previews add their commands when installed)."""
    p = argparse.ArgumentParser(prog="myyc", description="Run and drive myyc locally.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="embedded Postgres + the API on loopback")
    up.add_argument("--port", type=int, default=None, help="port (default MYYC_PORT or 8765)")
    spawn = sub.add_parser("spawn", help="spawn a project and watch it live")
    spawn.add_argument("title")
    spawn.add_argument("--description", default="")
    spawn.add_argument("--category", default="")
    spawn.add_argument("--json", action="store_true", help="print the final status as JSON")
    logs = sub.add_parser("logs", help="a project's log")
    logs.add_argument("project")
    logs.add_argument("--follow", action="store_true")
    logs.add_argument("--agent", default=None)
    projects = sub.add_parser("projects", help="the portfolio")
    projects.add_argument("--limit", type=int, default=50)
    projects.add_argument("--json", action="store_true")
    sub.add_parser("migrate", help="apply the database migrations")
    build = sub.add_parser("build", help="build an app from a vibe (seed 004) and watch it live")
    build.add_argument("vibe", help="the idea, in your words")
    build.add_argument("--template", choices=("marketplace", "saas"), default="saas")
    build.add_argument("--provider", choices=("offline", "openai", "anthropic", "xai"),
                       default=None, help="the model provider for this build")  # fmt: skip
    build.add_argument("--model", default=None, help="the model name for this build")
    build.add_argument("--no-preview", action="store_true", help="no live preview")
    build.add_argument("--json", action="store_true", help="print GET /sessions/{id} as JSON")
    resume = sub.add_parser("resume", help="resume a build from its last checkpoint now")
    resume.add_argument("build")
    cancel = sub.add_parser("cancel", help="cancel a live build")
    cancel.add_argument("build")
    approve = sub.add_parser("approve", help="decide an escalated build (default: approve)")
    approve.add_argument("token")
    what = approve.add_mutually_exclusive_group()
    what.add_argument("--reject", action="store_true", help="fail the build")
    what.add_argument("--retry", action="store_true", help="send it back to codegen")
    approve.add_argument("--note", default=None, help="why")
    try:
        from previews.cli import register
    except ImportError:
        pass
    else:
        register(sub)
    return p


def _no_traceback(record: logging.LogRecord) -> bool:
    record.exc_info = None
    record.exc_text = None
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `myyc` command."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    if not args.verbose:
        # A failed agent is in the live log with its reason; its traceback is for -v.
        for log_handler in logging.getLogger().handlers:
            log_handler.addFilter(_no_traceback)
    handler = COMMANDS.get(args.command)
    try:
        settings = get_settings()
    except ConfigError as err:
        err_console.print("[bold red]configuration error:[/]")
        for problem in err.problems:
            err_console.print(f"  {escape(problem)}", soft_wrap=True)
        return 2
    redact.install(settings)
    try:
        if handler is None:  # commands registered by other packages (previews) run themselves
            return int(args.func(args))
        return int(asyncio.run(handler(settings, args)))
    except RemoteError as err:
        err_console.print(f"[bold red]error:[/] {err.message}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
