"""The per-member running cap with a real worker: a member's jobs run one at a time, the other
members' jobs are not held up behind them, and held jobs keep their place."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.errors import GenbotError
from bot.models import Actor, Generation, NewGeneration, State
from bot.ports import QuotaRefused
from jobs.backends.base import ImageRequest
from tests.conftest import make_settings
from tests.image_jobs import image_job
from tests.stack import worker_running

ALICE = Actor("local", "local", "alice", "Alice")
BOB = Actor("local", "local", "bob", "Bob")


@pytest_asyncio.fixture
async def capped(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        worker={"concurrency": 3},
        quota={"max_running": 1},
        backend={"demo_step_delay_s": 0.05},
    )
    async with runtime(settings) as rt:
        yield rt


async def submit(rt: Runtime, actor: Actor, prompt: str) -> int:
    new = image_job(actor, "general", ImageRequest(prompt, "", 64, 64, 6, 1), "demo")
    gen, _ = await rt.core.submit(new, quota=rt.core.quota_for(actor))
    await rt.store.update(gen.id, ticket=gen.ticket)  # as attach_message does
    return gen.id


async def all_done(rt: Runtime, ids: list[int]) -> list[Generation]:
    async with asyncio.timeout(60):
        while True:
            rows = [await rt.store.get(i) for i in ids]
            if all(r is not None and r.state.terminal for r in rows):
                return [r for r in rows if r is not None]
            await asyncio.sleep(0.05)


async def test_a_members_jobs_run_one_at_a_time_without_holding_up_others(capped: Runtime) -> None:
    rt = capped
    alice = [await submit(rt, ALICE, f"alice {i}") for i in range(3)]
    bob = await submit(rt, BOB, "bob")
    async with worker_running(rt):
        rows = await all_done(rt, [*alice, bob])
    assert [r.state for r in rows] == [State.SUCCEEDED] * 4
    *alices, b = rows
    # Three worker slots, yet Alice's jobs never overlapped: each started after the previous ended.
    # (Jobs a worker picks at the same instant may start in either order.)
    alices.sort(key=lambda r: r.started_at or r.created_at)
    for earlier, later in itertools.pairwise(alices):
        assert earlier.finished_at is not None and later.started_at is not None
        assert later.started_at >= earlier.finished_at
    # Bob's job, submitted last, did not wait behind Alice's: it started before her first one ended.
    assert b.started_at is not None and alices[0].finished_at is not None
    assert b.started_at < alices[0].finished_at
    # No one is left counted as running or held.
    assert await rt.redis.scard(rt.queue.keys.member_running(ALICE.member)) == 0  # type: ignore[misc]
    assert await rt.redis.zcard(rt.queue.keys.member_held(ALICE.member)) == 0


async def test_a_job_beyond_the_running_cap_waits_aside_and_rejoins_at_its_place(capped: Runtime) -> None:
    """Positions stay exact: the waiting set holds only jobs a worker can start."""
    rt = capped
    first = await submit(rt, ALICE, "first")
    await rt.redis.set(f"arq:in-progress:gen:{first}", b"1", px=60_000)  # a worker took it
    assert await rt.queue.start(first, ALICE.member, 1, 1, workspace=("local", "local"), line="demo") == (
        True,
        [],
    )
    await rt.store.transition(first, State.RUNNING)

    new = image_job(ALICE, "general", ImageRequest("second", "", 64, 64, 6, 1), "demo")
    second, position = await rt.core.submit(new, quota=rt.core.quota_for(ALICE))
    assert position == 0  # held at once: Alice runs a job
    assert (await rt.core.view(second, position)).headline == "Queued · waits for your other job"
    await rt.store.update(second.id, ticket=second.ticket)
    bob = await submit(rt, BOB, "bob")
    assert await rt.queue.position(bob, line="demo") == 1  # not #2: Alice's second job is not in his way
    assert not await rt.redis.exists(f"arq:job:gen:{second.id}")

    # Alice's job ends: her held job rejoins the line at its own ticket, ahead of Bob's.
    await rt.redis.delete(f"arq:in-progress:gen:{first}")
    assert await rt.queue.release(ALICE.member, first, 1) == (second.id, second.ticket)
    await rt.queue.restore(second.id, second.ticket, line="demo")
    assert await rt.queue.waiting() == [second.id, bob]
    assert await rt.redis.exists(f"arq:job:gen:{second.id}")


async def test_a_held_job_reads_so_and_the_sweep_leaves_it_while_its_member_runs_one(capped: Runtime) -> None:
    rt = capped
    first = await submit(rt, ALICE, "first")
    second = await submit(rt, ALICE, "second")
    # A worker took the first job and holds its arq in-progress key.
    in_progress = f"arq:in-progress:gen:{first}"
    await rt.redis.set(in_progress, b"1", px=60_000)
    assert await rt.queue.start(first, ALICE.member, 1, 1, workspace=("local", "local"), line="demo") == (
        True,
        [second],
    )  # moved aside
    await rt.store.transition(first, State.RUNNING)
    assert await rt.queue.position(second, line="demo") is None
    assert not await rt.redis.exists(f"arq:job:gen:{second}")
    assert await rt.queue.start(second, ALICE.member, 1, 2, workspace=("local", "local"), line="demo") == (
        None,
        [],
    )  # a stale pick: held
    gen = await rt.store.get(second)
    assert gen is not None
    view = await rt.core.view(gen)
    assert view.headline == "Queued · waits for your other job"

    await rt.core.reconcile()  # the member runs a job: the held one stays aside
    assert await rt.queue.position(second, line="demo") is None
    # The first job's worker died (its in-progress key expired) and nothing released the place:
    # the sweep puts the held job back, at its ticket.
    await rt.redis.delete(in_progress)
    await rt.core.reconcile()
    assert await rt.queue.position(second, line="demo") == 1
    ticket = await rt.redis.zscore(rt.queue.keys.waiting("demo"), str(second))
    assert ticket == 2


async def test_held_jobs_still_count_against_the_queued_cap(capped: Runtime) -> None:
    rt = capped
    tight = replace(rt.core.quota_for(ALICE), max_queued=1)
    first = await submit(rt, ALICE, "one")
    second = await submit(rt, ALICE, "two")
    await rt.redis.set(f"arq:in-progress:gen:{first}", b"1", px=60_000)
    assert await rt.queue.start(first, ALICE.member, 1, 1, workspace=("local", "local"), line="demo") == (
        True,
        [second],
    )  # second: held
    third = await rt.store.create(
        image_job(ALICE, "general", ImageRequest("three", "", 64, 64, 6, 1), "demo")
    )
    with pytest.raises(QuotaRefused) as refused:
        await rt.queue.submit(third.id, quota=tight, line="demo")
    assert refused.value.reason == "queued"  # the held job still counts


async def test_repair_gives_a_waiting_job_its_arq_job_back(capped: Runtime) -> None:
    rt = capped
    job = await submit(rt, ALICE, "lost")
    await rt.redis.delete(f"arq:job:gen:{job}")
    await rt.redis.zrem(rt.queue.line_queue("demo"), f"gen:{job}")
    assert await rt.queue.repair(job, line="demo") is True
    assert await rt.redis.exists(f"arq:job:gen:{job}")
    assert await rt.redis.zscore(rt.queue.line_queue("demo"), f"gen:{job}") == 1  # its ticket
    assert await rt.queue.repair(job, line="demo") is False  # nothing missing
    await rt.queue.mark_done(job, line="demo")
    await rt.redis.delete(f"arq:job:gen:{job}")
    assert await rt.queue.repair(job, line="demo") is False  # not waiting: nothing to give back


async def test_cancelling_a_held_job_gives_its_place_in_the_quota_back(capped: Runtime) -> None:
    rt = capped
    first = await submit(rt, ALICE, "running")
    await rt.redis.set(f"arq:in-progress:gen:{first}", b"1", px=60_000)
    assert await rt.queue.start(first, ALICE.member, 1, 1, workspace=("local", "local"), line="demo") == (
        True,
        [],
    )
    await rt.store.transition(first, State.RUNNING)
    tight = replace(rt.core.quota_for(ALICE), max_queued=1)

    def new(prompt: str) -> NewGeneration:
        return image_job(ALICE, "general", ImageRequest(prompt, "", 64, 64, 6, 1), "demo")

    held, position = await rt.core.submit(new("held"), quota=tight)
    assert position == 0
    with pytest.raises(GenbotError):
        await rt.core.submit(new("one too many"), quota=tight)
    await rt.core.cancel(ALICE, held.id)
    assert await rt.core.queue.aside(held) is None  # no longer held
    _again, position = await rt.core.submit(new("again"), quota=tight)
    assert position == 0  # accepted (and held: the first job still runs)
