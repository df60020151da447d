"""A laptop talking to a deployed myyc: sign a spawn, then follow the project's live log.

`modal run modal_app.py --title "AI Recipe App"` lands here: `spawn_and_follow` POSTs /spawn
(HMAC-signed, with an Idempotency-Key so a retried request cannot create a second project) and
tails `GET /projects/{id}/stream` until the project's status event says it is over. A dropped
stream reconnects with `Last-Event-ID` and so misses nothing and repeats nothing.

Errors::

    RemoteError            the API answered with an error body, or could not be reached
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TextIO

import httpx

from api.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

logger = logging.getLogger(__name__)

API_URL_ENV = "MYYC_API_URL"
TERMINAL_STATUSES = frozenset({"completed", "failed", "canceled"})

# Longer than the server's 15 s keepalive: a silent connection is a dead one, so reconnect.
_STREAM_READ_TIMEOUT = 45.0
_SPAWN_ATTEMPTS = 3
_RETRY_STATUSES = frozenset({502, 503, 504})


class RemoteError(Exception):
    """The API refused a request (its error code and message), or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class Spawned:
    """The API's 202 answer to a spawn."""

    project_id: str
    """The new (or, for a repeated key, the earlier) project."""
    build_id: str | None
    """Its first build session."""


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One SSE frame of a project's log: its resume id and the event as JSON."""

    id: str | None
    data: dict[str, Any]

    @property
    def final_status(self) -> str | None:
        """The project's status if this event says it has ended, else None."""
        if self.data.get("type") != "project_status":
            return None
        detail = self.data.get("data") or {}
        status = detail.get("status") if isinstance(detail, dict) else None
        return status if status in TERMINAL_STATUSES else None


def _error_from(response: httpx.Response) -> RemoteError:
    try:
        detail = response.json()["error"]
        message, code = str(detail["message"]), str(detail["code"])
    except (ValueError, KeyError, TypeError):
        message, code = response.text[:500] or response.reason_phrase, None
    return RemoteError(
        f"{response.request.method} {response.request.url.path}: {response.status_code} {message}",
        status=response.status_code,
        code=code,
    )


