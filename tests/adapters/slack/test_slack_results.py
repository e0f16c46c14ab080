"""A plugin's result of several images or of a file, on Slack: the grid shown in the status message,
and the files shared once, together, in its thread (each under its own name), whatever 429s meet
the upload on its way; a channel that takes no files gets a sentence in the message instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from storage.models import GenerationRow
from tests.adapters.slack.conftest import CHANNEL, SlackClient, slack_section
from tests.adapters.slack.fake_slack import FakeSlack, Message
from tests.adapters.slack.test_slack_app import headline, image_of
from tests.conftest import make_settings
from tests.stack import bot_running, worker_running


@pytest_asyncio.fixture
async def results_rt(
    results_module: None,
    redis_server: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    redis: Redis,
    fake: FakeSlack,
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        platform="slack",
        slack=slack_section(fake),
        plugins={"modules": ["plugin_results:plugin"]},
    )
    async with runtime(settings) as rt:
        yield rt


async def finished(rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession, text: str) -> Message:
    """Run ``/genbot <text>`` and wait for its status message to say Done."""
    async with worker_running(rt), bot_running(rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        status, body, _took = await client.command("/genbot", text)
        assert (status, body) == (200, ""), body

        def done() -> Message | None:
            return next(
                (
                    m
                    for m in fake.in_channel(CHANNEL)
                    if m.blocks
                    and m.blocks[0].get("type") == "section"
                    and headline(m).startswith("Done")
                    and _context(m, "in the thread")
                ),
                None,
            )

        await fake.wait_until(lambda: done() is not None, timeout=30)
        message = done()
        assert message is not None
        return message


def _context(message: Message, words: str) -> str | None:
    texts = [e["text"] for b in message.blocks if b["type"] == "context" for e in b["elements"]]
    return next((t for t in texts if words in t), None)


def shared_files(fake: FakeSlack) -> list[tuple[str, bytes]]:
    """The files genbot shared, as (name, bytes), in order."""
    return [
        (fake.files[f["id"]]["name"], fake.uploads[f["id"]]) for share in fake.shares for f in share["files"]
    ]


async def test_several_images_show_as_a_grid_and_are_shared_together_in_the_thread(
    results_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    message = await finished(results_rt, fake, http, "grid count: 5")
    row = await GenerationRow.get()

    grid = image_of(message.blocks)
    assert grid is not None, "the grid is shown in the message"
    assert _context(message, "The 5 files are in the thread under this message.")
    thread = [s for s in fake.shares if s["thread_ts"] == message.ts]
    assert len(thread) == 2, "the five images in one share, and the grid"
    (images,) = [s for s in thread if len(s["files"]) == 5]
    assert [f["title"] for f in images["files"]] == [f"image-{n}.png" for n in range(1, 6)]
    names = sorted(name for name, _data in shared_files(fake))
    assert names == [f"genbot-{row.id}.png"] + [f"image-{n}.png" for n in range(1, 6)]
    kept = {f["name"]: f["size"] for f in row.meta["files"]}
    sizes = {name: len(data) for name, data in shared_files(fake) if name.startswith("image-")}
    assert sizes == kept, "each image whole"
    assert len(fake.called("files.getUploadURLExternal")) == 6, "each uploaded once"


async def test_a_file_is_shared_under_its_clean_name(
    results_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    message = await finished(results_rt, fake, http, "document fox & <hare>")

    assert image_of(message.blocks) is None
    note = _context(message, "in the thread")
    assert note == "The file fox &amp; hare.html is in the thread under this message.", "escaped"
    assert shared_files(fake) == [("fox & hare.html", b"<script>alert(1)</script>")]
    assert fake.shares[0]["thread_ts"] == message.ts and fake.shares[0]["channel_id"] == CHANNEL


async def test_429s_on_the_way_resume_and_upload_each_file_once(
    results_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    fake.storm(["files.getUploadURLExternal", "files.completeUploadExternal"], count=2, retry_after=1)
    message = await finished(results_rt, fake, http, "grid count: 3")

    limited = {c.method for c in fake.calls if c.status == 429}
    assert limited == {"files.getUploadURLExternal", "files.completeUploadExternal"}
    asked = [c for c in fake.called("files.getUploadURLExternal") if c.status == 200]
    assert [c.args["filename"] for c in asked].count("image-2.png") == 1
    assert sorted(c.args["filename"] for c in asked if c.args["filename"].startswith("image-")) == [
        "image-1.png",
        "image-2.png",
        "image-3.png",
    ]
    assert [name for name, _ in shared_files(fake)].count("image-3.png") == 1
    assert _context(message, "The 3 files are in the thread")


async def test_a_channel_that_takes_no_files_says_so_and_the_job_still_ends(
    results_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    fake.files_not_in_channel.add(CHANNEL)
    async with worker_running(results_rt), bot_running(results_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        await client.command("/genbot", "document report")

        def said() -> Message | None:
            return next(
                (m for m in fake.in_channel(CHANNEL) if m.blocks and _context(m, "could not post the files")),
                None,
            )

        await fake.wait_until(lambda: said() is not None, timeout=30)
        message = said()
        assert message is not None
    assert headline(message).startswith("Done")
    assert "not a member of this channel" in (_context(message, "could not post the files") or "")
    assert fake.shares == []
