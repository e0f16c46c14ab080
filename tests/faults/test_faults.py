"""Fault injection on real processes and servers: whatever dies, every request ends in a state its
member can read, and none is lost. ``make reliability`` runs these with bigger batches and writes
the figures to docs/reliability.md.

Each scenario has a redis-server of its own (so that it can pause, flush and restart it) and the
run's PostgreSQL database (several processes write to it at once); every wait is a poll with a
generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bot.embedded_redis import EmbeddedRedis, embedded_redis, free_port
from bot.ports import HANDED_OVER
from jobs.constants import Keys
from tests.adapters.slack.conftest import SECRET, SlackClient
from tests.adapters.slack.fake_slack import TOKEN, FakeSlack
from tests.chat_client import ChatClient
from tests.conftest import PG_ADMIN_URL, truncate_pg
from tests.faults.flaky_backend import CALLS, FAIL_NEXT
from tests.faults.harness import (
    BATCH,
    LINE,
    PREFIX,
    Cluster,
    Figures,
    refreshing_local_seen,
    title_of,
    wait_until,
)
from tests.rate_limits import SlackLimits

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(420)]
FLAKY = "tests.faults.flaky_backend:make"
#: What a request may be answered during a fault, instead of being queued: the catalogue's words
#: for "try again", never "Something went wrong".
REFUSALS = {"Queue unavailable"}


@pytest_asyncio.fixture
async def db(postgres_url: str) -> str:
    await truncate_pg(postgres_url)  # bans, pauses or limits an earlier test left must not leak in
    return postgres_url


@pytest_asyncio.fixture
async def own_redis() -> AsyncIterator[EmbeddedRedis]:
    async with embedded_redis() as server:
        yield server


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def cluster(tmp_path: Path, own_redis: EmbeddedRedis, db: str) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, own_redis, db)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.close()


def check(figures: Figures, cluster: Cluster, submitted: int = BATCH) -> None:
    figures.record()
    assert figures.lost == 0, f"{figures}\n{cluster.log_tail()}"
    assert figures.failed_wrong == 0, f"{figures}\n{cluster.log_tail()}"
    assert figures.duplicated_rows == 0, f"{figures}\n{cluster.log_tail()}"
    assert figures.duplicated_tickets == 0, f"{figures}\n{cluster.log_tail()}"
    assert figures.fifo_violations == 0, f"{figures}\n{cluster.log_tail()}"
    assert set(figures.refused) <= REFUSALS, figures.refused
    assert figures.submitted == submitted


async def test_a_worker_killed_mid_job(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """SIGKILL one of two workers while it runs a job: its heartbeat stops, the sweep takes the job
    over within the failover time (whatever arq's in-progress key says) and the other worker runs
    it: every job ends well, none twice."""
    await cluster.worker("worker-1")
    await cluster.worker("worker-2")
    await cluster.bot()
    for n in range(BATCH):
        await cluster.imagine(http, f"killed worker {n}", steps=12)
    await wait_until(lambda: _running_at_least(cluster, 2), "both workers to run a job", 90)
    cluster.signal("worker-1", signal.SIGKILL)

    figures = await cluster.settle(
        Figures("worker killed", "SIGKILL of one of two workers while both run a job"),
        refreshing_local_seen(cluster, http),
    )
    figures.details["jobs taken over"] = sum(1 for r in await cluster.rows() if r["attempts"])
    check(figures, cluster)
    assert figures.completed == BATCH, figures
    assert figures.details["jobs taken over"] == 1, figures
    cluster.assert_alive("worker-2", "bot")


async def test_a_worker_frozen_mid_job_is_taken_over_and_fenced(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """SIGSTOP one of two workers while it runs a job (a stopped VM, a long pause, a cut network),
    until the sweep has taken its job over; then SIGCONT. The frozen worker wakes up mid-job: its
    writes are refused by the attempt number, it drops its run, and works on. Every job ends once,
    as the new run left it."""
    await cluster.worker("worker-1")
    await cluster.worker("worker-2")
    await cluster.bot()
    for n in range(BATCH):
        await cluster.imagine(http, f"frozen worker {n}", steps=12)
    await wait_until(lambda: _running_at_least(cluster, 2), "both workers to run a job", 90)
    cluster.signal("worker-1", signal.SIGSTOP)

    async def taken_over() -> bool:
        return any(r["attempts"] for r in await cluster.rows())

    try:
        await wait_until(taken_over, "the sweep to take the frozen worker's job over", 90, every=0.2)
    finally:
        cluster.signal("worker-1", signal.SIGCONT)
    figures = await cluster.settle(
        Figures("worker frozen", "SIGSTOP of one of two workers mid-job until its job is taken over"),
        refreshing_local_seen(cluster, http),
    )
    figures.details["jobs taken over"] = sum(1 for r in await cluster.rows() if r["attempts"])
    check(figures, cluster)
    assert figures.completed == BATCH, figures
    await wait_until(
        lambda: "this run's end is dropped" in cluster.logs["worker-1"].read_text(errors="replace"),
        "the frozen worker to find its run taken over",
        60,
    )
    cluster.assert_alive("worker-1", "worker-2", "bot")


async def _running_at_least(cluster: Cluster, n: int) -> bool:
    return await cluster.count("running") >= n


async def test_redis_restarted_with_its_data_gone(
    cluster: Cluster, own_redis: EmbeddedRedis, http: aiohttp.ClientSession
) -> None:
    """FLUSHALL and a restart while jobs run and wait: the sweep puts every queued job back at its
    ticket, the running one finishes, the processes reconnect by themselves."""
    await cluster.worker()
    await cluster.bot()
    for n in range(BATCH):
        await cluster.imagine(http, f"redis restart {n}", steps=10)
    await wait_until(lambda: _running_at_least(cluster, 1), "a job to run", 60)
    queued_before = await cluster.count("queued")
    client = Redis.from_url(own_redis.url)
    await client.flushall()
    await client.aclose()
    await own_redis.stop()
    await own_redis.start()

    async def positions_rebuilt() -> bool:
        redis = Redis.from_url(own_redis.url)
        try:
            waiting = [int(m) for m in await redis.zrange(Keys(PREFIX).waiting(LINE), 0, -1)]
        finally:
            await redis.aclose()
        queued = sorted(r["id"] for r in await cluster.rows() if r["state"] == "queued")
        return not queued or waiting == queued

    if queued_before:
        await wait_until(positions_rebuilt, "the sweep to rebuild the queue", 60, every=0.2)
    figures = await cluster.settle(
        Figures("Redis restarted, data gone", "FLUSHALL and restart with jobs running and queued"),
        refreshing_local_seen(cluster, http),
    )
    figures.details["queued when Redis lost its data"] = queued_before
    check(figures, cluster)
    cluster.assert_alive("worker", "bot")


async def test_redis_killed_while_jobs_run_and_restarted_empty(
    cluster: Cluster, own_redis: EmbeddedRedis, http: aiohttp.ClientSession
) -> None:
    """SIGKILL of redis-server with jobs running and waiting, 12 s without Redis (longer than one
    command waits for it), then a restart with nothing in it. Requests sent meanwhile wait, then are
    refused in the catalogue's words, leaving nothing behind (or are queued, if Redis is back by
    then). The workers stay up; the queued jobs come back at their own tickets before any new one;
    no ticket is given twice; the jobs start in ticket order."""
    await cluster.worker("worker-1")
    await cluster.worker("worker-2")
    await cluster.bot()
    figures = Figures("Redis killed, restarted empty", "SIGKILL of Redis mid-batch, 12 s down, restart empty")
    for n in range(BATCH):
        await cluster.imagine(http, f"redis killed {n}", steps=8)
    await wait_until(lambda: _running_at_least(cluster, 1), "a job to run", 60)
    assert own_redis.process is not None
    own_redis.process.kill()
    await own_redis.process.wait()
    down_at = time.monotonic()
    during = 0
    while time.monotonic() - down_at < 9:  # requests during the outage, one after the other
        await cluster.imagine_or_refusal(http, figures, f"during the outage {during}", steps=4)
        during += 1
    await asyncio.sleep(max(0.0, 12 - (time.monotonic() - down_at)))  # the rest of the outage
    await own_redis.start()
    cluster.assert_alive("worker-1", "worker-2", "bot")
    for n in range(3):  # and after it
        await cluster.imagine(http, f"after the outage {n}", steps=4)
    figures = await cluster.settle(figures, refreshing_local_seen(cluster, http))
    figures.details["requests during the outage"] = during
    check(figures, cluster, submitted=BATCH + during + 3 - sum(figures.refused.values()))
    cluster.assert_alive("worker-1", "worker-2", "bot")


async def test_redis_paused_for_ten_seconds(
    cluster: Cluster, own_redis: EmbeddedRedis, http: aiohttp.ClientSession
) -> None:
    """SIGSTOP Redis for 10 s mid-batch: the bot and the worker wait and carry on by themselves."""
    await cluster.worker()
    await cluster.bot()
    for n in range(BATCH):
        await cluster.imagine(http, f"redis paused {n}", steps=8)
    await wait_until(lambda: _running_at_least(cluster, 1), "a job to run", 60)
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(10)  # the fault itself: Redis hangs for 10 s
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    cluster.assert_alive("worker", "bot")
    figures = await cluster.settle(
        Figures("Redis paused 10 s", "SIGSTOP of redis-server for 10 s mid-batch"),
        refreshing_local_seen(cluster, http),
    )
    check(figures, cluster)
    cluster.assert_alive("worker", "bot")


async def test_postgres_connections_killed(cluster: Cluster, db: str, http: aiohttp.ClientSession) -> None:
    """pg_terminate_backend on every connection of genbot's database, three times mid-batch: the
    next statement of each process opens a new connection."""
    await cluster.worker("worker-1")
    await cluster.worker("worker-2")
    await cluster.bot()
    for n in range(BATCH):
        await cluster.imagine(http, f"postgres killed {n}", steps=8)
    await wait_until(lambda: _running_at_least(cluster, 1), "a job to run", 60)
    name = db.rsplit("/", 1)[1]
    killed = 0
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        for _round in range(3):
            killed += len(
                await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
            )
            await asyncio.sleep(1)  # between two rounds of the fault
    finally:
        await admin.close()
    figures = await cluster.settle(
        Figures("PostgreSQL connections killed", "pg_terminate_backend on all connections, 3 rounds"),
        refreshing_local_seen(cluster, http),
    )
    figures.details["connections terminated"] = killed
    check(figures, cluster)
    assert killed > 0
    cluster.assert_alive("worker-1", "worker-2", "bot")


async def test_postgres_connections_killed_again_and_again_while_requests_arrive(
    cluster: Cluster, db: str, http: aiohttp.ClientSession
) -> None:
    """pg_terminate_backend on every connection of genbot's database every 0.2 s while a burst of
    requests arrives at once: statements die before, during and after their commit. Each request
    makes exactly one row, gets its status message, and ends."""
    await cluster.worker("worker-1")
    await cluster.worker("worker-2")
    await cluster.bot()
    name = db.rsplit("/", 1)[1]
    killing = asyncio.Event()
    killed = 0

    async def kill_again_and_again() -> None:
        nonlocal killed
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            while not killing.is_set():
                killed += len(
                    await admin.fetch(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = $1 AND pid <> pg_backend_pid()",
                        name,
                    )
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(killing.wait(), 0.2)
        finally:
            await admin.close()

    killer = asyncio.create_task(kill_again_and_again())
    try:
        await asyncio.gather(
            *(cluster.imagine(http, f"connections killed {n}", steps=4) for n in range(BATCH))
        )
    finally:
        killing.set()
        await killer
    figures = await cluster.settle(
        Figures(
            "PostgreSQL connections killed during a burst",
            "pg_terminate_backend every 0.2 s during the requests",
        ),
        refreshing_local_seen(cluster, http),
    )
    figures.details["connections terminated"] = killed
    check(figures, cluster)
    assert killed > 0
    cluster.assert_alive("worker-1", "worker-2", "bot")


async def test_the_backend_failing(
    cluster: Cluster, own_redis: EmbeddedRedis, http: aiohttp.ClientSession
) -> None:
    """The image service fails 5 calls in a row: the shared breaker opens after the 5th, the jobs
    behind wait (their messages say so) instead of failing, and it closes after recovery."""
    control = Redis.from_url(own_redis.url)
    await control.set(FAIL_NEXT, 5)
    env = {"GENBOT_BACKEND__NAME": FLAKY, "GENBOT_WORKER__BREAKER_FAIL_MAX": "5"}
    await cluster.worker("worker-1", **env)
    await cluster.worker("worker-2", **env)
    await cluster.bot(**env)
    alice = ChatClient(http, cluster.base_url, "alice")
    await alice.connect()
    try:
        for n in range(BATCH + 5):
            await cluster.imagine(http, f"backend failing {n}", steps=6)
        figures = await cluster.settle(
            Figures("image service failing", "5 backend calls in a row fail (HTTP 500), 2 workers"),
            refreshing_local_seen(cluster, http),
            expected_failures={"backend_error"},
        )
    finally:
        await alice.close()
    events = await control.xrange(f"{PREFIX}:events")
    breaker_events = sum(1 for _id, fields in events if fields[b"kind"] == b"breaker")
    said_waiting = {
        u["status"]["job"]
        for u in alice.updates
        if u.get("status") and "waiting for the service" in u["status"]["headline"]
    }
    figures.details.update(
        {
            "backend calls": int(await control.get(CALLS) or 0),
            "breaker openings and closings": breaker_events,
            "messages that said the service was unavailable": len(said_waiting),
            "breaker at the end": "closed"
            if not await control.exists(f"{PREFIX}:breaker:{FLAKY}:tripped")
            else "open",
        }
    )
    await control.aclose()
    check(figures, cluster, submitted=BATCH + 5)
    assert figures.failed_right == 5, "exactly the calls that met the failing service failed"
    assert figures.details["error codes"] == {"backend_error": 5}, (
        "no job failed because the breaker was open"
    )
    assert breaker_events >= 2, "the breaker opened and closed"
    assert figures.details["breaker at the end"] == "closed"
    assert said_waiting, "no waiting message said the image service was unavailable"


class SlackSide:
    """The Slack half of a scenario: the fake Web API, ``genbot bot`` on Slack in HTTP mode, and
    members sending signed slash commands as Slack does."""

    def __init__(self, cluster: Cluster, http: aiohttp.ClientSession, fake: FakeSlack) -> None:
        self.cluster = cluster
        self.http = http
        self.fake = fake
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/slack/events"
        self.client = SlackClient(http, self.url, fake)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "GENBOT_PLATFORM": "slack",
            "GENBOT_SLACK__BOT_TOKEN": TOKEN,
            "GENBOT_SLACK__SIGNING_SECRET": SECRET,
            "GENBOT_SLACK__API_BASE_URL": self.fake.api_url,
            "GENBOT_SLACK__HTTP_HOST": "127.0.0.1",
            "GENBOT_SLACK__HTTP_PORT": str(self.port),
            **extra,
        }

    async def bot(self, name: str = "bot", **env: str) -> None:
        await self.cluster.spawn(name, "bot", **self.env(**env))

        async def listening() -> bool:
            try:
                async with self.http.get(f"http://127.0.0.1:{self.port}/") as _resp:
                    return True
            except aiohttp.ClientError:
                assert self.cluster.alive(name), self.cluster.log_tail()
                return False

        await wait_until(listening, "the Slack app to listen", 60)

    async def imagine(self, prompt: str, steps: int = 8) -> int:
        """``/imagine`` as Slack sends it; returns the HTTP status of the ack."""
        status, _body, _took = await self.client.command("/imagine", f"{prompt} steps: {steps}")
        if status == 200:
            self.cluster.submitted.append(prompt)
        return status

    def seen(self, row: dict[str, Any]) -> tuple[str, str | None] | None:
        """What the member sees of ``row``: its status message in the fake Slack."""
        ts = json.loads(row["message"] or "{}").get("message_id")
        message = self.fake.messages.get(ts or "")
        if message is None:
            return None
        shown = json.dumps(message.blocks)
        if row["state"] == "succeeded":
            return ("succeeded", None) if "Done" in shown else None
        title = title_of(row)
        return (row["state"], title) if title is not None and title in shown else None


@pytest_asyncio.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_the_chat_api_answering_500_then_429(
    cluster: Cluster, http: aiohttp.ClientSession, fake_slack: FakeSlack
) -> None:
    """Slack's Web API answers every chat.update with 500, then with 429, for a while: the renderer
    backs off and retries, and every message shows its job's end once Slack recovers."""
    fake, slack = fake_slack, SlackSide(cluster, http, fake_slack)
    await cluster.worker()
    await slack.bot()
    for n in range(BATCH):
        assert await slack.imagine(f"chat outage {n}") == 200
    await wait_until(lambda: len(fake.called("chat.postMessage")) >= BATCH, "every status message", 60)

    fake.outage(["chat.update"], 500)
    await wait_until(
        lambda: sum(1 for c in fake.called("chat.update") if c.status == 500) >= BATCH,
        "the renderer to meet the 500s",
        90,
    )
    fake.outage(["chat.update"], 429)
    await wait_until(
        lambda: sum(1 for c in fake.called("chat.update") if c.status == 429) >= BATCH,
        "the renderer to meet the 429s",
        90,
    )
    await wait_until(lambda: _all_ended(cluster), "every job to end during the outage", 120)
    fake.heal()
    figures = await cluster.settle(
        Figures("chat API failing", "Slack chat.update answers 500, then 429, until every job ended"),
        slack.seen,
    )
    figures.details["chat.update refused (500)"] = sum(
        1 for c in fake.called("chat.update") if c.status == 500
    )
    figures.details["chat.update refused (429)"] = sum(
        1 for c in fake.called("chat.update") if c.status == 429
    )
    check(figures, cluster)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_the_bot_stopped_during_a_burst_of_acknowledged_commands(
    cluster: Cluster, http: aiohttp.ClientSession, fake_slack: FakeSlack, sig: signal.Signals
) -> None:
    """A burst of /imagine in Slack; Slack has its ack for every one, and the bot is still posting
    their status messages (Slack answers slowly) when it is stopped (SIGTERM: it finishes what it
    took, then exits) or killed (SIGKILL: a new bot posts the messages of the requests the dead
    one took, and runs them). Every acknowledged request ends, and its member sees how."""
    fake, slack = fake_slack, SlackSide(cluster, http, fake_slack)
    fake.delay_s["chat.postMessage"] = 0.5
    adopt = {"GENBOT_RENDERER__ADOPT_AFTER_S": "6"}
    await cluster.worker()
    await slack.bot(**adopt)
    statuses = await asyncio.gather(*(slack.imagine(f"bot stopped {n}") for n in range(BATCH)))
    assert statuses == [200] * BATCH
    cluster.signal("bot", sig)
    code = await asyncio.wait_for(cluster.procs["bot"].wait(), 60)
    assert code == (0 if sig is signal.SIGTERM else -signal.SIGKILL), cluster.log_tail()
    posted_before_restart = len(fake.called("chat.postMessage"))
    at_exit = await cluster.rows()
    await slack.bot("bot-2", **adopt)
    name = "bot stopped (SIGTERM)" if sig is signal.SIGTERM else "bot killed (SIGKILL)"
    figures = await cluster.settle(
        Figures(name, f"{sig.name} of the bot right after Slack acknowledged {BATCH} /imagine"), slack.seen
    )
    figures.details["status messages posted by the stopped bot"] = posted_before_restart
    check(figures, cluster)
    if sig is signal.SIGTERM:
        # The stopping bot posts what its channel's budget allows while it drains (DRAIN_S) and
        # hands the rest over, marked in their rows, for the next bot to post first: no request
        # is left to wait for adoption.
        posted = [r for r in at_exit if json.loads(r["message"] or "null")]
        stranded = [
            r["id"] for r in at_exit if r not in posted and not json.loads(r["meta"] or "{}").get(HANDED_OVER)
        ]
        assert len(at_exit) == BATCH
        assert len(posted) == posted_before_restart > 0
        assert stranded == [], "a request neither posted nor handed over by the stopping bot"


