"""Ack latency on Slack in HTTP mode: how long Slack waits for genbot's HTTP 200 to ``/imagine``
under a burst, against a bare slack-bolt app behind the same aiohttp adapter, in one run.

    python -m bench.ack_latency_slack [--db sqlite|postgres] [--burst 200] [--rounds 5]

- genbot: one ``genbot bot`` process (``python -m bot.cli bot``, platform ``slack``, HTTP mode: the
  Bolt ``AsyncApp`` behind its aiohttp server, the core, the renderer; no worker, so every job
  stays queued) on a redis-server and a database of the run's own (SQLite: a temporary file, as
  the local chat's bench; PostgreSQL: created, migrated and dropped by the run, admin URL
  ``GENBOT_TEST_POSTGRES_URL``). Its Web API client points at the fake Slack Web API of the tests
  (``tests/adapters/slack/fake_slack.py``), in a process of its own, enforcing Slack's limits
  (about one write a second per channel with short bursts, ``chat.update`` about 50 a minute per
  workspace; 429 with ``Retry-After`` past them); genbot keeps its default budgets.
- bare: one process running a minimal ``AsyncApp`` whose ``/imagine`` listener only calls
  ``ack()``, behind Bolt's own aiohttp adapter (``AsyncSlackAppServer``'s ``web_app``), with the
  same signing secret and Web API (``python -m bench.ack_latency_slack --bare PORT --api URL``).

A round sends ``--burst`` signed slash commands at once, as Slack sends them (a form-encoded body
with every field of Slack's, ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` made with the
signing secret; one connection each, kept open across rounds; from 32 members, each command in a
channel of its own: at about one write a second per channel, 200 commands in one channel could not
all get their status message at once on Slack either), and times each from its POST to the HTTP
200 of its ack. Each side gets one warm-up round (not counted: connections, pools, the bare app's
``auth.test``, asked by each request of its first burst before Bolt keeps the answer, and genbot's
``users.info`` of each member, kept for 5 minutes), then rounds alternate
(B G, G B, ...). After each genbot round the bench waits until every status message is posted and
the renderer has caught up, so that no round pays for the one before. Printed: p50 and p99 of each
round, the median of each over the rounds, the ratio of the medians of p99 (issue 15's goal: at
most 1.5), and the Web API calls the fake answered. Nothing here is an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from slack_bolt.app.async_server import AsyncSlackAppServer
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bench.ack_latency import caught_up, pct, report
from bench.bot_memory import START_TIMEOUT_S, bot_env
from bench.queue_scale import database
from bot.embedded_redis import EmbeddedRedis, embedded_redis, free_port
from tests.adapters.slack.conftest import SECRET
from tests.adapters.slack.fake_slack import TEAM, TOKEN, FakeSlack
from tests.rate_limits import SlackLimits

ROOT = Path(__file__).resolve().parents[1]
PATH = "/slack/events"
MEMBERS = [f"UMEMBER{i:02d}" for i in range(32)]


# -- the sides' processes ---------------------------------------------------------------------


def bare_app(api_url: str) -> web.Application:
    """The anchor: a Bolt app that acks ``/imagine`` and does nothing else, behind Bolt's aiohttp
    adapter. Bolt checks each request's signature and calls ``auth.test`` once, at the first."""
    app = AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=f"{api_url}/api/"),
        signing_secret=SECRET,
        process_before_response=False,
        logger=logging.getLogger("slack_bolt"),
    )

    @app.command("/imagine")
    async def imagine(ack: AsyncAck) -> None:
        await ack()

    return AsyncSlackAppServer(port=0, path=PATH, app=app).web_app


