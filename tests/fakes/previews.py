"""Fakes around preview containers.

* `FileSourceFake` — the two routes a preview container reads from the myyc API
  (`GET /projects/{id}/files` and the SSE `GET /projects/{id}/stream`), keeping files and
  events in memory; `push()` appends a `file:update` the open streams deliver. Serve it on
  loopback (`tests.support.serve`) for the local driver's real subprocesses.
* `ContainerFleetFake` — the preview containers behind `https://<app>.fly.dev` for a Fly run:
  it answers the health probe for the machine named by `fly-force-instance-id` when the
  `FlyFake` says that machine is `started` (503 otherwise, as Fly's proxy does), and can be
  told to keep a machine's dev server from ever answering.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tests.fakes.fly import FlyFake


class FileSourceFake:
    """An ASGI app with a project's files and a `file:update` stream (see module docstring)."""

    def __init__(self, files: dict[str, str] | None = None) -> None:
        self.files: dict[str, str] = dict(files or {})
        self.events: list[dict[str, Any]] = []
        self.known_projects: set[str] | None = None
        self._changed = asyncio.Condition()
        self._writer = uuid.uuid4()
        self.snapshots = 0

    def push(self, file_path: str, content: str, *, store: bool = True) -> None:
        """Append a file:update event (and store the file unless told otherwise)."""
        if store:
            self.files[file_path] = content
        seq = len(self.events) + 1
        self.events.append(
            {
                "type": "file:update",
                "seq": seq,
                "writer_id": str(self._writer),
                "data": {"filePath": file_path, "content": content},
            }
        )
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        request = Request(scope, receive)
        parts = request.url.path.strip("/").split("/")
        response: Response
        if len(parts) != 3 or parts[0] != "projects":
            response = JSONResponse({"error": "not found"}, status_code=404)
        elif self.known_projects is not None and parts[1] not in self.known_projects:
            response = JSONResponse({"error": "unknown project"}, status_code=404)
        elif parts[2] == "files":
            self.snapshots += 1
            response = JSONResponse(
                {
                    "files": [{"path": p, "content": c} for p, c in sorted(self.files.items())],
                    "cursor": str(len(self.events)),
                }
            )
        elif parts[2] == "stream":
            after = int(request.headers.get("last-event-id") or 0)
            response = StreamingResponse(self._frames(after), media_type="text/event-stream")
        else:
            response = JSONResponse({"error": "not found"}, status_code=404)
        await response(scope, receive, send)

    async def _frames(self, after: int) -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        sent = after
        while True:
            while sent < len(self.events):
                event = self.events[sent]
                sent += 1
                yield f"id: {sent}\ndata: {json.dumps(event)}\n\n"
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), 1.0)
                except TimeoutError:
                    yield ": keepalive\n\n"


class ContainerFleetFake:
    """The preview containers of one Fly app, as the health probe sees them."""

    def __init__(self, fly: FlyFake, app: str) -> None:
        self._fly = fly
        self._app = app
        self.silent: set[str] = set()
        """Machines whose dev server never answers (a boot that hangs)."""
        self.all_silent = False
        self.probes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: `/__myyc/health` for the forced instance."""
        if scope["type"] != "http":
            return
        self.probes += 1
        request = Request(scope, receive)
        machine_id = request.headers.get("fly-force-instance-id", "")
        state = None
        try:
            state = self._fly.machine(self._app, machine_id)["state"]
        except KeyError:
            state = None
        if state == "started" and machine_id not in self.silent and not self.all_silent:
            response: Response = JSONResponse({"status": "ok"})
        else:
            # Fly's proxy: the forced instance cannot take the request.
            response = JSONResponse({"error": "no instance available"}, status_code=503)
        await response(scope, receive, send)
