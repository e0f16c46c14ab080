"""A fleet of worker hosts against one Redis and one PostgreSQL, simulated with network namespaces.

    python -m bench.fleet                         # 1, 4 and 16 hosts, 200 jobs of 1 s; writes docs/scaling.md
    python -m bench.fleet --hosts 1,4 --jobs 100 --out /tmp/scaling.md
    python -m bench.fleet --smoke                 # 1 and 2 hosts, 8 short jobs; writes nothing

Each simulated host is a network namespace with a veth on a bridge of this run's own, running one
real ``genbot worker`` process (``GENBOT_WORKER__LINES=fleet``: one arq worker, ``--concurrency``
jobs at once). The run starts its own ``redis-server`` and its own PostgreSQL cluster (``initdb``
in a temporary folder, run as the ``postgres`` user), both listening on the bridge's address, so
the workers reach them over the simulated network; this process submits and measures over
loopback. Jobs are the plugin of :mod:`bench.fleet_jobs` (each run recorded in Redis), submitted
through genbot's own command path (``Genbot.handle``: row, ticket, position, arq job, status
message). Everything is measured from outside: the database rows, the runs the plugin recorded,
the commands Redis received (``MONITOR``, by the client's address: one address per host).

Per fleet size: **speedup** (first start to last end, against 1 host of the same run), **FIFO
violations** (a job that started before a job of an earlier ticket that it is more than the fleet's
slots ahead of), **duplicates** (runs beyond one per job), **lost** (accepted and not succeeded),
then the **Redis commands per second of one extra idle worker**, with every slot of the fleet
running a held job and with none. Then **failover**: a host running a job is cut off (its veth
down) or its worker killed (SIGKILL); the time until the job starts on another host, and whether the
cut-off run, once its host is back, changed the row. Failover needs ``worker.failover_after_s``
(``GENBOT_WORKER__FAILOVER_AFTER_S``); without it the scenario is reported as pending.

Needs root (``ip netns``, veth, a bridge: iproute2), ``redis-server`` and PostgreSQL's server
binaries (``/usr/lib/postgresql/*/bin``). Without them it says so and exits 2. Everything it made
(namespaces, links, processes, data folders) is removed on exit, Ctrl-C and failure included.
Exit code 1 if a job was lost or run twice, a FIFO violation, or a fenced write got through.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bench.fleet_jobs import RELEASE
from bot.app import Runtime, runtime
from bot.config import Settings, WorkerSettings, load_settings
from bot.models import Actor, CommandRequest, MessageRef, StatusView
from bot.ports import Spend
from jobs.constants import LINE_QUEUE_INFIX, SWEEP_QUEUE_SUFFIX, Keys
from storage import db

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "bench.fleet_jobs:plugin"
LINE = "fleet"
PREFIX = "fleet"
RUNS = "fleet:runs"
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
PG_USER = "postgres"
#: Quotas that refuse nothing and hold nothing aside (every job is one member's).
QUOTA = {"max_queued": 10**6, "max_running": 10**6, "rate_count": 10**6, "global_max": 10**6}
#: Submissions in flight at once (the bot's commands arriving together).
SUBMIT_CONCURRENCY = 16


class Unavailable(Exception):
    """What this machine lacks to run the simulation, in one sentence."""


# -- the machine ------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The newest PostgreSQL server binaries installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise Unavailable("PostgreSQL's server binaries are not installed (/usr/lib/postgresql/*/bin)")
    return found[-1].parent


def preflight() -> None:
    """Raise :class:`Unavailable` unless network namespaces, redis-server and PostgreSQL can be used."""
    if os.geteuid() != 0:
        raise Unavailable(
            "the fleet simulation needs root: it creates network namespaces, veth pairs and a bridge "
            "(run it as root, e.g. sudo .venv/bin/python -m bench.fleet)"
        )
    if shutil.which("ip") is None:
        raise Unavailable("the fleet simulation needs iproute2's `ip` (apt install iproute2)")
    if shutil.which("redis-server") is None:
        raise Unavailable("the fleet simulation needs redis-server on PATH (apt install redis-server)")
    postgres_bin()
    if subprocess.run(["id", "-u", PG_USER], capture_output=True).returncode != 0:
        raise Unavailable(f"PostgreSQL must run as a user of its own: there is no user {PG_USER!r}")
    probe = f"gbfprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        raise Unavailable(f"cannot create a network namespace: {made.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)


def ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Made:
    """Everything the run made, undone by :meth:`undo` whatever happened."""

    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def spawn(self, args: Sequence[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process in a session of its own (a Ctrl-C reaches this run only, which then
        stops everything in order), its output to ``log``."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(args), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
            )
        self.procs.append(proc)
        return proc

    def undo(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        for link in self.links:
            ip("link", "del", link, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- the network --------------------------------------------------------------------------------


@dataclass
class Host:
    name: str  # h1, h2, ...
    namespace: str
    veth: str  # the end on the bridge, in this namespace
    address: str


class Network:
    """A bridge with an address of a /24 no route of this machine uses, and a namespace per host."""

    def __init__(self, made: Made, tag: str) -> None:
        self.made = made
        self.tag = tag
        self.bridge = f"gbf{tag}br"
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
        used = {line.split("/")[0].rsplit(".", 1)[0] for line in routes.splitlines() if line[:1].isdigit()}
        nets = [f"10.213.{i}" for i in range(256) if f"10.213.{i}" not in used]
        self.net = nets[int(tag, 16) % len(nets)]
        self.gateway = f"{self.net}.1"
        self.hosts: dict[int, Host] = {}

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        self.made.links.append(self.bridge)
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def host(self, i: int) -> Host:
        if i in self.hosts:
            return self.hosts[i]
        ns, veth, peer = f"gbf{self.tag}h{i}", f"gbf{self.tag}v{i}", f"gbf{self.tag}p{i}"
        ip("netns", "add", ns)
        self.made.namespaces.append(ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns)
        self.made.links.append(veth)
        ip("link", "set", veth, "master", self.bridge, "up")
        address = f"{self.net}.{10 + i}"
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", peer)
        ip("-n", ns, "link", "set", peer, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        self.hosts[i] = Host(f"h{i}", ns, veth, address)
        return self.hosts[i]

    def cut(self, host: Host) -> None:
        ip("link", "set", host.veth, "down")

    def mend(self, host: Host) -> None:
        ip("link", "set", host.veth, "up")


# -- the servers --------------------------------------------------------------------------------


@dataclass
class Servers:
    redis_port: int
    pg_port: int
    gateway: str

    def redis_url(self, where: str) -> str:
        return f"redis://{where}:{self.redis_port}/0"

    def pg_url(self, where: str, database: str) -> str:
        return f"postgres://{PG_USER}@{where}:{self.pg_port}/{database}"


async def wait_for(what: str, check: Any, within: float, every: float = 0.1) -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy (exceptions count as
    not yet); raise after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await check()
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
        await asyncio.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}" + (f" ({last})" if last else ""))


def init_postgres(tmp: Path, net: Network) -> tuple[Path, Path]:
    """A new PostgreSQL cluster in ``tmp/pgdata``, owned by the postgres user, that trusts the
    bridge's network. Returns (its binaries, its data folder)."""
    bin_dir = postgres_bin()
    pgdata = tmp / "pgdata"
    pgdata.mkdir()
    shutil.chown(pgdata, PG_USER, PG_USER)
    tmp.chmod(0o755)  # postgres reaches its folder through it
    initdb = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", PG_USER, "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        user=PG_USER,
        group=PG_USER,
    )
    if initdb.returncode != 0:
        raise RuntimeError(f"initdb failed: {initdb.stderr.strip()}")
    with open(pgdata / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {net.net}.0/24 trust\n")
    return bin_dir, pgdata


async def start_servers(made: Made, net: Network) -> Servers:
    servers = Servers(free_port(), free_port(), net.gateway)
    made.spawn(
        [
            "redis-server",
            "--bind",
            f"{net.gateway} 127.0.0.1",
            "--port",
            str(servers.redis_port),
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(made.tmp),
        ],
        made.tmp / "redis.log",
    )
    bin_dir, pgdata = await asyncio.to_thread(init_postgres, made.tmp, net)
    made.spawn(
        [
            str(bin_dir / "postgres"),
            "-D",
            str(pgdata),
            "-p",
            str(servers.pg_port),
            "-c",
            f"listen_addresses={net.gateway},127.0.0.1",
            "-c",
            f"unix_socket_directories={pgdata}",
            "-c",
            "max_connections=400",
        ],
        made.tmp / "postgres.log",
        user=PG_USER,
        group=PG_USER,
    )

    async def redis_up() -> bool:
        async with Redis.from_url(servers.redis_url("127.0.0.1")) as r:
            return bool(await r.ping())

    async def pg_up() -> bool:
        conn = await asyncpg.connect(servers.pg_url("127.0.0.1", "postgres"), timeout=2)
        await conn.close()
        return True

    await wait_for("redis-server", redis_up, 20)
    await wait_for("PostgreSQL", pg_up, 60, every=0.3)
    return servers


# -- the fleet ----------------------------------------------------------------------------------


@dataclass
class Worker:
    host: Host
    proc: subprocess.Popen[bytes]
    log: Path


class Fleet:
    """The workers of one scenario, on one database of their own (a copy of the migrated template)
    and a flushed Redis."""

    def __init__(
        self, made: Made, net: Network, servers: Servers, args: argparse.Namespace, name: str
    ) -> None:
        self.made, self.net, self.servers, self.args = made, net, servers, args
        self.database = f"fleet_{name}"
        self.workers: list[Worker] = []
        self.admin: asyncpg.Connection | None = None
        self.redis = Redis.from_url(servers.redis_url("127.0.0.1"), decode_responses=True)

    async def __aenter__(self) -> Fleet:
        self.admin = await asyncpg.connect(self.servers.pg_url("127.0.0.1", "postgres"))
        await self.admin.execute(f'CREATE DATABASE "{self.database}" TEMPLATE fleet_template')
        await self.redis.flushall()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        assert self.admin is not None
        await self.admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        await self.admin.close()
        await self.redis.aclose()

    def env(self, host: Host, concurrency: int) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("GENBOT_")}
        env = {
            **base,
            "PYTHONPATH": str(ROOT),
            "GENBOT_LOG_LEVEL": "INFO",
            "GENBOT_REDIS__URL": self.servers.redis_url(self.net.gateway),
            "GENBOT_REDIS__KEY_PREFIX": PREFIX,
            "GENBOT_REDIS__QUEUE_NAME": f"{PREFIX}:queue",
            "GENBOT_DATABASE__URL": self.servers.pg_url(self.net.gateway, self.database),
            "GENBOT_BLOBS__DIR": str(self.made.tmp / "blobs"),
            "GENBOT_PLUGINS__MODULES": PLUGIN,
            "GENBOT_PLUGINS__FLEET__HOST": host.name,
            "GENBOT_PLUGINS__FLEET__RUNS_URL": self.servers.redis_url(self.net.gateway),
            "GENBOT_PLUGINS__FLEET__RUNS_KEY": RUNS,
            "GENBOT_WORKER__LINES": f"{LINE}={concurrency}",
            "GENBOT_WORKER__SWEEP_EVERY_MIN": str(self.args.sweep_s / 60),
            # Every job is the bench's one member's: its running cap would run them one at a time.
            **{f"GENBOT_QUOTA__{k.upper()}": str(v) for k, v in QUOTA.items()},
        }
        if failover_supported():
            env["GENBOT_WORKER__FAILOVER_AFTER_S"] = str(self.args.failover_after)
        return env

    async def start(self, indexes: Sequence[int], concurrency: int) -> list[Worker]:
        """Start a worker on each host of ``indexes``; returns once every one beats."""
        started = []
        for i in indexes:
            host = self.net.host(i)
            folder = self.made.tmp / host.name
            folder.mkdir(exist_ok=True)
            log = folder / "worker.log"
            proc = self.made.spawn(
                ["ip", "netns", "exec", host.namespace, sys.executable, "-m", "bot.cli", "worker"],
                log,
                cwd=folder,
                env=self.env(host, concurrency),
            )
            started.append(Worker(host, proc, log))
        self.workers += started
        for worker in started:
            await wait_for(f"the worker on {worker.host.name}", lambda w=worker: self._beats(w), 90, 0.25)
        return started

    async def _beats(self, worker: Worker) -> bool:
        if worker.proc.poll() is not None:
            tail = worker.log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the worker on {worker.host.name} exited at start-up:\n{tail}")
        mark = f"{socket.gethostname()}:{worker.proc.pid}:"
        for key in await self.redis.keys(Keys(PREFIX).workers("*")):
            if any(m.startswith(mark) for m in await self.redis.zrange(key, 0, -1)):
                return True
        return False

    async def stop(self, workers: Sequence[Worker] | None = None) -> None:
        """SIGTERM (arq puts running jobs back), then SIGKILL after 20 s."""
        chosen = list(self.workers if workers is None else workers)
        for w in chosen:
            if w.proc.poll() is None:
                w.proc.terminate()
        deadline = time.monotonic() + 20
        for w in chosen:
            while w.proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - a process
                await asyncio.sleep(0.1)
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        self.workers = [w for w in self.workers if w not in chosen]

    def settings(self) -> Settings:
        return load_settings(
            _env_file=None,
            redis={
                "url": self.servers.redis_url("127.0.0.1"),
                "key_prefix": PREFIX,
                "queue_name": f"{PREFIX}:queue",
            },
            database={"url": self.servers.pg_url("127.0.0.1", self.database)},
            blobs={"dir": self.made.tmp / "blobs"},
            plugins={"modules": [PLUGIN]},
            quota=QUOTA,
        )

    # -- the truth ------------------------------------------------------------------------------

    async def rows(self) -> list[dict[str, Any]]:
        assert self.admin is not None
        conn = await asyncpg.connect(self.servers.pg_url("127.0.0.1", self.database))
        try:
            records = await conn.fetch(
                "SELECT id, state, error_code, ticket, attempts, started_at, finished_at, "
                "meta->>'text' AS text FROM generations ORDER BY id"
            )
        finally:
            await conn.close()
        return [dict(r) for r in records]

    async def runs(self) -> list[dict[str, Any]]:
        return [json.loads(e) for e in await self.redis.lrange(RUNS, 0, -1)]

    async def connections(self) -> tuple[int, int]:
        """(PostgreSQL connections to this scenario's database, Redis clients), this process's own
        excluded."""
        assert self.admin is not None
        pg = await self.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND client_addr <> '127.0.0.1'",
            self.database,
        )
        clients = await self.redis.client_list()
        return int(pg), sum(1 for c in clients if not c["addr"].startswith("127.0.0.1"))