async def serve_fake(tally: Path) -> None:
    """The fake Slack Web API with Slack's limits until SIGTERM; prints its base URL first, and
    writes the calls it answered, by method and status, and the TCP connections they came on
    (``connections``, both sides' together) to ``tally`` at the end."""
    fake = FakeSlack(limits=SlackLimits())
    await fake.start()
    print(fake.base_url, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    calls = Counter(f"{c.method} {c.status}" for c in fake.calls)
    calls["connections"] = len(fake.connections)
    tally.write_text(json.dumps(dict(sorted(calls.items()))))  # noqa: ASYNC240 (once, at the end)
    await fake.stop()


async def stopped(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def fake_slack_process(work: Path) -> AsyncIterator[str]:
    """The fake Slack Web API in a process of its own (its work would otherwise share the timing
    client's event loop); yields its base URL."""
    with open(work / "fake-slack.log", "ab") as log:  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.ack_latency_slack",
            "--fake-slack",
            str(work / "fake-slack.json"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if not line.startswith(b"http://"):
            raise SystemExit(f"the fake Slack did not start: see {work / 'fake-slack.log'}")
        yield line.decode().strip()
    finally:
        await stopped(proc)


def fake_tally(work: Path) -> dict[str, int]:
    """The calls the fake answered, by ``"method status"`` (empty if it wrote none)."""
    path = work / "fake-slack.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


@contextlib.asynccontextmanager
async def process(
    name: str, port: int, module: list[str], env: dict[str, str], cwd: Path, work: Path
) -> AsyncIterator[str]:
    """``python -m *module`` (listening on ``port``) until the block ends; yields the URL of its
    Slack endpoint once it answers an unsigned POST (with 401: both sides refuse one)."""
    with open(work / f"{name}.log", "ab") as log:  # noqa: ASYNC230
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *module, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}{PATH}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.returncode is not None:
                    raise SystemExit(f"{name} exited at start-up: see {work / f'{name}.log'}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not answer within {START_TIMEOUT_S:.0f} s: see its log")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(url, data=b"") as resp:
                        if resp.status == 401:
                            break
                await asyncio.sleep(0.1)
        yield url
    finally:
        await stopped(proc)


def slack_env(redis: EmbeddedRedis, db_url: str, work: Path, api_url: str, port: int) -> dict[str, str]:
    """``genbot bot`` on Slack in HTTP mode, as :func:`bench.bot_memory.bot_env` configures the
    local chat's (its Redis keys, quotas too high to refuse, logs at WARNING); Slack's budgets
    are genbot's defaults."""
    return {
        **bot_env(redis.url, db_url, work, 0),
        "GENBOT_PLATFORM": "slack",
        "GENBOT_SLACK__BOT_TOKEN": TOKEN,
        "GENBOT_SLACK__SIGNING_SECRET": SECRET,
        "GENBOT_SLACK__API_BASE_URL": f"{api_url}/api/",
        "GENBOT_SLACK__HTTP_HOST": "127.0.0.1",
        "GENBOT_SLACK__HTTP_PORT": str(port),
    }


# -- what Slack sends -------------------------------------------------------------------------


def signed_command(api_url: str, i: int) -> tuple[bytes, dict[str, str]]:
    """Slack's POST of ``/imagine`` number ``i``: the form body and its signed headers."""
    user = MEMBERS[i % len(MEMBERS)]
    body = urlencode(
        {
            "token": "legacy",
            "team_id": TEAM,
            "team_domain": "bench",
            "channel_id": f"CBENCH{i:06d}",
            "channel_name": f"bench-{i}",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/imagine",
            "text": f"a red fox {i} steps: 4",
            "api_app_id": "A0001",
            "is_enterprise_install": "false",
            "response_url": f"{api_url}/respond/{i}",
            "trigger_id": f"{i}.{TEAM}.bench",
        }
    )
    ts = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)
    assert signature is not None  # None only without a signing secret
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    }
    return body.encode(), headers


