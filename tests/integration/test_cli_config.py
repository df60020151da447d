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
