"""Writes whose connection dies after the server committed them and before the reply arrived:
the retry finds what the first attempt did, and never does it twice (PostgreSQL, through a proxy
that loses exactly that reply: see ``pg_proxy.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bot.models import Actor, NewGeneration, State
from jobs.backends.base import ImageRequest
from storage import db
from storage.chatlog import TortoiseChatLog
from storage.models import AuditRow, ChatMessageRow, GenerationRow
from storage.moderation import TortoiseModerationStore
from storage.store import TortoiseGenerationStore
from tests.image_jobs import image_job
from tests.storage.pg_proxy import PgProxy

pytestmark = pytest.mark.postgres

ALICE = Actor("local", "local", "alice", "Alice")


@pytest_asyncio.fixture
async def proxy(pg_url: str) -> AsyncIterator[PgProxy]:
    """Tortoise connected to the run's PostgreSQL database through the proxy."""
    proxy = PgProxy()
    await proxy.start()
    name = pg_url.rsplit("/", 1)[1]
    await db.connect(f"postgres://postgres@127.0.0.1:{proxy.port}/{name}")
    try:
        yield proxy
    finally:
        await db.close()
        await proxy.stop()


def new_generation() -> NewGeneration:
    options = ImageRequest(prompt="a fox", negative="", width=512, height=512, steps=4, seed=1)
    return image_job(actor=ALICE, channel="general", options=options, backend="demo")


async def test_an_insert_whose_reply_was_lost_makes_one_row(proxy: PgProxy) -> None:
    store = TortoiseGenerationStore()
    proxy.lose_reply_after('INSERT INTO "generations"')
    gen = await store.create(new_generation())
    assert proxy.cuts == 1
    rows = await GenerationRow.all()
    assert [row.id for row in rows] == [gen.id]
    assert gen.state is State.QUEUED and gen.prompt == "a fox"


async def test_a_transition_whose_reply_was_lost_is_known_as_done(proxy: PgProxy) -> None:
    store = TortoiseGenerationStore()
    gen = await store.create(new_generation())
    proxy.lose_reply_after('UPDATE "generations"')
    started = await store.transition(gen.id, State.RUNNING)
    assert proxy.cuts == 1
    assert started is not None, "the retry found the row running, moved there by its own first attempt"
    assert started.state is State.RUNNING
    # Another writer's transition is still not taken for one's own.
    assert await store.transition(gen.id, State.RUNNING) is None


async def test_a_terminal_transition_whose_reply_was_lost_reports_the_final_row(proxy: PgProxy) -> None:
    store = TortoiseGenerationStore()
    gen = await store.create(new_generation())
    await store.transition(gen.id, State.RUNNING)
    proxy.lose_reply_after('UPDATE "generations"')
    done = await store.transition(gen.id, State.SUCCEEDED, result_key="results/1.png")
    assert proxy.cuts == 1
    assert done is not None and done.state is State.SUCCEEDED and done.result_key == "results/1.png"
    assert await store.transition(gen.id, State.FAILED, error_code="internal") is None


@pytest.mark.parametrize("where", ["audit", "chat"])
async def test_an_audit_entry_or_chat_message_whose_reply_was_lost_is_written_once(
    proxy: PgProxy, where: str
) -> None:
    proxy.lose_reply_after('INSERT INTO "audit_log"' if where == "audit" else 'INSERT INTO "chat_messages"')
    if where == "audit":
        await TortoiseModerationStore().audit(ALICE, "pause", reason="maintenance")
        assert await AuditRow.all().count() == 1
    else:
        record = await TortoiseChatLog().add(author_id="alice", author_name="Alice", bot=False, text="hi")
        assert [row.id for row in await ChatMessageRow.all()] == [record.id]
    assert proxy.cuts == 1


async def test_merges_whose_reply_was_lost_are_applied_once(proxy: PgProxy) -> None:
    store = TortoiseGenerationStore()
    gen = await store.create(new_generation())
    proxy.lose_reply_after('UPDATE "generations"', times=2)
    await store.update(gen.id, message={"message_id": "m1"}, ticket=7)
    await store.update(gen.id, ticket=9)  # a ticket, once written, stays
    assert proxy.cuts == 2
    row = await store.get(gen.id)
    assert row is not None
    assert (row.message, row.ticket) == ({"message_id": "m1"}, 7)
