"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test.

The session migrates a template database once; each test that asks for `db_url` gets a new
database cloned from it (CREATE DATABASE … TEMPLATE), so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from local.pg import EmbeddedPostgres
from store.migrate import migrate
from store.postgres import PostgresStore

TEMPLATE_DB = "myyc_template"
# Builds in tests start no live preview (a container per build) unless a test asks for one.
os.environ.setdefault("MYYC_BUILD_PREVIEWS", "false")
_counter = itertools.count()


def _with_db(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}?{query}" if query else f"{base}/{name}"


def pg_dir(prefix: str = "myyc-test-") -> Path:
    """A new directory the `pgserver` system user can reach (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    return root


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres]:
    """The session's PostgreSQL server, with a migrated template database."""
    pg = EmbeddedPostgres(pg_dir())
    url = pg.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {TEMPLATE_DB}")
        conn.execute(f"create database {TEMPLATE_DB}")
    asyncio.run(migrate(_with_db(url, TEMPLATE_DB)))
    yield pg
    pg.close()
    # Every test's database lives here (GBs over a suite): leave nothing behind.
    shutil.rmtree(pg.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url(embedded_pg: EmbeddedPostgres) -> str:
    """The maintenance database URL of the session's server."""
    return embedded_pg.url


def new_database(server_url: str) -> str:
    """Create a database from the migrated template and return its URL."""
    name = f"t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"create database {name} template {TEMPLATE_DB}")
    return _with_db(server_url, name)


@pytest.fixture
def db_url(server_url: str) -> str:
    """A fresh, migrated database for this test."""
    return new_database(server_url)


@pytest.fixture
async def pg_store(db_url: str) -> AsyncIterator[PostgresStore]:
    """The Postgres store adapter on a fresh database."""
    store = await PostgresStore.open(db_url)
    yield store
    await store.close()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """A spool directory for LogWriters."""
    return tmp_path / "spool"
