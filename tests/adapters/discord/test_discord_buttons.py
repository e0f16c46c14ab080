"""The Cancel button: persistent (it works on a client that never sent the message), the author
may cancel, another member may not, and the answer goes to the clicker alone."""

from __future__ import annotations

from bot.app import discord_session
from bot.models import State
from tests.adapters.discord.conftest import DiscordStack
from tests.adapters.discord.fake import APP_ID, button_payload, interaction_payload


async def test_cancel_button_after_a_restart_author_yes_other_member_no(stack: DiscordStack) -> None:
    fake = stack.fake
    # A long job first, so that the second one waits in the queue.
    stack.deliver(interaction_payload(name="imagine", options={"prompt": "long", "steps": 50}))
    payload = interaction_payload(name="imagine", options={"prompt": "to be cancelled", "steps": 5})
    stack.deliver(payload)
    token = payload["token"]
    await stack.until(lambda: fake.of("PATCH", rf"/webhooks/{APP_ID}/{token}/messages/@original"))
    message = fake.messages[fake.originals[token]]
    custom_id = message["components"][0]["components"][0]["custom_id"]
    job = int(custom_id.rsplit(":", 1)[1])
    assert custom_id == f"genbot:cancel:{job}"

    # A new client, as after a restart: it has never seen this message or its view.
    async with discord_session(stack.rt) as restarted:
        bob = button_payload(custom_id, message, user_id="300000000000000002", username="bob")
        fake.token_channels[bob["token"]] = bob["channel_id"]
        restarted._connection.parse_interaction_create(bob)  # type: ignore[arg-type]
        refusal = await stack.until(lambda: fake.of("POST", rf"/webhooks/{APP_ID}/{bob['token']}$"))
        assert refusal[0].json["flags"] & 64, "only Bob sees the refusal"
        assert "Not allowed" in refusal[0].json["content"]
        ack = fake.of("POST", rf"/interactions/{bob['id']}/")[0]
        assert ack.json["type"] == 6, "a click is acknowledged without touching the message"
        gen = await stack.rt.store.get(job)
        assert gen is not None and gen.state is State.QUEUED

        alice = button_payload(custom_id, message)
        fake.token_channels[alice["token"]] = alice["channel_id"]
        restarted._connection.parse_interaction_create(alice)  # type: ignore[arg-type]
        done = await stack.until(lambda: fake.of("POST", rf"/webhooks/{APP_ID}/{alice['token']}$"))
        assert done[0].json["content"] == f"Cancelled job {job}."
        assert done[0].json["flags"] & 64
    gen = await stack.rt.store.get(job)
    assert gen is not None and gen.state is State.CANCELLED
    # The renderer shows it: the Cancel button gives way to Reroll.
    mid = fake.originals[token]
    edits = await stack.until(
        lambda: [
            r
            for r in fake.of("PATCH", rf"/messages/{mid}$")
            if [c["custom_id"] for row in r.json.get("components", []) for c in row["components"]]
            == [f"genbot:reroll:{job}"]
        ]
    )

    # Reroll, pressed by its author on a client that never saw the message: a new public job.
    async with discord_session(stack.rt) as restarted:
        rerolled = edits[-1].json
        alice = button_payload(f"genbot:reroll:{job}", {**message, **rerolled})
        fake.token_channels[alice["token"]] = alice["channel_id"]
        restarted._connection.parse_interaction_create(alice)  # type: ignore[arg-type]
        posted = await stack.until(lambda: fake.of("POST", rf"/webhooks/{APP_ID}/{alice['token']}$"))
        assert not posted[0].json.get("flags", 0) & 64, "the new status message is public"
    jobs = [g for g in await stack.rt.store.list_active("discord") if g.prompt == "to be cancelled"]
    assert len(jobs) == 1 and jobs[0].id != job


async def test_bad_input_is_answered_to_the_member_alone(stack: DiscordStack) -> None:
    fake = stack.fake
    payload = interaction_payload(name="imagine", options={"prompt": "x", "size": "9999x9999"})
    stack.deliver(payload)
    token = payload["token"]
    reply = await stack.until(lambda: fake.of("POST", rf"/webhooks/{APP_ID}/{token}$"))
    assert reply[0].json["flags"] & 64
    assert "Size must be one of" in reply[0].json["content"]
    assert fake.of("DELETE", rf"/webhooks/{APP_ID}/{token}/messages/@original"), "the public placeholder goes"
    assert await stack.rt.store.list_active("discord") == []


async def test_queue_is_deferred_privately(stack: DiscordStack) -> None:
    fake = stack.fake
    payload = interaction_payload(name="queue", options={})
    stack.deliver(payload)
    reply = await stack.until(lambda: fake.of("POST", rf"/webhooks/{APP_ID}/{payload['token']}$"))
    ack = fake.of("POST", rf"/interactions/{payload['id']}/")[0]
    assert ack.json == {"type": 5, "data": {"flags": 64}}
    assert "no jobs" in reply[0].json["content"]
