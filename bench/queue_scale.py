"""A long line: what a queued member's position and the sweep cost with 100,000 queued rows, each
against a bare anchor measured in the same run, on the same Redis and database.

    python -m bench.queue_scale [--db postgres|sqlite] [--rows 500 100000] [--reads 2000]
                                [--heal-max N]

For each size of ``--rows`` (default 500 and 100,000), a database of its own (PostgreSQL: created,
migrated and dropped by the run, admin URL ``GENBOT_TEST_POSTGRES_URL``; SQLite: a temporary file)
gets that many ``queued`` rows with tickets and posted messages (bulk INSERT), and a redis-server of
the run's own gets their jobs through the real submit script (``RedisJobQueue.restore``, at their
tickets): one line of N waiting jobs, as a bot that has taken N requests leaves it. Then:

- **position**: ``RedisJobQueue.position`` (what the renderer and ``Genbot.view`` call for a queued
  member's place) of ``--reads`` members spread over the line, one at a time, against a bare
  ``ZRANK`` of a copy of the waiting set (same size, same members) on the same connection;
  alternated call by call. **status view**: ``Genbot.view`` of a queued row (place, ETA basis,
  breaker: what a member's status pays), against the same ``ZRANK``. **places**:
  ``RedisJobQueue.lined_up`` (the renderer's read of the whole line each time it moves) against a
  bare ``ZRANGE 0 -1 WITHSCORES`` of the copy.
- **sweep, all in place**: ``Genbot.reconcile`` with nothing to heal, against a bare ``SELECT`` of
  the queued rows plus one pipelined read per 1,000 rows of the keys the sweep looks at (the arq
  job, its in-progress key, the waiting entry).
- **sweep, Redis emptied**: ``FLUSHALL``, then ``Genbot.reconcile``, which seeds the tickets and
  puts every row back in line, against the same ``SELECT`` plus one pipelined write per 1,000 rows
  of the same keys (waiting entry, arq job and its queue entry). It costs several times the sweep
  with nothing to heal, so it runs when that one took at most ``HEAL_IF_UNDER_S`` (or, with
  ``--heal-max N``, at every size up to N rows, however long it takes).

Printed per figure: genbot, anchor, the ratio, and the Redis round trips this process sent
(a pipeline is one) and the commands Redis ran (a script is one), per read or per row. Issue 15's
goal for the sweep, at most 100 ms with 500 queued, is printed against the 500 figure. Nothing here
is an exit code: the numbers are only comparable within a run (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job
from redis.asyncio.connection import AbstractConnection
from tortoise.connection import get_connection

from bench.submit_throughput import PG_ADMIN_URL, settings_for
from bot.app import Runtime, runtime
from bot.embedded_redis import embedded_redis
from bot.models import State, job_id_for
from jobs.constants import GENERATE_FUNCTION, JOB_PAYLOAD_TTL_MS
from storage import db
from storage.models import GenerationRow

#: The demo backend's line: every seeded row waits in it.
LINE = "demo"
MEMBERS = 64
#: Rows per INSERT and per pipelined anchor read or write.
BATCH = 1000
#: Submits in flight while the line is seeded.
SUBMIT_CONCURRENCY = 64
#: Issue 15: the sweep with 500 queued, at most this long.
SWEEP_GOAL_S = 0.100
SWEEP_GOAL_ROWS = 500
#: Runs of each sweep at sizes up to this many rows (the median is printed); one run above.
REPEAT_UP_TO = 5000
REPEATS = 5
#: Without ``--heal-max``, the emptied-Redis sweep runs when the sweep with nothing to heal took at
#: most this long (at 100,000 rows, a sweep that costs round trips per row takes minutes emptied).
HEAL_IF_UNDER_S = 10.0


# -- counting ---------------------------------------------------------------------------------


class RoundTrips:
    """Requests this process sends to Redis while :meth:`counting` (a pipeline, a script and a
    single command are one each): every send of redis-py's connections goes through
    ``send_packed_command``."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        original = AbstractConnection.send_packed_command
        counter = self

        async def send(conn: AbstractConnection, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            await original(conn, command, check_health)

        AbstractConnection.send_packed_command = send  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


async def commands_processed(rt: Runtime) -> int:
    """Commands redis-server has run since it started (a script counts once; so does this read)."""
    return int((await rt.redis.info("stats"))["total_commands_processed"])


@dataclass
class Figure:
    name: str
    genbot_s: float
    anchor_s: float
    per: str  # "read" or "row"
    count: int  # reads or rows the round trips and commands are divided by
    round_trips: int = 0
    commands: int = 0
    anchor_what: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.genbot_s / self.anchor_s if self.anchor_s else float("nan")


@dataclass
class Size:
    rows: int
    figures: list[Figure] = field(default_factory=list)
    seed_s: dict[str, float] = field(default_factory=dict)


async def measured(rt: Runtime, work: Callable[[], Awaitable[object]]) -> tuple[float, int, int, object]:
    """Wall seconds, Redis round trips and Redis commands of one ``work()``, and its result."""
    trips = RoundTrips()
    before = await commands_processed(rt)
    with trips.counting():
        t0 = time.perf_counter()
        result = await work()
        wall = time.perf_counter() - t0
    return wall, trips.count, await commands_processed(rt) - before - 1, result


# -- seeding ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(kind: str, tmp: Path, label: str) -> AsyncIterator[str]:
    """A new migrated database for the block: a SQLite file, or a PostgreSQL database of the run's
    own (dropped after the block, whatever happened)."""
    if kind == "sqlite":
        url = f"sqlite://{tmp / f'{label}.sqlite3'}"
        await db.migrate(url)
        yield url
        return
    admin = await asyncio.wait_for(asyncpg.connect(PG_ADMIN_URL), 10)
    name = f"genbot_bench_{label}_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        await db.migrate(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def seed_rows(rows: int) -> None:
    """``rows`` queued rows of the demo line, tickets 1..rows, each with a posted message, made
    an hour ago (past every grace the sweep gives a new row), in ``BATCH``-row INSERTs."""
    made = datetime.now(UTC) - timedelta(hours=1)
    for start in range(0, rows, BATCH):
        await GenerationRow.bulk_create(
            [
                GenerationRow(
                    platform="local",
                    workspace="bench",
                    channel="bench",
                    user_id=f"user{i % MEMBERS}",
                    user_name=f"Bench {i % MEMBERS}",
                    kind="imagine",
                    prompt=f"a red fox in snow {i}",
                    options={"prompt": f"a red fox in snow {i}", "steps": 20},
                    backend=LINE,
                    state=State.QUEUED,
                    ticket=i + 1,
                    message={"platform": "local", "channel": "bench", "message_id": str(i + 1)},
                    meta={"rendered": "seeded"},
                    request_key=uuid.uuid4().hex,
                    created_at=made,
                )
                for i in range(start, min(rows, start + BATCH))
            ]
        )


async def queued_tickets() -> list[tuple[int, int]]:
    conn = get_connection("default")
    _count, found = await conn.execute_query(
        'SELECT "id", "ticket" FROM "generations" WHERE "state" = \'queued\' ORDER BY "ticket"'
    )
    return [(int(r["id"]), int(r["ticket"])) for r in found]


async def seed_line(rt: Runtime, jobs: list[tuple[int, int]]) -> None:
    """Seed the ticket counter, then submit every job at its ticket through the real submit script,
    ``SUBMIT_CONCURRENCY`` at a time."""
    await rt.queue.seed_tickets(max((t for _id, t in jobs), default=0))
    pending = iter(jobs)

    async def submitter() -> None:
        for generation_id, ticket in pending:
            await rt.queue.restore(generation_id, ticket, line=LINE)

    async with asyncio.TaskGroup() as tg:
        for _ in range(SUBMIT_CONCURRENCY):
            tg.create_task(submitter())
    if (depth := await rt.queue.depth(LINE)) != len(jobs):
        raise RuntimeError(f"{depth} jobs waiting after seeding, expected {len(jobs)}")


# -- position ---------------------------------------------------------------------------------


async def positions(rt: Runtime, ids: list[int], reads: int, anchor: str) -> list[Figure]:
    """``queue.position`` and ``Genbot.view`` against a bare ``ZRANK``; ``queue.lined_up``
    against a bare ``ZRANGE``; alternated, on the same connection pool."""
    redis, queue = rt.redis, rt.queue
    sample = random.Random(14).sample(ids, min(reads, len(ids)))
    for gid in sample[:50]:  # warm the connections and the code paths
        await queue.position(gid, line=LINE)
        await redis.zrank(anchor, str(gid))

    async def alternate(genbot: Callable[[int], Awaitable[object]], items: list[int]) -> tuple[float, float]:
        ours: list[float] = []
        bare: list[float] = []
        for k, gid in enumerate(items):
            for side in (0, 1) if k % 2 else (1, 0):
                t0 = time.perf_counter()
                if side:
                    await genbot(gid)
                    ours.append(time.perf_counter() - t0)
                else:
                    await redis.zrank(anchor, str(gid))
                    bare.append(time.perf_counter() - t0)
        return statistics.median(ours), statistics.median(bare)

    async def position(gid: int) -> int | None:
        return await queue.position(gid, line=LINE)

    figures = []
    mine, bare = await alternate(position, sample)
    _wall, trips, commands, _ = await measured(rt, lambda: position(sample[0]))
    figures.append(
        Figure(
            "position (queue.position)", mine, bare, "read", 1, trips, commands, "bare ZRANK, same set size"
        )
    )

    gens = {g.id: g for g in await rt.store.get_many(sample[: max(1, len(sample) // 4)])}

    async def view(gid: int) -> object:
        return await rt.core.view(gens[gid])

    mine, bare = await alternate(view, list(gens))
    _wall, trips, commands, _ = await measured(rt, lambda: view(next(iter(gens))))
    figures.append(
        Figure(
            "status view (Genbot.view)", mine, bare, "read", 1, trips, commands, "bare ZRANK, same set size"
        )
    )

    ours: list[float] = []
    bares: list[float] = []
    for k in range(3 if len(ids) > REPEAT_UP_TO else 9):
        for side in (0, 1) if k % 2 else (1, 0):
            t0 = time.perf_counter()
            if side:
                await queue.lined_up()
                ours.append(time.perf_counter() - t0)
            else:
                await redis.zrange(anchor, 0, -1, withscores=True)
                bares.append(time.perf_counter() - t0)
    _wall, trips, commands, _ = await measured(rt, queue.lined_up)
    figures.append(
        Figure(
            "places (queue.lined_up)",
            statistics.median(ours),
            statistics.median(bares),
            "read",
            1,
            trips,
            commands,
            "bare ZRANGE 0 -1 WITHSCORES",
            [f"the whole line: {len(ids):,} entries a read"],
        )
    )
    return figures


# -- the sweep --------------------------------------------------------------------------------


async def bare_select() -> list[dict[str, Any]]:
    """The queued rows, every column, in one raw statement: no ORM, no snapshot."""
    conn = get_connection("default")
    _count, found = await conn.execute_query('SELECT * FROM "generations" WHERE "state" = \'queued\'')
    return [dict(r) for r in found]


async def bare_read(rt: Runtime, waiting: str) -> int:
    """The floor of a sweep with nothing to heal: the rows, then per ``BATCH`` rows one pipelined
    read of each row's arq job, its in-progress key and its waiting entry."""
    found = await bare_select()
    present = 0
    for start in range(0, len(found), BATCH):
        async with rt.redis.pipeline(transaction=False) as pipe:
            for row in found[start : start + BATCH]:
                job_id = job_id_for(int(row["id"]))
                pipe.exists(job_key_prefix + job_id)
                pipe.exists(in_progress_key_prefix + job_id)
                pipe.zscore(waiting, str(row["id"]))
            replies = await pipe.execute()
        present += sum(1 for r in replies[::3] if r)
    return present


async def bare_write(rt: Runtime, prefix: str) -> int:
    """The floor of a sweep that heals everything: the rows, then per ``BATCH`` rows one
    pipelined write of each row's waiting entry, arq job and arq queue entry, under ``prefix``
    (the caller deletes them afterwards, untimed)."""
    found = await bare_select()
    for start in range(0, len(found), BATCH):
        async with rt.redis.pipeline(transaction=False) as pipe:
            for row in found[start : start + BATCH]:
                gid = int(row["id"])
                job_id = job_id_for(gid)
                payload = serialize_job(GENERATE_FUNCTION, (gid,), {}, None, int(time.time() * 1000))
                pipe.zadd(f"{prefix}:waiting", {str(gid): int(row["ticket"])})
                pipe.set(f"{prefix}:job:{job_id}", payload, px=JOB_PAYLOAD_TTL_MS)
                pipe.zadd(f"{prefix}:queue", {job_id: int(row["ticket"])})
            await pipe.execute()
    return len(found)


async def drop_keys(rt: Runtime, prefix: str) -> None:
    async for key in rt.redis.scan_iter(match=f"{prefix}:*", count=BATCH):
        await rt.redis.unlink(key)


async def sweeps(rt: Runtime, rows: int, heal_max: int | None) -> list[Figure]:
    waiting = rt.queue.keys.waiting(LINE)
    repeats = REPEATS if rows <= REPEAT_UP_TO else 1
    await bare_read(rt, waiting)  # warm the statement and the pool
    ours, bares, healed = [], [], []
    trips = commands = 0
    for k in range(repeats):
        for side in (0, 1) if k % 2 else (1, 0):
            if side:
                wall, trips, commands, result = await measured(rt, rt.core.reconcile)
                ours.append(wall)
                healed.append(int(result))  # type: ignore[call-overload]
            else:
                t0 = time.perf_counter()
                present = await bare_read(rt, waiting)
                bares.append(time.perf_counter() - t0)
                if present != rows:
                    raise RuntimeError(f"{present} of {rows} jobs in place before the sweep")
    figures = [
        Figure(
            "sweep, all in place",
            statistics.median(ours),
            statistics.median(bares),
            "row",
            rows,
            trips,
            commands,
            "bare SELECT + 1 pipelined read per 1,000 rows",
            [f"healed {max(healed)} (expected 0)"] if any(healed) else [],
        )
    ]
    took = figures[0].genbot_s
    if (heal_max is not None and rows > heal_max) or (heal_max is None and took > HEAL_IF_UNDER_S):
        why = f"above --heal-max {heal_max:,}" if heal_max is not None else f"the sweep took {took:.0f} s"
        figures[0].notes.append(f"emptied-Redis sweep not run ({why}; --heal-max {rows} runs it)")
        return figures
    ours, bares, healed = [], [], []
    for k in range(repeats):
        for side in (0, 1) if k % 2 else (1, 0):
            if side:
                await rt.redis.flushall()
                wall, trips, commands, result = await measured(rt, rt.core.reconcile)
                ours.append(wall)
                healed.append(int(result))  # type: ignore[call-overload]
                if (depth := await rt.queue.depth(LINE)) != rows:
                    raise RuntimeError(f"the sweep put {depth} of {rows} jobs back in line")
            else:
                prefix = f"anchor-{uuid.uuid4().hex[:6]}"
                t0 = time.perf_counter()
                await bare_write(rt, prefix)
                bares.append(time.perf_counter() - t0)
                await drop_keys(rt, prefix)
    figures.append(
        Figure(
            "sweep, Redis emptied",
            statistics.median(ours),
            statistics.median(bares),
            "row",
            rows,
            trips,
            commands,
            "bare SELECT + 1 pipelined write per 1,000 rows",
            [f"healed {min(healed):,}"] + ([] if min(healed) == rows else [f"(expected {rows:,})"]),
        )
    )
    return figures


# -- main -------------------------------------------------------------------------------------


async def one_size(args: argparse.Namespace, rows: int, tmp: Path) -> Size:
    size = Size(rows)
    async with (
        embedded_redis() as server,
        database(args.db, tmp, f"q{rows}") as url,
        runtime(settings_for(server.url, url, tmp)) as rt,
    ):
        t0 = time.perf_counter()
        await seed_rows(rows)
        size.seed_s["rows (bulk INSERT)"] = time.perf_counter() - t0
        jobs = await queued_tickets()
        t0 = time.perf_counter()
        await seed_line(rt, jobs)
        size.seed_s["jobs (submit script)"] = time.perf_counter() - t0
        anchor = f"anchor-{uuid.uuid4().hex[:6]}"
        await rt.redis.zunionstore(anchor, [rt.queue.keys.waiting(LINE)])
        size.figures += await positions(rt, [gid for gid, _t in jobs], args.reads, anchor)
        await rt.redis.delete(anchor)
        size.figures += await sweeps(rt, rows, args.heal_max)
    return size


def duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def report(args: argparse.Namespace, sizes: list[Size]) -> None:
    for size in sizes:
        seeded = ", ".join(f"{what} {s:.1f} s" for what, s in size.seed_s.items())
        print(
            f"\nqueue at scale: {size.rows:,} queued rows in one line, db={args.db}, {os.cpu_count()} cores"
        )
        print(f"  seeded: {seeded}")
        print(
            f"  {'':<28}{'genbot':>10}{'anchor':>10}{'ratio':>8}{'Redis round trips':>19}"
            f"{'commands':>10}  anchor"
        )
        for f in size.figures:
            trips = f"{f.round_trips / f.count:.3g} per {f.per}"
            commands = f"{f.commands / f.count:.3g}"
            total = [f"{f.round_trips:,} round trips in all"] if f.per == "row" else []
            notes = "".join(f"; {note}" for note in [*total, *f.notes])
            print(
                f"  {f.name:<28}{duration(f.genbot_s):>10}{duration(f.anchor_s):>10}{f.ratio:>8.1f}"
                f"{trips:>19}{commands:>10}  {f.anchor_what}{notes}"
            )
        if size.rows == SWEEP_GOAL_ROWS:
            for f in size.figures:
                if f.name.startswith("sweep"):
                    verdict = "MET" if f.genbot_s <= SWEEP_GOAL_S else "NOT MET"
                    print(
                        f"  GOAL {f.name}: {duration(f.genbot_s)} with {SWEEP_GOAL_ROWS} queued "
                        f"(issue 15: <= {SWEEP_GOAL_S * 1000:.0f} ms): {verdict}"
                    )
    print(
        "\nratio: genbot / anchor (1.0: as cheap as the bare read); Redis round trips: what this "
        "process sent Redis (a pipeline is one), per read or per row; commands: what Redis ran, per "
        "read or per row (a script is one)"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genbot-queue-scale-") as tmpdir:
        sizes = []
        for rows in args.rows:
            print(f"queue at scale: {rows:,} rows ...", flush=True)
            sizes.append(await one_size(args, rows, Path(tmpdir)))
        report(args, sizes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_scale", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[SWEEP_GOAL_ROWS, 100_000], help="queued rows (500 100000)"
    )
    parser.add_argument("--reads", type=int, default=2000, help="position reads per size (2000)")
    parser.add_argument(
        "--heal-max",
        type=int,
        default=None,
        help="time the emptied-Redis sweep at every size up to this many rows (default: at the sizes "
        f"whose sweep with nothing to heal took at most {HEAL_IF_UNDER_S:.0f} s)",
    )
    args = parser.parse_args(argv)
    if min(args.rows) < 1 or args.reads < 1:
        parser.error("--rows and --reads must be at least 1")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