def failover_supported() -> bool:
    return "failover_after_s" in WorkerSettings.model_fields


def failover_checks(failover_after_s: float) -> str:
    """How often the tree measured checks for runs to take over, as a clause for the report."""
    every = WorkerSettings(failover_after_s=failover_after_s).failover_check_s
    return f", the failover check every {every:g} s"


# -- submitting ---------------------------------------------------------------------------------


class Posted:
    """The bench's answer channel for one command (what an adapter gives the core)."""

    def __init__(self) -> None:
        self.job: int | None = None
        self.refusal: str | None = None

    async def reply(self, text: str) -> None:
        self.refusal = text

    async def say(self, text: str) -> None:
        self.refusal = text

    async def reply_error(self, error: Any) -> None:
        self.refusal = f"{error.title}: {error.what}"

    async def fetch(self, ref: str, max_bytes: int) -> Any:
        raise NotImplementedError("the fleet's command has no file option")

    def spends(self, view: StatusView) -> list[Spend]:
        return []

    async def post_status(self, view: StatusView) -> MessageRef:
        self.job = view.job
        return MessageRef("local", "fleet", f"m{view.job}")


async def submit(rt: Runtime, count: int, seconds: float, label: str) -> tuple[list[int], list[str]]:
    """``/fleet`` ``count`` times through ``Genbot.handle``, :data:`SUBMIT_CONCURRENCY` at once;
    returns the jobs posted and the refusals."""
    actor = Actor("local", "fleet", "bench", "Bench")
    gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    answers = [Posted() for _ in range(count)]

    async def one(i: int) -> None:
        request = CommandRequest(actor, "fleet", "fleet", {"text": f"{label} {i}", "seconds": f"{seconds:g}"})
        async with gate:
            await rt.core.handle(request, answers[i])

    await asyncio.gather(*(one(i) for i in range(count)))
    return [a.job for a in answers if a.job is not None], [a.refusal for a in answers if a.refusal]


