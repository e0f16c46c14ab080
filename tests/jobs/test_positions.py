"""Positions under concurrent submissions, and the order in which real arq workers start jobs.

Real Redis (the run's own redis-server) and real ``arq.worker.Worker`` instances; the bot
processes that submit are real OS processes started together behind a Redis barrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from bot.embedded_redis import EmbeddedRedis
from bot.models import job_id_for
from jobs.constants import Keys, line_queue
from jobs.queue import RedisJobQueue
from jobs.worker import close_worker
from tests.jobs.burst_worker import BARRIER as WORKER_BARRIER
from tests.jobs.burst_worker import STARTED, recording_worker, started_jobs
from tests.jobs.submitter import BARRIER

ROOT = Path(__file__).resolve().parents[2]
KEYS = Keys("gt")
QUEUE_NAME = "gt:queue"
LINE = "demo"
#: The arq queue the jobs of that line wait in.
ARQ_QUEUE = line_queue(QUEUE_NAME, LINE)
PER_PROCESS = 200
TOTAL = 2 * PER_PROCESS
#: Two bot processes; their ids interleave and span 1 to 3 digits, so that an order by arq job id
#: ("gen:10" < "gen:2") or by submission time would differ from the ticket order.
GROUPS = [list(range(1, TOTAL + 1, 2)), list(range(2, TOTAL + 1, 2))]


@pytest_asyncio.fixture
async def pool(redis_server: EmbeddedRedis, redis: Redis) -> AsyncIterator[ArqRedis]:
    # ``redis`` flushed the server for this test
    arq_pool = await create_pool(RedisSettings.from_dsn(redis_server.url))
    yield arq_pool
    await arq_pool.aclose()


@pytest_asyncio.fixture
async def queue(pool: ArqRedis) -> RedisJobQueue:
    """The queue on an empty Redis, its ticket counter seeded as a new deployment's (no tickets
    given yet: the bot's start-up does this from the database)."""
    queue = RedisJobQueue(pool, KEYS, QUEUE_NAME)
    await queue.seed_tickets(0)
    return queue


async def probe(redis: Redis, into: list[tuple[int, int, int]], stop: asyncio.Event) -> None:
    """Until ``stop``: snapshots, each atomic (MULTI/EXEC), of (tickets taken, waiting jobs, arq
    jobs). While nothing leaves the queue the three are equal at every instant, unless taking a
    ticket and enqueueing the job are separate steps."""
    while not stop.is_set():
        async with redis.pipeline(transaction=True) as pipe:
            pipe.get(KEYS.ticket)
            pipe.zcard(KEYS.waiting(LINE))
            pipe.zcard(ARQ_QUEUE)
            ticket, waiting, queued = await pipe.execute()
        into.append((int(ticket or 0), int(waiting), int(queued)))
        await asyncio.sleep(0)


