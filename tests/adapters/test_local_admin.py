"""Admin commands and moderation in the local chat, through its HTTP and WebSocket API, with the
real bot, renderer, Redis and database (no worker: the jobs stay queued where it matters)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from bot.app import Runtime
from bot.commands import admin_specs
from storage.models import AuditRow, BanRow, BlockedTermRow, WorkspaceRow
from tests.chat_client import ChatClient, all_handled, status_of
from tests.stack import bot_running


@pytest_asyncio.fixture
async def chat(rt: Runtime) -> AsyncIterator[tuple[ChatClient, ChatClient, ChatClient]]:
    async with aiohttp.ClientSession() as http, bot_running(rt) as (base, _stop):
        clients = tuple(ChatClient(http, base, who) for who in ("alice", "bob", "admin"))
        for client in clients:
            await client.connect()
        try:
            yield clients  # type: ignore[misc]
        finally:
            for client in clients:
                await client.close()


def reply_to(member: str, *words: str) -> object:
    return lambda m: m["ephemeral_to"] == member and all(w in (m["text"] or "") for w in words)


async def test_a_member_cannot_run_admin_commands_even_in_the_structured_form(
    rt: Runtime, chat: tuple[ChatClient, ChatClient, ChatClient]
) -> None:
    alice, bob, _admin = chat
    for spec in admin_specs():
        required = " ".join(f"{o.name}: x" for o in spec.options if o.required)
        assert await alice.command(f"/admin {spec.name} {required}") == {"ok": True}
        await alice.wait_for(reply_to("alice", f"Only admins can use /admin {spec.name};"))
    # the structured form carries no admin flag a client could set
    assert await alice.structured("admin pause", {"is_admin": "true"}) == {"ok": True}
    await alice.wait_for_all(reply_to("alice", "Only admins can use /admin pause;"), 2)
    refusals = [m for m in alice.messages.values() if "Only admins" in (m["text"] or "")]
    assert len(refusals) == len(admin_specs()) + 1
    assert await AuditRow.all().count() == 0
    assert await BanRow.all().count() == await BlockedTermRow.all().count() == 0
    assert not await WorkspaceRow.filter(paused=True).exists()
    # the refusals went to Alice alone
    assert not any("Only admins" in (m["text"] or "") for m in bob.messages.values())


async def test_admin_moderation_end_to_end(
    rt: Runtime, chat: tuple[ChatClient, ChatClient, ChatClient]
) -> None:
    alice, bob, admin = chat
    await bob.command("/imagine a quiet harbour")
    harbour = await bob.wait_for(lambda m: bool(m.get("status")))
    job = harbour["status"]["job"]

    await admin.command("/admin ban @bob reason: spam duration: 1h")
    await admin.wait_for(reply_to("admin", "Banned member bob for 1 h", "Cancelled 1 queued job(s)."))
    cancelled = await bob.wait_for(lambda m: status_of(job)(m) and m["status"]["state"] == "cancelled")
    assert cancelled["status"]["error"]["title"] == "Cancelled by an admin"
    await bob.command("/imagine again")
    await bob.wait_for(reply_to("bob", "Not allowed to generate"))

    await admin.command("/admin block spam")
    await admin.wait_for(reply_to("admin", "Blocked “spam” as a whole word"))
    await alice.command("/imagine \u0455\u0440\u0430m fritters")  # Cyrillic look-alikes
    blocked = await alice.wait_for(reply_to("alice", "Prompt not allowed"))
    assert "fritters" not in blocked["text"] and "spam" not in blocked["text"]
    public = [m for m in bob.messages.values() if m["ephemeral_to"] is None]
    assert not any("fritters" in str(m) for m in public)  # nothing about it in the channel

    await alice.command("/imagine an owl")
    owl = (await alice.wait_for(lambda m: bool(m.get("status")) and m["status"]["prompt"] == "an owl"))[
        "status"
    ]
    await admin.command("/admin pause reason: maintenance")
    await admin.wait_for(reply_to("admin", "Paused the queue. 1 queued job(s) keep their place"))
    await alice.wait_for(
        lambda m: status_of(owl["job"])(m) and m["status"]["headline"] == "Queued · paused by an admin"
    )
    await alice.command("/imagine a fox")
    await alice.wait_for(reply_to("alice", "Queue paused"))
    await admin.command("/admin resume")
    await admin.wait_for(reply_to("admin", "Resumed the queue"))
    await alice.wait_for(
        lambda m: status_of(owl["job"])(m) and m["status"]["headline"].startswith("Queued · #1 in line")
    )

    await alice.command("/imagine a fox")
    fox = await alice.wait_for(lambda m: bool(m.get("status")) and m["status"]["prompt"] == "a fox")
    assert fox["status"]["headline"].startswith("Queued · #2 in line")  # behind the owl
    await admin.action(fox["id"], "cancel")  # the Cancel button, pressed by an admin
    await alice.wait_for(lambda m: status_of(fox["status"]["job"])(m) and m["status"]["state"] == "cancelled")

    actions = [(r.action, r.actor_id) for r in await AuditRow.all().order_by("id")]
    assert actions == [
        ("ban", "admin"),
        ("block", "admin"),
        ("pause", "admin"),
        ("resume", "admin"),
        ("cancel", "admin"),
    ]
    await admin.command("/admin audit")
    log = await admin.wait_for(reply_to("admin", "The latest 5 admin action(s):"))
    assert "Admin: ban bob · spam" in log["text"]


@pytest.mark.parametrize("text", ["/admin", "/admin frobnicate", "/admin ban"])
async def test_admin_typos_get_one_sentence(
    rt: Runtime, chat: tuple[ChatClient, ChatClient, ChatClient], text: str
) -> None:
    _alice, _bob, admin = chat
    await admin.command(text)
    reply = await admin.wait_for(reply_to("admin", "Invalid option"))
    assert "Traceback" not in reply["text"]
    assert await AuditRow.all().count() == 0


async def test_members_are_named_as_the_chat_knows_them(
    rt: Runtime, chat: tuple[ChatClient, ChatClient, ChatClient]
) -> None:
    _alice, bob, admin = chat
    await admin.command("/admin ban @Bob jobs: keep")
    await admin.wait_for(reply_to("admin", "Banned member bob until unbanned."))
    await bob.command("/imagine a fox")
    await bob.wait_for(reply_to("bob", "Not allowed to generate"))
    await admin.command("/admin ban @Nobody")
    await admin.wait_for(reply_to("admin", "There is no member '@Nobody' here. Members: Alice, Bob, Admin."))
    assert await BanRow.all().count() == 1


async def test_other_web_sites_cannot_drive_the_chat(rt: Runtime) -> None:
    async with aiohttp.ClientSession() as http, bot_running(rt) as (base, _stop):
        body = '{"user_id": "admin", "command": "admin pause", "options": {}}'
        # a cross-site form or text/plain POST: no CORS preflight, so the server must refuse it
        async with http.post(
            f"{base}/api/command", data=body, headers={"Content-Type": "text/plain"}
        ) as resp:
            assert resp.status == 415
        async with http.post(
            f"{base}/api/command",
            data=body,
            headers={"Content-Type": "application/json", "Origin": "https://evil.example"},
        ) as resp:
            assert resp.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(f"{base}/ws?user_id=admin", headers={"Origin": "https://evil.example"})
        # the page's own origin works
        host = base.removeprefix("http://")
        async with http.post(
            f"{base}/api/command",
            data=body,
            headers={"Content-Type": "application/json", "Origin": f"http://{host}"},
        ) as resp:
            assert resp.status == 200
        await all_handled()
        assert await WorkspaceRow.filter(paused=True).count() == 1
