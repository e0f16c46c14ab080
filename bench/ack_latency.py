"""Ack latency: how long a member waits for the local chat's answer to ``/imagine`` under a burst,
against a bare aiohttp server of the same protocol, in one run.

    python -m bench.ack_latency [--db sqlite|postgres] [--burst 200] [--rounds 5]

- genbot: one ``genbot bot`` process (``python -m bot.cli bot``, platform ``local``: the local
  chat, the core, the renderer; no worker, so every job stays queued) on a redis-server and a
  database of the run's own (SQLite: a temporary file, as ``genbot dev``; PostgreSQL: created,
  migrated and dropped by the run, admin URL ``GENBOT_TEST_POSTGRES_URL``).
- bare: one process serving ``POST /api/command`` with aiohttp alone: it reads the body, parses the
  JSON, checks the member and answers ``{"ok": true}`` (``python -m bench.ack_latency --bare PORT``).

A round sends ``--burst`` ``/imagine`` at once (one connection each, kept open across rounds, from
32 members in turn) and times each from its send to its answer. Each side gets one warm-up round
(not counted), then rounds alternate (B G, G B, ...). After each genbot round the bench waits until
the bot has posted every status message and the renderer has caught up, so that no round pays for
the one before. Printed: p50 and p99 of each round, the median of each over the rounds, and the
ratio of the medians of p99 (issue 15's goal: at most 1.5). The numbers are only comparable within
a run (the machine is shared); nothing here is an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from bench.bot_memory import MEMBERS, bot_process, rendered
from bench.queue_scale import database
from bot.embedded_redis import embedded_redis, free_port

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.5
#: How long the bot may take to post and render one round's messages after its answers.
CATCH_UP_S = 120.0


def bare_app(members: set[str]) -> web.Application:
    """The anchor: the local chat's command route and answer, and nothing else."""

    async def command(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"ok": False, "error": "Send a JSON object."}, status=400)
        if not isinstance(body, dict) or body.get("user_id") not in members:
            return web.json_response({"ok": False, "error": "Unknown member."}, status=400)
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/api/command", command)
    return app


@contextlib.asynccontextmanager
async def bare_process(work: Path) -> AsyncIterator[str]:
    """The anchor in a process of its own, as the bot is; yields its base URL once it answers."""
    port = free_port()
    with open(work / "bare.log", "ab") as log:  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.ack_latency",
            "--bare",
            str(port),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await answering_post(base, proc, work / "bare.log")
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def answering_post(base: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise SystemExit(f"the bare server exited at start-up: see {log}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.post(f"{base}/api/command", json={}) as resp:
                    if resp.status == 400:
                        return
            await asyncio.sleep(0.1)
    raise SystemExit(f"the bare server did not answer: see {log}")


async def burst(http: aiohttp.ClientSession, base: str, first: int, count: int) -> list[float]:
    """``count`` ``/imagine`` sent at once; each one's seconds from send to answer."""

    async def one(i: int) -> float:
        body = {"user_id": MEMBERS[i % len(MEMBERS)].lower(), "text": f"/imagine a red fox {i} steps: 4"}
        t0 = time.perf_counter()
        async with http.post(f"{base}/api/command", json=body) as resp:
            answer = await resp.json()
        took = time.perf_counter() - t0
        if resp.status != 200 or answer != {"ok": True}:
            raise SystemExit(f"{base} answered {resp.status} {answer}")
        return took

    return list(await asyncio.gather(*(one(i) for i in range(first, first + count))))


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def caught_up(redis: Redis, db_url: str, jobs: int, platform: str = "local") -> None:
    """Wait until the bot has posted ``jobs`` status messages and its renderer has read every event."""
    deadline = time.monotonic() + CATCH_UP_S
    while not await rendered(redis, db_url, jobs, platform):
        if time.monotonic() > deadline:
            raise SystemExit(f"the bot did not post and render {jobs} jobs within {CATCH_UP_S:.0f} s")
        await asyncio.sleep(0.2)


async def bench(args: argparse.Namespace, work: Path) -> dict[str, list[tuple[float, float]]]:
    rounds: dict[str, list[tuple[float, float]]] = {"bare": [], "genbot": []}
    async with (
        embedded_redis() as server,
        database(args.db, work, "ack") as db_url,
        bot_process(server, db_url, work) as (_pid, genbot_base),
        bare_process(work) as bare_base,
    ):
        redis = Redis.from_url(server.url)
        bases = {"bare": bare_base, "genbot": genbot_base}
        sent = 0
        try:
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as bare_http,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as genbot_http,
            ):
                sessions = {"bare": bare_http, "genbot": genbot_http}

                async def round_of(side: str, counted: bool) -> None:
                    nonlocal sent
                    took = await burst(sessions[side], bases[side], sent, args.burst)
                    if side == "genbot":
                        sent += args.burst
                        await caught_up(redis, db_url, sent)
                    if counted:
                        p50, p99 = pct(took, 50), pct(took, 99)
                        rounds[side].append((p50, p99))
                        print(f"  {side:>6}: p50 {p50 * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms", flush=True)

                for side in ("bare", "genbot"):  # warm-up: connections, pools, caches
                    await round_of(side, counted=False)
                for n in range(args.rounds):
                    order = ("bare", "genbot") if n % 2 == 0 else ("genbot", "bare")
                    for side in order:
                        await round_of(side, counted=True)
        finally:
            await redis.aclose()
    return rounds


def report(
    args: argparse.Namespace, rounds: dict[str, list[tuple[float, float]]], via: str = "the local chat"
) -> None:
    """The medians over the rounds of each side's p50 and p99, and the ratio of the p99s with
    issue 15's verdict (printed, never an exit code)."""
    print(
        f"\nack latency: {args.burst} concurrent /imagine through {via}, db={args.db}, "
        f"{args.rounds} rounds, {os.cpu_count()} cores"
    )
    medians = {}
    for side in ("bare", "genbot"):
        p50 = statistics.median(r[0] for r in rounds[side])
        p99 = statistics.median(r[1] for r in rounds[side])
        worst = max(r[1] for r in rounds[side])
        medians[side] = p99
        print(
            f"  {side:>6}: p50 {p50 * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms "
            f"(worst round's p99 {worst * 1000:.1f} ms)"
        )
    ratio = medians["genbot"] / medians["bare"]
    verdict = "meets" if ratio <= GOAL else "misses"
    print(f"RATIO ack p99 genbot/bare = {ratio:.2f} (goal <= {GOAL}: {verdict} it)")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genbot-ack-") as tmpdir:
        print(f"ack latency: {args.burst} at once, {args.rounds} rounds, db={args.db} ...", flush=True)
        report(args, await bench(args, Path(tmpdir)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ack_latency", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="sqlite")
    parser.add_argument("--burst", type=int, default=200, help="requests sent at once (200)")
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds per side (5)")
    parser.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the anchor's process
    args = parser.parse_args(argv)
    if args.burst < 2 or args.rounds < 1:
        parser.error("--burst must be at least 2 and --rounds at least 1")
    return args


if __name__ == "__main__":
    options = parse_args()
    if options.bare is not None:
        members = {m.lower() for m in MEMBERS}
        web.run_app(bare_app(members), host="127.0.0.1", port=options.bare, access_log=None, print=None)
    else:
        asyncio.run(main(options))