async def submit_from_processes(
    redis_url: str, redis: Redis, snapshots: list[tuple[int, int, int]] | None = None
) -> list[tuple[int, int, int]]:
    """Submit :data:`GROUPS` from one OS process each, all let go at the same instant; with
    ``snapshots``, :func:`probe` the queue while they run.

    Returns ``(generation_id, ticket, position)`` for every submission."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.jobs.submitter",
            redis_url,
            KEYS.prefix,
            QUEUE_NAME,
            ",".join(map(str, ids)),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for ids in GROUPS
    ]
    stop_probe = asyncio.Event()
    prober = None
    try:
        async with asyncio.timeout(30):
            while int(await redis.get(f"{BARRIER}:ready") or 0) < len(procs):
                if any(p.returncode is not None for p in procs):
                    break
                await asyncio.sleep(0.02)
            if snapshots is not None:
                prober = asyncio.create_task(probe(redis, snapshots, stop_probe))
            await redis.rpush(f"{BARRIER}:go", *(["go"] * len(procs)))
            outputs = [await p.communicate() for p in procs]
    finally:
        stop_probe.set()
        if prober is not None:
            await prober
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    rows: list[tuple[int, int, int]] = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
        rows += [tuple(r) for r in json.loads(out)]  # type: ignore[misc]
    await redis.delete(f"{BARRIER}:ready", f"{BARRIER}:go")
    return rows


async def run_burst_worker(redis_url: str) -> None:
    worker = recording_worker(redis_url, ARQ_QUEUE)
    try:
        await asyncio.wait_for(worker.async_run(), 30)
    finally:
        await worker.close()


async def run_worker_processes(redis_url: str, redis: Redis, names: list[str]) -> None:
    """Run one burst worker per name, each in its own OS process, all let go at once."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.jobs.burst_worker",
            redis_url,
            ARQ_QUEUE,
            name,
            str(len(names)),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in names
    ]
    try:
        async with asyncio.timeout(40):
            while int(await redis.get(f"{WORKER_BARRIER}:ready") or 0) < len(procs):
                if any(p.returncode is not None for p in procs):
                    break
                await asyncio.sleep(0.02)
            await redis.rpush(f"{WORKER_BARRIER}:go", *(["go"] * len(procs)))
            errors = [(await p.communicate())[1] for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]


# ---------------------------------------------------------------------------------------------


async def test_concurrent_submissions_get_unique_gapless_positions(
    redis_server: EmbeddedRedis, redis: Redis, queue: RedisJobQueue
) -> None:
    snapshots: list[tuple[int, int, int]] = []
    rows = await submit_from_processes(redis_server.url, redis, snapshots)

    # at every instant, a ticket taken is a job waiting and a job in arq's queue
    torn = [snap for snap in snapshots if len(set(snap)) != 1]
    assert not torn, f"{len(torn)} of {len(snapshots)} snapshots (tickets, waiting, arq) torn: {torn[:5]}"
    assert snapshots[-1] == (TOTAL, TOTAL, TOTAL)

    assert sorted(gid for gid, _, _ in rows) == list(range(1, TOTAL + 1))
    tickets = [ticket for _, ticket, _ in rows]
    positions = [position for _, _, position in rows]
    assert len(set(tickets)) == TOTAL, "two submissions got the same ticket"
    assert sorted(positions) == list(range(1, TOTAL + 1)), (
        f"positions are not exactly 1..{TOTAL}: duplicates "
        f"{sorted(p for p in set(positions) if positions.count(p) > 1)[:10]}"
    )
    # nothing left the queue, so the position a submission was told is its ticket's rank
    assert sorted(tickets) == list(range(1, TOTAL + 1))
    assert all(ticket == position for _, ticket, position in rows)

    # the waiting set: every job once, scored by its ticket, ranks 1..N with no gap
    waiting = await redis.zrange(KEYS.waiting(LINE), 0, -1, withscores=True)
    by_id = {gid: (ticket, position) for gid, ticket, position in rows}
    assert len(waiting) == TOTAL
    for rank, (member, score) in enumerate(waiting, start=1):
        gid = int(member)
        assert by_id[gid] == (int(score), rank)
        assert await queue.position(gid, line=LINE) == rank
    assert await queue.waiting() == [int(m) for m, _ in waiting]

    # arq's queue holds the same jobs in the same order, each scored by its ticket, each payload there
    arq_queue = await redis.zrange(ARQ_QUEUE, 0, -1, withscores=True)
    assert [m.decode() for m, _ in arq_queue] == [job_id_for(int(m)) for m, _ in waiting]
    assert [s for _, s in arq_queue] == [s for _, s in waiting]
    assert await redis.exists(*(job_key_prefix + job_id_for(gid) for gid in by_id)) == TOTAL
    assert int(await redis.get(KEYS.ticket)) == TOTAL


