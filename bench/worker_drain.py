"""Worker drain: genbot's worker against a bare arq worker, on instant jobs, in one run, on one Redis.

    python -m bench.worker_drain [--db postgres|sqlite] [--n 2000] [--concurrency 10] [--rounds 3]
                                 [--counted 200] [--profile]

Each round, both sides drain ``--n`` jobs at ``--concurrency`` jobs at once, alternated (B G, G B, ...):

- **genbot**: the worker ``genbot worker`` runs (:func:`jobs.worker.build_worker`, its line read
  and pacing, :class:`~jobs.runner.GenerationRunner` built by :func:`bot.app.build_runner` with
  the breaker, the row's transitions, the events and the result), on jobs of the bench plugin
  :mod:`bench.instant_jobs`, whose function returns at once: what is timed is genbot's own cost
  per job. The jobs are queued before the round (not timed) as members queue them: whole requests
  through the local chat (``Genbot.handle``, see :func:`bench.submit_throughput.request_op`).
- **bare**: an ``arq.Worker`` of arq's own pool and defaults, ``max_jobs`` the same concurrency,
  ``keep_result`` genbot's, running a no-op function, on jobs queued with ``enqueue_job`` before
  the round; ``poll_delay`` 0 (``--bare-poll-delay``): it reads its queue again at once, the
  fastest arq drains (arq waits on a slot itself when every slot is busy).

Both run in this process on a redis-server of this run's own (flushed before each round), from
their start until the last job has ended and its task is done. Printed: jobs/s per side (median of
the rounds), the genbot/bare ratio against issue 15's goal (>= 0.5), and the CPU of this process per
job (everything here is the worker's). Then, counted in ``--counted`` more jobs of each side (not
timed), the Redis round trips and SQL statements per job (:mod:`bench.counting`; the round trips
include the polls, the heartbeats and the claims, spread over the jobs), and the commands Redis ran
per job. ``--profile``: one more genbot round under cProfile. The PostgreSQL database is the run's
own (admin URL ``GENBOT_TEST_POSTGRES_URL``), dropped at the end. Always exits 0 unless something
crashed or a job did not succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arq import Worker
from arq.connections import RedisSettings, create_pool
from arq.worker import func

from bench import instant_jobs
from bench.counting import Counts
from bench.queue_scale import database
from bench.submit_throughput import Op, empty_redis, local_chat, profile_round, request_op, settings_for
from bot.app import Runtime, build_runner, runtime
from bot.embedded_redis import embedded_redis
from bot.models import State
from jobs.worker import build_worker, close_worker
from storage.models import GenerationRow

TARGET_RATIO = 0.5
BARE_QUEUE = "bare:queue"
BARE_FUNCTION = "noop"
#: Requests in flight while a round's jobs are queued (not timed).
SEED_CONCURRENCY = 32
WARMUP = 100
#: How often the bench looks whether a side has drained (no I/O: the worker's own counters).
CHECK_S = 0.002


@dataclass
class Drain:
    side: str
    n: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.n / self.wall_s


@dataclass
class Side:
    name: str
    rounds: list[Drain] = field(default_factory=list)

    @property
    def median_rate(self) -> float:
        return statistics.median(r.rate for r in self.rounds)

    @property
    def cpu_ms_per_job(self) -> float:
        return sum(r.cpu_s for r in self.rounds) / sum(r.n for r in self.rounds) * 1000


async def noop(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> None:
    """The bare side's job."""


async def in_flight(op: Op, start: int, n: int, concurrency: int) -> None:
    indices = iter(range(start, start + n))

    async def one() -> None:
        for i in indices:
            await op(i)

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(one())


def ended(worker: Worker) -> int:
    w: Any = worker  # arq's counters are untyped
    return int(w.jobs_complete + w.jobs_failed + w.jobs_retried)


