"""examples/ask: a plugin from outside genbot, written against bot.api only, answering ``/ask``
with text that streams into its status message on the local chat, Slack and Discord, through the
real worker, renderer, Redis and database, and each platform's fake speaking its wire format."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from genbot_ask import demo_answer
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.models import State
from storage.models import GenerationRow
from tests.adapters.discord.conftest import discord_stack
from tests.adapters.discord.fake import APP_ID, FakeDiscord, interaction_payload
from tests.adapters.slack.conftest import CHANNEL, SlackClient, slack_section
from tests.adapters.slack.fake_slack import FakeSlack
from tests.chat_client import ChatClient
from tests.conftest import make_settings
from tests.stack import bot_running, stack_running, worker_running

WEBHOOK = rf"^/webhooks/{APP_ID}/"
QUESTION = "why is the fox red?"
ANSWER = demo_answer(QUESTION)


def ask(word_delay_s: float = 0.01) -> dict[str, Any]:
    """The plugin as a deployment turns it on: by its module path, with its own settings section."""
    return {"modules": ["genbot_ask:plugin"], "ask": {"word_delay_s": word_delay_s}}


@contextlib.asynccontextmanager
async def ask_runtime(
    redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Runtime]:
    overrides.setdefault("plugins", ask())
    async with runtime(make_settings(redis_server.url, sqlite_url, tmp_path, **overrides)) as rt:
        yield rt


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def streamed(texts: list[str]) -> bool:
    """Whether ``texts`` (a message's texts, in order) show an answer streaming in: partial
    answers, each the start of the next, then the whole answer."""
    partial = [text for text in texts if text != ANSWER]
    ordered = all(b.startswith(a) for a, b in itertools.pairwise(texts))
    return bool(partial) and ordered and texts[-1] == ANSWER


async def test_ask_streams_its_answer_into_one_status_message_in_the_local_chat(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with (
        ask_runtime(redis_server, sqlite_url, tmp_path, plugins=ask(0.05)) as rt,
        stack_running(rt) as base,
    ):
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        assert await alice.command(f"/ask {QUESTION}") == {"ok": True}
        done = await alice.wait_for(
            lambda m: bool(m.get("status")) and m["status"]["state"] == "succeeded", timeout=30
        )
        await alice.close()
        row = await GenerationRow.get(id=done["status"]["job"])
    assert (row.kind, row.backend, row.prompt, row.state) == ("ask", "ask-demo", QUESTION, "succeeded")
    status = done["status"]
    assert (status["kind"], status["prompt"], status["text"]) == ("ask", QUESTION, ANSWER)
    assert status["image_url"] is None and status["headline"].startswith("Done")
    assert status["buttons"] == [], "an answer offers no reroll"
    updates = [u["status"] for u in alice.updates if u.get("status") and u["status"]["job"] == status["job"]]
    assert streamed([u["text"] for u in updates if u["text"]])
    assert any(u["headline"].startswith("Answering · ") for u in updates)


async def test_a_cancelled_answer_stops_streaming(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    slow = ask(word_delay_s=0.3)
    async with ask_runtime(redis_server, sqlite_url, tmp_path, plugins=slow) as rt, stack_running(rt) as base:
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        await alice.command(f"/ask {QUESTION}")
        running = await alice.wait_for(
            lambda m: bool(m.get("status")) and bool(m["status"]["text"]), timeout=30
        )
        job = running["status"]["job"]
        assert await alice.command(f"/cancel {job}") == {"ok": True}
        await alice.wait_for(
            lambda m: bool(m.get("status")) and m["status"]["state"] == "cancelled", timeout=30
        )
        await alice.close()
        row = await GenerationRow.get(id=job)
    assert row.state == State.CANCELLED.value
    assert len(row.meta.get("text", "")) < len(ANSWER), "the answer stopped where it was cancelled"


async def test_a_blocked_term_in_a_question_is_refused_like_a_prompt(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with ask_runtime(redis_server, sqlite_url, tmp_path) as rt, stack_running(rt) as base:
        admin = ChatClient(http, base, "admin")
        await admin.connect()
        assert await admin.command("/admin block term: weasel") == {"ok": True}
        await admin.wait_for(lambda m: m.get("ephemeral_to") == "admin")  # blocked before Alice asks
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        assert await alice.command("/ask where does the weasel sleep?") == {"ok": True}
        refusal = await alice.wait_for(lambda m: "not allow" in (m.get("text") or ""), timeout=10)
        await alice.close()
        await admin.close()
        assert await GenerationRow.all().count() == 0, "nothing queued"
    assert refusal["ephemeral_to"] is not None


async def test_ask_on_slack_as_its_own_command_and_under_genbot(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    fake = FakeSlack()
    await fake.start()
    slack = slack_section(fake)
    try:
        async with (
            ask_runtime(
                redis_server, sqlite_url, tmp_path, platform="slack", slack=slack, plugins=ask(0.1)
            ) as rt,
            worker_running(rt),
            bot_running(rt) as (base, _stop),
        ):
            client = SlackClient(http, f"{base}/slack/events", fake)
            for command, text in (("/ask", QUESTION), ("/genbot", f"ask {QUESTION}")):
                status, body, _took = await client.command(command, text)
                assert (status, body) == (200, "")

            def answered() -> list[Any]:
                return [
                    m
                    for m in fake.in_channel(CHANNEL)
                    if any(b.get("text", {}).get("text") == ANSWER for b in m.blocks or [])
                ]

            await fake.wait_until(lambda: len(answered()) == 2)
            assert [row.kind for row in await GenerationRow.all()] == ["ask", "ask"]
        for message in answered():
            sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
            assert sections[0].strip("*").startswith("Done")
            assert sections[2] == ANSWER
            # sections: the headline, the question, then the answer so far
            texts = [
                [b["text"]["text"] for b in v["blocks"] if b["type"] == "section"] for v in message.history
            ]
            texts = [t[2] for t in texts if len(t) > 2]
            assert any(t and t != ANSWER and ANSWER.startswith(t) for t in texts), (
                "partial answers came first"
            )
    finally:
        await fake.stop()


async def test_ask_on_discord_defers_then_streams_into_the_interaction_message(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeDiscord()
    await fake.start()
    try:
        async with discord_stack(fake, redis_server, sqlite_url, tmp_path, plugins=ask(0.1)) as stack:
            payload = interaction_payload(name="ask", options={"prompt": QUESTION})
            stack.deliver(payload)
            token = payload["token"]

            def edits() -> list[dict[str, Any]]:
                return [
                    r.json["embeds"][0] for r in fake.of("PATCH", WEBHOOK + token) if r.json.get("embeds")
                ]

            await stack.until(lambda: any(e["title"].startswith("Done") for e in edits()))
    finally:
        await fake.stop()
    embeds = edits()
    assert embeds[0]["title"].startswith("Queued")
    assert embeds[-1]["description"] == f"{QUESTION}\n\n{ANSWER}"
    assert any(e["title"].startswith("Answering") for e in embeds)
    partial = [
        e["description"]
        for e in embeds
        if "\n\n" in e["description"] and not e["description"].endswith(ANSWER)
    ]
    assert partial, "the answer streamed in before it was whole"


async def test_a_public_answer_is_for_the_whole_channel_on_every_platform(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """``/answerer`` (``public=True``) answers in the channel; ``@everyone`` in it would ping no one."""
    said = "/ask is answered by genbot's demo answerer"
    async with ask_runtime(redis_server, sqlite_url, tmp_path) as rt, stack_running(rt) as base:
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        assert await alice.command("/answerer") == {"ok": True}
        answer = await alice.wait_for(lambda m: said in (m.get("text") or ""), timeout=10)
        await alice.close()
    assert answer["ephemeral_to"] is None, "seen by every member"

    fake = FakeSlack()
    await fake.start()
    try:
        async with (
            ask_runtime(
                redis_server, sqlite_url, tmp_path, platform="slack", slack=slack_section(fake)
            ) as rt,
            bot_running(rt) as (base, _stop),
        ):
            client = SlackClient(http, f"{base}/slack/events", fake)
            assert (await client.command("/genbot", "answerer"))[:2] == (200, "")
            await fake.wait_until(lambda: any(said in r.get("text", "") for r in fake.responses))
    finally:
        await fake.stop()
    [response] = [r for r in fake.responses if said in r.get("text", "")]
    assert response["response_type"] == "in_channel"

    discord = FakeDiscord()
    await discord.start()
    try:
        async with discord_stack(discord, redis_server, sqlite_url, tmp_path, plugins=ask()) as stack:
            payload = interaction_payload(name="answerer", options={})
            stack.deliver(payload)
            token = payload["token"]

            def answered() -> list[Any]:
                return [
                    r
                    for r in discord.of("PATCH", WEBHOOK + token)
                    if said in (r.json or {}).get("content", "")
                ]

            await stack.until(answered)
    finally:
        await discord.stop()
    [callback] = [r for r in discord.requests if token in r.path and r.route.endswith("/callback")]
    assert callback.json["type"] == 5 and not (callback.json.get("data") or {}).get("flags"), (
        "deferred visibly"
    )
    assert answered()[0].route.endswith("/messages/@original")
