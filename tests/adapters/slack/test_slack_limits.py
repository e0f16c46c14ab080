"""Slack under its real rate limits: the fake Web API enforces them (per channel, per workspace for
``chat.update``, 429 with ``Retry-After``), and the real Bolt app, renderer and worker run against it.

Time runs :data:`SCALE` times faster than life: the fake's limits and genbot's budgets are both
multiplied by it, so "1 write a second per channel" is 10 here, and the tests take seconds, not
minutes. What is checked is what members see: every command acknowledged, every job run and shown
to its end, no error and no cancellation because of a rate limit, and no message repeating itself
or going back."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from storage.models import GenerationRow
from tests.adapters.slack.conftest import ADMIN, CHANNEL, SECRET, SlackClient
from tests.adapters.slack.fake_slack import TOKEN, FakeSlack, Message
from tests.adapters.slack.test_slack_app import headline, image_of
from tests.conftest import make_settings
from tests.rate_limits import SlackLimits
from tests.stack import bot_running, worker_running

SCALE = 10
LIMITS = SlackLimits().scaled(SCALE)
OTHER = "C0002"


@pytest_asyncio.fixture
async def limited() -> AsyncIterator[FakeSlack]:
    server = FakeSlack(limits=LIMITS)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def busy_rt(
    redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path, redis: Redis, limited: FakeSlack
) -> AsyncIterator[Runtime]:
    """genbot on Slack with its default budgets, time-scaled like the fake's limits."""
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        platform="slack",
        slack={
            "bot_token": TOKEN,
            "signing_secret": SECRET,
            "api_base_url": limited.api_url,
            "http_host": "127.0.0.1",
            "http_port": 0,
            "admin_user_ids": [ADMIN],
            "channel_writes_per_s": 1.0 * SCALE,
            "updates_per_min": 50.0 * SCALE,
        },
        worker={"concurrency": 4},
    )
    async with runtime(settings) as rt:
        yield rt


def statuses(fake: FakeSlack, channel: str = CHANNEL) -> list[Message]:
    return [m for m in fake.in_channel(channel) if m.blocks and m.blocks[0].get("type") == "section"]


async def until_all_done(
    fake: FakeSlack, n: int, channel: str = CHANNEL, timeout: float = 60
) -> list[Message]:
    def done() -> bool:
        shown = statuses(fake, channel)
        return len(shown) == n and all(headline(m).startswith("Done") and image_of(m.blocks) for m in shown)

    await fake.wait_until(done, timeout)
    return statuses(fake, channel)


def assert_never_repeated_nor_back(messages: list[Message]) -> None:
    rank = {"Queued": 0, "Generating": 1, "Done": 2}
    for message in messages:
        heads = [headline(v) for v in message.history]
        bodies = [(v["text"], str(v["blocks"])) for v in message.history]
        assert all(a != b for a, b in itertools.pairwise(bodies)), f"a repeated edit: {heads}"
        ranks = [rank[h.split(" ·")[0]] for h in heads]
        assert ranks == sorted(ranks), f"went back: {heads}"


def writes_per_second(fake: FakeSlack, channel: str) -> int:
    """The most successful writes to ``channel`` in any one second (of scaled time)."""
    times = sorted(
        c.at
        for c in fake.calls
        if c.status == 200
        and c.method in ("chat.postMessage", "chat.update", "files.completeUploadExternal")
        and channel in (c.args.get("channel"), c.args.get("channel_id"))
    )
    return max((sum(1 for t in times if s <= t < s + 1) for s in times), default=0)


async def send_all(client: SlackClient, n: int, channel: str = CHANNEL, steps: int = 3) -> None:
    answers = await asyncio.gather(
        *(
            client.command(
                "/imagine", f"fox {i} steps: {steps}", user=f"U{i:04d}", name=f"m{i}", channel=channel
            )
            for i in range(n)
        )
    )
    assert [status for status, _body, _took in answers] == [200] * n


async def no_member_errors(fake: FakeSlack) -> None:
    assert fake.responses == [] or all("went wrong" not in str(r) for r in fake.responses)
    rows = await GenerationRow.all()
    assert {r.state for r in rows} == {"succeeded"}, "no job cancelled or failed by a rate limit"


async def test_twenty_members_at_once_in_one_channel_all_get_their_image(
    busy_rt: Runtime, limited: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with worker_running(busy_rt), bot_running(busy_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", limited)
        await send_all(client, 20)
        messages = await until_all_done(limited, 20)
    await no_member_errors(limited)
    assert len(limited.called("chat.postMessage")) - limited.rate_limited["chat.postMessage"] == 20
    assert len(limited.called("files.getUploadURLExternal")) == 20, "each image uploaded once"
    assert_never_repeated_nor_back(messages)
    # The channel never got more than Slack allows (it would have answered 429), and genbot kept
    # to its own budget: a 429 now and then (Retry-After is in whole seconds), never a storm.
    assert writes_per_second(limited, CHANNEL) <= LIMITS.channel_per_s + LIMITS.channel_burst
    assert sum(limited.rate_limited.values()) <= 5, limited.rate_limited


async def test_a_hundred_jobs_in_one_channel_cost_a_bounded_number_of_writes(
    busy_rt: Runtime, limited: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(busy_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", limited)
        await send_all(client, 100, steps=1)
        await limited.wait_until(lambda: len(statuses(limited)) == 100, 60)
        async with worker_running(busy_rt):
            messages = await until_all_done(limited, 100, timeout=120)
    await no_member_errors(limited)
    assert_never_repeated_nor_back(messages)
    waiting_edits = [sum(1 for v in m.history[1:] if headline(v).startswith("Queued")) for m in messages]
    # A job at #100 crosses the places #51-100, #21-50, #11-20 and 10 exact ones: at most 13
    # edits while it waits, however fast the line moves.
    assert max(waiting_edits) <= 13, waiting_edits
    assert sum(limited.rate_limited.values()) <= 10, limited.rate_limited


async def test_a_storm_in_one_channel_holds_back_nothing_in_another(
    busy_rt: Runtime, limited: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(busy_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", limited)
        await send_all(client, 3, channel=CHANNEL)
        await send_all(client, 3, channel=OTHER)
        await limited.wait_until(lambda: len(statuses(limited)) == 3 and len(statuses(limited, OTHER)) == 3)
        limited.storm_in(CHANNEL, 4.0)
        storm_end = time.time() + 4.0
        async with worker_running(busy_rt):
            calm = await until_all_done(limited, 3, OTHER, timeout=30)
            calm_done = time.time()
            stormy = await until_all_done(limited, 3, CHANNEL, timeout=30)
    assert calm_done < storm_end, "the other channel's images arrived during the storm"
    assert all(v["at"] >= storm_end - 0.05 for m in stormy for v in m.history[1:])
    # The stormy channel is held for Retry-After, in Redis, not hammered: a few 429s, not hundreds.
    assert sum(limited.rate_limited.values()) <= 6, limited.rate_limited
    await no_member_errors(limited)
    assert_never_repeated_nor_back(calm + stormy)


async def test_a_first_post_refused_with_429s_is_posted_later_and_the_job_runs(
    busy_rt: Runtime, limited: FakeSlack, http: aiohttp.ClientSession
) -> None:
    limited.storm(["chat.postMessage"], 6, retry_after=1)
    async with worker_running(busy_rt), bot_running(busy_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", limited)
        await send_all(client, 3)
        messages = await until_all_done(limited, 3, timeout=60)
    await no_member_errors(limited)
    assert len(messages) == 3, "one status message each, none lost, none twice"
    assert len([c for c in limited.called("chat.postMessage") if c.status == 429]) == 6