# -- measuring ----------------------------------------------------------------------------------


def fifo_violations(rows: Sequence[dict[str, Any]], window: int) -> tuple[int, int]:
    """(violations, inversions within the window). A job **violates** FIFO if it started before a
    job of its line with an earlier ticket, ``window`` tickets or more behind it (``window``: the
    fleet's slots; jobs started together by different workers write their start times in any
    order, so closer inversions are jitter, counted apart). A started job without a ticket violates
    it too."""
    started = [r for r in rows if r["started_at"] is not None]
    violations = sum(1 for r in started if r["ticket"] is None)
    ordered = sorted((r for r in started if r["ticket"] is not None), key=lambda r: r["ticket"])
    jitter = 0
    for j, later in enumerate(ordered):
        overtaken = [e for e in ordered[:j] if e["started_at"] > later["started_at"]]
        if any(later["ticket"] - e["ticket"] >= window for e in overtaken):
            violations += 1
        elif overtaken:
            jitter += 1
    return violations, jitter


def duplicates(runs: Sequence[dict[str, Any]], expected: Counter[int] | None = None) -> int:
    """Runs beyond one per job (beyond ``expected[job]`` where a second run was caused on purpose)."""
    starts = Counter(r["job"] for r in runs if r["event"] == "start")
    allowed = expected or Counter()
    return sum(max(0, n - max(1, allowed[job])) for job, n in starts.items())


