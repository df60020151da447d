"""The preview container's entrypoint: sync the project, serve it, follow edits, reload.

One file with no myyc imports, so the Dockerfile copies it alone; the local machines driver
runs the very same file as a subprocess on loopback.

1. **Sync.** Fetch every file of the project and write it under the project directory,
   together with the event-log position the snapshot corresponds to. Two sources:
   - `api` (local mode, and any deployment that can reach the myyc API):
     `GET {MYYC_API_URL}/projects/{id}/files`;
   - `supabase` (production): PostgREST `project_files` with an owner-scoped token (RLS).
2. **Serve.** Vite when the project's package.json uses it (`npm install` first, then Vite on
   the port, its own HMR reloading the page); otherwise a built-in static server that injects
   a tiny script into HTML pages: it listens on `/__myyc/livereload` (Server-Sent Events) and
   reloads the page on every change. `/__myyc/health` answers once files are in place.
3. **Follow.** Apply `file:update` events (payload `{filePath, content}`, seed 003):
   - `api`: the spine's SSE stream `GET /projects/{id}/stream`, from the snapshot's cursor,
     reconnecting with `Last-Event-ID` so nothing between snapshot and stream is lost;
   - `supabase`: Realtime broadcast on channel `project:<id>`, event `file:update`.
   Each file is written atomically (temporary file + rename, so the dev server never reads
   half a file). A `filePath` that is absolute, has `..` or a backslash, or resolves outside
   the project directory (through a symlink) is rejected and logged; nothing is written.

On Fly every machine of the app shares `https://<app>.fly.dev`. A request that names a
machine — query `_myyc_instance=<id>` (what the session's URL carries) or the cookie it sets —
but reached another one is answered with `fly-replay: instance=<id>`, so Fly's proxy replays
it to the right machine (API clients can send `fly-force-instance-id` instead).

Environment: MYYC_PROJECT_ID (required), MYYC_SESSION_ID, MYYC_PROJECT_DIR (/app/project),
HOST (0.0.0.0), PORT (8080), MYYC_SOURCE (`api` | `supabase`; default: `supabase` when
SUPABASE_URL is set), MYYC_API_URL, MYYC_PREVIEW_TOKEN, SUPABASE_URL, SUPABASE_ANON_KEY,
MYYC_DEV_SERVER (`auto` | `static` | `vite`), FLY_MACHINE_ID (set by Fly).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import mimetypes
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote

import httpx

logger = logging.getLogger("myyc.preview")

HEALTH_PATH = "/__myyc/health"
RELOAD_PATH = "/__myyc/livereload"
INSTANCE_QUERY = "_myyc_instance"
INSTANCE_COOKIE = "myyc_instance"
FILE_UPDATE = "file:update"
MAX_PATH = 1024
#: Exit code when the project cannot be synced at all (unknown project, bad credentials).
EXIT_UNSYNCABLE = 3

LIVE_RELOAD_SNIPPET = (
    "<script>(()=>{const s=new EventSource(" + json.dumps(RELOAD_PATH) + ");"
    's.addEventListener("reload",()=>location.reload());})();</script>'
)
_BODY_CLOSE = re.compile(rb"</body\s*>", re.IGNORECASE)


# ------------------------------------------------------------------------------ paths


class UnsafePath(ValueError):
    """A file path that would land outside the project directory (or is not a path)."""


def safe_relative_path(file_path: object) -> str:
    """Normalise a `filePath` to `a/b/c`, or raise UnsafePath.

    Leading `./` and repeated slashes are tolerated; absolute paths, `..` segments,
    backslashes, NUL bytes, empty and over-long paths are not.
    """
    if not isinstance(file_path, str):
        raise UnsafePath("filePath must be a string")
    if not file_path or len(file_path) > MAX_PATH:
        raise UnsafePath(f"filePath must be 1..{MAX_PATH} characters")
    if "\x00" in file_path or "\\" in file_path:
        raise UnsafePath("filePath must not contain NUL or backslashes")
    if file_path.startswith("/") or re.match(r"^[A-Za-z]:", file_path):
        raise UnsafePath("filePath must be relative to the project")
    parts = [p for p in file_path.split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafePath("filePath names no file")
    if ".." in parts:
        raise UnsafePath("filePath must not contain '..'")
    return "/".join(parts)


def resolve_inside(root: Path, file_path: object) -> Path:
    """The absolute target of `file_path` under `root`; UnsafePath if it would escape.

    Symlinks already on disk are resolved, so a link pointing out of the project cannot be
    used as a ladder.
    """
    relative = safe_relative_path(file_path)
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(real_root / relative))
    if target != real_root and real_root not in target.parents:
        raise UnsafePath("filePath resolves outside the project")
    if target == real_root:
        raise UnsafePath("filePath names the project directory itself")
    return target


def write_atomic(target: Path, content: str) -> None:
    """Write `content` to `target` via a temporary file in the same directory and a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        # No fsync: a crash loses only a preview copy that the next boot syncs again, and
        # fsync would add milliseconds to every hot reload.
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(content)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ProjectDir:
    """The project's files on disk; the one place that writes them."""

    def __init__(self, root: Path) -> None:
        """Manage files under `root` (created if missing)."""
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.applied = 0
        self.rejected = 0

    def apply(self, file_path: object, content: object) -> str | None:
        """Write one file; return its normalised path, or None when rejected (and logged)."""
        try:
            target = resolve_inside(self.root, file_path)
            if not isinstance(content, str):
                raise UnsafePath("content must be a string")
        except UnsafePath as err:
            self.rejected += 1
            logger.warning("rejected file update %r: %s", str(file_path)[:200], err)
            return None
        write_atomic(target, content)
        self.applied += 1
        return target.relative_to(Path(os.path.realpath(self.root))).as_posix()


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class Config:
    """The entrypoint's settings, from the environment."""

    project_id: str
    session_id: str
    project_dir: Path
    host: str
    port: int
    source: str
    api_url: str | None
    token: str | None
    hmac_secret: str | None
    supabase_url: str | None
    anon_key: str | None
    dev_server: str
    machine_id: str | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        """Read the environment; ValueError naming what is missing."""
        e = dict(os.environ if env is None else env)
        project_id = e.get("MYYC_PROJECT_ID", "").strip()
        if not project_id:
            raise ValueError("MYYC_PROJECT_ID is required")
        supabase_url = e.get("SUPABASE_URL") or None
        source = e.get("MYYC_SOURCE") or ("supabase" if supabase_url else "api")
        if source not in ("api", "supabase"):
            raise ValueError("MYYC_SOURCE must be 'api' or 'supabase'")
        if source == "api" and not e.get("MYYC_API_URL"):
            raise ValueError("MYYC_API_URL is required with MYYC_SOURCE=api")
        if source == "supabase" and not (supabase_url and e.get("SUPABASE_ANON_KEY")):
            raise ValueError("SUPABASE_URL and SUPABASE_ANON_KEY are required for supabase")
        dev_server = e.get("MYYC_DEV_SERVER", "auto")
        if dev_server not in ("auto", "static", "vite"):
            raise ValueError("MYYC_DEV_SERVER must be auto, static or vite")
        return cls(
            project_id=project_id,
            session_id=e.get("MYYC_SESSION_ID", ""),
            project_dir=Path(e.get("MYYC_PROJECT_DIR", "/app/project")),
            host=e.get("HOST", "0.0.0.0"),
            port=int(e.get("PORT", "8080")),
            source=source,
            api_url=(e.get("MYYC_API_URL") or "").rstrip("/") or None,
            token=e.get("MYYC_PREVIEW_TOKEN") or None,
            hmac_secret=e.get("MYYC_HMAC_SECRET") or None,
            supabase_url=(supabase_url or "").rstrip("/") or None,
            anon_key=e.get("SUPABASE_ANON_KEY") or None,
            dev_server=dev_server,
            machine_id=e.get("FLY_MACHINE_ID") or None,
        )


