"""What a fleet leaves in Redis, against the real Redis: a worker that stopped beating leaves the
capacity the ETA reads and its entries are removed, and a stopped bot's renderer consumer is
removed by the next bot, unless it still holds events."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bot.app import Runtime
from jobs.constants import WORKER_ALIVE_MS, Keys
from jobs.events import RedisEventFeed
from jobs.queue import DEAD_AFTER_MS

LINE = "demo"


async def test_a_dead_workers_capacity_leaves_the_eta_and_its_entries_go(rt: Runtime) -> None:
    queue, keys = rt.queue, rt.queue.keys
    await queue.worker_heartbeat("alive", 2, line=LINE)
    await queue.worker_heartbeat("dead", 3, line=LINE)
    assert await queue.capacity(LINE) == 5
    # "dead" beat long ago (its host went away)
    await rt.redis.zadd(keys.workers(LINE), {"dead": 1})
    assert await queue.capacity(LINE) == 2, "not counted once it stops beating"
    await queue.worker_heartbeat("alive", 2, line=LINE)
    assert await rt.redis.zrange(keys.workers(LINE), 0, -1) == [b"alive"]
    assert await rt.redis.hkeys(keys.worker_capacity(LINE)) == [b"alive"], "its capacity entry went too"
    assert DEAD_AFTER_MS > WORKER_ALIVE_MS, "a worker stays counted as long as it is alive"


async def test_the_consumers_of_stopped_renderers_are_removed_unless_they_hold_events(
    rt: Runtime, redis: Redis
) -> None:
    stream, group = Keys("fleet").events, "render:local"
    old = RedisEventFeed(redis, stream, group, "bot-old")
    holding = RedisEventFeed(redis, stream, group, "bot-crashed")
    await old.ensure_group()
    await redis.xadd(stream, {"id": "1", "kind": "started"})
    assert [e.generation_id for e in await holding.read(1, 1)] == [1]  # read, never acknowledged
    await redis.xadd(stream, {"id": "2", "kind": "started"})
    await old.ack(await old.read(1, 1))  # a consumer that read, acknowledged and stopped
    await asyncio.sleep(0.05)

    new = RedisEventFeed(redis, stream, group, "bot-new")
    assert await new.forget_idle_consumers(idle_ms=10) == 1
    names = {c["name"] for c in await redis.xinfo_consumers(stream, group)}
    assert names == {b"bot-crashed"}, "the one with a pending event stays, for claim_stale"
    assert [e.generation_id for e in await new.claim_stale(min_idle_ms=0, count=10)] == [1]
    assert await new.forget_idle_consumers(idle_ms=10) == 1, "its events claimed, it goes too"
    assert await new.forget_idle_consumers(idle_ms=0) == 0, "never the caller itself"
    assert await RedisEventFeed(redis, "no-stream", group, "x").forget_idle_consumers(0) == 0
