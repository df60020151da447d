"""Test helpers: serve an ASGI app on a real loopback socket, and read SSE frames."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx

from local.server import serve

__all__ = ["Frame", "read_frames", "serve"]


@dataclass
class Frame:
    """One SSE event as a client sees it."""

    id: str | None
    data: dict[str, Any]


async def read_frames(
    client: httpx.AsyncClient,
    url: str,
    *,
    last_event_id: str | None = None,
    max_frames: int | None = None,
    idle_timeout: float = 10.0,
) -> tuple[list[Frame], str | None]:
    """Read SSE frames until `max_frames` or an idle gap; return them and the last id."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    frames: list[Frame] = []
    last_id = last_event_id
    async with client.stream("GET", url, headers=headers, timeout=None) as response:
        response.raise_for_status()
        lines = response.aiter_lines()
        current_id: str | None = None
        data: list[str] = []
        while max_frames is None or len(frames) < max_frames:
            try:
                line = await asyncio.wait_for(anext(lines), idle_timeout)
            except (TimeoutError, StopAsyncIteration):
                break
            if line == "":
                if data:
                    frames.append(Frame(current_id, json.loads("\n".join(data))))
                    if current_id is not None:
                        last_id = current_id
                current_id, data = None, []
            elif line.startswith("id:"):
                current_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
    return frames, last_id
