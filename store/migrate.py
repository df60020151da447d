"""The migration runner: Supabase bootstrap where needed, then supabase/migrations in order.

Applied versions are recorded in `supabase_migrations.schema_migrations`, the table the
Supabase CLI uses, so both tools agree. Running twice changes nothing; two processes
running at once serialise on an advisory lock.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"
SEED_FILE = MIGRATIONS_DIR.parent / "seed.sql"
_LOCK_KEY = 0x6D797963  # "myyc"
_NAME = re.compile(r"^(\d{14})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version (timestamp) and name."""

    version: str
    name: str
    path: Path


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; a badly named file is an error, not skipped."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file name {path.name!r} is not <14 digits>_<name>.sql")
        found.append(Migration(match.group(1), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migration files share a version")
    return found


def bootstrap_sql() -> str:
    """The Supabase compatibility script for plain PostgreSQL."""
    return resources.files("store").joinpath("sql/bootstrap.sql").read_text()


async def is_supabase(conn: psycopg.AsyncConnection[object]) -> bool:
    """Whether this database is a Supabase one (it has the `supabase_admin` role)."""
    cur = await conn.execute("select 1 from pg_roles where rolname = 'supabase_admin'")
    return await cur.fetchone() is not None


async def migrate(url: str, *, seed: bool = True, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Bring the database at `url` up to date; return the versions applied by this call."""
    migrations = discover(directory)
    applied_now: list[str] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            if not await is_supabase(conn):
                await conn.execute(bootstrap_sql())
            await conn.execute(
                "create schema if not exists supabase_migrations;"
                "create table if not exists supabase_migrations.schema_migrations"
                " (version text primary key, statements text[], name text)"
            )
            cur = await conn.execute("select version from supabase_migrations.schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for migration in migrations:
                if migration.version in done:
                    continue
                sql = migration.path.read_text()
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "insert into supabase_migrations.schema_migrations"
                        " (version, statements, name) values (%s, %s, %s)",
                        (migration.version, [sql], migration.name),
                    )
                logger.info("applied migration %s_%s", migration.version, migration.name)
                applied_now.append(migration.version)
            if seed and applied_now and SEED_FILE.exists():
                await conn.execute(SEED_FILE.read_text())
        finally:
            await conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
