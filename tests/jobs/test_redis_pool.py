"""``GENBOT_REDIS__MAX_CONNECTIONS`` bounds the Redis pools of a process, seen from a redis-server of
the test's own: more commands at once than the bound wait for a free connection, and the server
never sees more connections of the pool than the bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from redis.asyncio import Redis

from bot.app import build_runner, runtime
from bot.embedded_redis import EmbeddedRedis, embedded_redis
from jobs.worker import build_sweeper, build_worker
from tests.conftest import make_settings
from tests.faults.harness import wait_until

GATE = "test:gate"


@pytest_asyncio.fixture
async def own_redis() -> AsyncIterator[EmbeddedRedis]:
    async with embedded_redis() as server:
        yield server


async def test_the_pools_open_at_most_max_connections(
    own_redis: EmbeddedRedis, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(own_redis.url, sqlite_url, tmp_path, redis={"max_connections": 2})
    watcher = Redis.from_url(own_redis.url, decode_responses=True)

    async def clients(command: str | None = None) -> int:
        """The server's clients (running ``command``), less the watcher."""
        listed = [c for c in await watcher.client_list() if c["id"] != str(await watcher.client_id())]
        return sum(1 for c in listed if command is None or c["cmd"] == command)

    try:
        async with runtime(settings) as rt:
            await rt.queue.seed_tickets(0)
            waits = [asyncio.create_task(rt.redis.blpop([GATE], timeout=0)) for _ in range(5)]

            async def both_connections_wait() -> bool:
                return await clients("blpop") >= 2

            await wait_until(both_connections_wait, "two commands to block", 20)
            await watcher.rpush(GATE, *range(5))
            popped = await asyncio.gather(*waits)
            assert sorted(int(value) for _key, value in popped) == list(range(5)), "every command ran"
            assert await clients() == 2, "the pool's two connections, never more"

            worker = build_worker(
                settings, runner=build_runner(rt), queue=rt.queue, line="demo", concurrency=1
            )
            sweeper = build_sweeper(settings, reconcile=rt.core.reconcile, fail_over=rt.core.fail_over)
            for pool in (worker.pool, sweeper.pool):
                assert pool.connection_pool.max_connections == 2
                await pool.aclose()
    finally:
        await watcher.aclose()