async def burst(http: aiohttp.ClientSession, url: str, api_url: str, first: int, count: int) -> list[float]:
    """``count`` signed ``/imagine`` sent at once; each one's seconds from its POST to its ack (an
    HTTP 200 with an empty body: an ack that carries words is a refusal, and stops the run)."""
    requests = [signed_command(api_url, i) for i in range(first, first + count)]

    async def one(body: bytes, headers: dict[str, str]) -> tuple[float, int, str]:
        t0 = time.perf_counter()
        async with http.post(url, data=body, headers=headers) as resp:
            answer = await resp.text()
        return time.perf_counter() - t0, resp.status, answer

    answers = await asyncio.gather(*(one(body, headers) for body, headers in requests))
    for _took, status, answer in answers:
        if status != 200 or answer:
            raise SystemExit(f"{url} answered {status} {answer[:200]}")
    return [took for took, _status, _answer in answers]


# -- the run ----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, work: Path) -> dict[str, list[tuple[float, float]]]:
    rounds: dict[str, list[tuple[float, float]]] = {"bare": [], "genbot": []}
    async with (
        embedded_redis() as server,
        database(args.db, work, "ackslack") as db_url,
        fake_slack_process(work) as api_url,
    ):
        genbot_port, bare_port = free_port(), free_port()
        genbot_env = slack_env(server, db_url, work, api_url, genbot_port)
        bare_module = ["bench.ack_latency_slack", "--bare", str(bare_port), "--api", api_url]
        async with (
            # genbot runs in the work folder: no .env of a checkout is read
            process("genbot", genbot_port, ["bot.cli", "bot"], genbot_env, work, work) as genbot_url,
            process("bare", bare_port, bare_module, dict(os.environ), ROOT, work) as bare_url,
        ):
            redis = Redis.from_url(server.url)
            urls = {"bare": bare_url, "genbot": genbot_url}
            sent = 0
            try:
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as bare_http,
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as genbot_http,
                ):
                    sessions = {"bare": bare_http, "genbot": genbot_http}

                    async def round_of(side: str, counted: bool) -> None:
                        nonlocal sent
                        took = await burst(sessions[side], urls[side], api_url, sent, args.burst)
                        if side == "genbot":
                            sent += args.burst
                            await caught_up(redis, db_url, sent, platform="slack")
                        if counted:
                            p50, p99 = pct(took, 50), pct(took, 99)
                            rounds[side].append((p50, p99))
                            print(
                                f"  {side:>6}: p50 {p50 * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms", flush=True
                            )

                    for side in ("bare", "genbot"):  # warm-up
                        await round_of(side, counted=False)
                    for n in range(args.rounds):
                        order = ("bare", "genbot") if n % 2 == 0 else ("genbot", "bare")
                        for side in order:
                            await round_of(side, counted=True)
            finally:
                await redis.aclose()
    return rounds


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genbot-ack-slack-") as tmpdir:
        work = Path(tmpdir)
        print(
            f"ack latency, Slack HTTP: {args.burst} at once, {args.rounds} rounds, db={args.db} ...",
            flush=True,
        )
        rounds = await bench(args, work)
        report(args, rounds, via="Slack in HTTP mode (signed slash commands)")
        calls = fake_tally(work)
        connections = calls.pop("connections", 0)
        print("  the fake Slack answered: " + ", ".join(f"{k} x{v}" for k, v in calls.items()))
        print(f"  on {connections} TCP connections (genbot's and the bare app's)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ack_latency_slack", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="sqlite")
    parser.add_argument("--burst", type=int, default=200, help="requests sent at once (200)")
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds per side (5)")
    parser.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the anchor's process
    parser.add_argument("--api", help=argparse.SUPPRESS)  # the anchor's Web API
    parser.add_argument(
        "--fake-slack", type=Path, metavar="TALLY", help=argparse.SUPPRESS
    )  # the fake's process
    args = parser.parse_args(argv)
    if args.burst < 2 or args.rounds < 1:
        parser.error("--burst must be at least 2 and --rounds at least 1")
    return args


if __name__ == "__main__":
    options = parse_args()
    if options.fake_slack is not None:
        asyncio.run(serve_fake(options.fake_slack))
    elif options.bare is not None:
        logging.basicConfig(level=logging.WARNING)
        web.run_app(bare_app(options.api), host="127.0.0.1", port=options.bare, access_log=None, print=None)
    else:
        asyncio.run(main(options))
