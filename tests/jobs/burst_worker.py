"""A real arq worker for the position tests, whose job function only records that it started.

In-process: :func:`recording_worker`. As an OS process (``python -m tests.jobs.burst_worker
REDIS_URL QUEUE NAME PARTIES``): says it is ready (``INCR test-workers:ready``), waits for the
start signal (``BLPOP test-workers:go``), then runs one burst worker until the queue is empty.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func
from redis.asyncio import Redis

from jobs.constants import GENERATE_FUNCTION

#: A Redis list of ``"<worker name>:<generation id>"``, in the order the job functions started.
STARTED = "test:started"
#: How many workers have started their first job.
WORKERS_BUSY = "test:workers-busy"
BARRIER = "test-workers"


async def record_start(ctx: dict[str, Any], generation_id: int) -> None:
    """The job function: note, atomically, that this job started and on which worker.

    With ``parties`` > 1, a worker's first job waits until every worker has started a job, so
    that every worker is known to take part (a worker that starts late cannot miss the race).
    """
    redis = ctx["redis"]
    await redis.rpush(STARTED, f"{ctx['name']}:{generation_id}")
    if ctx["parties"] > 1 and not ctx.get("busy"):
        ctx["busy"] = True
        await redis.incr(WORKERS_BUSY)
        async with asyncio.timeout(20):
            while int(await redis.get(WORKERS_BUSY) or 0) < ctx["parties"]:
                await asyncio.sleep(0.002)


def recording_worker(
    redis_url: str, queue_name: str, name: str = "w1", parties: int = 1, *, burst: bool = True
) -> Worker:
    """A worker that runs one job at a time; ``poll_delay`` is short to keep tests fast."""
    return Worker(
        functions=[func(record_start, name=GENERATE_FUNCTION)],  # type: ignore[list-item]
        queue_name=queue_name,
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=burst,
        max_jobs=1,
        poll_delay=0.001,
        keep_result=0,
        handle_signals=False,
        ctx={"name": name, "parties": parties},
    )


async def started_jobs(redis: Redis) -> list[tuple[str, int]]:
    """``(worker name, generation id)`` in the order the job functions started."""
    entries = [e.decode() for e in await redis.lrange(STARTED, 0, -1)]
    return [(name, int(gid)) for name, gid in (e.rsplit(":", 1) for e in entries)]


async def main(redis_url: str, queue_name: str, name: str, parties: int) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await redis.incr(f"{BARRIER}:ready")
        if await redis.blpop([f"{BARRIER}:go"], timeout=30) is None:
            raise SystemExit("no start signal")
    finally:
        await redis.aclose()
    worker = recording_worker(redis_url, queue_name, name, parties)
    try:
        await worker.async_run()
    finally:
        await worker.close()


if __name__ == "__main__":
    url, queue, worker_name, n = sys.argv[1:5]
    asyncio.run(main(url, queue, worker_name, int(n)))
