"""The Slack adapter end to end: the real Bolt app behind its real HTTP server, driven by signed
slash commands and button presses, against the fake Web API, with a real worker, renderer, Redis
and SQLite (``genbot bot --platform slack`` as ``bot.app.serve_bot`` runs it)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import aiohttp
from PIL import Image

from bot.app import Runtime
from bot.models import State
from storage.models import GenerationRow
from tests.adapters.slack.conftest import ADMIN, CHANNEL, SlackClient, attached
from tests.adapters.slack.fake_slack import FakeSlack, Message
from tests.stack import bot_running, worker_running

ACK_DEADLINE_S = 2.5  # Slack's is 3 s; measured generously, this is a protocol deadline


def headline(message: Message | dict[str, Any]) -> str:
    blocks = message.blocks if isinstance(message, Message) else message["blocks"]
    return str(blocks[0]["text"]["text"]).strip("*")


def image_of(blocks: list[dict[str, Any]]) -> str | None:
    return next((b["slack_file"]["id"] for b in blocks if b.get("type") == "image"), None)


def has_cancel(blocks: list[dict[str, Any]]) -> bool:
    return any(
        e.get("action_id") == "genbot_cancel" for b in blocks if b["type"] == "actions" for e in b["elements"]
    )


def status_message(fake: FakeSlack) -> Message:
    posted = [m for m in fake.in_channel(CHANNEL) if m.blocks and m.blocks[0].get("type") == "section"]
    assert len(posted) == 1, posted
    return posted[0]


async def test_imagine_acks_then_one_message_goes_from_queued_to_the_image(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    fake.invalid_blocks_times = 1  # Slack does not see the new file at once
    async with worker_running(slack_rt), bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        status, body, took = await client.command("/imagine", "a red fox in snow size: 768x768 steps: 6")
        assert status == 200 and body == ""
        assert took < ACK_DEADLINE_S

        await fake.wait_until(lambda: any(image_of(m.blocks) for m in fake.messages.values()))
        message = status_message(fake)
        file_id = image_of(message.blocks)

    assert len(fake.called("auth.test")) == 1  # at start; no Web API call per request before the ack
    posts = fake.called("chat.postMessage")
    assert len(posts) == 1 and posts[0].args["channel"] == CHANNEL
    assert headline(message.history[0]).startswith("Queued")
    updates = [c for c in fake.called("chat.update") if c.status == 200]
    assert updates and all(c.args["ts"] == message.ts and c.args["channel"] == CHANNEL for c in updates)
    seen = [headline(v) for v in message.history]
    assert any(h.startswith("Generating · ") for h in seen), seen
    bars = [b["elements"][0]["text"] for v in message.history for b in v["blocks"] if b["type"] == "context"]
    assert any("▰" in bar and bar.endswith("%") for bar in bars), bars
    assert any(has_cancel(v["blocks"]) for v in message.history[:-1])
    assert headline(message).startswith("Done")
    assert not has_cancel(message.blocks)

    # uploaded once, into the thread of the status message, and shown in it
    assert len(fake.called("files.getUploadURLExternal")) == 1
    assert len(fake.shares) == 1 and [f["id"] for f in fake.shares[0]["files"]] == [file_id]
    assert fake.shares[0]["channel_id"] == CHANNEL and fake.shares[0]["thread_ts"] == message.ts
    assert file_id is not None and Image.open(io.BytesIO(fake.uploads[file_id])).size == (768, 768)
    image_updates = [c for c in fake.called("chat.update") if image_of(c.args.get("blocks") or [])]
    assert len(image_updates) == 2 and fake.invalid_blocks_times == 0  # refused once, then shown
    assert image_updates[0].args["blocks"] != image_updates[1].args["blocks"]  # a new block_id

    [row] = await GenerationRow.all()
    assert row.state == State.SUCCEEDED.value
    assert row.message["message_id"] == message.ts and row.message["extra"]["file_id"] == file_id


async def test_nothing_slow_runs_before_the_ack(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    """Slack's API answers slowly: the ack still comes at once, and the work follows."""
    fake.delay_s["chat.postMessage"] = 3.5
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        status, _body, took = await client.command("/imagine", "a slow snail")
        assert status == 200
        assert took < ACK_DEADLINE_S
        await fake.wait_until(lambda: bool(fake.called("chat.postMessage")))
    [row] = await GenerationRow.all()
    assert row.message["message_id"] == status_message(fake).ts


