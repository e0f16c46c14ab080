"""The worker's sweep (an arq cron job on its own queue) heals what Redis forgot and scrubs expired
secrets by itself (its failover of dead runs: tests/jobs/test_failover.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from arq.worker import Worker
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.models import Actor, MessageRef, State
from jobs.backends.base import ImageRequest
from jobs.constants import Keys
from storage.models import GenerationRow
from tests.conftest import make_settings
from tests.image_jobs import image_job
from tests.stack import worker_running

ALICE = Actor("local", "local", "alice", "Alice")


@pytest_asyncio.fixture
async def rt_any(
    redis_server: EmbeddedRedis, db_url: str, tmp_path: Path, redis: Redis
) -> AsyncIterator[Runtime]:
    async with runtime(make_settings(redis_server.url, db_url, tmp_path)) as value:
        yield value


def discord_ref(message_id: str, token: str | None, expires: float | None) -> dict[str, object]:
    return MessageRef(
        "discord",
        "c1",
        message_id,
        {
            "guild": "g1",
            "application_id": "42",
            "token": token,
            "token_expires": expires,
            "attachment_limit": 1,
        },
    ).to_json()


async def test_the_sweep_removes_expired_interaction_tokens_and_response_urls(rt_any: Runtime) -> None:
    rt = rt_any
    now = time.time()
    gens = [
        (
            await rt.core.submit(
                image_job(ALICE, "general", ImageRequest(f"fox {n}", "", 64, 64, 3, 1), "demo")
            )
        )[0]
        for n in range(4)
    ]
    expired_queued, fresh_queued, expired_finished, old_finished = (g.id for g in gens)
    await rt.store.update(expired_queued, message=discord_ref("m1", "dead-token", now - 1))
    await rt.store.update(fresh_queued, message=discord_ref("m2", "live-token", now + 600))
    await rt.store.update(expired_finished, message=discord_ref("m3", "dead-token", now - 1))
    await rt.store.update(
        old_finished,
        message={
            "message_id": "m4",
            "extra": {"response_url": "https://hooks", "response_url_expires": now - 1},
        },
    )
    for gid in (expired_finished, old_finished):
        await rt.queue.remove_waiting(gid, line="demo")
        await rt.store.transition(gid, State.CANCELLED, error_code="cancelled")

    await rt.core.reconcile()

    async def extra(gid: int) -> dict[str, object]:
        gen = await rt.store.get(gid)
        assert gen is not None
        return dict(gen.message["extra"])

    assert "token" not in await extra(expired_queued)
    assert "token_expires" not in await extra(expired_queued)
    assert (await extra(expired_queued))["guild"] == "g1", "the rest of the reference stays"
    assert (await extra(fresh_queued))["token"] == "live-token"
    assert "token" not in await extra(expired_finished)
    assert "response_url" not in await extra(old_finished)
    # The scrubbed references still lead to the message (through the bot token).
    ref = MessageRef.from_json((await rt.store.get(expired_queued)).message)  # type: ignore[union-attr]
    assert ref is not None and ref.message_id == "m1"


async def test_the_sweep_restores_lost_queued_jobs_in_ticket_order_and_publishes_them(
    rt_any: Runtime,
) -> None:
    rt = rt_any
    gens = []
    for n in range(5):
        gen, _ = await rt.core.submit(
            image_job(ALICE, "general", ImageRequest(f"fox {n}", "", 64, 64, 3, 1), "demo")
        )
        await rt.store.update(gen.id, ticket=gen.ticket)
        gens.append(gen)
    await rt.redis.flushall()  # Redis lost everything

    assert await rt.core.reconcile() == 5

    assert await rt.queue.waiting() == [g.id for g in gens]
    assert [await rt.queue.job_state(g.id) for g in gens] == ["queued"] * 5
    entries = await rt.redis.xrange(Keys(rt.settings.redis.key_prefix).events)
    assert sorted(int(f[b"id"]) for _id, f in entries) == [g.id for g in gens]
    assert await rt.core.reconcile() == 0, "a second sweep finds nothing to heal"


async def test_a_request_that_never_reached_the_line_nor_its_message_is_posted_before_it_runs(
    rt: Runtime,
) -> None:
    """Its bot was killed after inserting the row, before the submit: no ticket, no message. The
    sweep does not put it in line (it would run unseen); it asks the renderer to post its message
    (an ``unposted`` event), and puts it in line once the message is there."""
    new = image_job(ALICE, "general", ImageRequest("orphan", "", 64, 64, 3, 1), "demo")
    gen = await rt.store.create(new)
    await GenerationRow.filter(id=gen.id).update(created_at=datetime.now(UTC) - timedelta(minutes=5))
    events = Keys(rt.settings.redis.key_prefix).events

    assert await rt.core.reconcile() == 0
    assert await rt.queue.waiting() == []
    kinds = [(int(f[b"id"]), f[b"kind"]) for _id, f in await rt.redis.xrange(events)]
    assert kinds == [(gen.id, b"unposted")]

    await rt.store.update_message(gen.id, MessageRef("local", "general", "m9").to_json())  # posted
    assert await rt.core.reconcile() == 1
    assert await rt.queue.waiting() == [gen.id]
    row = await rt.store.get(gen.id)
    assert row is not None and row.ticket is not None


async def test_stopping_a_worker_while_arq_finishes_a_sweep_stops_it_cleanly(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """arq's close() cancels the job tasks and re-raises their CancelledError, which a task caught
    in arq's (shielded) finish_job raises: the worker must still shut down in order (a test run
    once cascaded from this: the runtime was never closed)."""
    finishing, release = asyncio.Event(), asyncio.Event()
    real_finish = Worker.finish_job

    async def slow_finish(self: Worker, job_id: str, *args: object) -> None:
        if job_id.startswith("genbot-sweep"):
            finishing.set()
            await release.wait()
        await real_finish(self, job_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Worker, "finish_job", slow_finish)
    try:
        async with worker_running(rt):
            await asyncio.wait_for(finishing.wait(), 30)
        # leaving the block stopped the worker without raising
    finally:
        release.set()
