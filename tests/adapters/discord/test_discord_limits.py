"""Discord under its real rate limits: the fake keeps Discord's route buckets and global limit
(``X-RateLimit-*`` headers, 429 with ``retry_after``), and the real discord.py client, renderer and
worker run against it.

Time runs :data:`SCALE` times faster than life (the fake's buckets and genbot's budgets alike), so a
queue that takes minutes in a server takes seconds here. What is checked is what members see."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from redis.asyncio import Redis

from bot.embedded_redis import EmbeddedRedis
from storage.models import GenerationRow
from tests.adapters.discord.conftest import DiscordStack, discord_stack
from tests.adapters.discord.fake import FakeDiscord, Recorded, interaction_payload
from tests.rate_limits import DiscordLimits
from tests.stack import worker_running

SCALE = 10
LIMITS = DiscordLimits().scaled(SCALE)
BUDGETS = {"channel_writes_per_s": 1.0 * SCALE, "global_per_s": 45.0 * SCALE}
CHANNEL = "500000000000000001"


@pytest_asyncio.fixture
async def limited() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord(limits=LIMITS)
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def queued_stack(
    limited: FakeDiscord, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[DiscordStack]:
    """The stack under Discord's limits, without a worker: jobs wait until a test starts one."""
    async with discord_stack(
        limited, redis_server, sqlite_url, tmp_path, worker=False, discord=BUDGETS
    ) as value:
        yield value


def title(message: dict[str, Any]) -> str:
    return str(message["embeds"][0]["title"]) if message.get("embeds") else ""


def titles_of(fake: FakeDiscord, mid: str) -> list[str]:
    """Every version of message ``mid`` members saw, oldest first (the successful writes)."""
    rx = re.compile(rf"/messages/{mid}$|/messages/@original$")
    out = []
    for r in fake.requests:
        written = r.status < 300 and r.method in ("PATCH", "POST") and r.json and r.json.get("embeds")
        if written and rx.search(r.path) and _message_of(fake, r) == mid:
            out.append(str(r.json["embeds"][0]["title"]))
    return out


def _message_of(fake: FakeDiscord, r: Recorded) -> str | None:
    if hit := re.search(r"/messages/(\d+)$", r.path):
        return hit[1]
    token = r.path.split("/")[3]
    return fake.originals.get(token)


async def deliver(stack: DiscordStack, n: int, steps: int = 2) -> list[dict[str, Any]]:
    payloads = []
    for i in range(n):
        payload = interaction_payload(
            name="imagine",
            options={"prompt": f"fox {i}", "steps": steps},
            user_id=f"3000000000000{i:05d}",
            channel_id=CHANNEL,
        )
        stack.deliver(payload)
        payloads.append(payload)
    return payloads


async def rows_with_messages(n: int) -> list[GenerationRow]:
    for _ in range(3000):
        rows = await GenerationRow.all()
        if len(rows) == n and all(r.message.get("message_id") for r in rows):
            return rows
        await asyncio.sleep(0.02)
    raise AssertionError("the status messages were not all posted")


async def until_done(stack: DiscordStack, n: int, timeout: float = 90) -> list[GenerationRow]:
    def final(mid: str) -> bool:
        message = stack.fake.messages.get(mid)
        return message is not None and title(message).startswith("Done")

    deadline = time.monotonic() + timeout
    while True:
        rows = await GenerationRow.all()
        ended = len(rows) == n and all(r.state == "succeeded" for r in rows)
        if ended and all(final(str(r.message.get("message_id"))) for r in rows):
            return rows
        assert time.monotonic() < deadline, "not every member saw their image"
        await asyncio.sleep(0.05)


def assert_forward_only(fake: FakeDiscord, rows: list[GenerationRow]) -> None:
    rank = {"Queued": 0, "Generating": 1, "Done": 2}
    for row in rows:
        seen = titles_of(fake, str(row.message["message_id"]))
        stages = [rank[t.split(" ·")[0]] for t in seen if t.split(" ·")[0] in rank]
        assert stages == sorted(stages), f"went back: {seen}"


def bot_token_writes_per_second(fake: FakeDiscord, channel: str) -> int:
    times = sorted(
        r.at for r in fake.requests if r.status < 300 and r.path.startswith(f"/channels/{channel}/messages")
    )
    return max((sum(1 for t in times if s <= t < s + 1) for s in times), default=0)


async def test_twenty_jobs_in_one_channel_all_end_within_the_buckets(queued_stack: DiscordStack) -> None:
    stack = queued_stack
    await deliver(stack, 20)
    await rows_with_messages(20)
    async with worker_running(stack.rt):
        rows = await until_done(stack, 20)
    assert_forward_only(stack.fake, rows)
    assert sum(stack.fake.rate_limited.values()) <= 3, stack.fake.rate_limited
    assert not [r for r in stack.fake.requests if r.path.startswith("/webhooks/") and r.method == "POST"], (
        "no member got an error follow-up"
    )


async def test_expired_tokens_move_a_long_queue_to_the_bot_token_at_the_channels_pace(
    queued_stack: DiscordStack,
) -> None:
    """Every job waited past its interaction token's 15 minutes: all edits go through the bot token on
    one channel route; they keep to the channel's budget (Discord: 5 per 5 s), shared with the
    webhook route, and the images all arrive."""
    stack = queued_stack
    payloads = await deliver(stack, 30, steps=1)
    await rows_with_messages(30)
    stack.clock.offset = 15 * 60  # the tokens are dead, as genbot reads them...
    stack.fake.expired_tokens.update(p["token"] for p in payloads)  # ...and as Discord does
    started = time.time()
    async with worker_running(stack.rt):
        rows = await until_done(stack, 30)
    bot_edits = [
        r for r in stack.fake.requests if r.at >= started and r.path.startswith(f"/channels/{CHANNEL}/")
    ]
    assert bot_edits, "the edits went through the bot token"
    assert not [r for r in stack.fake.requests if r.at >= started and r.path.startswith("/webhooks/")]
    # Within the bucket: never more than its size in any (scaled) 5 s, so discord.py met no 429.
    assert bot_token_writes_per_second(stack.fake, CHANNEL) <= LIMITS.channel_per_5s * SCALE / 5 + 5
    assert stack.fake.rate_limited["channel"] <= 2, stack.fake.rate_limited
    assert_forward_only(stack.fake, rows)


async def test_a_429_storm_on_one_message_holds_back_no_other(queued_stack: DiscordStack) -> None:
    """One message's route answers 429 (2 s, over and over) while the others' jobs run: their
    updates and images arrive meanwhile; the stormy one arrives after."""
    stack = queued_stack
    await deliver(stack, 4)
    rows = await rows_with_messages(4)
    stormy = min(rows, key=lambda r: r.id)
    token = stormy.message["extra"]["token"]
    stack.fake.rate_limit(lambda r: token in r.path and r.method == "PATCH", times=4, retry_after=2.0)
    started = time.monotonic()
    async with worker_running(stack.rt):
        others_done = []

        async def watch() -> None:
            while not others_done:
                done = [
                    stack.fake.messages.get(str(r.message["message_id"])) for r in rows if r.id != stormy.id
                ]
                if all(m is not None and title(m).startswith("Done") for m in done):
                    others_done.append(time.monotonic())
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        final = await until_done(stack, 4, timeout=60)
        await watcher
    assert others_done[0] - started < 4.0, "the others did not wait for the stormy message"
    assert_forward_only(stack.fake, final)