async def drained(side: str, worker: Worker, n: int) -> Drain:
    """Run ``worker`` until ``n`` jobs have ended and their tasks are done; then close it."""
    w: Any = worker
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    task = asyncio.create_task(worker.async_run(), name=f"bench-{side}-worker")
    try:
        while ended(worker) < n or not all(t.done() for t in w.tasks.values()):
            if task.done():
                task.result()
                raise RuntimeError(f"{side}: the worker stopped after {ended(worker)} of {n} jobs")
            await asyncio.sleep(CHECK_S)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await close_worker(worker)
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if w.jobs_failed or w.jobs_retried:
        raise RuntimeError(f"{side}: {w.jobs_failed} jobs failed and {w.jobs_retried} retried")
    return Drain(side, n, wall, cpu)


class Bench:
    """The two sides, each in two steps: ``seed_*`` queues a round's jobs (not timed, not
    counted), ``drain_*`` runs a worker until they have ended."""

    def __init__(self, rt: Runtime, args: argparse.Namespace) -> None:
        self.rt = rt
        self.args = args
        self.request = request_op(rt, local_chat(rt), instant_jobs.KIND, {"text": "drain", "steps": "0"})
        self.counter = 0
        self.done = 0
        self.tag = uuid.uuid4().hex[:6]

    async def seed_genbot(self, n: int) -> None:
        await empty_redis(self.rt)
        await in_flight(self.request, self.counter, n, SEED_CONCURRENCY)
        self.counter += n

    async def drain_genbot(self, n: int) -> Drain:
        worker = build_worker(
            self.rt.settings,
            runner=build_runner(self.rt),
            queue=self.rt.queue,
            line=instant_jobs.KIND,
            concurrency=self.args.concurrency,
            handle_signals=False,
        )
        result = await drained("genbot", worker, n)
        self.done += n
        if (done := await GenerationRow.filter(state=State.SUCCEEDED).count()) != self.done:
            raise RuntimeError(f"genbot: {done} rows succeeded, expected {self.done}")
        return result

    async def seed_bare(self, n: int) -> None:
        await empty_redis(self.rt)
        redis = self.rt.redis

        async def enqueue(i: int) -> None:
            job = await redis.enqueue_job(
                BARE_FUNCTION, i, _job_id=f"bare:{self.tag}:{i}", _queue_name=BARE_QUEUE
            )
            if job is None:
                raise RuntimeError(f"bare job {i} was not enqueued (duplicate id)")

        await in_flight(enqueue, self.counter, n, SEED_CONCURRENCY)
        self.counter += n

    async def drain_bare(self, n: int) -> Drain:
        worker = Worker(
            functions=[func(noop, name=BARE_FUNCTION)],
            queue_name=BARE_QUEUE,
            redis_pool=await create_pool(RedisSettings.from_dsn(self.rt.settings.redis.url)),
            max_jobs=self.args.concurrency,
            keep_result=60,
            poll_delay=self.args.bare_poll_delay,
            handle_signals=False,
        )
        return await drained("bare", worker, n)

    async def round(self, side: str, n: int, counts: Counts | None = None) -> Drain:
        """Queue ``n`` jobs of ``side``, then drain them (counting the drain into ``counts``)."""
        await (self.seed_genbot if side == "genbot" else self.seed_bare)(n)
        drain = self.drain_genbot if side == "genbot" else self.drain_bare
        if counts is None:
            return await drain(n)
        with counts.counting():
            return await drain(n)


async def commands_processed(rt: Runtime) -> int:
    """Commands redis-server has run since it started (a script counts once; so does this read)."""
    return int((await rt.redis.info("stats"))["total_commands_processed"])


async def count_drain(bench: Bench, side: str, n: int) -> str:
    """Per job of ``side``: this process's Redis round trips and SQL statements while its worker
    drains ``n`` jobs, and the commands Redis ran meanwhile."""
    counts = Counts()
    await (bench.seed_genbot if side == "genbot" else bench.seed_bare)(n)
    before = await commands_processed(bench.rt)
    with counts.counting():
        await (bench.drain_genbot if side == "genbot" else bench.drain_bare)(n)
    ran = (await commands_processed(bench.rt) - before - 1) / n
    return f"{counts.per(n)}; Redis ran {ran:.1f} commands"


