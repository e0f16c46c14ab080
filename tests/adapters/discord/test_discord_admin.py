"""``/admin`` on Discord, end to end: real-shaped interactions through the real client, the core,
Redis and SQLite, answers read from the fake's recorded REST calls.

``default_member_permissions`` only hides ``/admin`` in Discord's client; every call here is one a
member could send anyway, and what decides is the permissions the interaction itself carries.
No worker runs, so queued jobs stay queued for as long as a test looks at them.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bot.commands import admin_specs
from bot.embedded_redis import EmbeddedRedis
from bot.models import Generation, State
from storage.models import AuditRow, BanRow, BlockedTermRow, GenerationRow, WorkspaceRow
from tests.adapters.discord.conftest import DiscordStack, discord_stack
from tests.adapters.discord.fake import (
    APP_ID,
    FakeDiscord,
    Picked,
    Recorded,
    button_payload,
    interaction_payload,
)

GUILD = "400000000000000001"
ALICE = "300000000000000001"
BOB = "300000000000000002"
ADMIN = "300000000000000009"
ADMIN_ROLE = "700000000000000001"
MANAGE_SERVER = "32"  # 1 << 5: what /admin's default_member_permissions asks for
ADMINISTRATOR = "8"
MEMBER = "2048"  # Send Messages only
EPHEMERAL = 64


@pytest_asyncio.fixture
async def idle(
    fake: FakeDiscord, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[DiscordStack]:
    async with discord_stack(
        fake,
        redis_server,
        sqlite_url,
        tmp_path,
        worker=False,
        discord={"admin_role_ids": [int(ADMIN_ROLE)]},
    ) as value:
        yield value


def send(
    stack: DiscordStack,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    user: str = ALICE,
    permissions: str = MEMBER,
    roles: tuple[str, ...] = (),
) -> dict[str, Any]:
    names = {ALICE: "alice", BOB: "bob", ADMIN: "ada"}
    payload = interaction_payload(
        name=name,
        options=options or {},
        user_id=user,
        username=names.get(user, "carol"),
        permissions=permissions,
        roles=roles,
    )
    stack.deliver(payload)
    return payload


async def answer(stack: DiscordStack, payload: dict[str, Any]) -> dict[str, Any]:
    """The follow-up that answers ``payload`` (to its sender alone, checked here)."""
    token = payload["token"]
    (sent,) = await stack.until(lambda: stack.fake.of("POST", rf"^/webhooks/{APP_ID}/{token}$"))
    body: dict[str, Any] = sent.json
    assert body["flags"] & EPHEMERAL, f"only the sender sees {body['content']!r}"
    assert body["allowed_mentions"]["parse"] == []
    return body


async def admin(stack: DiscordStack, name: str, options: dict[str, Any] | None = None) -> str:
    """Run ``/admin <name>`` as an admin (Manage Server); returns the answer's text."""
    payload = send(stack, f"admin {name}", options, user=ADMIN, permissions=MANAGE_SERVER)
    ack = await stack.until(lambda: stack.fake.of("POST", rf"^/interactions/{payload['id']}/"))
    assert ack[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}, "deferred to the admin alone"
    content: str = (await answer(stack, payload))["content"]
    return content


async def imagine(stack: DiscordStack, prompt: str, user: str = BOB) -> tuple[str, Generation]:
    """An accepted ``/imagine``: its status message's id and its row, once the message is posted."""
    payload = send(stack, "imagine", {"prompt": prompt, "steps": 5}, user=user)
    token = payload["token"]
    await stack.until(lambda: stack.fake.of("PATCH", rf"^/webhooks/{APP_ID}/{token}/messages/@original$"))
    mine = await stack.rt.store.list_for_user("discord", GUILD, user, list(State))
    return stack.fake.originals[token], next(g for g in mine if g.prompt == prompt)


