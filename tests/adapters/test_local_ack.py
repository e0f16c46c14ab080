"""The local chat answers a command before it runs it, as Slack's and Discord's acks do.

The chat here is the real one, in front of the real core (Redis, SQLite); between them sits
:class:`Held`, which passes every call on to the core but can hold a command before it does (until
the test lets it go) or fail one. That is how the tests see the order of things: the HTTP answer
while the command is held, the status message after; a stop that waits for what it answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.local.chat import UNRECORDED, LocalChat
from bot.app import Runtime, build_local_chat
from bot.models import Actor, CommandRequest
from bot.ports import Responder
from storage.models import GenerationRow, InboxRow
from tests.chat_client import ChatClient


class Held:
    """The core, with a gate in front: the first command whose prompt is ``hold`` waits there
    until :meth:`release`; ``crash`` makes every command raise instead of reaching the core;
    ``unrecorded`` makes recording fail. ``entered`` lists the prompts that reached the gate."""

    def __init__(self, core: Any, *, hold: str | None = None) -> None:
        self.core = core
        self.hold = hold
        self.crash = False
        self.unrecorded = False
        self.entered: list[str] = []
        self._gate = asyncio.Event()

    def release(self) -> None:
        self._gate.set()

    async def receive(self, platform: str, payload: dict[str, Any]) -> str:
        if self.unrecorded:
            raise ConnectionError("the database is away")
        receipt: str = await self.core.receive(platform, payload)
        return receipt

    async def handle(
        self, request: CommandRequest, responder: Responder, *, receipt: str | None = None
    ) -> None:
        prompt = request.options.get("prompt", "")
        self.entered.append(prompt)
        if self.crash:
            raise RuntimeError("a handler bug")
        if prompt == self.hold:
            await self._gate.wait()
        await self.core.handle(request, responder, receipt=receipt)

    async def handle_action(
        self,
        actor: Actor,
        generation_id: int,
        action: str,
        responder: Responder,
        *,
        receipt: str | None = None,
    ) -> None:
        await self.core.handle_action(actor, generation_id, action, responder, receipt=receipt)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def held(rt: Runtime) -> Held:
    await rt.core.reconcile()
    return Held(rt.core, hold="held back")


@pytest_asyncio.fixture
async def chat(rt: Runtime, held: Held) -> AsyncIterator[LocalChat]:
    chat = build_local_chat(rt)
    chat.handler = held
    await chat.start("127.0.0.1", 0)
    try:
        yield chat
    finally:
        held.release()
        await chat.quiesce()
        await chat.stop()


@pytest_asyncio.fixture
async def alice(chat: LocalChat, http: aiohttp.ClientSession) -> AsyncIterator[ChatClient]:
    client = ChatClient(http, f"http://127.0.0.1:{chat.port}", "alice")
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


def status_for(prompt: str) -> Any:
    return lambda m: bool(m.get("status")) and m["status"]["prompt"] == prompt


async def answered(client: ChatClient, text: str) -> dict[str, Any]:
    """The HTTP answer to ``text``, which must come while a command is held (a deadline, so that
    a chat that answers only after the work fails here rather than hanging)."""
    async with asyncio.timeout(30):
        return await client.command(text)


async def until(condition: Any, what: str, timeout: float = 20.0) -> None:
    """Poll ``condition()`` until it is true; a deadline, not a measure."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def test_the_answer_comes_while_the_command_is_held_and_the_status_message_after(
    chat: LocalChat, held: Held, alice: ChatClient
) -> None:
    assert await answered(alice, "/imagine held back") == {"ok": True}
    # Answered, recorded (so a bot killed now loses nothing), and not yet run.
    [record] = await InboxRow.all()
    assert record.platform == "local" and record.payload["kind"] == "command"
    assert await GenerationRow.all().count() == 0
    assert not [m for m in await alice.history() if m.get("status")]

    held.release()
    card = await alice.wait_for(status_for("held back"))
    assert card["status"]["headline"].startswith("Queued · #1 in line")
    assert await chat.quiesce() == 0
    assert await InboxRow.all().count() == 0, "a command done forgets its record"
    [row] = await GenerationRow.all()
    assert row.message["message_id"] == str(card["id"])


