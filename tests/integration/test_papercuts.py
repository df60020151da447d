"""What a new user tripped over, each fixed and named after what broke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from agents.github import repo_name
from api.app import create_app
from api.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from core.services import Services
from schemas.settings import Settings
from tests.support import serve

SECRET = "test-hmac-secret-0123456789"


def _signed(method: str, path: str, body: bytes = b"") -> dict[str, str]:
    ts = int(time.time())
    return {TIMESTAMP_HEADER: str(ts), "content-type": "application/json",
            SIGNATURE_HEADER: sign(SECRET.encode(), ts, method, path, body)}  # fmt: skip


def test_slugs_keep_accented_letters() -> None:
    """Regression: `Ünïcødé` became the repository `n-c-d-…`."""
    assert repo_name("Ünïcødé", "12345678-0000") == "unicode-12345678"
    assert repo_name("Café Crème", "abcdef12") == "cafe-creme-abcdef12"
    assert repo_name("日本語", "abcdef12") == "app-abcdef12"


async def test_a_title_of_spaces_is_422_and_projects_list_their_runs(
    db_url: str, tmp_path: Path
) -> None:
    """Regressions: a title of spaces was accepted; GET /projects always had `runs: []`."""
    settings = Settings(database_url=db_url, myyc_data_dir=tmp_path,
                        myyc_hmac_secret=SecretStr(SECRET))  # fmt: skip
    services = await Services.open(settings)
    services.dispatcher.pause()
    try:
        async with serve(create_app(services)) as base, httpx.AsyncClient(base_url=base) as http:
            for body in (b'{"title": "   "}', b'{"title": "\\t\\n"}'):
                blank = await http.post("/spawn", content=body, headers=_signed("POST", "/spawn",
                                                                               body))  # fmt: skip
                assert blank.status_code == 422
                assert blank.json()["error"]["field"] == "body.title"
            body = b'{"vibeText": "  ", "template": "saas"}'
            blank = await http.post("/sessions", content=body,
                                    headers=_signed("POST", "/sessions", body))  # fmt: skip
            assert blank.status_code == 422
            body = b'{"title": "Real"}'
            made = await http.post("/spawn", content=body, headers=_signed("POST", "/spawn", body))
            assert made.status_code == 202
            listed = (await http.get("/projects", headers=_signed("GET", "/projects"))).json()
    finally:
        await services.close()
    assert len(listed) == 1
    assert [r["agent_name"] for r in listed[0]["runs"]] == [
        "planner", "codegen", "github", "preview", "verifier",
    ]  # fmt: skip


def _myyc(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "MYYC_"))}
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *args], cwd=cwd, capture_output=True, text=True,
        env={**base, "COLUMNS": "80", "MYYC_PORT": "1", **env}, timeout=180, check=False,
    )  # fmt: skip


def test_a_failed_spawn_shows_its_reason_without_a_traceback_and_ids_copy_whole(
    db_url: str, tmp_path: Path
) -> None:
    """Regressions: a failed in-process spawn printed a raw traceback among the event lines;
    `myyc projects` cut ids so they could not be copied."""
    env = {"DATABASE_URL": db_url, "MYYC_HMAC_SECRET": SECRET,
           "MYYC_DATA_DIR": str(tmp_path), "MYYC_LLM_PROVIDER": "openai"}  # fmt: skip
    failed = _myyc("spawn", "Needs a model", cwd=tmp_path, **env)
    assert failed.returncode == 1
    assert "OPENAI_API_KEY" in failed.stdout + failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    listed = _myyc("projects", "--json", cwd=tmp_path, **env)
    project_id = json.loads(listed.stdout)[0]["project_id"]
    table = _myyc("projects", cwd=tmp_path, **env)
    assert project_id in table.stdout


async def test_a_wrong_method_is_405_and_a_body_not_utf8_is_422(
    db_url: str, tmp_path: Path
) -> None:
    """Regressions: 405 answers carried `validation_error`; a body that is not UTF-8 answered
    400 where the docs say 422."""
    settings = Settings(database_url=db_url, myyc_data_dir=tmp_path,
                        myyc_hmac_secret=SecretStr(SECRET))  # fmt: skip
    services = await Services.open(settings)
    services.dispatcher.pause()
    try:
        async with serve(create_app(services)) as base, httpx.AsyncClient(base_url=base) as http:
            wrong = await http.delete("/spawn", headers=_signed("DELETE", "/spawn"))
            body = b'{"title": "\xff\xfe"}'
            bad = await http.post("/spawn", content=body, headers=_signed("POST", "/spawn", body))
    finally:
        await services.close()
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]
    assert bad.status_code == 422
    assert bad.json()["error"] == {
        "code": "validation_error",
        "field": "body",
        "message": "body: not valid JSON (it must be UTF-8 encoded)",
    }


async def test_plurals_of_plural_titles_are_not_doubled() -> None:
    """Regression: a title like "Notes" planned "List and search notess"."""
    from agents.providers import Message, ModelRequest
    from local.offline_llm import OfflineProvider

    seen = {}
    for title in ("Notes", "Boxes", "Glass tracker", "Recipes"):
        request = ModelRequest(purpose="plan", messages=[Message("user", title)],
                               context={"idea": {"title": title}, "template": None})  # fmt: skip
        plan = json.loads((await OfflineProvider().complete(request)).text)
        seen[title] = plan["features"][1]["feature"]
    assert seen == {
        "Notes": "List and search notes", "Boxes": "List and search boxes",
        "Glass tracker": "List and search glasses", "Recipes": "List and search recipes",
    }  # fmt: skip
