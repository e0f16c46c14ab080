"""Submit throughput: genbot's full submit path against raw arq, in one run, on one Redis.

    python -m bench.submit_throughput [--db postgres|sqlite] [--n 2000] [--concurrency 50]
                                      [--rounds 3] [--pg-maxsize N] [--counted 200]
                                      [--profile [request|genbot]]

- baseline: ``ArqRedis.enqueue_job("generate", i, _job_id=...)``, ``--concurrency`` asyncio tasks.
- genbot: ``/imagine``'s raw options parsed by their types and prepared by the image plugin
  (``prepare``), the moderation checks (ban lookup, matching against ``BLOCKED_TERMS`` blocked
  terms), then ``Genbot.submit(Genbot.new_job(...), quota=...)``: row
  insert, then pause and quota checks, ticket, position and arq job in one Lua script. (Quotas are
  set high enough never to refuse, so both sides enqueue every job.) (The ticket reaches the row later,
  in the same UPDATE that stores the status message's reference; ``--breakdown`` times it too.)
  This is part of the path: what a member's request costs is the next side's.
- request: the whole request, as every adapter runs it after parsing a platform's payload: the
  command recorded (``Genbot.receive``), then ``Genbot.handle`` of ``/imagine`` with the raw options
  and the local chat's responder (:class:`~adapters.local.chat.LocalResponder` of a chat built as
  a bot builds it): the checks, submit, view, the write budget's take, the status post (a message
  row of the chat's log and its broadcast) and the UPDATE that stores its reference and ticket, and
  the record forgotten. The chat's write budget is raised never to refuse (as the quotas are): at
  its real 200 posts a second, the posts beyond it would be handed to a renderer, not timed.

Both sides share one arq pool on a redis-server of this run's own (``bot.embedded_redis``), flushed
before every round; rounds alternate (B G, G B, B G, ...). The PostgreSQL database is created,
migrated and dropped by the run (admin URL: ``GENBOT_TEST_POSTGRES_URL``, default
``postgres://postgres@127.0.0.1:5432/postgres``). Prints medians, the genbot/baseline ratio against
the target, submit latency p50/p99, CPU per submission (this process, redis-server, PostgreSQL)
and peak RSS growth; then, counted in ``--counted`` more calls of each side (not timed), the Redis
round trips and SQL statements per call (:mod:`bench.counting`). ``--breakdown`` then times each
step of the path alone, ``--profile`` runs one more round of the whole request (or of ``genbot``)
under cProfile. Always exits 0 unless something crashed.
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

from adapters.local.chat import CHANNEL, PLATFORM, LocalChat, LocalResponder, Member
from bench.counting import Counts
from bot.api import Call, JobKind, JobRequest
from bot.app import Runtime, build_local_chat, build_renderer, runtime
from bot.commands import parse_options
from bot.config import Settings, load_settings
from bot.embedded_redis import embedded_redis
from bot.models import Actor, CommandRequest
from bot.moderation import blocked_term
from bot.ports import Rate
from bot.service import Genbot
from storage import db
from storage.models import ChatMessageRow, GenerationRow

TARGET_RATIO = 0.5
#: Members of the bench's local chat, taking turns.
MEMBERS = 64
#: A write budget never spent (see the module docstring, "request").
UNSPENT = Rate(1e9, 10**9)
PG_ADMIN_URL = os.environ.get("GENBOT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
RAW_OPTIONS = {"prompt": "a red fox in snow", "steps": "20"}
WARMUP = 200
#: Blocked terms of the bench workspace, each matched against every prompt.
BLOCKED_TERMS = 20

Op = Callable[[int], Awaitable[object]]


def imagine(core: Genbot, actor: Actor) -> tuple[JobKind, JobRequest, list[str]]:
    """``/imagine`` with :data:`RAW_OPTIONS`, parsed and prepared as a member's command is."""
    spec = core.specs["imagine"]
    found = core.plugins.command("imagine")
    assert found is not None
    command, loaded = found
    options = parse_options(spec, dict(RAW_OPTIONS), text_max=core.settings.limits.prompt_max)
    return core.prepare(command, spec, Call(actor, "bench", options, loaded.settings))


def local_chat(rt: Runtime) -> LocalChat:
    """The local chat as ``genbot bot`` builds it (not listening: posts need no socket), with the
    write budgets its renderer installs in the core (:func:`bot.app.build_renderer`), raised never
    to refuse (:data:`UNSPENT`)."""
    chat = build_local_chat(rt)
    chat.rates = dict.fromkeys(chat.rates, UNSPENT)
    build_renderer(rt, chat)  # sets rt.core.budgets; the renderer itself is not run
    return chat