def seconds_between(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Drain:
    hosts: int
    slots: int
    jobs: int
    accepted: int = 0
    refused: int = 0
    makespan_s: float = 0.0
    submit_s: float = 0.0
    fifo_violations: int = 0
    fifo_jitter: int = 0
    duplicates: int = 0
    lost: int = 0
    runs: int = 0
    pg_connections: int = 0
    redis_clients: int = 0
    worker_rss_mb: float = 0.0
    redis_cmds_per_s: float = 0.0
    idle: dict[int, Idle] = field(default_factory=dict)  # by the jobs running elsewhere


@dataclass
class Idle:
    """An idle worker's commands over one window, and what its line held meanwhile."""

    per_s: float
    top: dict[str, float]  # the most frequent commands, per second
    parts: dict[str, float]  # per second, by part of the worker (PARTS)
    arq_queue: int  # entries of the line's arq queue at the start of the window
    waiting: int  # entries of the line's waiting set


async def redis_commands(redis: Redis) -> int:
    info = await redis.info("stats")
    return int(info["total_commands_processed"])


async def drain(made: Made, net: Network, servers: Servers, args: argparse.Namespace, hosts: int) -> Drain:
    """``args.jobs`` jobs on ``hosts`` hosts, then the idle worker's commands."""
    figures = Drain(hosts, hosts * args.concurrency, args.jobs)
    async with Fleet(made, net, servers, args, f"n{hosts}") as fleet:
        workers = await fleet.start(range(1, hosts + 1), args.concurrency)
        async with runtime(fleet.settings()) as rt:
            commands_before = await redis_commands(fleet.redis)
            began = time.monotonic()
            jobs, refusals = await submit(rt, args.jobs, args.job_s, "drain")
            figures.submit_s = time.monotonic() - began
            figures.accepted, figures.refused = len(jobs), len(refusals)
            peak = [0, 0]

            async def ended() -> bool:
                pg, clients = await fleet.connections()
                peak[0], peak[1] = max(peak[0], pg), max(peak[1], clients)
                rows = await fleet.rows()
                return all(r["state"] in TERMINAL for r in rows)

            budget = args.jobs * args.job_s / figures.slots * 3 + 120
            with contextlib.suppress(RuntimeError):
                await wait_for("every job to end", ended, budget, every=0.5)
            wall = time.monotonic() - began
            figures.redis_cmds_per_s = (await redis_commands(fleet.redis) - commands_before) / wall
            rss = [m for w in workers if (m := rss_mb(w.proc.pid)) is not None]
            figures.worker_rss_mb = sum(rss) / len(rss) if rss else 0.0
            figures.pg_connections, figures.redis_clients = peak
            rows = await fleet.rows()
            runs = await fleet.runs()
            done = [r for r in rows if r["state"] == "succeeded"]
            figures.lost = len(jobs) - len([r for r in done if r["id"] in set(jobs)])
            if done:
                first = min(r["started_at"] for r in done)
                last = max(r["finished_at"] for r in done)
                figures.makespan_s = seconds_between(first, last)
            figures.fifo_violations, figures.fifo_jitter = fifo_violations(rows, figures.slots)
            figures.runs = sum(1 for r in runs if r["event"] == "start")
            figures.duplicates = duplicates(runs)
            print(
                f"  {hosts:>2} hosts: {figures.accepted} jobs in {figures.makespan_s:.1f} s "
                f"(submitted in {figures.submit_s:.1f} s); FIFO violations {figures.fifo_violations}, "
                f"duplicates {figures.duplicates}, lost {figures.lost}",
                flush=True,
            )
            await idle_worker(fleet, rt, args, figures)
    return figures


#: What an idle worker's Redis connections do, told by the keys their commands name (see
#: :func:`count_commands`), most specific first: a connection is its pool's for life.
PARTS = (
    ("sweeper", (f"{PREFIX}:queue{SWEEP_QUEUE_SUFFIX}", "cron:")),
    (
        "line poll",
        (f"{PREFIX}:queue{LINE_QUEUE_INFIX}{LINE}", f"{PREFIX}:waiting:{LINE}", ":gen:", "arq:abort"),
    ),
)
OTHER = "heartbeat, other"


async def count_commands(redis_url: str, address: str, window: float) -> tuple[Counter[str], Counter[str]]:
    """The commands Redis received from clients at ``address`` during ``window`` seconds (MONITOR,
    by Redis's own timestamps): by name, and by part of the worker (:data:`PARTS`: its line's arq
    worker, its sweeper, the rest; a connection belongs to the first part whose keys it names)."""
    by_connection: dict[str, list[str]] = {}
    monitor_client = Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(window + 30), monitor_client.monitor() as monitor:
            start = time.time() + 0.2  # MONITOR is listening by then
            end = start + window
            while True:
                seen = await monitor.next_command()
                if seen["time"] >= end:
                    break
                if seen["time"] >= start and seen["client_address"] == address:
                    by_connection.setdefault(seen["client_port"], []).append(seen["command"])
    finally:
        await monitor_client.aclose()
    names: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    for commands in by_connection.values():
        part = next((name for name, marks in PARTS if any(m in c for c in commands for m in marks)), OTHER)
        parts[part] += len(commands)
        names.update(c.split(" ", 1)[0].upper() for c in commands)
    return names, parts


async def idle_worker(fleet: Fleet, rt: Runtime, args: argparse.Namespace, figures: Drain) -> None:
    """With every slot of the fleet running a held job, then with none: the commands per second of
    one more worker, on a host of its own, that runs nothing."""
    await fleet.redis.delete(RELEASE)
    held, _ = await submit(rt, figures.slots, 0, "held")

    async def all_running() -> bool:
        rows = {r["id"]: r for r in await fleet.rows()}
        return all(rows[j]["state"] == "running" for j in held)

    await wait_for("every slot to run a held job", all_running, 120, every=0.25)
    [extra] = await fleet.start([figures.hosts + 1], args.concurrency)
    await asyncio.sleep(1.0)  # past its start-up
    figures.idle[figures.slots] = await idle_window(fleet, rt, extra, args.idle_window)
    await fleet.redis.set(RELEASE, "1")

    async def none_running() -> bool:
        return all(r["state"] in TERMINAL for r in await fleet.rows())

    await wait_for("the held jobs to end", none_running, 60, every=0.25)
    await asyncio.sleep(1.0)
    figures.idle[0] = await idle_window(fleet, rt, extra, args.idle_window)
    ran_there = [r for r in await fleet.runs() if r["host"] == extra.host.name]
    if ran_there:
        raise RuntimeError(f"the idle worker ran {len(ran_there)} jobs: it was not idle")
    print(
        f"      idle worker: {figures.idle[figures.slots].per_s:.0f} commands/s with {figures.slots} jobs "
        f"running elsewhere, {figures.idle[0].per_s:.0f} with none",
        flush=True,
    )


async def idle_window(fleet: Fleet, rt: Runtime, extra: Worker, window: float) -> Idle:
    arq_queue = await fleet.redis.zcard(rt.queue.line_queue(LINE))
    waiting = await fleet.redis.zcard(Keys(PREFIX).waiting(LINE))
    names, parts = await count_commands(fleet.servers.redis_url("127.0.0.1"), extra.host.address, window)
    top = {name: n / window for name, n in names.most_common(6)}
    return Idle(
        sum(names.values()) / window, top, {k: v / window for k, v in parts.items()}, arq_queue, waiting
    )


@dataclass
class Failover:
    mode: str  # "cut" or "kill"
    failover_after_s: float
    sweep_s: float
    host: str = ""
    seconds: float | None = None  # from the fault to the job's start elsewhere
    state: str = ""
    ran_on: str = ""
    attempts: int = 0
    runs: int = 0
    overwritten: bool = False  # the cut-off run's writes reached the row after the take-over
    duplicates: int = 0


async def failover(
    made: Made, net: Network, servers: Servers, args: argparse.Namespace, mode: str
) -> Failover:
    """Two hosts; one held job; its host is cut off (``cut``) or its worker killed (``kill``)."""
    figures = Failover(mode, args.failover_after, args.sweep_s)
    async with Fleet(made, net, servers, args, f"failover_{mode}") as fleet:
        workers = await fleet.start([1, 2], 1)
        async with runtime(fleet.settings()) as rt:
            [job], _ = await submit(rt, 1, 0, "failover")

            async def started_on(exclude: str | None = None) -> dict[str, Any] | None:
                for run in await fleet.runs():
                    if run["job"] == job and run["event"] == "start" and run["host"] != exclude:
                        return run
                return None

            first = await wait_for("the job to start", started_on, 60)
            figures.host = first["host"]
            victim = next(w for w in workers if w.host.name == figures.host)
            await asyncio.sleep(1.0)  # running, beating
            fault_at = time.time()
            if mode == "cut":
                net.cut(victim.host)
            else:
                victim.proc.kill()
            again = await wait_for(
                "the job to start on another host",
                lambda: started_on(exclude=figures.host),
                args.failover_after * 6 + args.sweep_s * 4 + 120,
                every=0.1,
            )
            figures.seconds = again["t"] - fault_at
            print(
                f"  failover ({mode}): the job ran again on {again['host']} {figures.seconds:.1f} s after",
                flush=True,
            )
            await fleet.redis.set(RELEASE, "1")
            if mode == "cut":
                net.mend(victim.host)

            async def ended() -> bool:
                return all(r["state"] in TERMINAL for r in await fleet.rows())

            await wait_for("the job to end", ended, 60, every=0.25)
            # The cut-off run sees the release too once its host is back, and tries to end the job.
            await asyncio.sleep(max(5.0, args.failover_after))
            [row] = await fleet.rows()
            runs = await fleet.runs()
            figures.state, figures.attempts = row["state"], row["attempts"]
            figures.ran_on = (row["text"] or "").removeprefix("ran on ")
            figures.overwritten = figures.ran_on == figures.host
            figures.runs = sum(1 for r in runs if r["event"] == "start")
            figures.duplicates = duplicates(runs, Counter({job: 2}))
    return figures


# -- the report ---------------------------------------------------------------------------------


def tree_state() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split("\n")
    files = sorted(line[3:] for line in changed if line.strip())
    if not head:
        return "unknown (not a git checkout)"
    if not files:
        return f"`{head}`"
    return f"`{head}` with uncommitted changes ({', '.join(f'`{f}`' for f in files)})"


def tree_diff() -> str:
    """A fingerprint of the tracked files' changes against HEAD (the tree is shared: it may move
    during a run)."""
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True).stdout
    return hashlib.sha1(diff).hexdigest()[:12]


