"""examples/upscale on Slack, whose slash commands carry no files: the member shares the picture in
the channel, then ``/upscale factor: 4`` (or ``/genbot upscale ...``) takes the newest picture they
shared there, or the one its id or link names. The whole stack runs (Bolt behind its HTTP server,
the worker, the renderer, Redis, SQLite) against the fake Web API: ``files.list``, ``files.info``,
the download with the bot token, and the enlarged picture uploaded into the status message."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from adapters.slack.files import NOT_HERE, none_shared
from bot.embedded_redis import EmbeddedRedis
from storage.models import GenerationRow
from tests.adapters.slack.conftest import CHANNEL, SlackClient, slack_section
from tests.adapters.slack.fake_slack import FakeSlack, Message
from tests.adapters.slack.test_slack_app import headline, image_of
from tests.examples.test_upscale import picture, size_of, upscale_runtime
from tests.stack import bot_running, worker_running

OTHER = "C0002"


@contextlib.asynccontextmanager
async def upscale_on_slack(
    redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[FakeSlack, SlackClient]]:
    """genbot on Slack (HTTP mode) with the upscale plugin, a worker and the renderer, against a
    fake Web API; yields the fake and a client that sends signed slash commands."""
    fake = FakeSlack()
    await fake.start()
    slack = slack_section(fake)
    try:
        async with (
            upscale_runtime(
                redis_server, sqlite_url, tmp_path, platform="slack", slack=slack, **overrides
            ) as rt,
            worker_running(rt),
            bot_running(rt) as (base, _stop),
            aiohttp.ClientSession() as http,
        ):
            yield fake, SlackClient(http, f"{base}/slack/events", fake)
    finally:
        await fake.stop()


def results(fake: FakeSlack) -> list[Message]:
    """The status messages that ended with their picture in them, oldest first."""
    return [
        m
        for m in fake.in_channel(CHANNEL)
        if m.blocks and m.blocks[0].get("type") == "section" and image_of(m.blocks)
    ]


def result_png(fake: FakeSlack, message: Message) -> bytes:
    file_id = image_of(message.blocks)
    assert file_id is not None
    return fake.uploads[file_id]


async def sent(client: SlackClient, command: str, text: str, **kwargs: Any) -> None:
    """Send a command and check that its ack is empty (the answer comes later)."""
    status, body, _took = await client.command(command, text, **kwargs)
    assert (status, body) == (200, ""), body


async def test_upscale_takes_the_picture_the_member_shared_last_in_the_channel(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    async with upscale_on_slack(redis_server, sqlite_url, tmp_path) as (fake, client):
        fake.share_file("UALICE", CHANNEL, "fox in snow.jpg", picture(fmt="JPEG"), "image/jpeg")
        fake.share_file("UALICE", CHANNEL, "notes.txt", b"not a picture", "text/plain")  # newer: no picture
        fake.share_file("UBOB", CHANNEL, "bobs.png", picture(10, 10))  # newer: not hers
        fake.share_file("UALICE", OTHER, "elsewhere.png", picture(10, 10))  # newer: not here
        await sent(client, "/upscale", "factor: 4")
        await fake.wait_until(lambda: len(results(fake)) == 1)
        # genbot's own upload is now the channel's newest file: hers is still her latest
        await sent(client, "/genbot", "upscale factor: 2")
        await fake.wait_until(lambda: len(results(fake)) == 2)
        rows = await GenerationRow.all().order_by("id")

    four, two = (fake.messages[row.message["message_id"]] for row in rows)
    assert headline(four).startswith("Done") and headline(two).startswith("Done")
    assert size_of(result_png(fake, four)) == (160, 120)
    assert size_of(result_png(fake, two)) == (80, 60)
    assert [(r.kind, r.prompt, r.options["factor"]) for r in rows] == [
        ("upscale", "fox in snow.jpg", 4),
        ("upscale", "fox in snow.jpg", 2),
    ]
    image = rows[0].options["image"]
    assert (image["content_type"], image["width"], image["height"]) == ("image/jpeg", 40, 30)
    listed = [c.args for c in fake.called("files.list")]
    assert listed == [{"channel": CHANNEL, "user": "UALICE", "count": "1", "types": "images"}] * 2
    downloads = fake.called("download")
    assert len(downloads) == 2 and all(c.args["authorized"] for c in downloads)
    assert fake.responses == [], "no ephemeral answer: the status message is the answer"


async def test_a_picture_named_by_its_id_or_link_is_taken_from_this_channel(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    async with upscale_on_slack(redis_server, sqlite_url, tmp_path) as (fake, client):
        cat = fake.share_file("UBOB", CHANNEL, "cat.png", picture(20, 10))
        fake.share_file("UALICE", CHANNEL, "fox.png", picture())  # her latest, not the one named
        await sent(client, "/upscale", f"{cat['id']} factor: 2")
        await sent(client, "/genbot", f"upscale image: <{cat['permalink']}|cat.png> factor: 4")
        await fake.wait_until(lambda: len(results(fake)) == 2)
        rows = await GenerationRow.all().order_by("id")

    sizes = sorted(size_of(result_png(fake, fake.messages[r.message["message_id"]])) for r in rows)
    assert sizes == [(40, 20), (80, 40)]
    assert [r.prompt for r in rows] == ["cat.png", "cat.png"]
    assert [c.args["file"] for c in fake.called("files.info")] == [cat["id"], cat["id"]]
    assert fake.called("files.list") == []


async def test_what_slack_cannot_hand_over_is_refused_and_nothing_is_queued(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    limits = {"attachment_max_bytes": 5000}
    async with upscale_on_slack(redis_server, sqlite_url, tmp_path, limits=limits) as (fake, client):
        elsewhere = fake.share_file("UALICE", OTHER, "elsewhere.png", picture())
        huge = fake.share_file("UALICE", CHANNEL, "huge.png", b"x" * 6000)
        fake.share_file("UDAVE", CHANNEL, "notes.png", b"these are not pixels")
        cases = [
            ("UCAROL", "factor: 2", none_shared(True)),
            ("UALICE", f"{elsewhere['id']} factor: 2", NOT_HERE),
            ("UALICE", huge["id"], "huge.png (6 kB) is too large: the limit is 5 kB."),
            ("UDAVE", "factor: 4", "notes.png is not a picture genbot can read"),
        ]
        names = []
        for user, text, _said in cases:
            await sent(client, "/upscale", text, user=user, name=user.lower())
            names.append(f"{user}-{client.sent}")  # the response_url of that command
        status, ack, _took = await client.command("/upscale", "fox.png factor: 2")
        await fake.wait_until(lambda: len(fake.responses) == len(cases))
        assert await GenerationRow.all().count() == 0, "nothing queued"

    assert status == 200 and "Image takes a Slack file: its link or id" in ack, "refused in the ack"
    answers = {r["_to"]: r for r in fake.responses}
    for name, (_user, _text, said) in zip(names, cases, strict=True):
        assert said in answers[name]["text"], (said, answers[name])
        assert answers[name]["response_type"] == "ephemeral"
    downloaded = {c.args["file_id"] for c in fake.called("download")}
    assert huge["id"] not in downloaded and elsewhere["id"] not in downloaded