def request_op(rt: Runtime, chat: LocalChat, name: str, options: dict[str, str]) -> Op:
    """The whole request ``i``: member ``i % MEMBERS`` sends ``/name options`` through ``chat``,
    recorded and handled as the chat does once it has parsed the command (see the module
    docstring)."""
    core = rt.core
    members = [Member(f"member{k}", f"Member {k}", False) for k in range(MEMBERS)]

    async def request(i: int) -> None:
        member = members[i % MEMBERS]
        command = CommandRequest(actor=chat.actor(member), channel=CHANNEL, name=name, options=dict(options))
        receipt = await core.receive(PLATFORM, {"kind": "command", "request": command.to_json()})
        await core.handle(command, LocalResponder(chat, member), receipt=receipt)

    return request


@dataclass
class Round:
    side: str
    n: int
    wall_s: float
    cpu_s: float
    latencies: list[float]
    rss_peak_growth_kb: int
    host_busy: float | None  # busy CPU of the whole machine, in cores (other processes too)
    others: dict[str, float] = field(default_factory=dict)  # CPU s of redis-server, postgres

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

    def cpu_us_per_submit(self, group: str = "bench") -> float | None:
        """CPU microseconds per submission: this process ("bench"), "redis" or "postgres"."""
        if group == "bench":
            used = sum(r.cpu_s for r in self.rounds)
        elif all(group in r.others for r in self.rounds):
            used = sum(r.others[group] for r in self.rounds)
        else:
            return None
        return used / sum(r.n for r in self.rounds) * 1e6

    @property
    def host_busy(self) -> float | None:
        busy = [r.host_busy * r.wall_s for r in self.rounds if r.host_busy is not None]
        return sum(busy) / sum(r.wall_s for r in self.rounds) if busy else None

    @property
    def rss_growth_kb(self) -> int:
        return sum(r.rss_peak_growth_kb for r in self.rounds)


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def host_cpu() -> tuple[int, int] | None:
    """(busy, total) jiffies of the machine from /proc/stat, or None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    try:
        after_comm = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(after_comm[11]) + int(after_comm[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Watched:
    """Other processes whose CPU a round accounts for: redis-server and the PostgreSQL processes
    serving this run's database (plus PostgreSQL's shared background processes)."""

    redis_pid: int | None
    pg_admin: asyncpg.Connection | None = None
    pg_name: str = ""

    async def pids(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {"redis": [self.redis_pid] if self.redis_pid else []}
        if self.pg_admin is not None:
            rows = await self.pg_admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE (datname = $1 OR backend_type <> "
                "'client backend') AND pid <> pg_backend_pid()",
                self.pg_name,
            )
            groups["postgres"] = [r["pid"] for r in rows]
        return groups

    async def sample(self) -> dict[str, dict[int, float]]:
        return {
            group: {pid: cpu for pid in pids if (cpu := proc_cpu_s(pid)) is not None}
            for group, pids in (await self.pids()).items()
        }


def cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    return {
        group: sum(cpu - before.get(group, {}).get(pid, 0.0) for pid, cpu in pids.items())
        for group, pids in after.items()
    }


def current_rss_kb() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


async def run_round(
    side: str, op: Op, start: int, n: int, concurrency: int, watched: Watched | None = None
) -> Round:
    """``n`` calls of ``op(start..start+n-1)`` from ``concurrency`` tasks; per-call latency."""
    latencies: list[float] = []
    indices = iter(range(start, start + n))

    async def worker() -> None:
        for i in indices:
            t0 = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t0)

    others0 = await watched.sample() if watched else {}
    rss0 = peak_rss_kb()
    host0 = host_cpu()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    host1 = host_cpu()
    busy = None
    if host0 and host1 and host1[1] > host0[1]:
        busy = (host1[0] - host0[0]) / (host1[1] - host0[1]) * (os.cpu_count() or 1)
    others = cpu_used(others0, await watched.sample()) if watched else {}
    assert len(latencies) == n
    return Round(
        side,
        n,
        wall,
        cpu,
        latencies,
        peak_rss_kb() - rss0,
        busy,
        others,
    )


def make_ops(rt: Runtime, run_tag: str) -> tuple[Op, Op, Op]:
    redis = rt.redis
    queue_name = rt.settings.redis.queue_name
    core = rt.core

    async def baseline(i: int) -> None:
        job = await redis.enqueue_job("generate", i, _job_id=f"bench:{run_tag}:{i}", _queue_name=queue_name)
        if job is None:
            raise RuntimeError(f"baseline job {i} was not enqueued (duplicate id)")

    async def genbot(i: int) -> None:
        actor = Actor("local", "bench", f"user{i % 64}", f"Bench {i % 64}")
        kind, job, texts = imagine(core, actor)
        await core.check_member(actor, texts)
        new = core.new_job(actor, "bench", kind, job, uuid.uuid4().hex)
        await core.submit(new, quota=await core.member_quota(actor))

    return baseline, genbot, request_op(rt, local_chat(rt), "imagine", RAW_OPTIONS)


async def check_round(rt: Runtime, side: str, n: int) -> None:
    """What a round must leave in Redis: n arq jobs (and, for genbot and request, n waiting
    entries in the demo backend's line; for request, no reply to a member: every one was queued
    and got its status message)."""
    line = rt.settings.backend.name
    arq_queue = rt.queue.line_queue(line) if side != "baseline" else rt.settings.redis.queue_name
    queued = await rt.redis.zcard(arq_queue)
    if queued != n:
        raise RuntimeError(f"{side}: {queued} jobs in the arq queue, expected {n}")
    if side != "baseline":
        waiting = await rt.redis.zcard(rt.queue.keys.waiting(line))
        if waiting != n:
            raise RuntimeError(f"{side}: {waiting} waiting entries, expected {n}")
    if side == "request" and (replies := await ChatMessageRow.filter(ephemeral_to__isnull=False).count()):
        raise RuntimeError(f"request: {replies} replies to members (refusals or errors) in the chat")


async def empty_redis(rt: Runtime) -> None:
    """Empty this run's Redis, then seed the ticket counter as every bot does at start-up
    (``Genbot.check_tickets``): a submit takes no ticket from a counter not seeded in this life of
    Redis (``TicketsLost``), and a seed left to a round's first submit would be timed with it.
    The rows of the rounds before are ended first (``cancelled``): the seed puts the queued rows
    that hold a ticket (every request's) back in line."""
    await GenerationRow.filter(state="queued").update(state="cancelled")
    await rt.redis.flushall()
    await rt.core.check_tickets()


def settings_for(redis_url: str, db_url: str, tmp: Path) -> Settings:
    return load_settings(
        _env_file=None,
        redis={"url": redis_url, "key_prefix": "gb", "queue_name": "gb:queue"},
        database={"url": db_url},
        blobs={"dir": tmp / "blobs"},
        backend={"name": "demo"},
        quota={"max_queued": 10**9, "rate_count": 10**9, "global_max": 10**9},
    )


async def bench(args: argparse.Namespace, db_url: str, redis_url: str, tmp: Path, watched: Watched) -> None:
    settings = settings_for(redis_url, db_url, tmp)
    rss_start = peak_rss_kb()
    async with runtime(settings) as rt:
        for n in range(BLOCKED_TERMS):
            await rt.moderation.add_term("local", "bench", blocked_term(f"blocked{n}"), "bench")
        baseline, genbot, request = make_ops(rt, uuid.uuid4().hex[:6])
        ops = {"baseline": baseline, "genbot": genbot, "request": request}
        sides = {name: Side(name) for name in ops}
        counter = 0

        # Warm-up: open the Redis and database connections, load the Lua script, import lazily.
        for name, op in ops.items():
            await empty_redis(rt)
            await run_round(name, op, counter, WARMUP, args.concurrency)
            counter += WARMUP
        rss_warm = peak_rss_kb()

        for r in range(args.rounds):
            order = ("baseline", "genbot", "request") if r % 2 == 0 else ("request", "genbot", "baseline")
            for name in order:
                await empty_redis(rt)
                result = await run_round(name, ops[name], counter, args.n, args.concurrency, watched)
                counter += args.n
                await check_round(rt, name, args.n)
                sides[name].rounds.append(result)
                wall = result.wall_s
                host = "".join(f", {g} {c / wall:.2f}" for g, c in result.others.items())
                if result.host_busy is not None:
                    host += f"; host busy {result.host_busy:.2f} cores"
                print(
                    f"  round {r + 1} {name:<8} {result.rate:8.0f} submits/s"
                    f"  ({result.wall_s:.2f} s; cores: bench {result.cpu_s / result.wall_s:.2f}{host})",
                    flush=True,
                )
        rss_end = peak_rss_kb()
        submitted = (WARMUP + args.n * args.rounds) * 2  # genbot's and request's
        inserted = await GenerationRow.all().count()
        if inserted != submitted:
            raise RuntimeError(f"{inserted} rows, expected {submitted}")

        report(args, db_url, sides, rss_start, rss_warm, rss_end)
        if args.counted:
            await count_calls(rt, ops, counter, args)
            counter += args.counted * len(ops)
        if watched.pg_admin is not None:
            conns = await watched.pg_admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                watched.pg_name,
            )
            size = args.pg_maxsize or "Tortoise's default, 5"
            print(f"PostgreSQL connections open to the bench database: {conns} (pool maxsize {size})")

        if args.breakdown:
            await breakdown(rt, args, watched)
        if args.profile:
            await empty_redis(rt)
            profile_round(await profiled(ops[args.profile], counter, args), args)


