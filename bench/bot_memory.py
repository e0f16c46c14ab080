"""The bot's memory with 10,000 active jobs: the resident memory of a real ``genbot bot`` process
(the local chat, ``Genbot``, the renderer) idle, then holding N queued jobs whose status messages it
posted and renders, in one run.

    python -m bench.bot_memory [--db postgres|sqlite] [--jobs 1000 10000] [--concurrency 16]

One ``genbot bot`` process (``python -m bot.cli bot``, platform ``local``) on a redis-server and a
database of the run's own (PostgreSQL: created, migrated and dropped by the run, admin URL
``GENBOT_TEST_POSTGRES_URL``; SQLite: a temporary file), with no worker: every job stays queued.
Its resident set (``VmRSS`` of ``/proc/<pid>/status``, the whole process, not only what Python
allocated) is read:

- **idle**: once it listens, before any command (the anchor);
- at each count of ``--jobs`` (default 1,000 and 10,000): members send ``/imagine`` through the
  local chat's HTTP API (``POST /api/command``, ``--concurrency`` at once), the bot submits each,
  posts its status message (or hands it to the renderer when the chat's write budget is spent) and
  the renderer takes the "attached" event; once every row has its message and the renderer's
  consumer group has nothing pending or unread, and after ``SETTLE_S``, the median of a few reads.

Printed: MiB at each count, growth over idle (MiB, and bytes per job), and the marginal bytes per
job between the first and the last count (what one more job holds, without the one-off costs of
the first commands: lazy imports, pools, caches). The process's peak (``VmHWM``) too. Nothing here
is an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from bench.queue_scale import database
from bot.embedded_redis import EmbeddedRedis, embedded_redis, free_port
from jobs.constants import RENDER_GROUP, Keys

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "gbm"
MEMBERS = [f"Member{i}" for i in range(32)]
#: After the renderer caught up, before reading the resident set (late frees, the allocator).
SETTLE_S = 2.0
READS = 5
START_TIMEOUT_S = 60.0
#: How long the renderer may take to catch up, per job (the local chat writes 200 a second).
CATCH_UP_S_PER_JOB = 0.05


@dataclass
class Memory:
    jobs: int
    rss_kib: int
    seconds: float  # to submit and render this step's jobs


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


async def resident_kib(pid: int) -> int:
    """The median of ``READS`` reads of the process's resident set, ``SETTLE_S`` after now."""
    await asyncio.sleep(SETTLE_S)
    reads = []
    for _ in range(READS):
        reads.append(status_kib(pid, "VmRSS"))
        await asyncio.sleep(0.2)
    return int(statistics.median(reads))


def bot_env(redis_url: str, db_url: str, work: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GENBOT_PLATFORM": "local",
        "GENBOT_REDIS__URL": redis_url,
        "GENBOT_REDIS__KEY_PREFIX": PREFIX,
        "GENBOT_REDIS__QUEUE_NAME": f"{PREFIX}:queue",
        "GENBOT_DATABASE__URL": db_url,
        "GENBOT_BLOBS__DIR": str(work / "blobs"),
        "GENBOT_LOCAL__HOST": "127.0.0.1",
        "GENBOT_LOCAL__PORT": str(port),
        "GENBOT_LOCAL__MEMBERS": ",".join(MEMBERS),
        "GENBOT_LOCAL__ADMINS": MEMBERS[0],
        "GENBOT_QUOTA__MAX_QUEUED": "1000000",
        "GENBOT_QUOTA__RATE_COUNT": "1000000",
        "GENBOT_QUOTA__GLOBAL_MAX": "1000000",
        "GENBOT_LOG_LEVEL": "WARNING",
    }


