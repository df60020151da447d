"""The CLI with production settings: what a new user meets when configuration is partial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _myyc(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("DATABASE_URL", "SUPABASE", "MYYC_"))}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *args], env={**base, **env}, cwd=cwd,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_database_url_without_an_hmac_secret_still_runs_in_process(
    db_url: str, tmp_path: Path
) -> None:
    """Regression: `DATABASE_URL=… myyc projects` failed with "server signatures are not
    configured", naming no variable: the in-process API had no secret to check with."""
    done = _myyc(
        "projects",
        "--json",
        cwd=tmp_path,
        env={"DATABASE_URL": db_url, "MYYC_PORT": "1", "MYYC_DATA_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_migrate_with_only_supabase_url_refuses_clearly(tmp_path: Path) -> None:
    """Regression: `myyc migrate` with SUPABASE_URL migrated a new embedded database instead
    and said "applied 8 migration(s)"."""
    done = _myyc("migrate", cwd=tmp_path, env={
        "SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "a-service-role-key",
        "MYYC_DATA_DIR": str(tmp_path / "data"),
    })  # fmt: skip
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr
    assert "a-service-role-key" not in done.stderr + done.stdout
    assert not (tmp_path / "data" / "pgdata").exists()  # no embedded database was made


def test_a_configuration_error_is_one_line_per_problem_without_the_secret(tmp_path: Path) -> None:
    """Regression: `SUPABASE_SERVICE_ROLE_KEY=… myyc projects` without SUPABASE_URL printed an
    18-line pydantic traceback that included the tail of the key."""
    key = "sb-service-role-0123456789abcdef-SECRET-TAIL"
    for env, expected in (
        ({"SUPABASE_SERVICE_ROLE_KEY": key},
         "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY go together: set both"),
        ({"SUPABASE_SERVICE_ROLE_KEY": key, "MYYC_PORT": "abc"},
         "MYYC_PORT: Input should be a valid integer"),
    ):  # fmt: skip
        done = _myyc("projects", cwd=tmp_path, env=env)
        assert done.returncode == 2
        out = done.stdout + done.stderr
        assert "Traceback" not in out
        assert "SECRET-TAIL" not in out
        lines = [line.strip() for line in done.stderr.strip().splitlines()]
        assert lines[0] == "configuration error:"
        assert len(lines) == 2
        assert lines[1].startswith(expected)


def test_log_records_never_carry_a_secret() -> None:
    """STYLE 13: a configured secret, a bearer token, a JWT or an API key is masked in every
    log record, whatever handler prints it."""
    import logging

    from pydantic import SecretStr

    from core import redact
    from schemas.settings import Settings

    secret = "hmac-secret-value-123456"
    redact.install(Settings(myyc_hmac_secret=SecretStr(secret)))
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = logging.getLogger("myyc.test.redact")
    log.addHandler(keep := Keep())
    log.propagate = False
    try:
        log.warning("signed with %s", secret)
        log.warning("Authorization: Bearer abcdefghijklmnop")
        log.warning("key sk-proj-abcdefghijklmnopqrstuvwx and jwt %s",
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3OCJ9.c2lnbmF0dXJlc2ln")  # fmt: skip
    finally:
        log.removeHandler(keep)
    assert seen == [
        "signed with [redacted]",
        "Authorization: Bearer [redacted]",
        "key [redacted] and jwt [redacted]",
    ]