# ------------------------------------------------------------------------------ sources


class Unsyncable(Exception):
    """The source refuses for good (unknown project, bad credentials): retrying is futile."""


@dataclass(frozen=True)
class Snapshot:
    """Every file of the project, and the log position they correspond to."""

    files: list[tuple[str, str]]
    cursor: str | None


class Source(Protocol):
    """Where files and their updates come from."""

    async def snapshot(self) -> Snapshot:
        """All files now (Unsyncable, or any other error to retry)."""
        ...

    def follow(self, cursor: str | None) -> AsyncIterator[tuple[str, str]]:
        """`(filePath, content)` of every update after `cursor`, forever."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _backoff(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    ceiling = min(cap, base * 2.0 ** min(attempt, 16))
    return ceiling / 2 + random.random() * ceiling / 2


class HmacAuth(httpx.Auth):
    """Signs each request as myyc's servers do (api/auth.py): timestamp, nonce, HMAC-SHA256.

    Only a local preview — a process of ours on loopback — is given the shared secret; a
    container on Fly gets the owner-scoped token instead.
    """

    requires_request_body = True

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def auth_flow(self, request: httpx.Request) -> Any:
        """Add X-Myyc-Timestamp, X-Myyc-Nonce and X-Myyc-Signature."""
        ts = str(int(time.time()))
        nonce = os.urandom(12).hex()
        message = f"{ts}.{nonce}.{request.method}.{request.url.path}.".encode() + request.content
        digest = hmac.new(self._secret, message, hashlib.sha256).hexdigest()
        request.headers["X-Myyc-Timestamp"] = ts
        request.headers["X-Myyc-Nonce"] = nonce
        request.headers["X-Myyc-Signature"] = "v1=" + digest
        yield request


class ApiSource:
    """The myyc API: files from `/projects/{id}/files`, updates from the SSE stream."""

    def __init__(self, config: Config, http: httpx.AsyncClient | None = None) -> None:
        """Talk to `config.api_url`, signed (local) or with the preview token as bearer."""
        assert config.api_url is not None
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        auth = HmacAuth(config.hmac_secret) if config.hmac_secret else None
        self._http = http or httpx.AsyncClient(
            base_url=config.api_url,
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(10.0, read=60.0),
        )
        self._project = config.project_id

    async def snapshot(self) -> Snapshot:
        """`GET /projects/{id}/files`."""
        response = await self._http.get(f"/projects/{self._project}/files")
        if response.status_code in (401, 403, 404, 422):
            raise Unsyncable(f"HTTP {response.status_code}: {response.text[:300]}")
        response.raise_for_status()
        body = response.json()
        files = [(str(f["path"]), str(f["content"])) for f in body.get("files", [])]
        return Snapshot(files, body.get("cursor") or None)

    async def follow(self, cursor: str | None) -> AsyncIterator[tuple[str, str]]:
        """Follow the SSE stream from `cursor`, reconnecting (and resuming) on any failure."""
        last_id = cursor
        attempt = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                async with self._http.stream(
                    "GET", f"/projects/{self._project}/stream", headers=headers
                ) as response:
                    if response.status_code in (401, 403, 404):
                        raise Unsyncable(f"stream refused: HTTP {response.status_code}")
                    response.raise_for_status()
                    attempt = 0
                    frame_id: str | None = None
                    data: list[str] = []
                    async for line in response.aiter_lines():
                        if line.startswith("id:"):
                            frame_id = line[3:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        elif line == "":
                            if data:
                                update = _file_update_from_event("\n".join(data))
                                if frame_id:
                                    last_id = frame_id
                                if update is not None:
                                    yield update
                            frame_id, data = None, []
            except Unsyncable:
                raise
            except (httpx.HTTPError, ValueError) as err:
                attempt += 1
                delay = _backoff(attempt)
                logger.warning("update stream failed (%s); reconnecting in %.2fs", err, delay)
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()


def _file_update_from_event(raw: str) -> tuple[str, str] | None:
    """`(filePath, content)` from one stream event's JSON, when it is a file update."""
    try:
        event = json.loads(raw)
    except ValueError:
        logger.warning("ignored a stream frame that is not JSON")
        return None
    if not isinstance(event, dict) or event.get("type") != FILE_UPDATE:
        return None
    return _payload_pair(event.get("data"))


