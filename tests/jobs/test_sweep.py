"""The worker's sweep (an arq cron job on its own queue) heals stuck generations by itself."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from bot.app import Runtime
from bot.models import Actor, ImagineOptions, NewGeneration, State
from storage.models import GenerationRow
from tests.stack import worker_running

ALICE = Actor("local", "local", "alice", "Alice")


async def test_a_worker_sweeps_a_stuck_job_back_into_the_queue_and_runs_it(rt: Runtime, redis: Redis) -> None:
    new = NewGeneration(ALICE, "general", ImagineOptions("a stuck fox", "", 64, 64, 3, 1), "demo")
    gen, _position = await rt.core.submit(new)
    await rt.queue.mark_running(gen.id)
    await rt.store.transition(gen.id, State.RUNNING)
    # Its worker died long ago and arq forgot the job.
    await redis.delete(f"arq:job:gen:{gen.id}")
    await redis.zrem(rt.settings.redis.queue_name, f"gen:{gen.id}")
    await GenerationRow.filter(id=gen.id).update(heartbeat_at=datetime.now(UTC) - timedelta(minutes=30))

    async with worker_running(rt):  # the sweep runs at start, then every minute
        for _ in range(300):
            row = await rt.store.get(gen.id)
            assert row is not None
            if row.state is State.SUCCEEDED:
                break
            await asyncio.sleep(0.05)
    assert row.state is State.SUCCEEDED
    assert row.attempts == 1
    assert await rt.blobs.get(f"results/{gen.id}.png")
