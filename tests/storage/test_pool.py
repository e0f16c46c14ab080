"""The PostgreSQL pool of a process is the one the settings ask for (``GENBOT_DATABASE__POOL_MIN``,
``POOL_MAX``, ``STATEMENT_CACHE_SIZE``), seen from the server: the connections ``pg_stat_activity``
counts in a database of the test's own, while more queries than the pool holds run at once, and
the named prepared statements of a session (none with the cache off, as PgBouncer's transaction
pooling needs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from tortoise.connection import get_connection

from bot.app import database_pool
from bot.config import ConfigError, load_settings
from storage import db
from tests.conftest import pg_database
from tests.faults.harness import wait_until

pytestmark = pytest.mark.postgres

#: An advisory lock the test holds while the pool's queries wait for it.
GATE = 7214


@pytest_asyncio.fixture
async def own_db() -> AsyncIterator[str]:
    """An empty database no other connection uses."""
    async with pg_database("genbot_pool") as url:
        try:
            yield url
        finally:
            await db.close()


async def connections(url: str) -> int:
    """The connections to ``url``'s database, less the one that counts them."""
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


def settings_pool(url: str, tmp_path: Path, **database: object) -> db.Pool:
    """The pool that settings (as ``GENBOT_DATABASE__*`` give them) make for ``url``."""
    settings = load_settings(_env_file=None, database={"url": url, **database}, blobs={"dir": tmp_path})
    return database_pool(settings.database)


@pytest.mark.parametrize(("pool_min", "pool_max"), [(0, 2), (2, 3)])
async def test_the_pool_opens_what_the_settings_say_under_concurrent_queries(
    own_db: str, tmp_path: Path, pool_min: int, pool_max: int
) -> None:
    """Six queries at once, each waiting for a lock the test holds: the pool holds ``pool_max``
    connections, and the rest of the queries wait for one of them."""
    await db.connect(own_db, settings_pool(own_db, tmp_path, pool_min=pool_min, pool_max=pool_max))
    assert await connections(own_db) == max(pool_min, 1), "pool_min at start (and the one that checked)"
    gate = await asyncpg.connect(own_db)
    try:
        await gate.execute("SELECT pg_advisory_lock($1)", GATE)
        client = get_connection("default")
        queries = [
            asyncio.create_task(client.execute_query(f"SELECT pg_advisory_lock_shared({GATE}), {n}"))
            for n in range(6)
        ]

        async def waiting_for_the_lock() -> bool:
            blocked = await gate.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            return int(blocked) >= pool_max

        await wait_until(waiting_for_the_lock, f"{pool_max} queries to wait for the lock", 20)
        await gate.execute("SELECT pg_advisory_unlock($1)", GATE)
        results = await asyncio.gather(*queries)
    finally:
        await gate.close()
    assert sorted(rows[1][0][1] for rows in results) == list(range(6)), "every query ran"
    # asyncpg keeps the connections it opened: exactly as many as the pool may hold
    assert await connections(own_db) == pool_max


@pytest.mark.parametrize(("cache", "named"), [(0, False), (100, True)])
async def test_the_statement_cache_setting_reaches_asyncpg(
    own_db: str, tmp_path: Path, cache: int, named: bool
) -> None:
    """With ``STATEMENT_CACHE_SIZE=0`` a session prepares no named statement, which a pooler in
    transaction mode could hand to another client's session; asyncpg's default cache does."""
    await db.connect(own_db, settings_pool(own_db, tmp_path, pool_max=1, statement_cache_size=cache))
    client = get_connection("default")
    await client.execute_query("SELECT 1 AS one")
    _count, rows = await client.execute_query("SELECT count(*) AS n FROM pg_prepared_statements")
    assert (rows[0]["n"] > 0) is named


def test_pool_min_above_pool_max_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GENBOT_DATABASE__POOL_MIN"):
        load_settings(_env_file=None, database={"pool_min": 4, "pool_max": 2}, blobs={"dir": tmp_path})


async def test_a_statement_given_back_to_the_pool_costs_no_reset_round_trip(own_db: str) -> None:
    """asyncpg's pool runs ``... RESET ALL`` on every connection given back, by default: one more
    round trip after each of genbot's statements. genbot's pool does not (``db.keep_session``); the
    server's view of the session shows the statement as its last, not the reset."""
    await db.connect(own_db, db.Pool(min_size=1, max_size=1))
    conn = get_connection("default")
    await conn.execute_query("SELECT 41 + 1")
    await conn.execute_query_dict("SELECT 'the last statement'")
    watcher = await asyncpg.connect(own_db)
    try:
        last = await watcher.fetch(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await watcher.close()
    assert [row["query"] for row in last] == ["SELECT 'the last statement'"]
    # a transaction left open is still rolled back when its connection goes back
    async with conn._pool.acquire() as raw:  # type: ignore[attr-defined]
        await raw.execute("BEGIN")
        await raw.execute("CREATE TABLE left_open (x int)")
    assert await conn.execute_query_dict("SELECT to_regclass('left_open') AS t") == [{"t": None}]
