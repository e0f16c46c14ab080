"""The Discord adapter end to end against the local fake of Discord's REST API."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from bot.models import State
from storage.models import InboxRow
from tests.adapters.discord.conftest import DiscordStack
from tests.adapters.discord.fake import APP_ID, Recorded, interaction_payload

WEBHOOK = rf"^/webhooks/{APP_ID}/"


def is_final(r: Recorded) -> bool:
    return bool(r.files) and any(name.startswith("genbot-") for name, _ in r.files.values())


async def test_imagine_defers_then_posts_and_edits_the_status_message(stack: DiscordStack) -> None:
    fake = stack.fake
    payload = interaction_payload(name="imagine", options={"prompt": "a red fox in snow", "steps": 6})
    stack.deliver(payload)
    token = payload["token"]
    final = await stack.until(lambda: [r for r in fake.of("PATCH", WEBHOOK + token) if is_final(r)])

    # The ack (a deferral, type 5) is the first request for this interaction.
    mine = [r for r in fake.requests if token in r.path]
    assert mine[0].route == f"POST /interactions/{payload['id']}/{token}/callback"
    assert mine[0].json["type"] == 5
    # Then the status message: the deferred response, public (no ephemeral flag).
    first = mine[1]
    assert first.route == f"PATCH /webhooks/{APP_ID}/{token}/messages/@original"
    embed = first.json["embeds"][0]
    assert embed["title"].startswith("Queued · #1 in line")
    assert embed["description"] == "a red fox in snow"
    assert not (first.json.get("flags") or 0) & 64
    assert first.json["components"][0]["components"][0]["custom_id"].startswith("genbot:cancel:")
    # Edits through the interaction webhook, the last one with the image attached.
    edits = [r for r in mine[2:] if r.method == "PATCH"]
    assert any(e.json["embeds"][0]["title"].startswith("Generating") for e in edits)
    last = final[-1]
    name, data = next(iter(last.files.values()))
    assert last.json["embeds"][0]["image"]["url"] == f"attachment://{name}"
    assert Image.open(io.BytesIO(data)).size == (512, 512)
    buttons = [c["custom_id"] for row in last.json["components"] for c in row["components"]]
    assert [b.split(":")[1] for b in buttons] == ["reroll"], "no Cancel on a finished job, a Reroll"
    assert not fake.of("PATCH", r"^/channels/"), "no bot-token edits while the token is fresh"

    gen = await stack.rt.store.list_active("discord")
    assert gen == [] or all(g.state is State.SUCCEEDED for g in gen)
    rows = await stack.rt.store.list_for_user(
        "discord", "400000000000000001", "300000000000000001", list(State)
    )
    (row,) = rows
    assert row.message["extra"]["token"] == token
    assert row.message["extra"]["application_id"] == APP_ID
    assert row.message["channel"] == payload["channel_id"]


async def test_everyone_in_a_prompt_pings_no_one(stack: DiscordStack) -> None:
    payload = interaction_payload(
        name="imagine", options={"prompt": "@everyone look at **this** <@123>", "steps": 2}
    )
    stack.deliver(payload)
    token = payload["token"]
    await stack.until(lambda: [r for r in stack.fake.of("PATCH", WEBHOOK + token) if is_final(r)])
    sent = [r for r in stack.fake.of("PATCH", WEBHOOK + token)]
    assert sent
    for r in sent:
        assert r.json["allowed_mentions"]["parse"] == []
        description = r.json["embeds"][0]["description"]
        assert "@everyone" not in description and "**this**" not in description
        assert "\\*\\*this\\*\\*" in description


async def test_expiring_token_switches_to_channel_edits(stack: DiscordStack) -> None:
    fake = stack.fake
    payload = interaction_payload(name="imagine", options={"prompt": "slow snail", "steps": 20})
    stack.deliver(payload)
    token = payload["token"]
    await stack.until(lambda: fake.of("PATCH", WEBHOOK + token + "/messages/@original"))
    # 14 and a half minutes later: the token has less than a minute left.
    stack.clock.offset = 14.5 * 60
    channel = payload["channel_id"]
    final = await stack.until(
        lambda: [r for r in fake.of("PATCH", rf"^/channels/{channel}/messages/") if is_final(r)]
    )
    assert final[-1].json["allowed_mentions"]["parse"] == []
    assert final[-1].headers["Authorization"] == "Bot bot-token"
    (row,) = await stack.rt.store.list_for_user(
        "discord", "400000000000000001", "300000000000000001", list(State)
    )
    assert "token" not in row.message["extra"], "the dead token is forgotten"


async def test_dead_token_falls_back_to_the_bot_token(stack: DiscordStack) -> None:
    """Discord rejects the token early (401, 50027): the same message is edited with the bot token."""
    fake = stack.fake
    payload = interaction_payload(name="imagine", options={"prompt": "early expiry", "steps": 10})
    stack.deliver(payload)
    token = payload["token"]
    original = await stack.until(lambda: fake.of("PATCH", WEBHOOK + token + "/messages/@original"))
    fake.expired_tokens.add(token)
    mid = fake.originals[token]
    final = await stack.until(lambda: [r for r in fake.of("PATCH", rf"/messages/{mid}$") if is_final(r)])
    assert final[-1].path.startswith("/channels/")
    assert original


async def test_deleted_message_is_posted_again(stack: DiscordStack) -> None:
    fake = stack.fake
    payload = interaction_payload(name="imagine", options={"prompt": "a vanishing act", "steps": 12})
    stack.deliver(payload)
    token = payload["token"]
    await stack.until(lambda: fake.of("PATCH", WEBHOOK + token + "/messages/@original"))
    fake.deleted.add(fake.originals[token])  # a moderator deleted it
    channel = payload["channel_id"]
    posted = await stack.until(lambda: fake.of("POST", rf"^/channels/{channel}/messages$"))
    assert posted[0].json["allowed_mentions"]["parse"] == []
    new_id = max(fake.messages)
    await stack.until(
        lambda: (
            [r for r in fake.of("PATCH", rf"/messages/{new_id}$") if is_final(r)]
            or (is_final(posted[-1]) and posted[-1])
        )
    )
    (row,) = await stack.rt.store.list_for_user(
        "discord", "400000000000000001", "300000000000000001", list(State)
    )
    assert row.message["message_id"] != fake.originals[token]
    assert "token" not in row.message["extra"]


async def test_a_429_storm_still_ends_with_the_final_image(stack: DiscordStack) -> None:
    fake = stack.fake
    fake.rate_limit(
        lambda r: r.method == "PATCH" and r.path.startswith("/webhooks/"), times=12, retry_after=0.05
    )
    payload = interaction_payload(name="imagine", options={"prompt": "rate limited", "steps": 4})
    stack.deliver(payload)
    token = payload["token"]
    await stack.until(lambda: [r for r in fake.of("PATCH", WEBHOOK + token) if is_final(r)], timeout=60)
    assert sum(1 for r in fake.requests if r.status == 429) == 12


async def test_a_command_reaching_a_stopping_bot_is_told_it_restarts_and_queues_nothing(
    stack: DiscordStack,
) -> None:
    """While the bot stops, the gateway stays up for the commands it already took; a new one is
    answered at once, to its member alone, and nothing is written."""
    stack.client.inflight.closed = True  # as InFlight.drain() leaves it
    payload = interaction_payload(name="imagine", options={"prompt": "too late"})
    stack.deliver(payload)
    token = payload["token"]
    [answer] = await stack.until(lambda: [r for r in stack.fake.requests if token in r.path])
    assert answer.route == f"POST /interactions/{payload['id']}/{token}/callback"
    assert answer.json["type"] == 4 and answer.json["data"]["flags"] & 64
    assert "restarting" in answer.json["data"]["content"]
    assert await stack.rt.store.list_active("discord") == []


async def test_a_command_whose_bot_died_after_the_defer_is_answered_by_another(
    stack: DiscordStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot recorded /imagine and deferred it, then died. Another bot runs it again from the
    record: the interaction is rebuilt, and the status message replaces the deferred response,
    through the same interaction webhook."""
    core = stack.rt.core
    handle = core.handle

    async def dies(*_args: object, **_kwargs: object) -> None:
        return None  # the process is gone before the core runs the command

    monkeypatch.setattr(core, "handle", dies)
    payload = interaction_payload(name="imagine", options={"prompt": "a fox, again", "steps": 2})
    stack.deliver(payload)
    token = payload["token"]
    await stack.until(lambda: stack.fake.of("POST", rf"/interactions/{payload['id']}/{token}/callback"))
    monkeypatch.setattr(core, "handle", handle)
    await InboxRow.all().update(created_at=datetime.now(UTC) - timedelta(hours=0, minutes=10))

    assert await core.revive_commands("discord", stack.client.revive) == 1
    first = await stack.until(lambda: stack.fake.of("PATCH", WEBHOOK + token + "/messages/@original"))
    assert first[0].json["embeds"][0]["description"] == "a fox, again"
    [row] = await stack.rt.store.list_active("discord")
    assert row.message["extra"]["token"] == token
    assert await InboxRow.all().count() == 0