async def test_a_worker_starts_jobs_in_position_order(
    redis_server: EmbeddedRedis, redis: Redis, queue: RedisJobQueue
) -> None:
    await submit_from_processes(redis_server.url, redis)
    order = await queue.waiting()
    assert len(order) == TOTAL

    await run_burst_worker(redis_server.url)

    assert [gid for _, gid in await started_jobs(redis)] == order
    assert await redis.zcard(ARQ_QUEUE) == 0


async def test_a_worker_busy_during_the_submissions_starts_jobs_in_ticket_order(
    redis_server: EmbeddedRedis, redis: Redis, queue: RedisJobQueue
) -> None:
    """The worker takes jobs while the two bot processes are still submitting. Because the ticket
    and the arq job appear in one atomic step, a job never reaches arq's queue after a job with a
    later ticket, so the worker can never start a later ticket first."""
    worker = recording_worker(redis_server.url, ARQ_QUEUE, burst=False)
    task = asyncio.create_task(worker.async_run())
    try:
        await submit_from_processes(redis_server.url, redis)
        async with asyncio.timeout(30):
            while await redis.llen(STARTED) < TOTAL:
                assert not task.done(), task
                await asyncio.sleep(0.01)
    finally:
        # The last job may still be running: close_worker stops it (arq's close() re-raises the
        # CancelledError of a job it stops, which is no failure of this test).
        await close_worker(worker)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert [gid for _, gid in await started_jobs(redis)] == await queue.waiting()


MONITOR_END = "test:monitor-end"