def render(
    drains: list[Drain], failovers: list[Failover], args: argparse.Namespace, took: float, moved: bool
) -> str:
    machine = (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, Python {platform.python_version()}"
    )
    anchor = next((d for d in drains if d.hosts == 1), None)
    lines = [
        "# Scaling figures",
        "",
        f"Generated by `make fleet-bench` (`python -m bench.fleet {' '.join(args.argv)}`".rstrip() + ") "
        f"on {time.strftime('%Y-%m-%d')}, on {machine}, in {took / 60:.1f} minutes; the tree measured: "
        f"{tree_state()}"
        + (
            " (the uncommitted changes moved during the run: its scenarios ran different code)"
            if moved
            else ""
        )
        + ".",
        "",
        "Each host is a network namespace with a veth on a bridge, running one `genbot worker` process "
        f"(one arq worker of the `fleet` line, {args.concurrency} job(s) at once); the workers reach this "
        "run's own `redis-server` and PostgreSQL cluster over the bridge. "
        f"{args.jobs} jobs of {args.job_s:g} s (a plugin that sleeps in four steps, reporting progress, "
        "and records each run in Redis) are submitted through `Genbot.handle`, "
        f"{SUBMIT_CONCURRENCY} at once, once every worker is up. The sweep runs every {args.sweep_s:g} s "
        f"and `GENBOT_WORKER__FAILOVER_AFTER_S` is {args.failover_after:g} s (production: 60 s and 60 s). "
        "Every host shares the machine's CPUs: 16 hosts here are 16 processes on "
        f"{os.cpu_count()} cores.",
        "",
        "| hosts | slots | jobs | time, first start to last end | speedup vs 1 host | per round "
        "| FIFO violations | duplicates | lost | PostgreSQL connections | Redis clients | worker RSS "
        "| Redis commands/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in drains:
        speedup = f"{anchor.makespan_s / d.makespan_s:.2f}x" if anchor and d.makespan_s else "n/a"
        rounds = -(-d.jobs // d.slots)
        per_round = f"{d.makespan_s / rounds:.2f} s" if d.makespan_s else "n/a"
        lines.append(
            f"| {d.hosts} | {d.slots} | {d.accepted} | {d.makespan_s:.1f} s | {speedup} | {per_round} "
            f"| {d.fifo_violations} | {d.duplicates} | {d.lost} | {d.pg_connections} | {d.redis_clients} "
            f"| {d.worker_rss_mb:.0f} MB | {d.redis_cmds_per_s:,.0f} |"
        )
    lines += [
        "",
        "**Per round**: the time over the rounds of jobs a slot ran (jobs / slots, rounded up): the job's "
        f"{args.job_s:g} s and what a worker spends between two jobs (its end, the next poll, the claim, the "
        "start). **FIFO violations**: jobs that started before a job with an earlier ticket "
        "that is at least as many tickets behind as the fleet has slots (rows' `started_at` and `ticket`); "
        "inversions closer than that are workers that started together writing their start in another "
        f"order: {', '.join(f'{d.fifo_jitter} at {d.hosts} host(s)' for d in drains)}. **Duplicates**: runs "
        "beyond one per job (each run recorded by the job itself). **Lost**: accepted and not succeeded. "
        "**Connections and clients**: the most seen from the fleet's hosts during the drain. "
        "**Redis commands/s**: every client's, over the drain (from submit to the last end).",
        "",
        "## An idle worker's Redis commands",
        "",
        "One more worker, on a host of its own, that runs nothing: its commands as Redis received them "
        f"(`MONITOR`, by its address), over {args.idle_window:g} s, with every slot of the fleet running a "
        "held job, then with none running. A job that is running stays in arq's queue until it ends. "
        "By part of the worker (each Redis connection is one pool's, told by the keys it names): **line "
        "poll**, the arq worker of its line (the read of waiting jobs, arq's abort check, its health "
        "key); **sweeper**, the arq worker of the maintenance queue, whose cron jobs (the sweep, the "
        "failover check) every sweeper of the fleet tries to claim at each tick, so it costs more at this "
        "run's short intervals than at production's; **heartbeat, other**: the worker's beat into the "
        "line's capacity and the rest.",
        "",
        "| fleet | jobs running elsewhere | arq queue, waiting set | commands/s "
        f"| {' | '.join(name for name, _ in PARTS)} | {OTHER} | the most frequent, per second |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in drains:
        for running in sorted(d.idle, reverse=True):
            idle = d.idle[running]
            top = ", ".join(f"{name} {value:.1f}" for name, value in idle.top.items())
            held = f"{idle.arq_queue}, {idle.waiting}"
            parts = " | ".join(f"{idle.parts.get(name, 0):,.1f}" for name in [*(n for n, _ in PARTS), OTHER])
            lines.append(f"| {d.hosts} host(s) | {running} | {held} | {idle.per_s:,.1f} | {parts} | {top} |")
    lines += ["", "## Failover", ""]
    if not failover_supported():
        lines.append(
            "**Pending**: the tree measured has no `GENBOT_WORKER__FAILOVER_AFTER_S` (a running job whose "
            "heartbeat stopped is not taken over yet), so there is no failover figure. Run "
            "`make fleet-bench` again once it has."
        )
    elif not failovers:
        lines.append("Not run (`--failover ''`).")
    else:
        lines += [
            f"Two hosts, one job holding; `GENBOT_WORKER__FAILOVER_AFTER_S={args.failover_after:g}`"
            f"{failover_checks(args.failover_after)}. **cut**: the host's veth is set down (a partition: "
            "the worker goes on, cut off), and up again once the job runs elsewhere; **kill**: its "
            "worker gets SIGKILL. The time is from the fault to the job's start on the other host, as "
            "the job recorded it.",
            "",
            "| fault | failover time | final state | ran on (result) | attempts | runs | cut-off run's "
            "write got through | duplicates |",
            "|---|---:|---|---|---:|---:|---|---:|",
        ]
        for f in failovers:
            took_s = f"{f.seconds:.1f} s" if f.seconds is not None else "never"
            lines.append(
                f"| {f.mode} ({f.host}) | {took_s} | {f.state} | {f.ran_on} | {f.attempts} | {f.runs} "
                f"| {'yes' if f.overwritten else 'no'} | {f.duplicates} |"
            )
    return "\n".join(lines) + "\n"


def verdict(drains: list[Drain], failovers: list[Failover]) -> int:
    bad = any(d.lost or d.duplicates or d.fifo_violations or d.refused for d in drains)
    bad = bad or any(
        f.overwritten or f.duplicates or f.seconds is None or f.state != "succeeded" for f in failovers
    )
    return 1 if bad else 0


async def simulate(made: Made, args: argparse.Namespace) -> int:
    began = time.monotonic()
    tree_at_start = tree_diff()
    net = Network(made, secrets.token_hex(2))
    net.up()
    for i in range(1, max(max(args.hosts) + 1, 2) + 1):
        net.host(i)
    servers = await start_servers(made, net)
    admin = await asyncpg.connect(servers.pg_url("127.0.0.1", "postgres"))
    try:
        await admin.execute("CREATE DATABASE fleet_template")
    finally:
        await admin.close()
    await db.migrate(servers.pg_url("127.0.0.1", "fleet_template"))
    await db.close()
    print(
        f"network {net.net}.0/24, redis-server :{servers.redis_port}, PostgreSQL :{servers.pg_port}",
        flush=True,
    )
    drains = [await drain(made, net, servers, args, hosts) for hosts in args.hosts]
    failovers: list[Failover] = []
    if not failover_supported():
        print("  failover: pending (this tree has no GENBOT_WORKER__FAILOVER_AFTER_S)", flush=True)
    else:
        for mode in args.failover:
            failovers.append(await failover(made, net, servers, args, mode))
    text = render(drains, failovers, args, time.monotonic() - began, tree_diff() != tree_at_start)
    print("\n" + text, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", flush=True)
    return verdict(drains, failovers)


def _hosts(text: str) -> list[int]:
    try:
        hosts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give host counts such as 1,4,16") from None
    if not hosts or any(not 1 <= n <= 64 for n in hosts):
        raise argparse.ArgumentTypeError("host counts are 1 to 64")
    return hosts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=_hosts, help="fleet sizes (default 1,4,16)")
    parser.add_argument("--jobs", type=int, help="jobs per fleet size (default 200)")
    parser.add_argument("--job-s", type=float, help="seconds per job (default 1)")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once per worker (default 1)")
    parser.add_argument("--idle-window", type=float, help="seconds of the idle worker's count (default 5)")
    parser.add_argument("--failover-after", type=float, help="GENBOT_WORKER__FAILOVER_AFTER_S (default 6)")
    parser.add_argument("--sweep-s", type=float, help="seconds between sweeps (default 3)")
    parser.add_argument(
        "--failover", default="cut,kill", help="failover faults: cut (veth down), kill (SIGKILL); '' for none"
    )
    parser.add_argument("--out", type=Path, help="where to write the figures (default docs/scaling.md)")
    parser.add_argument("--smoke", action="store_true", help="1 and 2 hosts, 8 short jobs; writes nothing")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    small = args.smoke
    defaults = {
        "hosts": [1, 2] if small else [1, 4, 16],
        "jobs": 8 if small else 200,
        "job_s": 0.5 if small else 1.0,
        "idle_window": 2.0 if small else 5.0,
        "failover_after": 6.0,
        "sweep_s": 1.0 if small else 3.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None and not small:
        args.out = ROOT / "docs" / "scaling.md"
    args.failover = [m for m in args.failover.split(",") if m]
    if any(m not in ("cut", "kill") for m in args.failover):
        parser.error("--failover takes cut and/or kill")
    if args.jobs < 1 or args.job_s <= 0 or not 1 <= args.concurrency <= 64:
        parser.error("--jobs must be at least 1, --job-s above 0, --concurrency 1 to 64")
    if args.sweep_s < 1:
        parser.error("--sweep-s is at least 1 (GENBOT_WORKER__SWEEP_EVERY_MIN's floor)")
    return args


@contextlib.contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run as Ctrl-C does: through the clean-up."""

    def interrupt(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preflight()
    except Unavailable as exc:
        print(f"bench.fleet: {exc}", file=sys.stderr)
        return 2
    made = Made(Path(tempfile.mkdtemp(prefix="genbot-fleet-")))
    try:
        with terminated_as_interrupt():
            return asyncio.run(simulate(made, args))
    except KeyboardInterrupt:
        print("bench.fleet: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        made.undo()


if __name__ == "__main__":
    raise SystemExit(main())
