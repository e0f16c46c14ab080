"""Discord's rate limits as the adapter meets them, against the fake: what each write spends, a
long 429 raised to the scheduler for the channel, 30046 held for the one message."""

from __future__ import annotations

import pytest

from adapters.discord.adapter import CHANNEL, GLOBAL
from bot.models import MessageRef, State, StatusView
from bot.ports import RateLimited, Spend
from tests.adapters.discord.conftest import DiscordStack

CHANNEL_ID = "500000000000000001"


def view(**changes: object) -> StatusView:
    base: dict[str, object] = {
        "job": 3,
        "state": State.QUEUED,
        "headline": "Queued · #1 in line",
        "prompt": "a fox",
        "details": "job 3",
        "requested_by": "alice",
    }
    base.update(changes)
    return StatusView(**base)  # type: ignore[arg-type]


async def test_webhook_edits_spend_the_channel_and_bot_token_writes_the_global_budget_too(
    stack: DiscordStack,
) -> None:
    chat = stack.client.chat
    posted = await chat.post_status(CHANNEL_ID, view())
    assert chat.spends(CHANNEL_ID, None, view()) == [Spend(CHANNEL, CHANNEL_ID), Spend(GLOBAL, "")]
    assert chat.spends(CHANNEL_ID, posted, view()) == [Spend(CHANNEL, CHANNEL_ID), Spend(GLOBAL, "")]
    fresh = MessageRef(
        "discord",
        CHANNEL_ID,
        posted.message_id,
        {"token": "tok", "token_expires": stack.clock() + 600, "application_id": "1"},
    )
    assert chat.spends(CHANNEL_ID, fresh, view()) == [Spend(CHANNEL, CHANNEL_ID)], "webhooks: no global"
    stack.clock.offset = 600  # the interaction token has expired: the bot token edits
    assert chat.spends(CHANNEL_ID, fresh, view()) == [Spend(CHANNEL, CHANNEL_ID), Spend(GLOBAL, "")]


async def test_a_long_429_is_raised_for_the_channel_not_slept(stack: DiscordStack) -> None:
    chat = stack.client.chat
    ref = await chat.post_status(CHANNEL_ID, view())
    stack.fake.rate_limit(lambda r: r.method == "PATCH" and ref.message_id in r.path, 1, retry_after=45)
    with pytest.raises(RateLimited) as caught:
        await chat.edit_status(ref, view(headline="Generating · 10%"))
    assert caught.value.scope == f"{CHANNEL}:{CHANNEL_ID}"
    assert caught.value.retry_after == pytest.approx(45, abs=1)
    tries = [r for r in stack.fake.requests if r.method == "PATCH" and ref.message_id in r.path]
    assert len(tries) == 1, "not retried inside the write"


async def test_too_many_edits_of_an_old_message_hold_that_message_only(stack: DiscordStack) -> None:
    chat = stack.client.chat
    ref = await chat.post_status(CHANNEL_ID, view())
    stack.fake.fail(lambda r: r.method == "PATCH" and ref.message_id in r.path, 400, 30046)
    with pytest.raises(RateLimited) as caught:
        await chat.edit_status(ref, view(headline="Generating · 10%"))
    assert caught.value.scope == f"discord:old-message:{ref.message_id}"
    assert all(caught.value.scope != s.scope for s in chat.spends(CHANNEL_ID, ref, view()))
