"""Submit throughput: genbot's full submit path against raw arq, in one run, on one Redis.

    python -m bench.submit_throughput [--db postgres|sqlite] [--n 2000] [--concurrency 50]
                                      [--rounds 3] [--pg-maxsize N] [--profile]

- baseline: ``ArqRedis.enqueue_job("generate", i, _job_id=...)``, ``--concurrency`` asyncio tasks.
- genbot: ``validate_imagine`` on raw options, then ``Genbot.submit(NewGeneration(...))``: row
  insert, ticket and position (one Lua script, which also writes the arq job), ``set_ticket``.

Both sides share one arq pool on a redis-server of this run's own (``bot.embedded_redis``), flushed
before every round; rounds alternate (B G, G B, B G, ...). The PostgreSQL database is created,
migrated and dropped by the run (admin URL: ``GENBOT_BENCH_POSTGRES_URL``, default
``postgres://postgres@127.0.0.1:5432/postgres``). Prints medians, the genbot/baseline ratio against
the target, submit latency p50/p99, CPU use of this process and peak RSS growth. Always exits 0
unless something crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from tortoise.expressions import F

from bot.app import Runtime, runtime
from bot.commands import validate_imagine
from bot.config import Settings, load_settings
from bot.embedded_redis import embedded_redis
from bot.models import Actor, NewGeneration
from storage import db
from storage.models import GenerationRow

TARGET_RATIO = 0.5
PG_ADMIN_URL = os.environ.get("GENBOT_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
RAW_OPTIONS = {"prompt": "a red fox in snow", "steps": "20"}
WARMUP = 200

Op = Callable[[int], Awaitable[object]]


@dataclass
class Round:
    side: str
    n: int
    wall_s: float
    cpu_s: float
    latencies: list[float]
    rss_peak_growth_kb: int

    @property
    def rate(self) -> float:
        return self.n / self.wall_s


@dataclass
class Side:
    name: str
    rounds: list[Round] = field(default_factory=list)

    @property
    def median_rate(self) -> float:
        return statistics.median(r.rate for r in self.rounds)

    def latency(self, q: float) -> float:
        values = sorted(v for r in self.rounds for v in r.latencies)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    @property
    def cpu_share(self) -> float:
        return sum(r.cpu_s for r in self.rounds) / sum(r.wall_s for r in self.rounds)

    @property
    def rss_growth_kb(self) -> int:
        return sum(r.rss_peak_growth_kb for r in self.rounds)


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def current_rss_kb() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


async def run_round(side: str, op: Op, start: int, n: int, concurrency: int) -> Round:
    """``n`` calls of ``op(start..start+n-1)`` from ``concurrency`` tasks; per-call latency."""
    latencies: list[float] = []
    indices = iter(range(start, start + n))

    async def worker() -> None:
        for i in indices:
            t0 = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t0)

    rss0 = peak_rss_kb()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    assert len(latencies) == n
    return Round(side, n, wall, cpu, latencies, peak_rss_kb() - rss0)


def make_ops(rt: Runtime, run_tag: str) -> tuple[Op, Op]:
    redis = rt.redis
    queue_name = rt.settings.redis.queue_name
    core = rt.core
    spec = core.specs["imagine"]
    limits = rt.settings.limits
    backend = rt.settings.backend.name

    async def baseline(i: int) -> None:
        job = await redis.enqueue_job("generate", i, _job_id=f"bench:{run_tag}:{i}", _queue_name=queue_name)
        if job is None:
            raise RuntimeError(f"baseline job {i} was not enqueued (duplicate id)")

    async def genbot(i: int) -> None:
        options = validate_imagine(spec, dict(RAW_OPTIONS), limits)
        actor = Actor("local", "bench", f"user{i % 64}", f"Bench {i % 64}")
        await core.submit(NewGeneration(actor, "bench", options, backend))

    return baseline, genbot


async def check_round(rt: Runtime, side: str, n: int) -> None:
    """What a round must leave in Redis: n arq jobs (and, for genbot, n waiting entries)."""
    queued = await rt.redis.zcard(rt.settings.redis.queue_name)
    if queued != n:
        raise RuntimeError(f"{side}: {queued} jobs in the arq queue, expected {n}")
    if side == "genbot":
        waiting = await rt.redis.zcard(f"{rt.settings.redis.key_prefix}:waiting")
        if waiting != n:
            raise RuntimeError(f"genbot: {waiting} waiting entries, expected {n}")


def settings_for(redis_url: str, db_url: str, tmp: Path) -> Settings:
    return load_settings(
        _env_file=None,
        redis={"url": redis_url, "key_prefix": "gb", "queue_name": "gb:queue"},
        database={"url": db_url},
        blobs={"dir": tmp / "blobs"},
        backend={"name": "demo"},
    )


async def bench(args: argparse.Namespace, db_url: str, redis_url: str, tmp: Path) -> None:
    settings = settings_for(redis_url, db_url, tmp)
    rss_start = peak_rss_kb()
    async with runtime(settings) as rt:
        baseline, genbot = make_ops(rt, uuid.uuid4().hex[:6])
        ops = {"baseline": baseline, "genbot": genbot}
        sides = {name: Side(name) for name in ops}
        counter = 0

        # Warm-up: open the Redis and database connections, load the Lua script, import lazily.
        for name, op in ops.items():
            await rt.redis.flushall()
            await run_round(name, op, counter, WARMUP, args.concurrency)
            counter += WARMUP
        rss_warm = peak_rss_kb()

        for r in range(args.rounds):
            order = ("baseline", "genbot") if r % 2 == 0 else ("genbot", "baseline")
            for name in order:
                await rt.redis.flushall()
                result = await run_round(name, ops[name], counter, args.n, args.concurrency)
                counter += args.n
                await check_round(rt, name, args.n)
                sides[name].rounds.append(result)
                print(
                    f"  round {r + 1} {name:<8} {result.rate:8.0f} submits/s"
                    f"  ({result.wall_s:.2f} s wall, cpu {result.cpu_s / result.wall_s:4.0%})",
                    flush=True,
                )
        rss_end = peak_rss_kb()

        report(args, db_url, sides, rss_start, rss_warm, rss_end)

        if args.breakdown:
            await breakdown(rt, args)
        if args.profile:
            await rt.redis.flushall()
            profile_round(await profiled(genbot, counter, args), args)


async def breakdown(rt: Runtime, args: argparse.Namespace) -> None:
    """Each step of the submit path alone, same n and concurrency: where the time goes."""
    core, store, queue = rt.core, rt.store, rt.queue
    spec, limits = core.specs["imagine"], rt.settings.limits
    options = validate_imagine(spec, dict(RAW_OPTIONS), limits)
    actor = Actor("local", "bench", "user0", "Bench")
    new = NewGeneration(actor, "bench", options, rt.settings.backend.name)
    ids: list[int] = []

    async def validate(_i: int) -> None:
        validate_imagine(spec, dict(RAW_OPTIONS), limits)

    async def create(_i: int) -> None:
        ids.append((await store.create(new)).id)

    async def lua(i: int) -> None:
        await queue.submit(ids[i])

    async def update_ticket(i: int) -> None:
        await GenerationRow.filter(id=ids[i]).update(ticket=i + 1, version=F("version") + 1)

    async def update_meta(i: int) -> None:
        await store.update_meta(ids[i], {"position_at_submit": i + 1})

    async def set_ticket(i: int) -> None:
        await store.set_ticket(ids[i], i + 1, i + 1)

    steps: list[tuple[str, Op, str]] = [
        ("validate_imagine", validate, "CPU only"),
        ("store.create", create, "INSERT ... RETURNING"),
        ("queue.submit", lua, "EVALSHA, 1 Redis round trip"),
        ("UPDATE ticket", update_ticket, "set_ticket, statement 1"),
        ("store.update_meta", update_meta, "set_ticket, statement 2 (plpgsql merge)"),
        ("store.set_ticket", set_ticket, "both statements"),
    ]
    print(f"\nbreakdown: each step alone, n={args.n}, concurrency={args.concurrency}")
    print(f"{'step':<20}{'ops/s':>9}{'us/op':>8}{'p50 ms':>9}{'cpu':>6}  what")
    await rt.redis.flushall()
    for name, op, what in steps:
        result = await run_round(name, op, 0, args.n, args.concurrency)
        p50 = sorted(result.latencies)[len(result.latencies) // 2] * 1000
        print(
            f"{name:<20}{result.rate:>9.0f}{1e6 / result.rate:>8.0f}{p50:>9.2f}"
            f"{result.cpu_s / result.wall_s:>6.0%}  {what}"
        )


async def profiled(op: Op, start: int, args: argparse.Namespace) -> cProfile.Profile:
    prof = cProfile.Profile()
    prof.enable()
    try:
        result = await run_round("genbot", op, start, args.n, args.concurrency)
    finally:
        prof.disable()
    print(f"\nprofiled genbot round: {result.rate:.0f} submits/s under cProfile (slower than real)")
    return prof


def profile_round(prof: cProfile.Profile, args: argparse.Namespace) -> None:
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key)
        stats.print_stats(args.profile_top)
        print(f"\n--- cProfile, one genbot round of {args.n}, top {args.profile_top} by {key} ---")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])


def report(
    args: argparse.Namespace,
    db_url: str,
    sides: dict[str, Side],
    rss_start: int,
    rss_warm: int,
    rss_end: int,
) -> None:
    base, gen = sides["baseline"], sides["genbot"]
    ratio = gen.median_rate / base.median_rate
    shown_db = db_url.split("@")[-1] if args.db == "postgres" else "sqlite (temp file)"
    print()
    print(
        f"submit throughput: db={args.db} ({shown_db}), n={args.n}/round, "
        f"concurrency={args.concurrency}, rounds={args.rounds}, cores={os.cpu_count()}"
    )
    header = (
        f"{'side':<10}{'median/s':>10}{'min/s':>9}{'max/s':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'cpu':>6}{'peak RSS +':>12}"
    )
    print(header)
    print("-" * len(header))
    for side in (base, gen):
        rates = [r.rate for r in side.rounds]
        print(
            f"{side.name:<10}{side.median_rate:>10.0f}{min(rates):>9.0f}{max(rates):>9.0f}"
            f"{side.latency(0.50) * 1000:>9.2f}{side.latency(0.99) * 1000:>9.2f}"
            f"{side.cpu_share:>6.0%}{side.rss_growth_kb / 1024:>10.1f} MB"
        )
    print("-" * len(header))
    verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
    print(f"RATIO genbot/baseline = {ratio:.3f}   (target >= {TARGET_RATIO}: {verdict})")
    current = current_rss_kb()
    print(
        f"peak RSS: {rss_start / 1024:.1f} MB at start, {rss_warm / 1024:.1f} MB after warm-up, "
        f"{rss_end / 1024:.1f} MB after the rounds (growth {(rss_end - rss_start) / 1024:.1f} MB"
        f", {(rss_end - rss_warm) / 1024:.1f} MB during the rounds)"
        + (f"; current RSS {current / 1024:.1f} MB" if current else "")
    )
    print("cpu = CPU time of this process / wall time (1 core = 100%)")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genbot-bench-") as tmpdir:
        tmp = Path(tmpdir)
        async with embedded_redis() as server:
            if args.db == "sqlite":
                url = f"sqlite://{tmp / 'bench.sqlite3'}"
                await db.migrate(url)
                await bench(args, url, server.url, tmp)
                return
            admin = await asyncio.wait_for(asyncpg.connect(PG_ADMIN_URL), 10)
            name = f"genbot_bench_{uuid.uuid4().hex[:10]}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
                await db.migrate(url)
                if args.pg_maxsize:
                    url += f"?maxsize={args.pg_maxsize}"
                await bench(args, url, server.url, tmp)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.submit_throughput", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--n", type=int, default=2000, help="submissions per round (2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="asyncio tasks (50)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (3)")
    parser.add_argument(
        "--pg-maxsize",
        type=int,
        default=0,
        help="PostgreSQL pool size via the db_url's ?maxsize= (default: Tortoise's own, 5)",
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="afterwards, time each step of the path alone"
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
