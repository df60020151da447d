"""Broadcast `file:update` to Supabase Realtime (production's path to preview containers).

Seed 003 §4.4: channel `project:<id>`, event `file:update`, payload `{filePath, content}`.
Sent through Realtime's REST broadcast endpoint (REFERENCE.md §3b): `POST
/realtime/v1/api/broadcast` with the bare topic, answered 202. Locally there is no Realtime:
containers follow the event log's SSE stream instead, so this is a no-op without Supabase.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import httpx

from clients.retry import DEFAULT_POLICY, backoff_delay, parse_retry_after, should_retry
from schemas.settings import Settings

logger = logging.getLogger(__name__)

FILE_UPDATE_EVENT = "file:update"


def channel(project_id: UUID) -> str:
    """The project's broadcast topic (bare: no `realtime:` prefix, as supabase-js sends it)."""
    return f"project:{project_id}"


async def broadcast_file_update(
    settings: Settings,
    project_id: UUID,
    file_path: str,
    content: str,
    *,
    http: httpx.AsyncClient | None = None,
) -> bool:
    """Send one `file:update`; True when Realtime accepted it, False when not configured.

    Retries 429/5xx/connection errors per `clients.retry`; a final failure is logged, not
    raised — the event log still has the update, and a container resyncs on restart.
    """
    if settings.supabase_url is None or settings.supabase_service_role_key is None:
        return False
    key = settings.supabase_service_role_key.get_secret_value()
    body = {
        "messages": [
            {
                "topic": channel(project_id),
                "event": FILE_UPDATE_EVENT,
                "payload": {"filePath": file_path, "content": content},
                "private": False,
            }
        ]
    }
    url = settings.supabase_url.rstrip("/") + "/realtime/v1/api/broadcast"
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    client = http or httpx.AsyncClient(timeout=httpx.Timeout(5.0))
    try:
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                response = await client.post(url, json=body, headers=headers)
                if response.status_code < 300:
                    return True
                status = response.status_code
                retry_after = parse_retry_after(response.headers, 0.0)
            except httpx.TransportError as err:
                logger.info("broadcast to %s failed: %s", channel(project_id), err)
            if not should_retry(attempt, DEFAULT_POLICY, status=status, retry_after=retry_after):
                logger.warning(
                    "broadcast of %s to %s gave up (HTTP %s)",
                    file_path,
                    channel(project_id),
                    status,
                )
                return False
            await asyncio.sleep(backoff_delay(attempt, DEFAULT_POLICY, retry_after=retry_after))
    finally:
        if http is None:
            await client.aclose()
