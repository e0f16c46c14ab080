"""One HTTP session per Slack bot: its Web API calls, uploads, file downloads and response_url
replies reuse a few connections instead of opening one each, and stopping the bot closes it."""

from __future__ import annotations

import gc
import warnings

import pytest
from slack_bolt.async_app import AsyncRespond

from adapters.slack.app import SlackBot, SlackResponder
from bot.app import Runtime, build_slack
from bot.config import ConfigError
from bot.models import StatusView
from tests.adapters.slack.conftest import CHANNEL
from tests.adapters.slack.fake_slack import FakeSlack

CALLS = 30
#: Connections a bot may open for all its calls made one after the other: the pool's one (and a
#: spare, should the fake close one between two calls).
FEW = 2


def view(job: int) -> StatusView:
    return StatusView(
        job=job,
        state="queued",
        headline="Queued",
        prompt=f"a red fox {job}",
        details="",
        requested_by="alice",
    )


async def calls_of_every_kind(bot: SlackBot, fake: FakeSlack, count: int) -> None:
    """``count`` of each: status posts and edits, admin lookups, upload URLs and uploads, file
    downloads, response_url replies."""
    shared = fake.share_file("UALICE", CHANNEL, "fox.png", b"png bytes")["id"]
    respond = AsyncRespond(response_url=fake.response_url("session"))
    responder = SlackResponder(respond, bot.chat, CHANNEL, files=bot.files, member="UALICE")
    for i in range(count):
        ref = await bot.chat.post_status(CHANNEL, view(i))
        await bot.chat.edit_status(ref, view(i))
        await bot.admins.is_admin("T0001", f"UMEMBER{i}")
        await bot.chat._upload_bytes(f"genbot-{i}.png", b"png bytes", "alt")
        await responder.fetch(shared, max_bytes=1024 * 1024)
        await responder.reply(f"reply {i}")


async def test_a_bots_calls_share_a_few_connections_and_stop_closes_them(
    slack_rt: Runtime, fake: FakeSlack
) -> None:
    bot = build_slack(slack_rt)
    await bot.start("127.0.0.1", 0)
    try:
        session = bot.session.session
        assert session is not None and not session.closed
        for client in (bot.chat.client, bot.files.client, bot.admins.client, bot.app.client):
            assert client.session is session
        before = len(fake.calls)
        await calls_of_every_kind(bot, fake, CALLS)
    finally:
        await bot.stop()
    kinds = {c.method for c in fake.calls[before:]}
    assert {"chat.postMessage", "chat.update", "users.info", "upload", "download", "respond"} <= kinds
    assert len(fake.calls) - before >= 6 * CALLS
    assert len(fake.connections) <= FEW, (
        f"{len(fake.calls)} calls came on {len(fake.connections)} connections"
    )

    assert session.closed
    assert all(
        c.session is None for c in (bot.chat.client, bot.files.client, bot.admins.client, bot.app.client)
    )
    # Once stopped, a call still goes out, as slack_sdk's without a session: a connection each
    # (which is also what the counting above would have seen without the shared session).
    opened = len(fake.connections)
    for i in range(3):
        await bot.chat.post_status(CHANNEL, view(100 + i))
    assert len(fake.connections) == opened + 3


async def test_stopping_a_bot_leaves_no_unclosed_session(slack_rt: Runtime, fake: FakeSlack) -> None:
    bot = build_slack(slack_rt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        await bot.start("127.0.0.1", 0)
        await bot.chat.post_status(CHANNEL, view(1))
        await bot.stop()
        await bot.stop()  # twice is fine
        del bot
        gc.collect()
    unclosed = [w for w in caught if "Unclosed" in str(w.message)]
    assert not unclosed, [str(w.message) for w in unclosed]


async def test_a_failed_start_still_closes_the_session(slack_rt: Runtime, fake: FakeSlack) -> None:
    fake.outage(["auth.test"], 500)
    bot = build_slack(slack_rt)
    with pytest.raises(ConfigError):
        await bot.start("127.0.0.1", 0)
    session = bot.session.session
    assert session is not None
    await bot.stop()
    assert session.closed