@contextlib.asynccontextmanager
async def bot_process(redis: EmbeddedRedis, db_url: str, work: Path) -> AsyncIterator[tuple[int, str]]:
    """``genbot bot`` until the block ends (SIGTERM, then its shutdown); yields its pid and the
    local chat's base URL once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(work / "bot.log", "ab") as log:  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "bot",
            cwd=work,  # no .env of a checkout is read
            env=bot_env(redis.url, db_url, work, port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await answering(base, proc, work / "bot.log")
        yield proc.pid, base
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def answering(base: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise SystemExit(f"the bot exited at start-up: see {log}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/api/session"):
                    return
            await asyncio.sleep(0.1)
    raise SystemExit(f"the bot did not answer within {START_TIMEOUT_S:.0f} s: see {log}")


async def send_commands(base: str, first: int, count: int, concurrency: int) -> int:
    """``count`` ``/imagine`` commands from the members in turn; returns how many were refused."""
    numbers = iter(range(first, first + count))
    refused = 0

    async def member(http: aiohttp.ClientSession) -> None:
        nonlocal refused
        for i in numbers:
            body = {"user_id": MEMBERS[i % len(MEMBERS)].lower(), "text": f"/imagine a red fox {i} steps: 4"}
            async with http.post(f"{base}/api/command", json=body) as resp:
                answer = await resp.json()
                refused += not (resp.status == 200 and answer.get("ok"))

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http, asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(member(http))
    return refused


async def rendered(redis: Redis, db_url: str, jobs: int, platform: str = "local") -> bool:
    """Whether all ``jobs`` are queued with a posted message and the renderer of ``platform`` has
    read and acknowledged every event."""
    keys = Keys(PREFIX)
    groups = await redis.xinfo_groups(keys.events)
    name = RENDER_GROUP.format(platform=platform)
    group = next((g for g in groups if g["name"] in (name, name.encode())), None)
    if group is None or int(group["pending"]) or int(group.get("lag") or 0):
        return False
    return await posted(db_url) >= jobs


async def posted(db_url: str) -> int:
    """Queued rows whose status message is posted (read with a connection of the bench's own)."""
    if db_url.startswith("sqlite"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite://"))) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM generations WHERE state = 'queued' "
                "AND json_extract(message, '$.message_id') IS NOT NULL"
            ).fetchone()
        return int(count)
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM generations WHERE state = 'queued' AND message ? 'message_id'"
            )
        )
    finally:
        await conn.close()


async def caught_up(redis: Redis, db_url: str, jobs: int, give_up_s: float) -> None:
    deadline = time.monotonic() + give_up_s
    while not await rendered(redis, db_url, jobs):
        if time.monotonic() > deadline:
            raise SystemExit(f"the bot did not post and render {jobs} jobs within {give_up_s:.0f} s")
        await asyncio.sleep(0.5)


async def bench(args: argparse.Namespace, work: Path) -> tuple[int, list[Memory], int, int]:
    async with embedded_redis() as server, database(args.db, work, "mem") as db_url:
        redis = Redis.from_url(server.url)
        try:
            async with bot_process(server, db_url, work) as (pid, base):
                idle = await resident_kib(pid)
                print(f"  idle: {idle / 1024:.1f} MiB", flush=True)
                steps: list[Memory] = []
                sent = refused = 0
                for target in sorted(args.jobs):
                    t0 = time.perf_counter()
                    refused += await send_commands(base, sent, target - sent, args.concurrency)
                    await caught_up(redis, db_url, target - refused, 60 + target * CATCH_UP_S_PER_JOB)
                    took = time.perf_counter() - t0
                    sent = target
                    steps.append(Memory(target - refused, await resident_kib(pid), took))
                    print(f"  {target:,} jobs: {steps[-1].rss_kib / 1024:.1f} MiB ({took:.0f} s)", flush=True)
                peak = status_kib(pid, "VmHWM")
        finally:
            await redis.aclose()
    return idle, steps, peak, refused


def report(args: argparse.Namespace, idle: int, steps: list[Memory], peak: int, refused: int) -> None:
    print(f"\nbot memory: one `genbot bot` (local chat), db={args.db}, {os.cpu_count()} cores, no worker")
    print(f"  {'active jobs':>12}{'RSS MiB':>10}{'growth MiB':>12}{'bytes/job':>11}{'took s':>8}")
    print(f"  {'idle':>12}{idle / 1024:>10.1f}{'(anchor)':>12}")
    for step in steps:
        growth = (step.rss_kib - idle) * 1024
        print(
            f"  {step.jobs:>12,}{step.rss_kib / 1024:>10.1f}{growth / 2**20:>12.1f}"
            f"{growth / step.jobs:>11,.0f}{step.seconds:>8.0f}"
        )
    if len(steps) > 1:
        first, last = steps[0], steps[-1]
        marginal = (last.rss_kib - first.rss_kib) * 1024 / (last.jobs - first.jobs)
        print(f"  marginal, {first.jobs:,} -> {last.jobs:,} jobs: {marginal:,.0f} bytes per job")
    last = steps[-1]
    print(
        f"RATIO RSS with {last.jobs:,} jobs / idle = {last.rss_kib / idle:.2f}; peak (VmHWM) "
        f"{peak / 1024:.1f} MiB" + (f"; {refused} commands refused" if refused else "")
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genbot-bot-memory-") as tmpdir:
        print(f"bot memory: {', '.join(f'{n:,}' for n in sorted(args.jobs))} jobs ...", flush=True)
        report(args, *await bench(args, Path(tmpdir)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bot_memory", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--jobs", type=int, nargs="+", default=[1000, 10_000], help="active jobs to read at (1000 10000)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="commands in flight (16)")
    args = parser.parse_args(argv)
    if min(args.jobs) < 1 or args.concurrency < 1:
        parser.error("--jobs and --concurrency must be at least 1")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
