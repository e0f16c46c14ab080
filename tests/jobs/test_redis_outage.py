"""Redis restarts and loses its data under running processes: a redis-server of each test's own,
stopped and started again on the same port while a worker runs and requests arrive."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.app import Runtime, build_runner, runtime
from bot.embedded_redis import EmbeddedRedis, embedded_redis
from bot.models import MessageRef, NewGeneration, State
from bot.service import Genbot
from jobs import connections
from jobs.backends.base import ImageRequest
from jobs.connections import redis_pool
from jobs.queue import RedisJobQueue
from jobs.worker import build_worker, close_worker
from storage.models import GenerationRow
from tests.bot.test_service import ALICE, BOB, run
from tests.conftest import make_settings
from tests.image_jobs import image_job
from tests.stack import worker_running


@pytest_asyncio.fixture
async def own_redis() -> AsyncIterator[EmbeddedRedis]:
    async with embedded_redis() as server:
        yield server


@contextlib.asynccontextmanager
async def deployment(own_redis: EmbeddedRedis, sqlite_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = make_settings(own_redis.url, sqlite_url, tmp_path)
    async with runtime(settings) as rt:
        await rt.core.check_tickets()
        yield rt


async def restart(server: EmbeddedRedis, down_s: float) -> None:
    """Stop redis-server (its data go with it) and start it again on the same port."""
    await server.stop()
    await asyncio.sleep(down_s)  # the outage itself
    await server.start()


async def wait_for_state(generation_id: int, state: State, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while (await GenerationRow.get(id=generation_id)).state != state.value:
            await asyncio.sleep(0.05)


async def test_a_worker_rides_out_a_redis_restart_and_runs_what_comes_after(
    own_redis: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis stays away longer than one command waits for it: the worker's poll fails again and
    again, and the worker neither exits nor logs more than once until Redis is back."""
    monkeypatch.setattr(connections, "REDIS_WAIT_S", 0.3)
    async with deployment(own_redis, sqlite_url, tmp_path) as rt, worker_running(rt) as stop:
        before = (await run(rt, ALICE, "imagine", prompt="before", steps="2")).posted[0].job
        await wait_for_state(before, State.SUCCEEDED)
        await restart(own_redis, down_s=3.0)
        assert not stop.is_set()
        after = await run(rt, BOB, "imagine", prompt="after", steps="2")
        assert after.errors == [], after.errors
        await wait_for_state(after.posted[0].job, State.SUCCEEDED)
    unreachable = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    back = [r for r in caplog.records if "Redis is back" in r.getMessage()]
    assert 1 <= len(unreachable) <= 2, unreachable  # the generation worker's, and the sweep's
    assert len(back) >= 1


async def test_a_request_during_a_short_outage_waits_and_is_queued(
    own_redis: EmbeddedRedis, sqlite_url: str, tmp_path: Path
) -> None:
    async with deployment(own_redis, sqlite_url, tmp_path) as rt:
        await run(rt, ALICE, "imagine", prompt="warm the pool up")
        await own_redis.stop()
        request = asyncio.create_task(run(rt, BOB, "imagine", prompt="during the outage"))
        await asyncio.sleep(1.5)  # the outage itself, with the request waiting in it
        assert not request.done()
        await own_redis.start()
        out = await request
        assert out.errors == []
        [view] = out.posted
        # Redis came back empty: the first request went back in line (its row says where) before
        # the counter did, so the second is behind it.
        assert view.headline.startswith("Queued · #2 in line")
        states = [row.state for row in await GenerationRow.all().order_by("id")]
        assert states == ["queued", "queued"]


