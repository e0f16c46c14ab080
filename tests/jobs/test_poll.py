"""The worker's read of its line (jobs/poll.py), against a real Redis of the module's own and real
arq workers: an idle worker finds the waiting job however many jobs run, its poll costs the same
number of Redis commands however many run, and a job left in arq's queue alone (its worker died)
is still found, in ticket order.

The workers' polls are driven by hand (``_poll_iteration``), one at a time or several at once, so
that what each poll finds is known; the jobs they start run as tasks of the test's loop until the
test lets them end. A job does what the runner does first (it leaves the waiting set), notes that
it started, and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker, func
from redis.asyncio import Redis

from bot.embedded_redis import EmbeddedRedis, embedded_redis
from bot.models import job_id_for
from jobs.connections import redis_pool
from jobs.constants import GENERATE_FUNCTION, Keys
from jobs.poll import CLAIM, LineRead
from jobs.queue import RedisJobQueue
from jobs.worker import PatientWorker

LINE = "demo"
KEYS = Keys("poll")


@pytest_asyncio.fixture(scope="module")
async def own_redis() -> AsyncIterator[EmbeddedRedis]:
    """A redis-server no other test talks to: its command counts are this module's alone."""
    async with embedded_redis() as server:
        yield server


class Line:
    """One line's queue, and the workers of it a test made (closed at the end)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = redis_pool(url)
        self.queue = RedisJobQueue(self.redis, KEYS, "poll:queue")
        self.workers: list[Worker] = []
        #: generation ids in the order their jobs started, with the worker that started each
        self.started: list[tuple[str, int]] = []
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()

    async def hold(self, ctx: dict[str, Any], generation_id: int) -> None:
        """The job: leave the waiting set (as ``RedisJobQueue.start`` does), note the start, wait."""
        await self.queue.mark_running(generation_id, line=LINE)
        async with self._changed:
            self.started.append((ctx["name"], generation_id))
            self._changed.notify_all()
        await self.release.wait()

    async def running(self, count: int) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.started) >= count), 20)

    def worker(
        self, name: str, *, jobs: int = 1, read_limit: int | None = None, genbot: bool = True
    ) -> Worker:
        """A worker of the line running ``jobs`` at once; genbot's read, or arq's own."""
        pool = redis_pool(self.url)
        options: dict[str, Any] = {
            "functions": [func(self.hold, name=GENERATE_FUNCTION)],  # type: ignore[arg-type]
            "queue_name": self.queue.line_queue(LINE),
            "redis_pool": pool,
            "max_jobs": jobs,
            "queue_read_limit": read_limit,
            "keep_result": 0,
            "allow_abort_jobs": True,  # as build_worker's
            "handle_signals": False,
            "ctx": {"name": name, "redis": pool},
        }
        if genbot:
            worker: Worker = PatientWorker(
                read=LineRead(
                    pool,
                    waiting_key=KEYS.waiting(LINE),
                    queue_name=self.queue.line_queue(LINE),
                    orphan_read_key=KEYS.orphan_read(LINE),
                    orphans_every_s=3600,  # one per test, at the first poll of the line
                ),
                **options,
            )
        else:
            worker = Worker(**options)
        self.workers.append(worker)
        return worker

    async def submit(self, *generation_ids: int) -> None:
        for generation_id in generation_ids:
            await self.queue.submit(generation_id, line=LINE)

    async def close(self) -> None:
        self.release.set()
        for worker in self.workers:
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
            await worker.pool.aclose()
        await self.redis.aclose()


@pytest_asyncio.fixture
async def line(own_redis: EmbeddedRedis) -> AsyncIterator[Line]:
    client = Redis.from_url(own_redis.url)
    await client.flushall()
    line = Line(own_redis.url)
    await line.queue.seed_tickets(0)
    try:
        yield line
    finally:
        await line.close()
        await client.flushall()
        await client.aclose()


async def hold_running(line: Line, count: int, first_id: int = 1) -> Worker:
    """``count`` jobs submitted and started by one busy worker (which then polls no more)."""
    ids = range(first_id, first_id + count)
    await line.submit(*ids)
    busy = line.worker("busy", jobs=count, read_limit=count)
    await busy._poll_iteration()
    await line.running(count)
    assert sorted(gid for _, gid in line.started) == list(ids)
    return busy


async def test_an_idle_worker_starts_the_waiting_jobs_however_many_run(line: Line) -> None:
    """More jobs run than a poll reads; arq's own read sees only them, genbot's the waiting ones.
    Three idle workers poll at once: each waiting job is claimed by one of them, in ticket order."""
    await hold_running(line, 6)
    await line.submit(7, 8)

    stock = line.worker("arq", read_limit=3, genbot=False)
    await stock._poll_iteration()
    assert [gid for _, gid in line.started if gid > 6] == [], "arq's read sees only running jobs"

    idle = [line.worker(f"idle-{n}", read_limit=3) for n in range(3)]
    await asyncio.gather(*(worker._poll_iteration() for worker in idle))
    await line.running(8)
    late = [(name, gid) for name, gid in line.started if gid > 6]
    assert [gid for _, gid in late] == [7, 8], "started once each, 7 first"
    assert len({name for name, _ in late}) == 2, "by two different workers (one job each)"
    assert await line.queue.waiting(LINE) == []


async def idle_poll_commands(line: Line, worker: Worker, polls: int = 5) -> float:
    """Redis commands per poll of ``worker`` (``total_commands_processed``, which counts the
    commands a script runs too), over ``polls`` polls after a first one (the health check, and
    the line's orphan read, are in the first)."""
    client = Redis.from_url(line.url)
    try:
        await worker._poll_iteration()

        async def processed() -> int:
            return int((await client.info("stats"))["total_commands_processed"])

        before = await processed()
        for _ in range(polls):
            await worker._poll_iteration()
        return (await processed() - before - 1) / polls  # less the INFO of `before`
    finally:
        await client.aclose()


@pytest.mark.parametrize("genbot", [True, False], ids=["genbot's read", "arq's read"])
async def test_an_idle_poll_costs_the_same_however_many_jobs_run(line: Line, genbot: bool) -> None:
    """The Redis commands of an idle worker's poll, with 2 and then 20 jobs running elsewhere:
    the same with genbot's read; with arq's own (the control) they grow with the running jobs."""
    cost = []
    for running, first_id in ((2, 1), (20, 100)):
        await hold_running(line, running, first_id)
        cost.append(await idle_poll_commands(line, line.worker(f"idle-{running}", genbot=genbot)))
        line.release.set()
        for worker in line.workers:
            await asyncio.gather(*worker.tasks.values())
        line.release.clear()
        line.started.clear()
    if genbot:
        assert cost[0] == cost[1], cost
        assert cost[0] <= 8, cost  # the read (and its ZRANGE, SET NX), arq's abort check (MULTI, 2, EXEC)
    else:
        assert cost[1] >= cost[0] + 18 * 3, cost  # WATCH, EXISTS, ZSCORE... per running job


async def test_a_job_left_in_arqs_queue_alone_is_found_in_its_turn(line: Line) -> None:
    """A job whose worker died after starting it is in arq's queue but no longer in the waiting
    set. The line's orphan read (one poll of the line now and then) finds it, ahead of the waiting
    jobs with later tickets; the other polls read the waiting set only."""
    await line.submit(1, 2, 3)
    await line.queue.mark_running(1, line=LINE)  # started; then its worker died, its key expired
    redis = line.redis
    await redis.set(KEYS.orphan_read(LINE), "1", px=3_600_000)  # a recent orphan read

    await line.worker("first")._poll_iteration()
    await line.running(1)
    await redis.delete(KEYS.orphan_read(LINE))  # the orphan read is due
    await line.worker("second")._poll_iteration()
    await line.running(2)
    await line.worker("third")._poll_iteration()
    await line.running(3)

    assert line.started == [("first", 2), ("second", 1), ("third", 3)]
    for generation_id in (1, 2, 3):
        assert await redis.exists(in_progress_key_prefix + job_id_for(generation_id))


async def test_the_orphan_read_skips_what_runs_and_what_waits(line: Line) -> None:
    """With nothing orphaned, the orphan read starts what the plain read would: the waiting head."""
    busy = await hold_running(line, 2)
    await line.submit(3, 4)
    await line.worker("idle")._poll_iteration()  # the line's first poll: the orphan read
    await line.running(3)
    assert line.started[-1] == ("idle", 3)
    assert len(busy.tasks) == 2


async def test_a_busy_worker_starts_the_next_job_as_its_slot_frees(own_redis: EmbeddedRedis) -> None:
    """Every slot busy: the worker reads again as soon as a job ends, not after its poll delay.
    The delay here is a minute, so a worker that slept it out would start nothing in the test's
    time; one job at a time, three jobs run one after the other."""
    client = Redis.from_url(own_redis.url)
    await client.flushall()
    pool = redis_pool(own_redis.url)
    queue = RedisJobQueue(pool, KEYS, "poll:queue")
    await queue.seed_tickets(0)
    gates = {gid: asyncio.Event() for gid in (1, 2, 3)}
    started: asyncio.Queue[int] = asyncio.Queue()

    async def job(_ctx: dict[str, Any], generation_id: int) -> None:
        await queue.mark_running(generation_id, line=LINE)
        started.put_nowait(generation_id)
        await gates[generation_id].wait()

    worker = PatientWorker(
        read=LineRead(
            pool,
            waiting_key=KEYS.waiting(LINE),
            queue_name=queue.line_queue(LINE),
            orphan_read_key=KEYS.orphan_read(LINE),
        ),
        functions=[func(job, name=GENERATE_FUNCTION)],  # type: ignore[arg-type]
        queue_name=queue.line_queue(LINE),
        redis_pool=pool,
        max_jobs=1,
        poll_delay=60,
        keep_result=0,
        handle_signals=False,
    )
    for gid in gates:
        await queue.submit(gid, line=LINE)
    running = asyncio.create_task(worker.async_run())
    try:
        for gid in gates:
            assert await asyncio.wait_for(started.get(), 20) == gid
            gates[gid].set()
    finally:
        await worker.close()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await client.flushall()
        await client.aclose()


async def test_the_claim_script_claims_as_arq_does(line: Line) -> None:
    """``CLAIM`` (arq's claim in one script): a waiting job is claimed once (its in-progress key
    set for arq's in-progress timeout, its score answered); one already claimed, one no longer in
    the queue and one scored later than now are not, and nothing is written for them."""
    queue_name = line.queue.line_queue(LINE)
    claim = line.redis.register_script(CLAIM)
    await line.submit(1)
    job = job_id_for(1)
    in_progress = in_progress_key_prefix + job
    now = timestamp_ms()
    score = await line.redis.zscore(queue_name, job)

    assert await claim(keys=[in_progress, queue_name], args=[job, now, 5000]) == str(int(score)).encode()
    assert await line.redis.get(in_progress) == b"1"
    assert 4000 < await line.redis.pttl(in_progress) <= 5000
    assert await claim(keys=[in_progress, queue_name], args=[job, now, 5000]) is None, "claimed already"

    gone = job_id_for(2)
    assert await claim(keys=[in_progress_key_prefix + gone, queue_name], args=[gone, now, 5000]) is None
    later = job_id_for(3)
    await line.redis.zadd(queue_name, {later: now + 60_000})
    assert await claim(keys=[in_progress_key_prefix + later, queue_name], args=[later, now, 5000]) is None
    assert not await line.redis.exists(in_progress_key_prefix + gone, in_progress_key_prefix + later)


async def test_a_worker_claims_each_job_with_one_script(line: Line) -> None:
    """A genbot worker starting jobs: one claim script each (arq's claim took four round trips),
    and two workers reading the same head still start each job once."""
    await line.submit(1, 2, 3, 4)
    first, second = line.worker("first", jobs=2), line.worker("second", jobs=2)
    client = Redis.from_url(line.url)
    try:
        await client.config_resetstat()
        await asyncio.gather(first._poll_iteration(), second._poll_iteration())
        await line.running(4)
        stats = await client.info("commandstats")
        claimed = await client.keys(in_progress_key_prefix + "*")
    finally:
        await client.aclose()
    assert sorted(gid for _, gid in line.started) == [1, 2, 3, 4], "each job started once"
    assert "cmdstat_watch" not in stats, "no WATCH: the claim is one script"
    assert sorted(claimed) == sorted((in_progress_key_prefix + job_id_for(g)).encode() for g in range(1, 5))
