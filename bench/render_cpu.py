"""The bot's CPU per job for rendering: genbot's renderer keeping N jobs' status messages in step
through their life, against a bare read-and-write of as many messages, in one run.

    python -m bench.render_cpu [--db postgres|sqlite] [--jobs 300] [--steps 4] [--step-ms 50]
                               [--concurrency 10] [--counted 100] [--profile]

This process runs what a bot runs to render, and only that: the renderer of ``genbot bot``
(:func:`bot.app.build_renderer`, its consumer group made as a starting bot makes it) over the local
chat as the bot builds it (:func:`bot.app.build_local_chat`; not listening: an edit writes the
chat's log and broadcasts to no socket), with the chat's real write budget (200 a second). The
rest runs in processes of its own, as in a deployment: the jobs are queued by a **submitter**
(this module with ``--submit``: whole requests through ``Genbot.handle`` with the local chat's
responder, :func:`bench.submit_throughput.request_op`, ``--submit-concurrency`` at once, each
posting its status message and storing its reference, or handing the post to the renderer when the
chat's budget is spent, as a bot does), and run by one real ``genbot worker`` (``python -m bot.cli
worker``, ``--concurrency`` jobs at once) on jobs of :mod:`bench.instant_jobs` that report progress
``--steps`` times, ``--step-ms`` apart. So each job's message lives through its whole life: posted
queued, its place as the line moves, started, progress, the result.

- **renderer**: the CPU of this process (``time.process_time``) from before the submitter starts
  until every job has succeeded, every message shows it, and the renderer's consumer group has
  nothing pending or unread; per job, after a warm-up round. Issue 15's goal: at most 2 ms.
- **anchor**: as many bare writes as the renderer made (its ``edits``), each a read of a job's row
  and an UPDATE of its message in the chat's log with the JSON it shows, raw SQL on the same
  connection, one after the other: what rendering costs at the least, per job.

Then, counted in ``--counted`` more jobs (not timed), the renderer's Redis round trips and SQL
statements per job (:mod:`bench.counting`). ``--profile``: one more round under cProfile. The
redis-server and the database (PostgreSQL: admin URL ``GENBOT_TEST_POSTGRES_URL``) are the run's
own. Always exits 0 unless something crashed or a job did not succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tortoise.connection import get_connection

from bench import instant_jobs
from bench.counting import Counts
from bench.queue_scale import database
from bench.submit_throughput import profile_round, request_op
from bot.app import Runtime, build_local_chat, build_renderer, runtime
from bot.config import load_settings
from bot.embedded_redis import embedded_redis
from bot.models import State
from jobs.constants import RENDER_GROUP, Keys
from storage.models import GenerationRow

ROOT = Path(__file__).resolve().parents[1]
GOAL_MS = 2.0
PREFIX = "gbr"
WARMUP = 30
#: How often the bench looks whether the renderer has caught up (its reads cost this process CPU).
CHECK_S = 0.5
#: How long a round may take, per job, past a minute.
GIVE_UP_S_PER_JOB = 0.5


def env_of(redis_url: str, db_url: str, work: Path, args: argparse.Namespace) -> dict[str, str]:
    """The settings every process of the run shares (the submitter's and worker's environment;
    this process reads them too)."""
    return {
        "GENBOT_PLATFORM": "local",
        "GENBOT_REDIS__URL": redis_url,
        "GENBOT_REDIS__KEY_PREFIX": PREFIX,
        "GENBOT_REDIS__QUEUE_NAME": f"{PREFIX}:queue",
        "GENBOT_DATABASE__URL": db_url,
        "GENBOT_BLOBS__DIR": str(work / "blobs"),
        "GENBOT_PLUGINS__MODULES": "bench.instant_jobs:plugin",
        "GENBOT_WORKER__CONCURRENCY": str(args.concurrency),
        "GENBOT_WORKER__LINES": instant_jobs.KIND,
        "GENBOT_QUOTA__MAX_QUEUED": "1000000",
        "GENBOT_QUOTA__RATE_COUNT": "1000000",
        "GENBOT_QUOTA__GLOBAL_MAX": "1000000",
        "GENBOT_QUOTA__MAX_RUNNING": "1000000",
        "GENBOT_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.asynccontextmanager
async def worker_process(env: dict[str, str], work: Path) -> AsyncIterator[None]:
    """``genbot worker`` until the block ends (SIGTERM, then its shutdown)."""
    with open(work / "worker.log", "ab") as log:  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "worker",
            cwd=work,  # no .env of a checkout is read
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def submit(env: dict[str, str], work: Path, first: int, n: int, args: argparse.Namespace) -> None:
    """Queue ``n`` jobs from a submitter process (this module with ``--submit``)."""
    command = [sys.executable, "-m", "bench.render_cpu", "--submit", str(n), "--first", str(first)]
    command += ["--steps", str(args.steps), "--step-ms", str(args.step_ms)]
    command += ["--submit-concurrency", str(args.submit_concurrency)]
    with open(work / "submitter.log", "ab") as log:  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=work,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if await proc.wait() != 0:
            raise SystemExit(f"the submitter failed: see {work / 'submitter.log'}")


async def submitter(args: argparse.Namespace) -> None:
    """``--submit N``: N whole requests, then exit (settings from the environment)."""
    async with runtime(load_settings(_env_file=None)) as rt:
        chat = build_local_chat(rt)
        build_renderer(rt, chat)  # the bot's write budgets in the core; this renderer is not run
        options = {"text": "render", "steps": str(args.steps), "step_ms": str(args.step_ms)}
        request = request_op(rt, chat, instant_jobs.KIND, options)
        numbers = iter(range(args.first, args.first + args.submit))

        async def one() -> None:
            for i in numbers:
                await request(i)

        async with asyncio.TaskGroup() as tg:
            for _ in range(args.submit_concurrency):
                tg.create_task(one())


async def shown_final(rt: Runtime) -> int:
    """Status messages of the local chat that show a job succeeded."""
    conn = get_connection("default")
    if conn.capabilities.dialect == "postgres":
        sql = "SELECT count(*) AS n FROM chat_messages WHERE status->>'state' = 'succeeded'"
    else:
        sql = "SELECT count(*) AS n FROM chat_messages WHERE json_extract(status, '$.state') = 'succeeded'"
    rows = await conn.execute_query_dict(sql)
    return int(rows[0]["n"])


async def caught_up(rt: Runtime, jobs: int) -> bool:
    """Whether ``jobs`` jobs in all have succeeded, their messages show it, and the renderer has
    read and acknowledged every event."""
    if await GenerationRow.filter(state=State.SUCCEEDED).count() < jobs:
        return False
    groups = await rt.redis.xinfo_groups(Keys(PREFIX).events)
    name = RENDER_GROUP.format(platform="local")
    group = next((g for g in groups if g["name"] in (name, name.encode())), None)
    if group is None or int(group["pending"]) or int(group.get("lag") or 0):
        return False
    return await shown_final(rt) >= jobs


@dataclass
class Life:
    jobs: int
    cpu_s: float
    wall_s: float
    edits: int


class Run:
    def __init__(self, rt: Runtime, env: dict[str, str], work: Path, args: argparse.Namespace) -> None:
        self.rt, self.env, self.work, self.args = rt, env, work, args
        self.sent = 0

    async def life(self, n: int, renderer_edits: Callable[[], int]) -> Life:
        """Queue ``n`` jobs and wait until their messages show their end."""
        edits0 = renderer_edits()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await submit(self.env, self.work, self.sent, n, self.args)
        self.sent += n
        deadline = time.monotonic() + 60 + n * GIVE_UP_S_PER_JOB
        while not await caught_up(self.rt, self.sent):
            if time.monotonic() > deadline:
                raise SystemExit(f"the jobs did not all succeed and show it: see {self.work}/*.log")
            await asyncio.sleep(CHECK_S)
        return Life(n, time.process_time() - cpu0, time.perf_counter() - t0, renderer_edits() - edits0)


async def anchor(edits: int) -> float:
    """CPU seconds of ``edits`` bare writes: each a read of a job's row and an UPDATE of its
    message with the JSON it shows, raw SQL, one after the other."""
    conn = get_connection("default")
    pg = conn.capabilities.dialect == "postgres"
    p1, p2, p3 = ("$1", "$2", "$3") if pg else ("?", "?", "?")
    ids = [int(r["id"]) for r in await conn.execute_query_dict('SELECT "id" FROM "generations"')]
    messages = await conn.execute_query_dict('SELECT "id", "status" FROM "chat_messages" ORDER BY "id"')
    shown = [
        (int(m["id"]), m["status"] if isinstance(m["status"], str) else json.dumps(m["status"]))
        for m in messages
    ]
    select = f'SELECT * FROM "generations" WHERE "id" = {p1}'
    update = f'UPDATE "chat_messages" SET "status" = {p1}, "edited_at" = {p2} WHERE "id" = {p3}'
    cpu0 = time.process_time()
    for k in range(edits):
        await conn.execute_query_dict(select, [ids[k % len(ids)]])
        message_id, status = shown[k % len(shown)]
        await conn.execute_query(update, [status, datetime.now(UTC), message_id])
    return time.process_time() - cpu0


async def bench(args: argparse.Namespace, work: Path) -> None:
    async with embedded_redis() as server, database(args.db, work, "render") as db_url:
        env = env_of(server.url, db_url, work, args)
        with environment(env):
            settings = load_settings(_env_file=None)
        async with runtime(settings) as rt:
            chat = build_local_chat(rt)
            renderer = build_renderer(rt, chat)
            await renderer.feed.ensure_group()
            stop = asyncio.Event()
            rendering = asyncio.create_task(renderer.run(stop), name="bench-renderer")
            run = Run(rt, env, work, args)
            try:
                async with worker_process(env, work):
                    await run.life(args.warmup, lambda: renderer.edits)
                    life = await run.life(args.jobs, lambda: renderer.edits)
                    counts = Counts()
                    if args.counted:
                        with counts.counting():
                            await run.life(args.counted, lambda: renderer.edits)
                    prof = cProfile.Profile() if args.profile else None
                    if prof is not None:
                        prof.enable()
                        try:
                            await run.life(args.jobs, lambda: renderer.edits)
                        finally:
                            prof.disable()
            finally:
                stop.set()
                await rendering
            bare_cpu = await anchor(life.edits)
            report(args, life, bare_cpu, counts)
            if prof is not None:
                shown = argparse.Namespace(profile="renderer", n=args.jobs, profile_top=args.profile_top)
                profile_round(prof, shown)


def report(args: argparse.Namespace, life: Life, bare_cpu: float, counts: Counts) -> None:
    ms = life.cpu_s / life.jobs * 1000
    bare_ms = bare_cpu / life.jobs * 1000
    print(
        f"\nrender CPU: db={args.db}, {life.jobs} jobs ({args.steps} progress steps {args.step_ms} ms apart, "
        f"{args.concurrency} at once), cores={os.cpu_count()}; {life.wall_s:.1f} s"
    )
    print(f"  renderer: {ms:.2f} ms CPU per job, {life.edits / life.jobs:.1f} message writes per job")
    print(f"  bare:     {bare_ms:.2f} ms CPU per job ({life.edits} writes: a row read, a message UPDATE)")
    verdict = "MET" if ms <= GOAL_MS else "NOT MET"
    print(f"RATIO renderer/bare = {ms / bare_ms:.2f}   (issue 15's goal, <= {GOAL_MS:g} ms a job: {verdict})")
    if args.counted:
        print(f"counted (not timed), per job, {args.counted} jobs: {counts.per(args.counted)}")


async def main(args: argparse.Namespace) -> None:
    if args.submit:
        await submitter(args)
        return
    with tempfile.TemporaryDirectory(prefix="genbot-render-cpu-") as tmpdir:
        print(f"render CPU: {args.jobs} jobs ...", flush=True)
        await bench(args, Path(tmpdir))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.render_cpu", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--jobs", type=int, default=300, help="jobs of the measured round (300)")
    parser.add_argument("--steps", type=int, default=4, help="progress reports per job (4)")
    parser.add_argument("--step-ms", type=int, default=50, help="ms between two reports (50)")
    parser.add_argument("--concurrency", type=int, default=10, help="the worker's jobs at once (10)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help=f"jobs of the warm-up round ({WARMUP})")
    parser.add_argument("--submit-concurrency", type=int, default=2, help="requests in flight (2)")
    parser.add_argument("--counted", type=int, default=100, help="jobs counted afterwards (100; 0: none)")
    parser.add_argument("--profile", action="store_true", help="afterwards, one more round under cProfile")
    parser.add_argument("--profile-top", type=int, default=30, help="rows of the profile (30)")
    parser.add_argument("--submit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.submit_concurrency < 1:
        parser.error("--jobs and the concurrencies must be at least 1")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
