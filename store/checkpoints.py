"""LangGraph's Postgres checkpointer on the control plane's own database.

Checkpoints live in the `langgraph` schema (created by the migrations, out of PostgREST's
reach), on a small pool of their own: the saver wants autocommit connections with dict rows,
which the store's pool does not use. `setup()` (LangGraph's own migrations) runs once per
process under an advisory lock, so two processes starting together do not race on it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from schemas.errors import StoreUnavailable

SCHEMA = "langgraph"
_SETUP_LOCK = 0x6D79636B  # "myck"


class Checkpoints:
    """A checkpointer pool: open once per process, `saver` for every graph run, then close."""

    def __init__(self, url: str, *, max_size: int = 4) -> None:
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "prepare_threshold": 0,
                "options": f"-c search_path={SCHEMA}",
            },
            timeout=10.0,
        )
        self.saver = AsyncPostgresSaver(self._pool)

    async def open(self) -> Checkpoints:
        """Open the pool and make sure LangGraph's tables exist."""
        try:
            await self._pool.open(wait=True, timeout=30)
            async with self._pool.connection() as conn:
                await conn.execute("select pg_advisory_lock(%s)", (_SETUP_LOCK,))
                try:
                    await self.saver.setup()
                finally:
                    await conn.execute("select pg_advisory_unlock(%s)", (_SETUP_LOCK,))
        except (psycopg.OperationalError, TimeoutError) as err:
            raise StoreUnavailable(f"checkpoint database unavailable: {err}") from err
        return self

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()