async def count_calls(rt: Runtime, ops: dict[str, Op], start: int, args: argparse.Namespace) -> None:
    """Redis round trips and SQL statements per call of each side, in ``--counted`` more calls
    at the rounds' concurrency (counted, not timed: counting costs CPU of its own)."""
    print(f"\ncounted (not timed), per call, {args.counted} calls of each side, {args.concurrency} at once:")
    for name, op in ops.items():
        await empty_redis(rt)
        with Counts().counting() as counts:
            await run_round(name, op, start, args.counted, args.concurrency)
        start += args.counted
        print(f"  {name:<9}{counts.per(args.counted)}")


async def breakdown(rt: Runtime, args: argparse.Namespace, watched: Watched) -> None:
    """Each step of the submit path alone, same n and concurrency: where the time goes."""
    core, store, queue = rt.core, rt.store, rt.queue
    actor = Actor("local", "bench", "user0", "Bench")
    kind, job, _texts = imagine(core, actor)
    ids: list[int] = []

    async def validate(_i: int) -> None:
        imagine(core, actor)

    async def create(_i: int) -> None:
        ids.append((await store.create(core.new_job(actor, "bench", kind, job, uuid.uuid4().hex))).id)

    async def lua(i: int) -> None:
        await queue.submit(ids[i], line=kind.backend_name)

    async def attach(i: int) -> None:
        await store.update(ids[i], message={"message_id": str(i)}, meta={"rendered": "x"}, ticket=i + 1)

    steps: list[tuple[str, Op, str]] = [
        ("parse and prepare", validate, "CPU only"),
        ("store.create", create, "INSERT ... RETURNING"),
        ("queue.submit", lua, "EVALSHA, 1 Redis round trip"),
        ("store.update", attach, "attach_message: refs, digest and ticket (after submit)"),
    ]
    print(f"\nbreakdown: each step alone, n={args.n}, concurrency={args.concurrency}")
    print(f"{'':<20}{'':>9}{'wall':>8}{'':>9}{'CPU us per op':>24}")
    print(f"{'step':<20}{'ops/s':>9}{'us/op':>8}{'p50 ms':>9}{'bench':>8}{'redis':>8}{'pg':>8}  what")
    await empty_redis(rt)
    for name, op, what in steps:
        result = await run_round(name, op, 0, args.n, args.concurrency, watched)
        p50 = sorted(result.latencies)[len(result.latencies) // 2] * 1000
        others = "".join(
            f"{result.others[g] / args.n * 1e6:>8.0f}" if g in result.others else f"{'-':>8}"
            for g in ("redis", "postgres")
        )
        print(
            f"{name:<20}{result.rate:>9.0f}{1e6 / result.rate:>8.0f}{p50:>9.2f}"
            f"{result.cpu_s / args.n * 1e6:>8.0f}{others}  {what}"
        )


async def profiled(op: Op, start: int, args: argparse.Namespace) -> cProfile.Profile:
    prof = cProfile.Profile()
    prof.enable()
    try:
        result = await run_round(args.profile, op, start, args.n, args.concurrency)
    finally:
        prof.disable()
    print(f"\nprofiled {args.profile} round: {result.rate:.0f} calls/s under cProfile (slower than real)")
    return prof


def package_of(filename: str) -> str:
    """Who owns a profiled function: a site-packages distribution, a stdlib module, or genbot."""
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    root = Path.cwd()
    if filename.startswith(str(root)):
        return Path(filename).relative_to(root).parts[0]
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C)"
    return "stdlib " + (parts[-2] if parts[-2] in ("asyncio", "json") else Path(filename).stem)


