"""A small fleet, as a deployment runs it: four ``genbot worker`` processes and a ``genbot bot``
against one redis-server (the test's own) and the run's PostgreSQL database, on one line of short
jobs, each process with a pool of at most two database connections. Checked from outside: the rows, what the member sees, and the claims Redis executed
(``MONITOR``): every job ran exactly once, the workers took them in ticket order, none was lost.
(``bench/`` runs the same at 1, 4 and 16 workers, on hosts of their own.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from bot.embedded_redis import EmbeddedRedis, embedded_redis
from storage import db
from tests.conftest import pg_database
from tests.faults.harness import Cluster, Figures, refreshing_local_seen

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

WORKERS = 4
JOBS = 40
#: The most PostgreSQL connections of each process (README, "Scaling").
POOL_MAX = 2


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """The processes, a redis-server and a PostgreSQL database of the test's own (no other
    connection counts in it)."""
    server: EmbeddedRedis
    async with pg_database("genbot_fleet") as postgres_url, embedded_redis() as server:
        await db.migrate(postgres_url)
        # Short jobs (two steps of 20 ms), two at a time per worker.
        cluster = Cluster(
            tmp_path,
            server,
            postgres_url,
            GENBOT_BACKEND__DEMO_STEP_DELAY_S="0.02",
            GENBOT_WORKER__CONCURRENCY="2",
            GENBOT_DATABASE__POOL_MIN="0",
            GENBOT_DATABASE__POOL_MAX=str(POOL_MAX),
        )
        await cluster.start()
        try:
            yield cluster
        finally:
            await cluster.close()


async def test_four_workers_run_every_job_once_in_ticket_order(cluster: Cluster) -> None:
    for n in range(WORKERS):
        await cluster.worker(f"worker-{n}")
    await cluster.bot()
    async with aiohttp.ClientSession() as http:
        for n in range(JOBS):
            await cluster.imagine(http, f"fleet {n}", steps=2)
        figures = await cluster.settle(
            Figures("fleet", f"{WORKERS} worker processes of 2 jobs at once, one line"),
            refreshing_local_seen(cluster, http),
        )
    rows = await cluster.rows()
    claims = Counter(cluster.claim_log.claims)

    assert figures.lost == 0, f"{figures}\n{cluster.log_tail()}"
    assert figures.completed == JOBS, f"{figures}\n{cluster.log_tail()}"
    assert figures.duplicated_rows == figures.duplicated_tickets == 0, figures
    assert set(claims) == {r["id"] for r in rows}, "every job was taken by a worker"
    assert set(claims.values()) == {1}, f"taken once each: {claims}"
    assert {r["attempts"] for r in rows} == {0}, "and run once each"
    assert figures.fifo_violations == 0, f"taken in ticket order: {cluster.claim_log.claims}"
    cluster.assert_alive(*(f"worker-{n}" for n in range(WORKERS)), "bot")
    assert await database_connections(cluster.db_url) <= (WORKERS + 1) * POOL_MAX


async def database_connections(url: str) -> int:
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