async def test_a_members_commands_run_in_the_order_they_were_answered(
    chat: LocalChat, held: Held, alice: ChatClient, http: aiohttp.ClientSession
) -> None:
    bob = ChatClient(http, alice.base_url, "bob")
    await bob.connect()
    assert await answered(alice, "/imagine held back") == {"ok": True}
    assert await answered(alice, "/imagine right behind") == {"ok": True}
    assert await answered(bob, "/imagine meanwhile") == {"ok": True}
    # Bob's command, answered after Alice's second, runs at once; Alice's second waits its turn.
    # (Had it not waited, it would have reached the core before Bob's, answered after it.)
    await bob.wait_for(status_for("meanwhile"))
    assert held.entered == ["held back", "meanwhile"]

    held.release()
    first = await alice.wait_for(status_for("held back"))
    second = await alice.wait_for(status_for("right behind"))
    assert first["id"] < second["id"]
    assert first["status"]["job"] < second["status"]["job"]
    await bob.close()


async def test_a_stop_waits_for_the_commands_it_answered(
    chat: LocalChat, held: Held, alice: ChatClient
) -> None:
    assert await answered(alice, "/imagine held back") == {"ok": True}
    stopping = asyncio.create_task(chat.quiesce(grace_s=30))
    await until(lambda: chat.inflight.closed, "the chat to stop taking commands")
    assert not stopping.done(), "the stop waits for the held command"

    held.release()
    assert await stopping == 0
    # By the time the stop is over, the command has its row, its message and no record left.
    [row] = await GenerationRow.all()
    assert row.message.get("message_id")
    assert await InboxRow.all().count() == 0


async def test_a_command_cut_by_a_stop_keeps_its_record_and_runs_again_from_it(
    rt: Runtime, chat: LocalChat, held: Held, alice: ChatClient, http: aiohttp.ClientSession
) -> None:
    assert await answered(alice, "/imagine held back") == {"ok": True}
    assert await chat.quiesce(grace_s=0) == 1, "the answered command was in flight"
    assert await GenerationRow.all().count() == 0
    [entry] = await rt.core.inbox.stale("local", datetime.now(UTC) + timedelta(minutes=1), 10)

    # The next bot (here, a second chat in front of the core itself) runs it again.
    again = build_local_chat(rt)
    await again.start("127.0.0.1", 0)
    try:
        watcher = ChatClient(http, f"http://127.0.0.1:{again.port}", "alice")
        await watcher.connect()
        await again.revive(entry)
        card = await watcher.wait_for(status_for("held back"))
        assert card["status"]["requested_by"] == "Alice"
        assert await InboxRow.all().count() == 0
        assert await GenerationRow.all().count() == 1
        await watcher.close()
    finally:
        await again.quiesce()
        await again.stop()


async def test_a_command_that_crashes_is_logged_and_its_member_told(
    chat: LocalChat, held: Held, alice: ChatClient, caplog: pytest.LogCaptureFixture
) -> None:
    held.crash = True
    with caplog.at_level(logging.ERROR, logger="adapters.local.chat"):
        assert await answered(alice, "/imagine anything") == {"ok": True}
        reply = await alice.wait_for(lambda m: m.get("ephemeral_to") == "alice")
        assert await chat.quiesce() == 0
    assert reply["text"].startswith("Something went wrong: ")
    assert "a handler bug" not in reply["text"] and "Traceback" not in reply["text"]
    failed = [r for r in caplog.records if r.getMessage() == "a command of alice failed"]
    assert failed and failed[0].exc_info is not None


async def test_a_command_that_cannot_be_recorded_is_refused_and_not_run(
    chat: LocalChat, held: Held, http: aiohttp.ClientSession
) -> None:
    held.unrecorded = True
    async with http.post(
        f"http://127.0.0.1:{chat.port}/api/command", json={"user_id": "alice", "text": "/imagine a fox"}
    ) as resp:
        assert resp.status == 503
        assert await resp.json() == {"ok": False, "error": UNRECORDED}
    assert await chat.quiesce() == 0
    assert held.entered == []
    assert await GenerationRow.all().count() == 0
