"""Edge functions on real Deno, talking to the real API on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import jwt
import psycopg
import pytest
from pydantic import SecretStr

from api.app import create_app
from core.services import Services
from schemas.settings import Settings
from tests.support import serve

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = ROOT / "supabase" / "functions" / "spawn_project" / "index.ts"
HMAC = "edge-hmac-secret-0123456789"
JWT_SECRET = "edge-jwt-secret-0123456789-abcdefghijklmnop"


def _deno() -> str | None:
    local = ROOT / "tools" / "node_modules" / ".bin" / "deno"
    return os.environ.get("MYYC_DENO") or (str(local) if local.exists() else shutil.which("deno"))


DENO = _deno()
# Off CI a machine without npm skips these; in CI a missing Deno is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    DENO is None and not os.environ.get("CI"),
    reason="deno not installed (scripts/bootstrap installs it with npm)",
)


@pytest.fixture(autouse=True)
def _deno_present() -> None:
    assert DENO is not None, "deno is missing: scripts/bootstrap installs it with npm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _token(user: UUID, *, secret: str = JWT_SECRET, exp: int = 3600) -> str:
    claims = {"sub": str(user), "role": "authenticated", "aud": "authenticated",
              "exp": int(time.time()) + exp}  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture
async def edge(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, Services]]:
    settings = Settings(
        database_url=db_url,
        myyc_data_dir=tmp_path,
        myyc_hmac_secret=SecretStr(HMAC),
        supabase_jwt_secret=SecretStr(JWT_SECRET),
    )
    services = await Services.open(settings)
    assert services.dispatcher is not None
    services.dispatcher.pause()  # type: ignore[attr-defined]  # the test checks the spawn only
    port = _free_port()
    async with serve(create_app(services)) as api:
        env = {**os.environ, "PORT": str(port), "MYYC_API_URL": api, "MYYC_HMAC_SECRET": HMAC,
               "SUPABASE_JWT_SECRET": JWT_SECRET, "NO_COLOR": "1"}  # fmt: skip
        assert DENO is not None
        proc = await asyncio.create_subprocess_exec(
            DENO, "run", "--allow-net", "--allow-env", str(FUNCTION), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(300):
                    try:
                        await http.options(url)
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.05)
                else:
                    raise RuntimeError("the edge function did not start")
            yield url, services
        finally:
            proc.terminate()
            await proc.wait()
    await services.close()


async def test_spawn_project_forwards_a_signed_spawn_for_the_user(
    edge: tuple[str, Services], db_url: str
) -> None:
    url, services = edge
    user = uuid4()
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await conn.execute("insert into auth.users (id) values (%s)", (user,))
        await conn.commit()
    headers = {"authorization": f"Bearer {_token(user)}", "idempotency-key": "click-1"}
    idea = {"title": "AI Recipe App", "description": "Save recipes", "category": "food-tech"}
    async with httpx.AsyncClient() as http:
        first = await http.post(url, json=idea, headers=headers)
        again = await http.post(url, json=idea, headers=headers)
    assert first.status_code == 202, first.text
    assert again.status_code == 200
    assert again.json() == first.json()
    project = await services.store.get_project(UUID(first.json()["project_id"]))
    assert project.user_id == user
    assert project.title == "AI Recipe App"
    assert project.category == "food-tech"


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, {"title": "x"}, 401, "unauthorized"),
        ({"authorization": "Bearer not-a-jwt"}, {"title": "x"}, 401, "unauthorized"),
        ("wrong-secret", {"title": "x"}, 401, "unauthorized"),
        ("expired", {"title": "x"}, 401, "unauthorized"),
        ("ok", {"description": "no title"}, 422, "validation_error"),
        ("ok", ["not", "an", "object"], 422, "validation_error"),
    ],
)
async def test_spawn_project_refuses_bad_requests(
    edge: tuple[str, Services], db_url: str, headers: object, body: object, status: int, code: str
) -> None:
    url, _ = edge
    user = uuid4()
    tokens = {
        "ok": _token(user),
        "wrong-secret": _token(user, secret="another-secret-0123456789-abcdefghijkl"),
        "expired": _token(user, exp=-10),
    }
    sent = {"authorization": f"Bearer {tokens[headers]}"} if isinstance(headers, str) else headers
    async with httpx.AsyncClient() as http:
        response = await http.post(url, json=body, headers=sent)  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from projects").fetchone() == (0,)