async def test_a_request_during_a_long_outage_is_refused_in_plain_words_and_leaves_nothing(
    own_redis: EmbeddedRedis, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A command waits about 10 s for Redis; waiting that out here would only slow the suite.
    monkeypatch.setattr(connections, "REDIS_WAIT_S", 1.0)
    async with deployment(own_redis, sqlite_url, tmp_path) as rt:
        await own_redis.stop()
        started = asyncio.get_running_loop().time()
        out = await run(rt, ALICE, "imagine", prompt="nobody home")
        took = asyncio.get_running_loop().time() - started
        assert out.posted == []
        assert took < 3 * connections.REDIS_WAIT_S, "the member waits for Redis once, not per call"
        [error] = out.errors
        assert (error.code.value, error.title) == ("queue_unavailable", "Queue unavailable")
        assert "Error" not in error.what and "111" not in error.what
        assert await GenerationRow.all().count() == 0
        await own_redis.start()
        again = await run(rt, ALICE, "imagine", prompt="back again")
        assert again.errors == []


async def test_tickets_after_redis_lost_its_data_come_after_every_ticket_given(
    rt: Runtime, redis: Redis
) -> None:
    """Three jobs wait, one more is between its submit and its status post (its ticket is not in
    the database yet); Redis is flushed. The queued rows come back first at their own tickets, in
    order; the next ticket is above every ticket given, the one in flight included."""
    queued = [(await run(rt, ALICE, "imagine", prompt=f"p{i}")).posted[0].job for i in range(3)]
    in_flight, _position = await rt.core.submit(await _new(rt, "in flight"))
    assert in_flight.ticket == 4
    assert (await rt.store.get(in_flight.id)).ticket is None  # type: ignore[union-attr]
    await redis.flushall()

    out = await run(rt, BOB, "imagine", prompt="after the loss")
    [view] = out.posted
    assert view.headline.startswith("Queued · #4 in line"), "the queued rows are back ahead of it"
    assert await rt.queue.waiting() == [*queued, view.job]
    after = await rt.store.get(view.job)
    assert after is not None and after.ticket is not None and after.ticket > 4
    # The request that was in flight now stores its old ticket: no other row has it.
    await rt.core.attach_message(in_flight.id, _ref(), view, ticket=in_flight.ticket, position=4)
    tickets = [row.ticket for row in await GenerationRow.all()]
    assert len(tickets) == len(set(tickets)) == 5


async def test_a_counter_behind_the_database_is_seeded_again_by_the_sweep(rt: Runtime, redis: Redis) -> None:
    """Redis restarted from an older snapshot: its counter is behind tickets the rows hold."""
    for i in range(3):
        await run(rt, ALICE, "imagine", prompt=f"p{i}")
    await redis.set(rt.queue.keys.ticket, 1)
    await rt.core.reconcile()
    out = await run(rt, ALICE, "imagine", prompt="after the sweep")
    after = await rt.store.get(out.posted[0].job)
    assert after is not None and after.ticket is not None and after.ticket > 3


async def test_two_processes_submitting_after_a_loss_get_unique_tickets_and_positions(
    rt: Runtime, redis: Redis
) -> None:
    """Two bot processes (two cores with their own Redis pools) meet the lost counter at
    once, 40 requests each: one seeds, the other waits for it; every ticket and position is
    unique, and the places told are 6..85 (the five older requests are back ahead of them)."""
    rt.settings.renderer.exact_positions = 100  # every place told exactly
    for i in range(5):
        await run(rt, ALICE, "imagine", prompt=f"before {i}")
    await redis.flushall()
    other_redis = redis_pool(rt.settings.redis.url)
    other = Genbot(
        rt.settings,
        rt.store,
        RedisJobQueue(other_redis, rt.queue.keys, rt.queue.queue_name),
        rt.moderation,
        rt.core.inbox,
        rt.core.plugins,
        rt.blobs,
    )
    try:
        outs = await asyncio.gather(
            *(
                run(side, actor, "imagine", prompt=f"p{i}")
                for i in range(40)
                for side, actor in ((rt, ALICE), (replace(rt, core=other), BOB))
            )
        )
    finally:
        await other_redis.aclose()
    assert all(out.errors == [] for out in outs)
    rows = await GenerationRow.filter(state="queued")
    assert len(rows) == 85
    tickets = [row.ticket for row in rows]
    assert None not in tickets and len(set(tickets)) == 85
    waiting = await rt.queue.waiting()
    assert sorted(waiting) == sorted(row.id for row in rows)
    assert waiting == [row.id for row in sorted(rows, key=lambda r: r.ticket)]
    told = sorted(int(re.search(r"#(\d+) in line", out.posted[0].headline).group(1)) for out in outs)  # type: ignore[union-attr]
    assert told == list(range(6, 86)), "the five older ones came back first; each place told once"


def _ref() -> MessageRef:
    return MessageRef("local", "general", "in-flight")


async def _new(rt: Runtime, prompt: str) -> NewGeneration:
    return image_job(ALICE, "general", ImageRequest(prompt, "", 512, 512, 20, 1))


async def test_redis_restarted_from_an_older_snapshot_gives_no_ticket_twice(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Redis saves a snapshot, gives more tickets, and restarts from that snapshot: its counter and
    everything else are back as they were, behind the rows. The first request after the restart,
    before any sweep, gets a ticket above every ticket given (the counter of an earlier life of
    the server is not trusted)."""
    server = EmbeddedRedis(workdir=tmp_path / "redis")
    await server.start()
    try:
        async with deployment(server, sqlite_url, tmp_path) as rt:
            await run(rt, ALICE, "imagine", prompt="before the snapshot")
            await rt.redis.save()  # what a stock redis-server does every few minutes
            for i in range(3):
                await run(rt, BOB, "imagine", prompt=f"after the snapshot {i}")
            await server.stop()  # killed: no save on the way down (--save "")
            await server.start()  # loads the older snapshot
            assert await rt.redis.get(rt.queue.keys.ticket) == b"1", "the counter went back"
            out = await run(rt, ALICE, "imagine", prompt="after the restart")
            assert out.errors == []
            tickets = [row.ticket for row in await GenerationRow.all().order_by("id")]
            assert tickets[:4] == [1, 2, 3, 4]
            assert tickets[4] is not None and tickets[4] > 4
    finally:
        await server.stop()


async def test_a_claim_cut_short_by_an_outage_gives_its_worker_slot_back(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """arq counts a job and takes a slot before it claims it (genbot's worker: one script,
    ``jobs.poll.CLAIM``); a connection lost in that claim escapes with both still taken.
    PatientWorker gives them back, so the worker does not run short of slots for good."""
    worker = build_worker(
        rt.settings, runner=build_runner(rt), queue=rt.queue, line="demo", concurrency=1, handle_signals=False
    )
    await worker.pool.zadd(rt.queue.line_queue("demo"), {"gen:1": 1})
    slots_before = worker.sem._value

    async def lost(*_args: object, **_kwargs: object) -> None:
        raise RedisConnectionError("Connection closed by server.")

    monkeypatch.setattr(worker, "_claim", lost)
    try:
        with pytest.raises(RedisConnectionError):
            await worker.start_jobs([b"gen:1"])
        assert (worker.job_counter, worker.sem._value) == (0, slots_before)
    finally:
        monkeypatch.undo()
        await close_worker(worker)


async def test_a_command_waits_for_redis_about_redis_wait_s_however_it_fails(
    own_redis: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py opens a connection again inside each retry of a command, with the same ``Retry``:
    counted retries multiply (a command once waited 85 s for a 10 s patience). genbot's waits are
    bounded by one deadline: a command on a connection that broke, and one that needs a new
    connection, each raise after about ``REDIS_WAIT_S``, not a multiple of it."""
    monkeypatch.setattr(connections, "REDIS_WAIT_S", 1.0)
    client = redis_pool(own_redis.url)
    try:
        await client.ping()  # a pooled connection, which the stop breaks
        await own_redis.stop()
        for what in ("on a broken connection", "on a new connection"):
            started = asyncio.get_running_loop().time()
            with pytest.raises(RedisConnectionError):
                await client.get("anything")
            took = asyncio.get_running_loop().time() - started
            # it waited (backing off up to the deadline), but once, not once per retry
            assert connections.REDIS_WAIT_S / 2 < took < 3 * connections.REDIS_WAIT_S, (what, took)
    finally:
        await own_redis.start()
        await client.aclose()