async def refused(stack: DiscordStack, prompt: str, user: str = BOB) -> str:
    """A refused ``/imagine``: the public placeholder is deleted, the reason goes to the member."""
    payload = send(stack, "imagine", {"prompt": prompt}, user=user)
    content: str = (await answer(stack, payload))["content"]
    token = payload["token"]
    assert stack.fake.of("DELETE", rf"^/webhooks/{APP_ID}/{token}/messages/@original$")
    assert not stack.fake.of("PATCH", rf"^/webhooks/{APP_ID}/{token}/messages/@original$")
    return content


def title_of(stack: DiscordStack, message_id: str) -> str:
    """The title of a status message as the channel shows it now."""
    message = stack.fake.messages[message_id]
    return str(message["embeds"][0]["title"]) if message["embeds"] else ""


async def audit_rows() -> list[AuditRow]:
    return await AuditRow.all().order_by("id")


def required_options(name: str, job: int) -> dict[str, Any]:
    values: dict[str, Any] = {"member": Picked(BOB, "bob"), "term": "wolf", "job": job}
    (spec,) = [s for s in admin_specs() if s.name == name]
    return {o.name: values[o.name] for o in spec.options if o.required}


@pytest.mark.parametrize(
    ("permissions", "roles"),
    [(MEMBER, ()), (MEMBER, ("700000000000000099",))],
    ids=["member", "member-with-another-role"],
)
async def test_a_member_cannot_run_any_admin_command(
    idle: DiscordStack, permissions: str, roles: tuple[str, ...]
) -> None:
    """Every subcommand of /admin, sent by a member without Manage Server, Administrator or an
    admin role: refused by the core, told why, to them alone, and nothing changes."""
    _, job = await imagine(idle, "a job to cancel", user=ALICE)
    _, bobs = await imagine(idle, "a job of the member to ban", user=BOB)
    before = len(idle.fake.requests)
    for spec in admin_specs():
        options = required_options(spec.name, job.id)
        if spec.name == "ban":
            options["jobs"] = "cancel"
        if spec.name == "clear":
            options["confirm"] = "0000"
        payload = send(idle, spec.key, options, user=BOB, permissions=permissions, roles=roles)
        body = await answer(idle, payload)
        assert body["content"].startswith("**Not allowed**: "), spec.key
        assert f"Only admins can use /{spec.key}; you are not an admin here." in body["content"]
    assert await AuditRow.all().count() == 0
    assert await BanRow.all().count() == 0
    assert await BlockedTermRow.all().count() == 0
    assert not await WorkspaceRow.filter(paused=True).exists()
    for gen in (job, bobs):
        row = await idle.rt.store.get(gen.id)
        assert row is not None and row.state is State.QUEUED and row.error_code is None
    assert await idle.rt.queue.position(job.id, line="demo") == 1
    assert await idle.rt.queue.position(bobs.id, line="demo") == 2
    # The refusals were the only messages: each to its sender, none in the channel.
    for r in idle.fake.requests[before:]:
        if r.method == "POST" and r.path.startswith("/webhooks/"):
            assert r.json["flags"] & EPHEMERAL


async def test_an_admin_role_or_administrator_is_an_admin(idle: DiscordStack) -> None:
    """The run-time check reads the interaction: a configured role id, or Administrator, counts."""
    payload = send(idle, "admin pause", {}, user=BOB, roles=(ADMIN_ROLE,))
    assert (await answer(idle, payload))["content"].startswith("Paused the queue.")
    payload = send(idle, "admin resume", {}, user=ALICE, permissions=ADMINISTRATOR)
    assert (await answer(idle, payload))["content"].startswith("Resumed the queue")
    rows = await audit_rows()
    assert [(r.action, r.actor_id) for r in rows] == [("pause", BOB), ("resume", ALICE)]