async def run(args: argparse.Namespace, db_url: str, redis_url: str, tmp: Path) -> None:
    settings = settings_for(redis_url, db_url, tmp).model_copy(deep=True)
    settings.plugins.modules = ["bench.instant_jobs:plugin"]
    settings.quota.max_running = 10**6  # never holds a member's job aside: every job runs
    async with runtime(settings) as rt:
        bench = Bench(rt, args)
        sides = {"bare": Side("bare"), "genbot": Side("genbot")}
        for name in sides:  # warm-up: connections, scripts, lazy imports
            await bench.round(name, args.warmup)
        for r in range(args.rounds):
            for name in ("bare", "genbot") if r % 2 == 0 else ("genbot", "bare"):
                result = await bench.round(name, args.n)
                sides[name].rounds.append(result)
                print(
                    f"  round {r + 1} {name:<7}{result.rate:8.0f} jobs/s  ({result.wall_s:.2f} s; "
                    f"CPU {result.cpu_s / result.n * 1000:.2f} ms/job)",
                    flush=True,
                )
        report(args, sides)
        if args.counted:
            print(f"\ncounted (not timed), per job, {args.counted} jobs of each side:")
            for name in sides:
                print(f"  {name:<7}{await count_drain(bench, name, args.counted)}", flush=True)
        if args.profile:
            prof = cProfile.Profile()
            await bench.seed_genbot(args.n)
            prof.enable()
            try:
                result = await bench.drain_genbot(args.n)
            finally:
                prof.disable()
            print(f"\nprofiled genbot drain: {result.rate:.0f} jobs/s under cProfile (slower than real)")
            profile_round(
                prof, argparse.Namespace(profile="worker drain", n=args.n, profile_top=args.profile_top)
            )


def report(args: argparse.Namespace, sides: dict[str, Side]) -> None:
    bare, gen = sides["bare"], sides["genbot"]
    print(
        f"\nworker drain: db={args.db}, n={args.n}/round, concurrency={args.concurrency}, "
        f"rounds={args.rounds}, cores={os.cpu_count()}, bare poll_delay={args.bare_poll_delay:g} s"
    )
    print(f"{'side':<8}{'jobs/s median':>15}{'min':>8}{'max':>8}{'CPU ms/job':>12}")
    for side in (bare, gen):
        rates = [r.rate for r in side.rounds]
        print(
            f"{side.name:<8}{side.median_rate:>15.0f}{min(rates):>8.0f}{max(rates):>8.0f}"
            f"{side.cpu_ms_per_job:>12.2f}"
        )
    ratio = gen.median_rate / bare.median_rate
    verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
    print(f"RATIO genbot/bare = {ratio:.3f}   (issue 15's goal >= {TARGET_RATIO}: {verdict})")
    print(
        f"genbot's CPU per job: {gen.cpu_ms_per_job:.2f} ms against {bare.cpu_ms_per_job:.2f} ms bare "
        f"({gen.cpu_ms_per_job / bare.cpu_ms_per_job:.1f}x; this process: the worker, its runner, its pools)"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genbot-drain-") as tmpdir:
        tmp = Path(tmpdir)
        async with embedded_redis() as server, database(args.db, tmp, "drain") as db_url:
            await run(args, db_url, server.url, tmp)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_drain", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--n", type=int, default=2000, help="jobs per round (2000)")
    parser.add_argument("--concurrency", type=int, default=10, help="jobs at once, both sides (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (3)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help=f"jobs of each side's warm-up ({WARMUP})")
    parser.add_argument(
        "--counted", type=int, default=200, help="jobs of each side counted afterwards (200; 0: none)"
    )
    parser.add_argument(
        "--bare-poll-delay", type=float, default=0.0, help="the bare arq worker's poll_delay, s (0)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="afterwards, one more genbot round under cProfile"
    )
    parser.add_argument("--profile-top", type=int, default=30, help="rows of the profile (30)")
    args = parser.parse_args(argv)
    for name in ("n", "concurrency", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