async def _all_ended(cluster: Cluster) -> bool:
    rows = await cluster.rows()
    return len(rows) >= len(cluster.submitted) and all(
        r["state"] in {"succeeded", "failed", "timed_out", "cancelled"} for r in rows
    )


def test_the_batch_size_is_sane() -> None:
    assert 1 <= BATCH <= int(os.environ.get("GENBOT_TEST_FAULT_BATCH_MAX", "500"))


async def test_two_slack_bot_processes_share_one_budget_and_never_repeat_an_edit(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Two ``genbot bot`` processes of one Slack app (HTTP replicas behind one Request URL, or a
    rolling deploy), members' commands spread over both, Slack's limits on (time-scaled x10, as are
    genbot's budgets). Both renderers edit the same messages: no edit is made twice, no older state
    lands after a newer one, the channel stays within Slack's limit (the budget is shared through
    Redis: two per-process budgets would each spend Slack's whole allowance), and no job is lost."""
    scale = 10
    fake = FakeSlack(limits=SlackLimits().scaled(scale))
    await fake.start()
    try:
        budgets = {
            "GENBOT_SLACK__CHANNEL_WRITES_PER_S": str(1.0 * scale),
            "GENBOT_SLACK__UPDATES_PER_MIN": str(50.0 * scale),
        }
        first, second = SlackSide(cluster, http, fake), SlackSide(cluster, http, fake)
        await first.bot("bot", **budgets)
        await second.bot("bot-2", **budgets)
        await cluster.worker()
        jobs = max(BATCH, 16)
        sides = [first, second]
        statuses = await asyncio.gather(
            *(sides[n % 2].imagine(f"two bots {n}", steps=4) for n in range(jobs))
        )
        assert statuses == [200] * jobs
        figures = await cluster.settle(
            Figures("two bot processes", f"{jobs} /imagine spread over two Slack bot processes"), first.seen
        )
        figures.details["429s from Slack"] = sum(fake.rate_limited.values())
        check(figures, cluster, submitted=jobs)
        for message in fake.messages.values():
            if not message.blocks or message.blocks[0].get("type") != "section":
                continue
            bodies = [(v["text"], json.dumps(v["blocks"])) for v in message.history]
            assert all(a != b for a, b in itertools.pairwise(bodies)), "an edit made twice"
            stages = [
                ("Queued", "Generating", "Done").index(v["text"].split(" ·")[0].split(":")[0])
                for v in message.history
            ]
            assert stages == sorted(stages), f"an older state after a newer one: {stages}"
        assert sum(fake.rate_limited.values()) <= 6, fake.rate_limited
    finally:
        await fake.stop()