async def test_bad_signature_and_stale_timestamp_are_refused_and_queue_nothing(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        body = client.command_body("/imagine", "a forged fox")
        status, _text, _took = await client.post(body, secret="not-the-secret")
        assert status == 401
        status, _text, _took = await client.post(body, timestamp=int(time.time()) - 6 * 60)
        assert status == 401
        assert await GenerationRow.all().count() == 0
        assert not fake.called("chat.postMessage") and not fake.responses

        # the same body, signed with the secret and on time, is taken: the refusals were the checks
        status, _text, _took = await client.post(body)
        assert status == 200
        await fake.wait_until(lambda: bool(fake.called("chat.postMessage")))
        assert await GenerationRow.all().count() == 1


async def test_mentions_in_a_prompt_ping_no_one(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    prompt = "hey <!channel> <!here> <!everyone> <@U123> & <https://x.test|click>"
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        assert (await client.command("/imagine", prompt))[0] == 200
        await fake.wait_until(lambda: bool(fake.called("chat.postMessage")))
        assert (await client.command("/genbot", "queue"))[0] == 200  # the reply quotes the prompt
        await fake.wait_until(lambda: bool(fake.responses))

    sent = json.dumps(
        [c.args for c in fake.calls if c.method in ("chat.postMessage", "chat.update", "respond")],
        ensure_ascii=False,
    )
    for mention in ("<!channel>", "<!here>", "<!everyone>", "<@U123>", "<https://"):
        assert mention not in sent
    message = status_message(fake)
    assert "&lt;!channel&gt;" in message.text
    assert "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt; &lt;@U123&gt; &amp;" in json.dumps(
        message.blocks, ensure_ascii=False
    )
    assert "&lt;!channel&gt;" in fake.responses[0]["text"]
    assert fake.responses[0]["response_type"] == "ephemeral"


async def test_a_429_storm_still_ends_with_the_image(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    fake.storm(["chat.postMessage", "chat.update", "files.completeUploadExternal"], count=3, retry_after=1)
    async with worker_running(slack_rt), bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        status, _body, took = await client.command("/imagine", "a storm petrel steps: 4")
        assert status == 200 and took < ACK_DEADLINE_S
        await fake.wait_until(lambda: any(image_of(m.blocks) for m in fake.messages.values()), timeout=60)
    limited = {c.method for c in fake.calls if c.status == 429}
    assert limited == {"chat.postMessage", "chat.update", "files.completeUploadExternal"}
    message = status_message(fake)
    assert headline(message).startswith("Done")
    assert len(fake.called("files.getUploadURLExternal")) == 1
    [row] = await GenerationRow.all()
    assert row.state == State.SUCCEEDED.value


async def test_the_cancel_and_reroll_buttons_obey_their_author_and_admins_only(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(slack_rt) as (base, _stop):  # no worker: the jobs stay queued
        client = SlackClient(http, f"{base}/slack/events", fake)
        await client.command("/imagine", "alice's fox", user="UALICE", name="alice")
        await client.command("/imagine", "bob's owl", user="UBOB", name="bob")
        fox, owl = await attached(prompt="alice's fox"), await attached(prompt="bob's owl")

        status, _body, took = await client.press_cancel(
            fox.id, fox.message["message_id"], user="UBOB", name="bob"
        )
        assert status == 200 and took < ACK_DEADLINE_S
        await fake.wait_until(lambda: len(fake.responses) == 1)
        assert fake.responses[0]["text"].startswith("*Not allowed*")
        assert fake.responses[0]["response_type"] == "ephemeral"
        assert (await GenerationRow.get(id=fox.id)).state == State.QUEUED.value

        await client.press_cancel(fox.id, fox.message["message_id"], user="UALICE", name="alice")
        await fake.wait_until(lambda: len(fake.responses) == 2)
        assert fake.responses[1]["text"] == f"Cancelled job {fox.id}."
        assert (await GenerationRow.get(id=fox.id)).state == State.CANCELLED.value
        fox_message = fake.messages[fox.message["message_id"]]
        await fake.wait_until(lambda: headline(fox_message).startswith("Cancelled"))
        assert not has_cancel(fox_message.blocks)

        await client.press_cancel(owl.id, owl.message["message_id"], user=ADMIN, name="admin")
        await fake.wait_until(lambda: len(fake.responses) == 3)
        owl_row = await GenerationRow.get(id=owl.id)
        assert owl_row.state == State.CANCELLED.value and owl_row.error_code == "cancelled_by_admin"

        # The finished message offers a Reroll: its author's press queues the same prompt again.
        assert any(
            e.get("action_id") == "genbot_reroll"
            for b in fox_message.blocks
            if b["type"] == "actions"
            for e in b["elements"]
        )
        await client.press("genbot_reroll", fox.id, fox.message["message_id"], user="UBOB", name="bob")
        await fake.wait_until(lambda: len(fake.responses) == 4)
        assert fake.responses[3]["text"].startswith("*Not allowed*")
        await client.press("genbot_reroll", fox.id, fox.message["message_id"], user="UALICE", name="alice")
        await fake.wait_until(lambda: len(fake.called("chat.postMessage")) == 3)
        rerolled = await GenerationRow.filter(prompt="alice's fox").order_by("-id").first()
        assert rerolled is not None and rerolled.id != fox.id and rerolled.user_id == "UALICE"


async def test_a_channel_without_the_bot_gets_words_not_a_job(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    fake.not_in_channel.add("CPRIVATE")
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        assert (await client.command("/imagine", "a lonely fox", channel="CPRIVATE"))[0] == 200
        await fake.wait_until(lambda: bool(fake.responses))
    assert fake.responses[0]["text"].startswith("*Can't post here*")
    assert "/invite @genbot" in fake.responses[0]["text"]
    [row] = await GenerationRow.all()
    assert row.state == State.CANCELLED.value


async def test_genbot_subcommands_and_help(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        status, body, _took = await client.command("/genbot", "help")
        assert status == 200 and "/genbot cancel" in json.loads(body)["text"]
        status, body, _took = await client.command("/genbot", "frobnicate")
        assert status == 200 and json.loads(body)["text"].startswith("*Invalid option*")
        status, body, _took = await client.command("/imagine", "")
        assert status == 200 and body == ""
        await fake.wait_until(lambda: len(fake.responses) == 1)
        assert "prompt is missing" in fake.responses[0]["text"]
        await client.command("/genbot", "queue")
        await fake.wait_until(lambda: len(fake.responses) == 2)
        assert fake.responses[1]["text"].startswith("You have no jobs")
    assert await GenerationRow.all().count() == 0


async def test_a_stop_finishes_every_acknowledged_command_before_it_closes(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    """SIGTERM in the middle of a burst: Slack has had its ack for every command, and each is
    still posting its status message (Slack answers slowly). The bot stops taking commands,
    waits for those, and only then closes: every request has its message, linked to its row."""
    fake.delay_s["chat.postMessage"] = 2.0
    async with bot_running(slack_rt) as (base, stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        acks = await asyncio.gather(*(client.command("/imagine", f"fox {i}") for i in range(8)))
        assert [status for status, _body, _took in acks] == [200] * 8
        stop.set()  # as SIGTERM does; leaving the block waits for the bot to end
    assert len(fake.in_channel(CHANNEL)) == 8, "the bot ended before its commands posted"
    rows = await GenerationRow.all()
    assert len(rows) == 8
    posted = {m.ts for m in fake.in_channel(CHANNEL)}
    assert {row.message.get("message_id") for row in rows} == posted and len(posted) == 8