class RemoteClient:
    """A signed client of one myyc API (`base_url`), sharing its secret with the server."""

    def __init__(
        self,
        base_url: str,
        hmac_secret: str | bytes,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        reconnect_delay: float = 1.0,
        max_reconnects: int = 20,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._secret = hmac_secret.encode() if isinstance(hmac_secret, str) else hmac_secret
        self._owns_client = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(30.0))
        self._clock = clock
        self._reconnect_delay = reconnect_delay
        self._max_reconnects = max_reconnects
        self._last_ts: dict[str, int] = {}

    async def __aenter__(self) -> RemoteClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owns_client:
            await self._http.aclose()

    def signed_headers(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        """The HMAC headers for one request (see api/auth.py)."""
        # The server rejects a signature it has seen in the last 5 minutes (a replay), and the
        # signature covers whole seconds: two identical requests in one second (a quick
        # reconnect) would collide. Step the timestamp on instead; the window allows it.
        key = hashlib.sha256(f"{method} {url.path} ".encode() + body).hexdigest()
        ts = max(int(self._clock()), self._last_ts.get(key, -1) + 1)
        self._last_ts[key] = ts
        return {
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self._secret, ts, method, url.path, body),
        }

    async def spawn(
        self,
        title: str,
        description: str = "",
        category: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> Spawned:
        """POST /spawn; retried on connection errors and 502/503/504 with the same key.

        An empty description or category is sent as null: the API's "not given".
        """
        key = idempotency_key or str(uuid.uuid4())
        body = json.dumps(
            {"title": title, "description": description or None, "category": category or None}
        ).encode()
        url = httpx.URL(self._base + "/spawn")
        last: Exception | None = None
        for attempt in range(_SPAWN_ATTEMPTS):
            if attempt:
                await asyncio.sleep(self._reconnect_delay * attempt)
            headers = {
                "content-type": "application/json",
                "idempotency-key": key,
                **self.signed_headers("POST", url, body),
            }
            try:
                response = await self._http.post(url, content=body, headers=headers)
            except httpx.TransportError as err:
                last = err
                logger.warning("spawn attempt %d failed: %s", attempt + 1, err)
                continue
            if response.status_code in _RETRY_STATUSES:
                last = _error_from(response)
                continue
            if response.status_code >= 400:
                raise _error_from(response)
            payload = response.json()
            return Spawned(str(payload["project_id"]), _opt_str(payload.get("build_id")))
        raise RemoteError(f"could not spawn at {self._base}: {last}") from last

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One signed call; its JSON answer, or RemoteError with the API's message."""
        url = httpx.URL(self._base + path)
        body = b"" if json_body is None else json.dumps(json_body).encode()
        sent = {**(headers or {}), **self.signed_headers(method, url, body)}
        if json_body is not None:
            sent["content-type"] = "application/json"
        try:
            response = await self._http.request(method, url, content=body or None,
                                                params=params, headers=sent)  # fmt: skip
        except httpx.TransportError as err:
            raise RemoteError(f"could not reach {self._base}: {err}") from err
        if response.status_code >= 400:
            raise _error_from(response)
        return response.json() if response.content else None

    async def stream(
        self, project_id: str, *, last_event_id: str | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """The project's events from the start (or after `last_event_id`), forever.

        A dropped or ended connection is reopened with Last-Event-ID; more than
        `max_reconnects` failures in a row, or any 4xx, raise RemoteError.
        """
        url = httpx.URL(f"{self._base}/projects/{project_id}/stream")
        failures = 0
        while True:
            headers = {"accept": "text/event-stream", **self.signed_headers("GET", url, b"")}
            if last_event_id is not None:
                headers["last-event-id"] = last_event_id
            try:
                async with self._http.stream(
                    "GET",
                    url,
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=_STREAM_READ_TIMEOUT),
                ) as response:
                    if 400 <= response.status_code < 500:
                        await response.aread()
                        raise _error_from(response)
                    if response.status_code >= 400:
                        await response.aread()
                        raise httpx.HTTPStatusError(
                            f"stream answered {response.status_code}",
                            request=response.request,
                            response=response,
                        )
                    async for event in _parse_sse(response.aiter_lines()):
                        failures = 0
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
            except (httpx.TransportError, httpx.HTTPStatusError) as err:
                failures += 1
                if failures > self._max_reconnects:
                    raise RemoteError(f"lost the stream of project {project_id}: {err}") from err
                logger.warning("stream of %s interrupted (%s); reconnecting", project_id, err)
            await asyncio.sleep(self._reconnect_delay)

    async def follow(self, project_id: str, on_event: Callable[[StreamEvent], None]) -> str:
        """Pass every event to `on_event` until the project ends; return its final status."""
        events = self.stream(project_id)
        try:
            async for event in events:
                on_event(event)
                final = event.final_status
                if final is not None:
                    return final
        finally:
            await events.aclose()
        raise RemoteError(f"the stream of project {project_id} ended early")  # pragma: no cover


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


async def _parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[StreamEvent]:
    """SSE frames to events; comments (keepalives) and `retry:` lines are skipped."""
    event_id: str | None = None
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    logger.warning("skipping a malformed SSE frame: %.200s", data)
                else:
                    if isinstance(payload, dict):
                        yield StreamEvent(event_id, payload)
            event_id, data = None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


def format_event(event: StreamEvent) -> str:
    """One event as a terminal line: time, level, agent, message."""
    data = event.data
    stamp = str(data.get("timestamp") or "")
    try:
        stamp = datetime.fromisoformat(stamp).strftime("%H:%M:%S")
    except ValueError:
        stamp = stamp[:8]
    level = str(data.get("level") or "info").upper()
    agent = str(data.get("agent_name") or "-")
    return f"{stamp:8} {level:7} {agent:12} {data.get('message', '')}"


async def spawn_and_follow(
    base_url: str,
    hmac_secret: str | bytes,
    *,
    title: str,
    description: str = "",
    category: str = "",
    out: TextIO,
    http_client: httpx.AsyncClient | None = None,
    reconnect_delay: float = 1.0,
) -> tuple[Spawned, str]:
    """Spawn a project, write its log to `out` line by line until it ends; return its status."""
    async with RemoteClient(
        base_url, hmac_secret, http_client=http_client, reconnect_delay=reconnect_delay
    ) as client:
        spawned = await client.spawn(title, description, category)
        out.write(f"project {spawned.project_id} (build {spawned.build_id}) spawned\n")
        out.flush()

        def show(event: StreamEvent) -> None:
            out.write(format_event(event) + "\n")
            out.flush()

        status = await client.follow(spawned.project_id, show)
        out.write(f"project {spawned.project_id} {status}\n")
        out.flush()
        return spawned, status


def resolve_api_url(
    env: Mapping[str, str] = os.environ, *, app_name: str = "myyc", function_name: str = "web"
) -> str:
    """The API's base URL: `MYYC_API_URL`, else the deployed web function's URL from Modal."""
    explicit = env.get(API_URL_ENV)
    if explicit:
        return explicit.rstrip("/")
    import modal  # only when asked: a second's import the rest of the CLI does without

    url: str | None = modal.Function.from_name(app_name, function_name).get_web_url()
    if not url:
        raise RemoteError(f"Modal function {app_name}/{function_name} has no web URL")
    return url.rstrip("/")