def _payload_pair(payload: Any) -> tuple[str, str] | None:
    if not isinstance(payload, dict):
        logger.warning("ignored a file:update without a payload object")
        return None
    path, content = payload.get("filePath"), payload.get("content")
    if not isinstance(path, str) or not isinstance(content, str):
        logger.warning("ignored a file:update without string filePath and content")
        return None
    return path, content


class SupabaseSource:
    """Supabase: files through PostgREST (RLS), updates through Realtime broadcast."""

    PAGE = 500

    def __init__(self, config: Config, http: httpx.AsyncClient | None = None) -> None:
        """Use `config.supabase_url` with the anon key and the owner-scoped preview token."""
        assert config.supabase_url is not None
        assert config.anon_key is not None
        self._config = config
        bearer = config.token or config.anon_key
        self._http = http or httpx.AsyncClient(
            base_url=config.supabase_url,
            headers={"apikey": config.anon_key, "Authorization": f"Bearer {bearer}"},
            timeout=httpx.Timeout(10.0, read=30.0),
        )

    async def snapshot(self) -> Snapshot:
        """Page through `project_files` of the project (Range headers, as PostgREST wants)."""
        files: list[tuple[str, str]] = []
        offset = 0
        while True:
            response = await self._http.get(
                "/rest/v1/project_files",
                params={
                    "project_id": f"eq.{self._config.project_id}",
                    "select": "path,content",
                    "order": "path",
                },
                headers={"Range-Unit": "items", "Range": f"{offset}-{offset + self.PAGE - 1}"},
            )
            if response.status_code in (401, 403, 404):
                raise Unsyncable(f"HTTP {response.status_code}: {response.text[:300]}")
            response.raise_for_status()
            page = response.json()
            files.extend((str(r["path"]), str(r["content"])) for r in page)
            if len(page) < self.PAGE:
                # Broadcast is not replayable from a position: no cursor to hand on.
                return Snapshot(files, None)
            offset += self.PAGE

    async def follow(self, cursor: str | None) -> AsyncIterator[tuple[str, str]]:
        """Join `project:<id>` and yield every `file:update` broadcast."""
        from realtime import AsyncRealtimeClient

        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        def on_update(message: Any) -> None:
            pair = _payload_pair(message.get("payload") if isinstance(message, dict) else None)
            if pair is not None:
                queue.put_nowait(pair)

        assert self._config.supabase_url is not None
        client = AsyncRealtimeClient(
            f"{self._config.supabase_url}/realtime/v1", token=self._config.anon_key
        )
        await client.connect()
        if self._config.token:
            await client.set_auth(self._config.token)
        channel = client.channel(f"project:{self._config.project_id}")
        channel.on_broadcast(FILE_UPDATE, on_update)
        await channel.subscribe()
        try:
            while True:
                yield await queue.get()
        finally:
            await client.close()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()