async def _claims(redis_url: str, into: list[str], ready: asyncio.Event) -> None:
    """Every arq claim (``PSETEX arq:in-progress:<job>``) in the order Redis executed them, until
    the command ``ECHO test:monitor-end``."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        async with client.monitor() as monitor:
            ready.set()
            while True:
                command = (await monitor.next_command())["command"].split(" ")
                if command[0].upper() == "ECHO" and command[1:] == [MONITOR_END]:
                    return
                if command[0].upper() == "PSETEX" and command[1].startswith(in_progress_key_prefix):
                    into.append(command[1].removeprefix(in_progress_key_prefix))
    finally:
        await client.aclose()


async def test_two_worker_processes_take_jobs_in_position_order(
    redis_server: EmbeddedRedis, redis: Redis, queue: RedisJobQueue
) -> None:
    """Two worker processes share the queue. arq hands a job to a worker by setting its
    in-progress key (a WATCH/MULTI/EXEC transaction); those claims, in the order Redis executed
    them, are the ticket order. Each worker starts its own jobs in ticket order, and every job
    runs exactly once.

    Not asserted: that the job *functions* of two workers begin in ticket order. A claim and the
    start of the function are separate steps in arq, so two workers that claim jobs n and n+1 a
    moment apart may begin them in either order (seen in about half the runs: adjacent swaps).
    Position 1 is the next job handed out, which is what a position promises.
    """
    await submit_from_processes(redis_server.url, redis)
    order = await queue.waiting()
    claims: list[str] = []
    ready = asyncio.Event()
    monitor = asyncio.create_task(_claims(redis_server.url, claims, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await run_worker_processes(redis_server.url, redis, ["a", "b"])
        await redis.echo(MONITOR_END)
        await asyncio.wait_for(monitor, 10)
    finally:
        if not monitor.done():
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor

    assert claims == [job_id_for(gid) for gid in order]
    runs = await started_jobs(redis)
    assert sorted(gid for _, gid in runs) == sorted(order), "a job ran twice or not at all"
    rank = {gid: i for i, gid in enumerate(order)}
    for name in ("a", "b"):
        mine = [rank[gid] for worker, gid in runs if worker == name]
        assert mine, f"worker {name} ran no job"
        assert mine == sorted(mine), f"worker {name} started its jobs out of ticket order"
    assert await redis.zcard(ARQ_QUEUE) == 0


# ---------------------------------------------------------------------------------------------
# Cancelling, unknown ids, idempotent submissions


async def test_removing_a_middle_job_moves_everyone_behind_it_up(
    redis_server: EmbeddedRedis, redis: Redis, queue: RedisJobQueue
) -> None:
    ids = [11, 2, 303, 4, 55, 6, 7]
    for expected, gid in enumerate(ids, start=1):
        assert await queue.submit(gid, line=LINE) == (expected, expected)

    assert await queue.remove_waiting(55, line=LINE) is True

    remaining = [11, 2, 303, 4, 6, 7]
    assert await queue.waiting() == remaining
    assert [await queue.position(gid, line=LINE) for gid in remaining] == [1, 2, 3, 4, 5, 6]
    assert await queue.position(55, line=LINE) is None
    # the arq job is gone too, so no worker will ever start it; the others are untouched
    assert await redis.zscore(ARQ_QUEUE, job_id_for(55)) is None
    assert not await redis.exists(job_key_prefix + job_id_for(55))
    assert [m.decode() for m in await redis.zrange(ARQ_QUEUE, 0, -1)] == [job_id_for(g) for g in remaining]
    # removing it again, or an id that never waited, is a no-op
    assert await queue.remove_waiting(55, line=LINE) is False
    assert await queue.remove_waiting(999, line=LINE) is False
    assert await queue.waiting() == remaining

    # the next submission goes to the back, behind everyone, with no gap
    assert await queue.submit(8, line=LINE) == (len(ids) + 1, len(remaining) + 1)

    # a worker now starts exactly the waiting jobs, in position order, and never the removed one
    await run_burst_worker(redis_server.url)
    assert [gid for _, gid in await started_jobs(redis)] == [*remaining, 8]


async def test_position_of_an_unknown_job_is_none(queue: RedisJobQueue) -> None:
    assert await queue.position(12345, line=LINE) is None
    await queue.submit(1, line=LINE)
    assert await queue.position(12345, line=LINE) is None
    assert await queue.position(1, line=LINE) == 1


async def test_submitting_twice_is_idempotent(redis: Redis, queue: RedisJobQueue) -> None:
    assert await queue.submit(7, line=LINE) == (1, 1)
    assert await queue.submit(8, line=LINE) == (2, 2)
    payload = await redis.get(job_key_prefix + job_id_for(7))

    assert await queue.submit(7, line=LINE) == (1, 1)
    results = await asyncio.gather(*(queue.submit(7, line=LINE) for _ in range(20)))
    assert set(results) == {(1, 1)}

    assert int(await redis.get(KEYS.ticket)) == 2, "a repeated submission took a ticket"
    assert await queue.waiting() == [7, 8]
    assert await redis.zrange(ARQ_QUEUE, 0, -1, withscores=True) == [
        (job_id_for(7).encode(), 1.0),
        (job_id_for(8).encode(), 2.0),
    ]
    assert await redis.get(job_key_prefix + job_id_for(7)) == payload, "the arq job was rewritten"


async def test_a_reused_ticket_keeps_the_old_place(redis: Redis, queue: RedisJobQueue) -> None:
    """Re-enqueueing with the ticket the row already has (Redis lost the job) puts it back in
    its old place, and later tickets never collide with it."""
    assert await queue.submit(1, line=LINE) == (1, 1)
    assert await queue.submit(2, line=LINE) == (2, 2)
    assert await queue.submit(3, line=LINE) == (3, 3)
    assert await queue.remove_waiting(2, line=LINE) is True  # say Redis forgot it
    assert await queue.submit(2, ticket=2, line=LINE) == (2, 2)
    assert await queue.waiting() == [1, 2, 3]
    assert await queue.submit(9, ticket=7, line=LINE) == (7, 4)  # a ticket beyond the counter moves it on
    assert await queue.submit(10, line=LINE) == (8, 5)
    assert [m.decode() for m in await redis.zrange(ARQ_QUEUE, 0, -1)] == [
        job_id_for(g) for g in (1, 2, 3, 9, 10)
    ]
