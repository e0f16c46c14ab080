"""Progress writes: the SQL statements and Redis round trips per progress report of jobs running in
one worker, written one by one (as before issue 15's batching) against the worker's progress
writer (:mod:`jobs.progress`). Counted, not timed.

    python -m bench.progress_writes [--db postgres|sqlite] [--jobs 10] [--reports 20]

``--jobs`` rows are made ``running`` (attempt 0); then each side makes ``--reports`` reports of
each job, in two patterns:

- **at once**: every job reports at the same moment, ``--reports`` times (a round waits for all);
- **back to back**: every job reports in a loop of its own, the next as soon as the last returned.

Sides: **one by one**, what the runner did before: one ``store.record_progress`` (an ``UPDATE``) per
report and, beside it, one ``progress`` event (an ``XADD``) unless the job's last one is still on
its way; **writer**, what it does now: ``ProgressWriter.report``, a group commit of every job's
reports (one ``UPDATE ... FROM (VALUES ...)`` per write) and their events (one pipeline per write).
Each report is a patch as the runner writes it (``progress``, ``waiting``, ``preview``). Printed:
per report, the statements and round trips of each side, and the rows' last patches checked.
The PostgreSQL database is the run's own (admin URL ``GENBOT_TEST_POSTGRES_URL``), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.counting import Counts
from bench.queue_scale import database
from bench.submit_throughput import settings_for
from bot.app import Runtime, runtime
from bot.embedded_redis import embedded_redis
from bot.models import Actor, NewGeneration, State
from jobs.progress import ProgressWriter

ACTOR = Actor(platform="local", workspace="bench", user_id="bench", display_name="Bench")

Report = Callable[[int, dict[str, Any]], Awaitable[bool]]


def patch_of(generation_id: int, step: int, total: int) -> dict[str, Any]:
    return {
        "progress": {"step": step, "total": total},
        "waiting": None,
        "preview": {"key": f"previews/{generation_id}.jpg", "step": step},
    }


async def running_rows(rt: Runtime, n: int) -> list[int]:
    ids = []
    for i in range(n):
        gen = await rt.store.create(
            NewGeneration(ACTOR, "bench", "instant", f"job {i}", {"steps": 1}, backend="instant")
        )
        started = await rt.store.transition(gen.id, State.RUNNING, attempt=0)
        if started is None:
            raise RuntimeError(f"row {gen.id} did not start")
        ids.append(gen.id)
    return ids


def one_by_one(rt: Runtime, telling: dict[int, asyncio.Task[None]]) -> Report:
    """The runner's progress report before the writer: its own UPDATE, its own nudge beside it."""

    async def report(generation_id: int, patch: dict[str, Any]) -> bool:
        recorded = await rt.store.record_progress(generation_id, patch, attempt=0)
        last = telling.get(generation_id)
        if recorded and (last is None or last.done()):
            telling[generation_id] = asyncio.create_task(rt.queue.publish(generation_id, "progress"))
        return recorded

    return report


def batched(rt: Runtime) -> tuple[Report, ProgressWriter]:
    writer = ProgressWriter(rt.store, rt.queue)

    async def report(generation_id: int, patch: dict[str, Any]) -> bool:
        return await writer.report(generation_id, 0, patch)

    return report, writer


async def at_once(report: Report, ids: list[int], reports: int) -> None:
    for step in range(1, reports + 1):
        done = await asyncio.gather(*(report(gid, patch_of(gid, step, reports)) for gid in ids))
        if not all(done):
            raise RuntimeError("a report was refused")


async def back_to_back(report: Report, ids: list[int], reports: int) -> None:
    async def job(gid: int) -> None:
        for step in range(1, reports + 1):
            if not await report(gid, patch_of(gid, step, reports)):
                raise RuntimeError(f"a report of {gid} was refused")

    await asyncio.gather(*(job(gid) for gid in ids))


async def settled(telling: dict[int, asyncio.Task[None]], writer: ProgressWriter | None) -> None:
    """Let the events still on their way go (they are counted too)."""
    if telling:
        await asyncio.gather(*telling.values())
    if writer is not None:
        await writer.idle()


async def side(rt: Runtime, name: str, pattern: str, args: argparse.Namespace) -> Counts:
    ids = await running_rows(rt, args.jobs)
    writer = None
    telling: dict[int, asyncio.Task[None]] = {}
    if name == "writer":
        report, writer = batched(rt)
    else:
        report = one_by_one(rt, telling)
    counts = Counts()
    with counts.counting():
        await (at_once if pattern == "at once" else back_to_back)(report, ids, args.reports)
        await settled(telling, writer)
    for gen in await rt.store.get_many(ids):
        if gen.meta.get("progress") != {"step": args.reports, "total": args.reports}:
            raise RuntimeError(f"row {gen.id} lacks its last report: {gen.meta.get('progress')}")
    return counts


async def run(args: argparse.Namespace, db_url: str, redis_url: str, tmp: Path) -> None:
    async with runtime(settings_for(redis_url, db_url, tmp)) as rt:
        await running_rows(rt, 1)  # warm-up: connections, lazy imports
        n = args.jobs * args.reports
        print(
            f"progress writes: db={args.db}, {args.jobs} jobs running in one worker, "
            f"{args.reports} reports each ({n} per side and pattern); counted, not timed"
        )
        print(f"{'pattern':<14}{'side':<12}{'SQL statements/report':>23}{'Redis round trips/report':>26}")
        for pattern in ("at once", "back to back"):
            figures = {}
            for name in ("one by one", "writer"):
                counts = await side(rt, name, pattern, args)
                figures[name] = counts
                print(
                    f"{pattern:<14}{name:<12}{counts.statements / n:>23.2f}{counts.round_trips / n:>26.2f}",
                    flush=True,
                )
            before, after = figures["one by one"], figures["writer"]
            print(
                f"RATIO {pattern}: {after.statements / n:.2f} statements a report with the writer against "
                f"{before.statements / n:.2f} one by one ({after.statements} for {n} reports; "
                f"round trips {after.round_trips} against {before.round_trips})"
            )
        print("every row ended with its job's last report")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genbot-progress-") as tmpdir:
        tmp = Path(tmpdir)
        async with embedded_redis() as server, database(args.db, tmp, "progress") as db_url:
            await run(args, db_url, server.url, tmp)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.progress_writes", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--jobs", type=int, default=10, help="jobs running at once (10)")
    parser.add_argument("--reports", type=int, default=20, help="reports of each job (20)")
    args = parser.parse_args(argv)
    for name in ("jobs", "reports"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