def make_source(config: Config) -> Source:
    """The source `config` selects."""
    if config.source == "supabase":
        return SupabaseSource(config)
    return ApiSource(config)


# ------------------------------------------------------------------------------ static server


def uses_vite(root: Path) -> bool:
    """Whether the project's package.json depends on Vite or runs it."""
    manifest = root / "package.json"
    if not manifest.is_file():
        return False
    try:
        pkg = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False
    if not isinstance(pkg, dict):
        return False
    for section in ("dependencies", "devDependencies"):
        deps = pkg.get(section)
        if isinstance(deps, dict) and "vite" in deps:
            return True
    scripts = pkg.get("scripts")
    return isinstance(scripts, dict) and any("vite" in str(v) for v in scripts.values())


def inject_live_reload(html: bytes) -> bytes:
    """The page with the live-reload script before `</body>` (or at the end)."""
    snippet = LIVE_RELOAD_SNIPPET.encode()
    matches = list(_BODY_CLOSE.finditer(html))
    if not matches:
        return html + snippet
    at = matches[-1].start()
    return html[:at] + snippet + html[at:]


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    keep_alive: bool


class StaticServer:
    """A small HTTP/1.1 server for the project directory, with live reload over SSE."""

    def __init__(self, project: ProjectDir, host: str, port: int, machine_id: str | None) -> None:
        """Serve `project` on `host:port` once `start()` is awaited."""
        self._project = project
        self._host = host
        self._port = port
        self._machine_id = machine_id
        self._listeners: set[asyncio.Queue[str]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and accept connections."""
        self._server = await asyncio.start_server(
            self._connection, self._host, self._port, limit=64 * 1024
        )

    async def close(self) -> None:
        """Stop accepting and end live-reload streams."""
        for queue in list(self._listeners):
            queue.put_nowait("")
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def changed(self, path: str) -> None:
        """Tell every open page that `path` changed (they reload)."""
        for queue in self._listeners:
            queue.put_nowait(path)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                if request.path == RELOAD_PATH and request.method == "GET":
                    await self._live_reload(writer)
                    return
                await self._respond(request, writer)
                if not request.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
        line = await reader.readline()
        if not line:
            return None
        try:
            method, target, version = line.decode("latin-1").split()
        except ValueError:
            return None
        headers: dict[str, str] = {}
        for _ in range(100):
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length:
            await reader.readexactly(min(length, 1 << 20))
        path, _, query = target.partition("?")
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return _Request(method.upper(), unquote(path), parse_qs(query), headers, keep_alive)

    async def _respond(self, request: _Request, writer: asyncio.StreamWriter) -> None:
        extra: dict[str, str] = {}
        replay = self._replay(request, extra)
        if replay is not None:
            await _send(writer, 200, b"", {"fly-replay": f"instance={replay}", **extra}, request)
            return
        if request.method not in ("GET", "HEAD"):
            await _send(writer, 405, b"method not allowed\n", {"Allow": "GET, HEAD"}, request)
            return
        if request.path == HEALTH_PATH:
            body = json.dumps({"status": "ok", "files": self._project.applied}).encode()
            await _send(writer, 200, body, {"Content-Type": "application/json"}, request)
            return
        target = self._locate(request.path)
        if target is None:
            await _send(writer, 404, b"not found\n", {"Content-Type": "text/plain"}, request)
            return
        try:
            body = target.read_bytes()
        except OSError:
            await _send(writer, 404, b"not found\n", {"Content-Type": "text/plain"}, request)
            return
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype == "text/html":
            body = inject_live_reload(body)
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        await _send(writer, 200, body, {"Content-Type": ctype, **extra}, request)

    def _replay(self, request: _Request, extra: dict[str, str]) -> str | None:
        """The machine to replay to, when the request names another one (Fly only)."""
        if self._machine_id is None:
            return None
        named = request.query.get(INSTANCE_QUERY)
        wanted = named[0] if named else None
        from_query = wanted is not None
        if wanted is None:
            wanted = _cookie(request.headers.get("cookie", ""), INSTANCE_COOKIE)
        if not wanted or wanted == self._machine_id:
            if from_query:
                # Pin the page's later requests (assets, live reload) to this machine.
                extra["Set-Cookie"] = (
                    f"{INSTANCE_COOKIE}={quote(self._machine_id)}; Path=/; Secure;"
                    " HttpOnly; SameSite=None"
                )
            return None
        return wanted

    def _locate(self, url_path: str) -> Path | None:
        """The file a URL path names (index.html for directories, SPA fallback), or None."""
        root = self._project.root
        relative = url_path.strip("/")
        candidates: list[Path] = []
        if relative:
            try:
                target = resolve_inside(root, relative)
            except UnsafePath:
                return None
            candidates += [target, target / "index.html"]
        else:
            candidates.append(root / "index.html")
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        # A client-side route (no extension) gets the app shell.
        if "." not in relative.rsplit("/", 1)[-1] and (root / "index.html").is_file():
            return root / "index.html"
        return None

    async def _live_reload(self, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-store\r\nConnection: close\r\n\r\nretry: 500\n\n"
            )
            await writer.drain()
            while True:
                try:
                    path = await asyncio.wait_for(queue.get(), 15.0)
                except TimeoutError:
                    writer.write(b": keepalive\n\n")
                    await writer.drain()
                    continue
                if path == "":
                    return
                writer.write(f"event: reload\ndata: {json.dumps(path)}\n\n".encode())
                await writer.drain()
        finally:
            self._listeners.discard(queue)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return unquote(value)
    return None


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    headers: dict[str, str],
    request: _Request,
) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}"]
    all_headers = {
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        "Connection": "keep-alive" if request.keep_alive else "close",
        **headers,
    }
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if request.method != "HEAD":
        writer.write(body)
    await writer.drain()


# ------------------------------------------------------------------------------ vite


async def start_vite(project: ProjectDir, host: str, port: int) -> asyncio.subprocess.Process:
    """`npm install` (when node_modules is missing), then Vite on `host:port`."""
    root = project.root
    if not (root / "node_modules").is_dir():
        logger.info("installing the project's npm dependencies")
        install = await asyncio.create_subprocess_exec(
            "npm", "install", "--no-audit", "--no-fund", cwd=root
        )
        if await install.wait() != 0:
            raise RuntimeError("npm install failed")
    vite = root / "node_modules" / ".bin" / "vite"
    command = [str(vite)] if vite.exists() else ["npx", "--yes", "vite"]
    return await asyncio.create_subprocess_exec(
        *command, "--host", host, "--port", str(port), "--strictPort", cwd=root
    )


# ------------------------------------------------------------------------------ main


async def sync(source: Source, project: ProjectDir, *, attempts: int | None = None) -> str | None:
    """Fetch and write every file, retrying transient failures; return the snapshot cursor."""
    attempt = 0
    while True:
        attempt += 1
        try:
            snapshot = await source.snapshot()
            break
        except Unsyncable:
            raise
        except (httpx.HTTPError, ValueError, KeyError) as err:
            if attempts is not None and attempt >= attempts:
                raise
            delay = _backoff(attempt)
            logger.warning("sync failed (%s); retrying in %.2fs", err, delay)
            await asyncio.sleep(delay)
    for path, content in snapshot.files:
        project.apply(path, content)
    logger.info("synced %d files into %s", project.applied, project.root)
    return snapshot.cursor


async def follow(
    source: Source, project: ProjectDir, cursor: str | None, on_change: Callable[[str], None]
) -> None:
    """Apply every update from the source, forever."""
    async for path, content in source.follow(cursor):
        written = project.apply(path, content)
        if written is not None:
            logger.info("updated %s", written)
            on_change(written)


def _vite_reloads_itself(path: str) -> None:
    """Vite's own watcher sees the rename and hot-reloads: nothing to tell it."""


async def run(config: Config) -> int:
    """Sync, serve and follow until SIGTERM/SIGINT; the process exit code."""
    project = ProjectDir(config.project_dir)
    source = make_source(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    vite: asyncio.subprocess.Process | None = None
    server: StaticServer | None = None
    follower: asyncio.Task[None] | None = None
    try:
        # A stop must win over a sync still retrying an API that is not there.
        syncing = asyncio.create_task(sync(source, project))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({syncing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not syncing.done():
            syncing.cancel()
            with contextlib.suppress(BaseException):
                await syncing
            logger.info("stopped before the first sync finished")
            return 0
        try:
            cursor = syncing.result()
        except Unsyncable as err:
            logger.error("cannot sync project %s: %s", config.project_id, err)
            return EXIT_UNSYNCABLE
        mode = config.dev_server
        if mode == "auto":
            mode = "vite" if uses_vite(project.root) else "static"
        on_change: Callable[[str], None] = _vite_reloads_itself
        if mode == "vite":
            vite = await start_vite(project, config.host, config.port)
        else:
            server = StaticServer(project, config.host, config.port, config.machine_id)
            await server.start()
            on_change = server.changed
        logger.info("serving %s on %s:%d (%s)", config.project_id, config.host, config.port, mode)
        follower = asyncio.create_task(follow(source, project, cursor, on_change))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({follower, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if follower.done() and not follower.cancelled() and follower.exception() is not None:
            logger.error("update stream ended: %s", follower.exception())
            return EXIT_UNSYNCABLE
        return 0
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower
        if server is not None:
            await server.close()
        if vite is not None and vite.returncode is None:
            vite.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(vite.wait(), 5)
        await source.aclose()


def main() -> int:
    """Configure logging, read the environment, run."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = Config.from_env()
    except ValueError as err:
        logger.error("bad configuration: %s", err)
        return 2
    started = time.monotonic()
    code = asyncio.run(run(config))
    logger.info("exiting with %d after %.1fs", code, time.monotonic() - started)
    return code


if __name__ == "__main__":
    sys.exit(main())
