"""A bot process for the position tests: ``python -m tests.jobs.submitter REDIS_URL PREFIX QUEUE IDS``.

``IDS`` is a comma-separated list of generation ids. The process connects, says it is ready
(``INCR <barrier>:ready``), blocks until the test lets every process go at once
(``BLPOP <barrier>:go``), submits all its ids concurrently with ``asyncio.gather`` and prints one
JSON line: ``[[generation_id, ticket, position], ...]``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from arq.connections import RedisSettings, create_pool

from jobs.constants import Keys
from jobs.queue import RedisJobQueue

BARRIER = "test-barrier"


async def main(redis_url: str, prefix: str, queue_name: str, ids: list[int]) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        queue = RedisJobQueue(pool, Keys(prefix), queue_name)
        await queue.seed_tickets(0)  # as the bot's start-up does (a no-op once seeded)
        await pool.script_load(queue._submit.script)  # no EVALSHA miss in the timed part
        await pool.incr(f"{BARRIER}:ready")
        if await pool.blpop([f"{BARRIER}:go"], timeout=30) is None:
            raise SystemExit("no start signal")
        results = await asyncio.gather(*(queue.submit(gid, line="demo") for gid in ids))
        rows = [[gid, ticket, position] for gid, (ticket, position) in zip(ids, results, strict=True)]
        print(json.dumps(rows), flush=True)
    finally:
        await pool.aclose()


if __name__ == "__main__":
    url, key_prefix, queue, id_list = sys.argv[1:5]
    asyncio.run(main(url, key_prefix, queue, [int(i) for i in id_list.split(",")]))
