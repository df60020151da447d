"""Idempotency-Key semantics on POST /spawn and POST /sessions (as the IETF draft has them):
a repeat returns the first answer and costs nothing; the same key with another body is 422."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from api.limits import RateLimiter
from core.services import Services
from schemas.settings import Settings
from tests.support import serve

SECRET = "test-hmac-secret-0123456789"


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, str, Services]]:
    user = uuid.uuid4()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (user,))
    settings = Settings(database_url=db_url, myyc_data_dir=tmp_path,
                        myyc_hmac_secret=SecretStr(SECRET), spawn_rate_per_minute=30)  # fmt: skip
    services = await Services.open(settings)
    services.dispatcher.pause()  # the answers are what is tested, not the builds
    app = create_app(services)
    # A stopped clock: the bucket never refills during the test, however slow the machine.
    app.state.spawn_limiter = RateLimiter(30, clock=lambda: 1_000.0)
    try:
        async with serve(app) as base:
            yield base, str(user), services
    finally:
        await services.close()


def _signed(path: str, body: bytes, nonce: str) -> dict[str, str]:
    ts = int(time.time())
    return {TIMESTAMP_HEADER: str(ts), "X-Myyc-Nonce": nonce,
            SIGNATURE_HEADER: sign(SECRET.encode(), ts, "POST", path, body, nonce),
            "content-type": "application/json"}  # fmt: skip


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any], key: str) -> Any:
    raw = json.dumps(body).encode()
    headers = {**_signed(path, raw, uuid.uuid4().hex), "Idempotency-Key": key}
    return await http.post(path, content=raw, headers=headers)


@pytest.mark.parametrize(
    ("path", "first", "second"),
    [
        ("/spawn", {"title": "Notes"}, {"title": "Notes, but different"}),
        (
            "/sessions",
            {"vibeText": "Notes", "template": "saas"},
            {"vibeText": "Notes", "template": "marketplace"},
        ),
    ],
)
async def test_the_same_key_with_another_body_is_idempotency_mismatch(
    api: tuple[str, str, Services], path: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    """Regression: the same key with a different body silently returned the first project."""
    base, user, services = api
    owner = {"user_id": user} if path == "/spawn" else {"userId": user}
    async with httpx.AsyncClient(base_url=base) as http:
        made = await _post(http, path, {**first, **owner}, "key-1")
        assert made.status_code == 202
        again = await _post(http, path, {**first, **owner}, "key-1")
        assert (again.status_code, again.json()) == (200, made.json())
        other = await _post(http, path, {**second, **owner}, "key-1")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_mismatch"
    assert other.json()["error"]["field"] == "header.idempotency-key"
    assert len(await services.store.list_projects()) == 1


async def test_fifty_concurrent_repeats_of_one_key_cost_one_spawn(
    api: tuple[str, str, Services],
) -> None:
    """Regression: 50 concurrent repeats of one key were refused 429 twenty times, because the
    rate limit ran before the repeat was recognised."""
    base, user, services = api
    async with httpx.AsyncClient(base_url=base) as http:
        answers = await asyncio.gather(
            *(
                _post(http, "/spawn", {"title": "Burst", "user_id": user}, "burst")
                for _ in range(50)
            )
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * 49 + [202]
        assert len({a.json()["project_id"] for a in answers}) == 1
        # The 29 spawns the user still has (a burst of 30) are all there.
        rest = [await _post(http, "/spawn", {"title": f"n{i}", "user_id": user}, f"k{i}")
                for i in range(30)]  # fmt: skip
    assert [r.status_code for r in rest] == [202] * 29 + [429]
    assert len(await services.store.list_projects()) == 30