def profile_round(prof: cProfile.Profile, args: argparse.Namespace) -> None:
    stats = pstats.Stats(prof)
    by_package: dict[str, float] = {}
    for (filename, _line, _name), row in stats.stats.items():  # type: ignore[attr-defined]
        # row: (primitive calls, calls, own time, cumulative time, callers)
        package = package_of(filename)
        by_package[package] = by_package.get(package, 0.0) + row[2]  # tottime
    total = sum(by_package.values())
    print(f"\n--- cProfile, one {args.profile} round of {args.n}: own time by package ---")
    for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:15]:
        print(f"{package:<28}{seconds:>8.3f} s{seconds / total:>6.0%}")
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key)
        stats.print_stats(args.profile_top)
        print(f"\n--- cProfile, one {args.profile} round of {args.n}, top {args.profile_top} by {key} ---")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])


def report(
    args: argparse.Namespace,
    db_url: str,
    sides: dict[str, Side],
    rss_start: int,
    rss_warm: int,
    rss_end: int,
) -> None:
    base, gen, whole = sides["baseline"], sides["genbot"], sides["request"]
    ratio = gen.median_rate / base.median_rate
    whole_ratio = whole.median_rate / base.median_rate
    shown_db = db_url.split("@")[-1] if args.db == "postgres" else "a temporary file"
    print()
    print(
        f"submit throughput: db={args.db} ({shown_db}), n={args.n}/round, "
        f"concurrency={args.concurrency}, rounds={args.rounds}, cores={os.cpu_count()}"
    )
    header = (
        f"{'':<10}{'submits/s':>28}{'latency ms':>18}{'CPU us per submit':>26}"
        f"{'host':>7}{'peak':>9}\n"
        f"{'side':<10}{'median':>10}{'min':>9}{'max':>9}{'p50':>9}{'p99':>9}"
        f"{'bench':>9}{'redis':>8}{'pg':>9}{'cores':>7}{'RSS +':>9}"
    )
    width = len(header.splitlines()[-1])
    print(header)
    print("-" * width)

    def us(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    for side in (base, gen, whole):
        rates = [r.rate for r in side.rounds]
        busy = side.host_busy
        print(
            f"{side.name:<10}{side.median_rate:>10.0f}{min(rates):>9.0f}{max(rates):>9.0f}"
            f"{side.latency(0.50) * 1000:>9.2f}{side.latency(0.99) * 1000:>9.2f}"
            f"{us(side.cpu_us_per_submit()):>9}{us(side.cpu_us_per_submit('redis')):>8}"
            f"{us(side.cpu_us_per_submit('postgres')):>9}"
            f"{'-' if busy is None else f'{busy:.2f}':>7}"
            f"{side.rss_growth_kb / 1024:>6.1f} MB"
        )
    print("-" * width)
    print(f"RATIO genbot/baseline = {ratio:.3f}   (the submit alone: part of the request)")
    verdict = "MET" if whole_ratio >= TARGET_RATIO else "NOT MET"
    goal = (
        f"issue 15's goal >= {TARGET_RATIO}: {verdict}"
        if args.db == "postgres"
        else "the goal is PostgreSQL's"
    )
    print(f"RATIO request/baseline = {whole_ratio:.3f}   (the whole request; {goal})")
    current = current_rss_kb()
    print(
        f"peak RSS: {rss_start / 1024:.1f} MB at start, {rss_warm / 1024:.1f} MB after warm-up, "
        f"{rss_end / 1024:.1f} MB after the rounds (growth {(rss_end - rss_start) / 1024:.1f} MB"
        f", {(rss_end - rss_warm) / 1024:.1f} MB during the rounds)"
        + (f"; current RSS {current / 1024:.1f} MB" if current else "")
    )
    print(
        "CPU us per submit: of this process (bench), of redis-server, of the PostgreSQL processes "
        "of this database\nplus its background writers (pg); host cores: busy cores of the whole "
        f"machine during the rounds, of {os.cpu_count()} (other load included)"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genbot-bench-") as tmpdir:
        tmp = Path(tmpdir)
        async with embedded_redis() as server:
            redis_pid = server.process.pid if server.process else None
            if args.db == "sqlite":
                url = f"sqlite://{tmp / 'bench.sqlite3'}"
                await db.migrate(url)
                await bench(args, url, server.url, tmp, Watched(redis_pid))
                return
            admin = await asyncio.wait_for(asyncpg.connect(PG_ADMIN_URL), 10)
            name = f"genbot_bench_{uuid.uuid4().hex[:10]}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
                await db.migrate(url)
                if args.pg_maxsize:
                    url += f"?maxsize={args.pg_maxsize}"
                await bench(args, url, server.url, tmp, Watched(redis_pid, admin, name))
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
        "--counted",
        type=int,
        default=200,
        help="calls of each side counted afterwards, Redis round trips and SQL statements (200; 0: none)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="request",
        choices=("request", "genbot"),
        help="afterwards, one more round of the whole request (or of genbot's submit) under cProfile",
    )
    parser.add_argument("--profile-top", type=int, default=30, help="rows of the profile (30)")
    args = parser.parse_args(argv)
    for name in ("n", "concurrency", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