async def test_ban_cancels_the_members_queued_jobs_and_refuses_their_next_imagine(idle: DiscordStack) -> None:
    first_message, first = await imagine(idle, "first of bob's")
    second_message, second = await imagine(idle, "second of bob's")
    alices_message, alices = await imagine(idle, "alice's job", user=ALICE)
    assert await idle.rt.queue.position(alices.id, line="demo") == 3

    # The member option arrives as Discord sends it: the id, with the member in data.resolved.
    text = await admin(idle, "ban", {"member": Picked(BOB, "bob"), "jobs": "cancel", "reason": "spam"})
    assert text == f"Banned member {BOB} until unbanned. Cancelled 2 queued job(s)."

    for gen in (first, second):
        row = await idle.rt.store.get(gen.id)
        assert row is not None and row.state is State.CANCELLED
        assert row.error_code == "cancelled_by_admin"
    assert await idle.rt.queue.position(alices.id, line="demo") == 1, "the jobs behind move up"
    # The renderer edits both status messages.
    await idle.until(
        lambda: all(title_of(idle, m) == "Cancelled by an admin" for m in (first_message, second_message))
    )
    await idle.until(lambda: title_of(idle, alices_message).startswith("Queued · #1 in line"))

    (ban,) = await BanRow.all()
    assert (ban.workspace, ban.user_id, ban.created_by, ban.reason) == (GUILD, BOB, ADMIN, "spam")
    assert ban.expires_at is None
    (audit,) = await audit_rows()
    assert (audit.platform, audit.workspace, audit.actor_id, audit.action, audit.target, audit.reason) == (
        "discord",
        GUILD,
        ADMIN,
        "ban",
        BOB,
        "spam",
    )
    assert audit.details["cancelled"] == [first.id, second.id]

    content = await refused(idle, "one more")
    assert content.startswith("**Not allowed to generate**: An admin has stopped you from making images")
    assert [g.prompt for g in await idle.rt.store.list_for_user("discord", GUILD, BOB, list(State))] == [
        "first of bob's",
        "second of bob's",
    ], "no row for the refused request"

    text = await admin(idle, "unban", {"member": Picked(BOB, "bob")})
    assert text == f"Member {BOB} may make images again."
    assert [r.action for r in await audit_rows()] == ["ban", "unban"]
    await imagine(idle, "back again")


async def test_ban_with_jobs_keep_leaves_the_queue_alone(idle: DiscordStack) -> None:
    _, queued = await imagine(idle, "stays queued")
    text = await admin(idle, "ban", {"member": Picked(BOB, "bob"), "jobs": "keep", "duration": "2h"})
    assert text.startswith(f"Banned member {BOB} for 2 h (until ")
    assert text.endswith("Their queued jobs stay in the queue.")
    row = await idle.rt.store.get(queued.id)
    assert row is not None and row.state is State.QUEUED
    assert await idle.rt.queue.position(queued.id, line="demo") == 1
    (audit,) = await audit_rows()
    assert (audit.action, audit.details["jobs"], audit.details["duration_s"]) == ("ban", "keep", 7200)


async def test_an_admin_cancels_a_members_job_with_its_cancel_button(idle: DiscordStack) -> None:
    fake = idle.fake
    message_id, gen = await imagine(idle, "cancel me")
    message = fake.messages[message_id]
    custom_id = message["components"][0]["components"][0]["custom_id"]
    assert custom_id == f"genbot:cancel:{gen.id}"

    # Another member first: refused, nothing written.
    carol = button_payload(custom_id, message, user_id="300000000000000003", username="carol")
    idle.deliver(carol)
    assert (await answer(idle, carol))["content"].startswith("**Not allowed**")
    assert await AuditRow.all().count() == 0

    press = button_payload(custom_id, message, user_id=ADMIN, username="ada", permissions=MANAGE_SERVER)
    idle.deliver(press)
    assert (await answer(idle, press))["content"] == f"Cancelled job {gen.id}."
    row = await idle.rt.store.get(gen.id)
    assert row is not None and row.state is State.CANCELLED and row.error_code == "cancelled_by_admin"
    await idle.until(lambda: title_of(idle, message_id) == "Cancelled by an admin")
    (audit,) = await audit_rows()
    assert (audit.actor_id, audit.action, audit.target) == (ADMIN, "cancel", f"job {gen.id}")
    assert audit.details == {"member": BOB}


