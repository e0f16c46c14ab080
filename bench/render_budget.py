"""The render scheduler under Slack's rate limits, against the renderer it replaced, in one run.

Two scenarios, each run on this tree and on a **legacy** tree (the commit before the scheduler,
``--legacy``, exported with ``git archive`` into a temporary folder), as real processes: ``genbot
migrate``, ``genbot bot`` on Slack in HTTP mode and ``genbot worker``, against the fake Slack Web
API of the tests, which answers 429 with ``Retry-After`` past Slack's documented limits (one write
a second per channel with short bursts, ``chat.update`` about 50 a minute per workspace). Each run
has its own ``redis-server`` and SQLite file.

**Queue** (``--n``, default 100 300 1000): N members send ``/imagine`` at once in one channel; once
every status message is posted (or the command gave up), workers drain the line at about 2.5 jobs a
second of 3 s jobs. Time runs ``--scale`` times faster than life (default 10): the fake's limits,
genbot's budgets, the job times and the edit interval are all scaled, and the figures below are
given back in life seconds. Reported:

- waiting writes per job: the edits a message gets while it waits (mean, max);
- 429s Slack answered, and member-facing failures (a row not ``succeeded``, a message never posted
  or an error said to the member);
- final latency: from a job's end (its row) to its image in its message (p50, p99);
- head truth: each time a job in the first ``EXACT`` (10) places moves up, whether its message shows
  a place it truly had within 2 s (life) of the move.

**ETA** (``--eta-runs``, default 3): unscaled, without rate limits: 5 jobs to learn the run time,
then a burst of 60 jobs of 0.5-2 s; the median absolute error of the first wait each message shows
(read back from its words: "about 40 s", "1 min 40 s", "13-19 min") against when its job started.

    python -m bench.render_budget                       # make render-bench
    python -m bench.render_budget --n 100 --eta-runs 1  # quicker
    python -m bench.render_budget --legacy ''           # this tree only

Ratios are this tree's figure over the legacy one's, measured in the same run. Nothing here is an
exit code: the tests hold the promises, this prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bot.embedded_redis import EmbeddedRedis, embedded_redis, free_port
from tests.adapters.slack.conftest import SECRET, SlackClient
from tests.adapters.slack.fake_slack import TOKEN, FakeSlack, Message
from tests.adapters.slack.test_slack_app import headline, image_of
from tests.adapters.slack.test_slack_limits import statuses
from tests.rate_limits import SlackLimits

ROOT = Path(__file__).resolve().parents[1]
#: The last commit before the render scheduler (issue 11).
LEGACY = "21539dd"
EXACT = 10
#: Life seconds: the drain rate and job time of the issue's measurement.
JOB_S = 3.0
JOBS_PER_S = 2.5
HEAD_WITHIN_S = 2.0
PLACE = re.compile(r"#(\d+) in line")


@dataclass
class Tree:
    name: str
    root: Path
    legacy: bool


@dataclass
class Outcome:
    """What one queue scenario showed, in life seconds."""

    tree: str
    n: int
    posted: int = 0
    waiting_edits_mean: float = 0.0
    waiting_edits_max: int = 0
    writes: int = 0
    rate_limited: int = 0
    member_failures: int = 0  # jobs that failed or were cancelled, and commands that made no job
    final_p50: float = 0.0
    final_p99: float = 0.0
    head_true: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# -- processes --------------------------------------------------------------------------------


def base_env(
    tree: Tree, redis: EmbeddedRedis, db: Path, work: Path, fake: FakeSlack, port: int
) -> dict[str, str]:
    return {
        "PYTHONPATH": str(tree.root),
        "GENBOT_PLATFORM": "slack",
        "GENBOT_REDIS__URL": redis.url,
        "GENBOT_DATABASE__URL": f"sqlite://{db}",
        "GENBOT_BLOBS__DIR": str(work / "blobs"),
        "GENBOT_SLACK__BOT_TOKEN": TOKEN,
        "GENBOT_SLACK__SIGNING_SECRET": SECRET,
        "GENBOT_SLACK__API_BASE_URL": fake.api_url,
        "GENBOT_SLACK__HTTP_HOST": "127.0.0.1",
        "GENBOT_SLACK__HTTP_PORT": str(port),
        "GENBOT_PLUGINS__IMAGINE__SIZES": "256x256",
        "GENBOT_PLUGINS__IMAGINE__DEFAULT_SIZE": "256x256",
        "GENBOT_QUOTA__MAX_QUEUED": "10000",
        "GENBOT_QUOTA__RATE_COUNT": "10000",
        "GENBOT_QUOTA__GLOBAL_MAX": "10000",
    }


class Processes:
    def __init__(self, tree: Tree, env: dict[str, str], logs: Path) -> None:
        self.tree = tree
        self.env = env
        self.logs = logs
        self.procs: list[asyncio.subprocess.Process] = []

    async def migrate(self) -> None:
        if await (await self.spawn("migrate", "migrate")).wait() != 0:
            raise SystemExit(f"genbot migrate failed on {self.tree.name}: see {self.logs}")

    async def spawn(self, name: str, *args: str, **env: str) -> asyncio.subprocess.Process:
        with open(self.logs / f"{self.tree.name}-{name}.log", "ab") as out:  # noqa: ASYNC230
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                *args,
                cwd=self.tree.root,
                env={**os.environ, **self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def listening(http: aiohttp.ClientSession, port: int, bot: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if bot.returncode is not None:
            raise SystemExit("the bot exited at start-up: see its log")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{port}/"):
                return
        await asyncio.sleep(0.1)
    raise SystemExit("the bot did not listen within 60 s")


@contextlib.asynccontextmanager
async def deployment(
    tree: Tree, fake: FakeSlack, work: Path, extra: dict[str, str]
) -> AsyncIterator[tuple[Processes, SlackClient, Path]]:
    work.mkdir(parents=True)  # noqa: ASYNC240
    db = work / "genbot.sqlite3"
    port = free_port()
    async with embedded_redis() as redis, aiohttp.ClientSession() as http:
        procs = Processes(tree, {**base_env(tree, redis, db, work, fake, port), **extra}, work)
        try:
            await procs.migrate()
            bot = await procs.spawn("bot", "bot")
            await listening(http, port, bot)
            yield procs, SlackClient(http, f"http://127.0.0.1:{port}/slack/events", fake), db
        finally:
            await procs.close()


# -- what members saw -------------------------------------------------------------------------


def job_of(message: Message) -> int | None:
    """The number of the job a status message is for, read from its prompt ("fox 12")."""
    match = re.search(r"fox (\d+)", message.text)
    return int(match.group(1)) if match else None


@dataclass
class Row:
    prompt_no: int
    ticket: int | None
    state: str
    started: float | None
    finished: float | None


def rows(db: Path) -> dict[int, Row]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        found = conn.execute(
            "SELECT prompt, ticket, state, started_at, finished_at FROM generations"
        ).fetchall()
    out = {}
    for prompt, ticket, state, started, finished in found:
        number = int(re.search(r"fox (\d+)", prompt).group(1))  # type: ignore[union-attr]
        out[number] = Row(number, ticket, state, stamp(started), stamp(finished))
    return out


def stamp(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def wait_seconds_in(words: str) -> float | None:
    """The wait a headline states, in seconds: the middle of a range."""
    for part in words.split(" · "):
        part = part.removeprefix("about ").strip()
        if (m := re.fullmatch(r"(?:(\d+) min)? ?(?:(\d+) s)?", part)) and (m.group(1) or m.group(2)):
            return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)
        if m := re.fullmatch(r"([\d.]+)-([\d.]+) (min|h)", part):
            unit = 60 if m.group(3) == "min" else 3600
            return (float(m.group(1)) + float(m.group(2))) / 2 * unit
    return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def head_truth(messages: dict[int, Message], table: dict[int, Row], within: float) -> float:
    """Of every move up of a job into or within the first EXACT places, the share whose message
    showed, ``within`` seconds after the move, a place the job truly had since the move (or that
    it had started)."""
    starts = sorted((r.started, r.ticket) for r in table.values() if r.started and r.ticket)
    good = total = 0
    for number, message in messages.items():
        row = table.get(number)
        if row is None or row.ticket is None or row.started is None:
            continue
        ahead = [t for t, ticket in starts if ticket < row.ticket]
        for k, moved_at in enumerate(ahead):
            place_then = len(ahead) - k  # the jobs ahead still waiting, after this one started
            if place_then > EXACT or moved_at < message.history[0]["at"]:
                continue
            look = moved_at + within
            shown = [v for v in message.history if v["at"] <= look]
            if not shown:
                continue
            total += 1
            words = headline(shown[-1])
            if not words.startswith("Queued"):
                good += row.started <= look
                continue
            place = PLACE.search(words)
            if place is None:
                continue
            later = [t for t in ahead if moved_at < t <= look]
            truths = {place_then - i for i in range(len(later) + 1)}
            good += int(place.group(1)) in truths
    return good / total if total else float("nan")


# -- the scenarios ----------------------------------------------------------------------------


def scaled_settings(tree: Tree, scale: float) -> dict[str, str]:
    env = {"GENBOT_RENDERER__MIN_EDIT_INTERVAL_S": str(1.0 / scale)}
    if not tree.legacy:  # the budgets the scheduler keeps, as fast as the fake's limits
        env |= {
            "GENBOT_SLACK__CHANNEL_WRITES_PER_S": str(1.0 * scale),
            "GENBOT_SLACK__UPDATES_PER_MIN": str(50.0 * scale),
        }
    return env


async def queue_scenario(tree: Tree, n: int, scale: float, work: Path) -> Outcome:
    fake = FakeSlack(limits=SlackLimits().scaled(scale))
    await fake.start()
    outcome = Outcome(tree.name, n)
    steps = 3
    job_s = JOB_S / scale
    concurrency = max(1, round(JOBS_PER_S * JOB_S))
    extra = {
        **scaled_settings(tree, scale),
        "GENBOT_BACKEND__DEMO_STEP_DELAY_S": str(job_s / steps),
        "GENBOT_WORKER__CONCURRENCY": str(concurrency),
        "GENBOT_WORKER__PROGRESS_INTERVAL_S": str(1.0 / scale),
        "GENBOT_WORKER__DEFAULT_RUN_S": str(job_s),
    }
    started = time.monotonic()
    try:
        async with deployment(tree, fake, work, extra) as (procs, client, db):
            sends = [
                client.command("/imagine", f"fox {i} steps: {steps}", user=f"U{i:05d}", name=f"m{i}")
                for i in range(n)
            ]
            answers = await gather_in_waves(sends, 50)
            outcome.notes += [f"{sum(1 for s, _b, _t in answers if s != 200)} commands not acknowledged"]
            await until(lambda: len(statuses(fake)) >= n or quiet_for(fake, 30), 30 + 3 * n / scale)
            await procs.spawn("worker", "worker")  # it drains at the rate of the issue
            table: dict[int, Row] = {}

            def ended() -> bool:
                nonlocal table
                table = rows(db)
                return len(table) >= n and all(r.state not in ("queued", "running") for r in table.values())

            await until(ended, 60 + 10 * n / scale)
            await until(lambda: finals_shown(fake, table) or quiet_for(fake, 20), 60 + 10 * n / scale)
    finally:
        await fake.stop()
    outcome.seconds = (time.monotonic() - started) * scale
    measure(outcome, fake, table, scale)
    return outcome


def finals_shown(fake: FakeSlack, table: dict[int, Row]) -> bool:
    done = {job_of(m) for m in statuses(fake) if headline(m).startswith("Done") and image_of(m.blocks)}
    return all(number in done for number, r in table.items() if r.state == "succeeded")


def quiet_for(fake: FakeSlack, seconds: float) -> bool:
    """No call reached the fake for ``seconds``: what was going to happen happened."""
    return bool(fake.calls) and time.time() - fake.calls[-1].at > seconds


def measure(outcome: Outcome, fake: FakeSlack, table: dict[int, Row], scale: float) -> None:
    messages = {number: m for m in statuses(fake) if (number := job_of(m)) is not None}
    outcome.posted = len(messages)
    waiting = [sum(1 for v in m.history[1:] if headline(v).startswith("Queued")) for m in messages.values()]
    outcome.waiting_edits_mean = statistics.fmean(waiting) if waiting else 0.0
    outcome.waiting_edits_max = max(waiting, default=0)
    outcome.writes = sum(
        1 for c in fake.calls if c.status == 200 and c.method in ("chat.postMessage", "chat.update")
    )
    outcome.rate_limited = sum(fake.rate_limited.values())
    # A job whose member read an error: its row did not succeed, or the command made no row.
    not_done = sum(1 for r in table.values() if r.state != "succeeded")
    outcome.member_failures = not_done + outcome.n - len(table)
    latencies = []
    for number, message in messages.items():
        row = table.get(number)
        if row is None or row.finished is None or row.state != "succeeded":
            continue
        shown = next((v["at"] for v in message.history if image_of(v["blocks"])), None)
        if shown is not None:
            latencies.append((shown - row.finished) * scale)
    outcome.final_p50 = percentile(latencies, 0.5)
    outcome.final_p99 = percentile(latencies, 0.99)
    outcome.head_true = head_truth(messages, table, HEAD_WITHIN_S / scale)


async def eta_scenario(tree: Tree, work: Path, seed: int) -> float:
    """Median absolute error of the first shown wait against the actual start, in percent."""
    fake = FakeSlack()
    await fake.start()
    rng = random.Random(seed)
    extra = {
        "GENBOT_BACKEND__DEMO_STEP_DELAY_S": "0.25",
        "GENBOT_RENDERER__MIN_EDIT_INTERVAL_S": "0.2",
    }
    if not tree.legacy:  # no limit to keep in this scenario: the estimate is measured
        extra |= {"GENBOT_SLACK__CHANNEL_WRITES_PER_S": "1000", "GENBOT_SLACK__UPDATES_PER_MIN": "100000"}
    try:
        async with deployment(tree, fake, work, extra) as (procs, client, db):
            await procs.spawn("worker", "worker")
            for i in range(5):  # the run time is learnt
                await client.command("/imagine", f"fox {i} steps: 4", user="UWARM", name="warm")
                await until(lambda i=i: ended(rows(db).get(i)), 30)  # type: ignore[misc]
            burst = range(5, 65)
            await gather_in_waves(
                [
                    client.command(
                        "/imagine", f"fox {i} steps: {rng.randint(2, 8)}", user=f"U{i:05d}", name=f"m{i}"
                    )
                    for i in burst
                ],
                60,
            )
            await until(lambda: len(table := rows(db)) == 65 and all(ended(r) for r in table.values()), 300)
            table = rows(db)
    finally:
        await fake.stop()
    errors = []
    for message in statuses(fake):
        number = job_of(message)
        if number is None or number < 5:
            continue
        first = message.history[0]
        shown = wait_seconds_in(headline(first))
        row = table[number]
        if shown is None or row.started is None:
            continue
        actual = row.started - first["at"]
        if actual >= 1.0:  # a job that started at once has no wait to estimate
            errors.append(abs(shown - actual) / actual)
    return statistics.median(errors) * 100 if errors else float("nan")


def ended(row: Row | None) -> bool:
    return row is not None and row.state not in ("queued", "running")


async def gather_in_waves(coros: list[Any], wave: int) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(coros), wave):
        out += await asyncio.gather(*coros[i : i + wave])
    return out


async def until(predicate: Callable[[], bool], give_up_s: float) -> None:
    deadline = time.monotonic() + give_up_s
    while not predicate():
        if time.monotonic() > deadline:
            print(f"  (gave up waiting after {give_up_s:.0f} s; figures are as they stood)", flush=True)
            return
        await asyncio.sleep(0.25)


# -- main -------------------------------------------------------------------------------------


def legacy_tree(rev: str, into: Path) -> Tree:
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return Tree(f"legacy {rev}", into, legacy=True)


def ratio(new: float, old: float) -> str:
    if old == 0 or old != old or new != new:
        return "-"
    return f"{new / old:.2f}"


def report(outcomes: list[Outcome], etas: dict[str, list[float]], scale: float) -> None:
    print(f"\nQueue in one Slack channel under Slack's limits (time x{scale:g}; figures in life seconds)")
    head = (
        f"{'tree':<16}{'N':>6}{'posted':>8}{'wait edits mean/max':>21}{'writes':>8}{'429s':>7}"
        f"{'failed':>8}{'final p50/p99 s':>17}{'head true':>11}{'took s':>9}"
    )
    print(head)
    for o in outcomes:
        print(
            f"{o.tree:<16}{o.n:>6}{o.posted:>8}{f'{o.waiting_edits_mean:.1f}/{o.waiting_edits_max}':>21}"
            f"{o.writes:>8}{o.rate_limited:>7}{o.member_failures:>8}"
            f"{f'{o.final_p50:.0f}/{o.final_p99:.0f}':>17}{o.head_true:>10.0%} {o.seconds:>8.0f}"
        )
    by_n: dict[int, dict[bool, Outcome]] = {}
    for o in outcomes:
        by_n.setdefault(o.n, {})[o.tree.startswith("legacy")] = o
    print("\nRatios, this tree / legacy (lower is better, except head truth)")
    for n, pair in sorted(by_n.items()):
        if len(pair) == 2:
            new, old = pair[False], pair[True]
            print(
                f"  N={n}: waiting edits mean {ratio(new.waiting_edits_mean, old.waiting_edits_mean)},"
                f" max {ratio(new.waiting_edits_max, old.waiting_edits_max)};"
                f" writes {ratio(new.writes, old.writes)}; 429s {ratio(new.rate_limited, old.rate_limited)};"
                f" final p50 {ratio(new.final_p50, old.final_p50)},"
                f" p99 {ratio(new.final_p99, old.final_p99)};"
                f" head truth {ratio(new.head_true, old.head_true)}"
            )
    if etas:
        print("\nETA: median absolute error of the first shown wait against the actual start")
        for name, values in etas.items():
            print(f"  {name:<16}" + "  ".join(f"{v:.0f}%" for v in values))


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genbot-render-bench-") as tmp:
        work = Path(tmp)
        trees = [Tree("this tree", ROOT, legacy=False)]
        if args.legacy:
            trees.append(legacy_tree(args.legacy, work / "legacy-tree"))
        outcomes = []
        for n in args.n:
            for tree in trees:
                print(f"queue: {tree.name}, N={n} ...", flush=True)
                outcome = await queue_scenario(tree, n, args.scale, work / f"q-{n}-{tree.legacy}")
                print(f"  {outcome}", flush=True)
                outcomes.append(outcome)
        etas: dict[str, list[float]] = {}
        for run in range(args.eta_runs):
            for tree in trees:
                print(f"eta: {tree.name}, run {run + 1} ...", flush=True)
                error = await eta_scenario(tree, work / f"eta-{run}-{tree.legacy}", seed=run)
                etas.setdefault(tree.name, []).append(error)
        report(outcomes, etas, args.scale)
        if args.keep_logs:
            shutil.copytree(work, args.keep_logs, dirs_exist_ok=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--legacy", default=LEGACY, help="a commit to compare with ('' for none)")
    parser.add_argument("--eta-runs", type=int, default=3)
    parser.add_argument("--keep-logs", default="", help="copy the work folder (logs, databases) here")
    asyncio.run(main(parser.parse_args()))