def _public_text(fake: FakeDiscord) -> str:
    """Everything genbot sent that others could see: every message body that is not ephemeral."""

    def public(r: Recorded) -> bool:
        flags = (r.json or {}).get("flags") or ((r.json or {}).get("data") or {}).get("flags") or 0
        return r.json is not None and not flags & EPHEMERAL

    shown = [r.json for r in fake.requests if public(r)]
    shown += [m for mid, m in fake.messages.items() if mid not in fake.deleted and not m["flags"] & EPHEMERAL]
    return json.dumps(shown, ensure_ascii=False).casefold()


async def test_a_blocked_term_refuses_a_look_alike_prompt_without_saying_it_in_public(
    idle: DiscordStack,
) -> None:
    text = await admin(idle, "block", {"term": "wolf"})
    assert text.startswith("Blocked “wolf” as a whole word")
    (audit,) = await audit_rows()
    assert (audit.action, audit.target, audit.details["match"]) == ("block", "wolf", "word")

    prompt = "a grey W\u043elf in snow"  # a Cyrillic o
    content = await refused(idle, prompt)
    assert content.startswith(
        "**Prompt not allowed**: Your prompt contains a term this server does not allow."
    )
    assert "wolf" not in content.casefold(), "the term is not repeated, even to the member"
    assert await GenerationRow.all().count() == 0
    public = _public_text(idle.fake)
    assert "wolf" not in public and "w\u043elf" not in public and "grey" not in public

    # An innocent word that contains the term is not blocked (whole word).
    await imagine(idle, "a werewolfish grin")
    assert await admin(idle, "unblock", {"term": "wolf"}) == "“wolf” is allowed again."
    assert [r.action for r in await audit_rows()] == ["block", "unblock"]
    await imagine(idle, prompt)


async def test_pause_refuses_new_requests_until_resume(idle: DiscordStack) -> None:
    _, waiting = await imagine(idle, "queued before the pause", user=ALICE)
    text = await admin(idle, "pause", {"reason": "maintenance"})
    assert text.startswith("Paused the queue. 1 queued job(s) keep their place")
    content = await refused(idle, "during the pause")
    assert content.startswith("**Queue paused**: An admin has paused the queue.")
    assert [g.prompt for g in await idle.rt.store.list_active("discord")] == ["queued before the pause"]

    assert await admin(idle, "resume") == "Resumed the queue: 1 queued job(s) go on in their order."
    assert await idle.rt.queue.position(waiting.id, line="demo") == 1
    await imagine(idle, "after the pause")
    rows = await audit_rows()
    assert [(r.action, r.actor_id, r.reason) for r in rows] == [
        ("pause", ADMIN, "maintenance"),
        ("resume", ADMIN, None),
    ]


async def test_clear_asks_to_confirm_then_cancels_and_the_audit_log_lists_it(idle: DiscordStack) -> None:
    _, one = await imagine(idle, "one")
    _, two = await imagine(idle, "two", user=ALICE)
    queue = await admin(idle, "queue")
    assert queue.startswith("The queue: 0 running, 2 queued.")
    asked = await admin(idle, "clear")
    code = re.search(r"confirm: (\d{4})", asked)
    assert code is not None, asked
    assert await AuditRow.all().count() == 0, "asking is not an action"
    assert (await idle.rt.store.get(one.id)).state is State.QUEUED  # type: ignore[union-attr]

    assert await admin(idle, "clear", {"confirm": code[1]}) == "Cleared the queue: cancelled 2 job(s)."
    for gen in (one, two):
        row = await idle.rt.store.get(gen.id)
        assert row is not None and row.state is State.CANCELLED
    (audit,) = await audit_rows()
    assert (audit.action, sorted(audit.details["cancelled"])) == ("clear", [one.id, two.id])
    assert "Ada: clear" in await admin(idle, "audit", {"limit": 5})
