"""Failover: a running job whose worker stopped beating is taken over by the sweep and runs again,
and the worker that was cut off cannot touch the run that replaced it (its writes are fenced by the
attempt number). Against the run's own Redis and a real database; the processes' version (SIGKILL,
SIGSTOP) is in tests/faults/test_faults.py."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from bot.app import Runtime
from bot.config import Settings
from bot.embedded_redis import EmbeddedRedis
from bot.models import Actor, Generation, State, job_id_for
from jobs.backends.base import ImageRequest
from jobs.constants import Keys
from jobs.results import result_key
from jobs.runner import preview_key
from jobs.worker import build_worker, close_worker
from storage.models import GenerationRow
from tests.conftest import make_settings
from tests.faults.harness import wait_until
from tests.image_jobs import image_job
from tests.jobs.test_runner import PNG, FakeBackend, row, runner_for, submitted
from tests.stack import worker_running

#: The shortest genbot takes, so that a test sees a failover; a run beats every sixth of it.
FAILOVER_AFTER_S = 6.0


@pytest.fixture
def settings(redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        redis_server.url, sqlite_url, tmp_path, worker={"failover_after_s": FAILOVER_AFTER_S}
    )


async def heartbeat_stopped(generation_id: int, ago_s: float = 600) -> None:
    """What a worker that died (or froze) leaves: its row's heartbeat as it last beat."""
    await GenerationRow.filter(id=generation_id).update(
        heartbeat_at=datetime.now(UTC) - timedelta(seconds=ago_s)
    )


async def failed_over(rt: Runtime) -> bool:
    """One failover check, as the sweeper runs it every quarter of the failover time."""
    return await rt.core.fail_over() > 0


async def started(rt: Runtime, backend: FakeBackend) -> None:
    await wait_until(lambda: backend.calls >= 1, "the service to be called", 20, every=0.01)


async def test_a_worker_that_was_cut_off_cannot_touch_the_run_that_replaced_it(rt: Runtime) -> None:
    """Worker A runs a job and freezes (its heartbeat stops); the sweep takes the job over and
    worker B runs it to the end. When A wakes up and reports progress, its write is refused by the
    attempt number: A stops, and the row, its image, its place in line and its member's place
    stay B's."""
    gen = await submitted(rt)
    frozen = FakeBackend()
    frozen.hold = asyncio.Event()
    # A's own beats would keep the row alive: A is a worker frozen mid-job (a long GC pause, a
    # stopped VM, a cut network), whose heartbeat stopped.
    a = runner_for(rt, frozen)
    a.failover_after_s = 3600
    run_a = asyncio.create_task(a.run(gen.id))
    await started(rt, frozen)
    await heartbeat_stopped(gen.id)

    await wait_until(lambda: failed_over(rt), "the sweep to take the job over", 20, every=0.1)
    requeued = await row(rt, gen.id)
    assert requeued.state is State.QUEUED and requeued.attempts == 1
    assert await rt.queue.position(gen.id, line="fake") == 1, "back in line at its ticket"
    keys = Keys(rt.settings.redis.key_prefix)
    assert not await rt.redis.sismember(keys.member_running(gen.member), str(gen.id)), (
        "its member's place is free"
    )

    b = runner_for(rt, FakeBackend())
    assert await b.run(gen.id) == "succeeded"
    done = await row(rt, gen.id)
    assert done.state is State.SUCCEEDED and done.attempts == 1
    assert done.result_key == result_key(gen.id, 1)
    assert await rt.blobs.get(result_key(gen.id, 1)) == PNG

    frozen.hold.set()  # A wakes up and goes on where it was
    assert await run_a == "superseded"
    assert frozen.progress is not None
    after = await row(rt, gen.id)
    assert after == done, "A's late run wrote nothing to the row"
    assert await rt.blobs.get(result_key(gen.id)) is None, "A never stored its image"
    # A's preview went to its own blob before its write was refused, never over B's.
    assert after.meta["preview"]["key"] == preview_key(gen.id, 1)
    assert await rt.blobs.get(preview_key(gen.id, 1)) == b"preview 4"
    assert await rt.queue.position(gen.id, line="fake") is None


async def test_a_run_taken_over_as_it_ends_keeps_its_image_to_itself(rt: Runtime) -> None:
    """The other order: the sweep takes the job over while A is storing its image. A's end is
    refused; the row goes on as the new attempt, waiting in line, its image not A's."""
    gen = await submitted(rt)
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    a = runner_for(rt, backend)
    a.failover_after_s = 3600
    run_a = asyncio.create_task(a.run(gen.id))
    await started(rt, backend)
    await heartbeat_stopped(gen.id)
    await wait_until(lambda: failed_over(rt), "the sweep to take the job over", 20, every=0.1)

    # A's progress reports are refused from the first one: A stops before storing anything.
    backend.hold.set()
    assert await run_a == "superseded"
    queued = await row(rt, gen.id)
    assert queued.state is State.QUEUED and queued.attempts == 1 and queued.result_key is None
    assert await rt.queue.position(gen.id, line="fake") == 1, "A's end did not take the new run's place"


async def test_a_live_run_is_never_taken_over(rt: Runtime) -> None:
    """A run that beats is alive however long it runs without reporting progress: checks every
    few tenths of a second over two failover times take nothing over."""
    gen = await submitted(rt)
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    runner = runner_for(rt, backend)
    run = asyncio.create_task(runner.run(gen.id))
    await started(rt, backend)
    loop = asyncio.get_running_loop()
    until = loop.time() + 2 * FAILOVER_AFTER_S
    checks = 0
    while loop.time() < until:
        assert not await failed_over(rt)
        checks += 1
        await asyncio.sleep(0.2)
    assert checks > 10
    backend.hold.set()
    assert await run == "succeeded"
    assert (await row(rt, gen.id)).attempts == 0


async def test_no_job_is_taken_over_until_the_checks_ran_without_a_gap(rt: Runtime) -> None:
    """The heartbeats stop for everyone while the database (or the sweep's Redis) is away. After
    such a gap the sweep waits half the failover time, checking, before it takes anything over:
    time enough for every live run to beat again."""
    gen = await submitted(rt)
    await rt.queue.mark_running(gen.id, line="fake")
    await rt.store.transition(gen.id, State.RUNNING)
    await heartbeat_stopped(gen.id)

    assert not await failed_over(rt), "the first check starts the watch"
    await asyncio.sleep(rt.settings.worker.failover_gap_s + 0.3)  # no check for longer than the gap
    assert not await failed_over(rt), "a gap starts the watch over"
    assert (await row(rt, gen.id)).state is State.RUNNING
    await wait_until(lambda: failed_over(rt), "the steady checks to take the job over", 20, every=0.1)
    assert (await row(rt, gen.id)).attempts == 1


async def test_the_sweeper_takes_over_a_dead_run_whatever_arqs_key_says(rt: Runtime, redis: Redis) -> None:
    """A worker process died mid-job: arq's in-progress key holds the job for minutes yet, and
    the member's place is taken. A worker's sweeper takes the job over within the failover time;
    the job runs again and ends once."""
    gen = await demo_job(rt)
    ticket = await rt.queue.ticket_of(gen.id, line="demo")
    assert ticket is not None
    await rt.queue.start(gen.id, gen.member, 1000, ticket, workspace=("local", "local"), line="demo")
    await rt.store.transition(gen.id, State.RUNNING, ticket=ticket)
    await redis.psetex(in_progress_key_prefix + job_id_for(gen.id), 680_000, b"1")
    await heartbeat_stopped(gen.id)

    async with worker_running(rt):
        done = await wait_until(lambda: succeeded(rt, gen.id), "the job to run again and end", 60)
    assert done.attempts == 1
    assert done.result_key == result_key(gen.id, 1)
    assert await rt.blobs.get(result_key(gen.id, 1))


async def test_a_worker_that_finds_a_dead_runs_job_in_its_queue_claims_it(rt: Runtime) -> None:
    """arq gives a job to a worker again once its dead worker's in-progress key expired: the
    worker claims the run (the attempt number goes up, fencing the dead one) if its heartbeat is
    stale, and runs it."""
    gen = await submitted(rt)
    await rt.queue.mark_running(gen.id, line="fake")
    await rt.store.transition(gen.id, State.RUNNING)
    await heartbeat_stopped(gen.id)
    assert await runner_for(rt, FakeBackend()).run(gen.id) == "succeeded"
    done = await row(rt, gen.id)
    assert done.attempts == 1 and done.result_key == result_key(gen.id, 1)


async def demo_job(rt: Runtime) -> Generation:
    """A job of the demo line (the one a worker of the test's settings serves), as submitted."""
    actor = Actor("local", "local", "bob", "Bob")
    gen, _position = await rt.core.submit(
        image_job(actor, "general", ImageRequest("a fox", "", 64, 64, 3, 1))
    )
    return await row(rt, gen.id)


async def succeeded(rt: Runtime, generation_id: int) -> Generation | None:
    gen = await rt.store.get(generation_id)
    return gen if gen is not None and gen.state is State.SUCCEEDED else None


async def test_a_job_whose_runs_keep_dying_fails_as_stuck(rt: Runtime) -> None:
    """``worker.stuck_retries`` (1) takeovers, then a job whose run stops beating again fails in
    plain words, out of line, its member's place free."""
    gen = await submitted(rt)
    for attempt in range(2):
        await rt.queue.mark_running(gen.id, line="fake")
        assert await rt.store.transition(gen.id, State.RUNNING, attempt=attempt)
        await heartbeat_stopped(gen.id)
        await wait_until(lambda: failed_over(rt), f"the sweep to act on run {attempt}", 20, every=0.1)
    failed = await row(rt, gen.id)
    assert failed.state is State.FAILED and failed.error_code == "stuck" and failed.attempts == 1
    assert await rt.queue.position(gen.id, line="fake") is None


async def test_an_overlapping_check_leaves_the_new_run_alone(rt: Runtime, redis: Redis) -> None:
    """Two checks read the same stale row; the first takes it over and a new run starts; the
    second, late, finds the row no longer what it read (a new attempt, a fresh beat) and touches
    nothing: not the new run's hold in arq, not its member's running place."""
    gen = await submitted(rt)
    frozen = FakeBackend()
    frozen.hold = asyncio.Event()
    a = runner_for(rt, frozen)
    a.failover_after_s = 3600
    run_a = asyncio.create_task(a.run(gen.id))
    await started(rt, frozen)
    await heartbeat_stopped(gen.id)
    stale = await row(rt, gen.id)  # what the second check read
    stale_before = datetime.now(UTC) - timedelta(seconds=FAILOVER_AFTER_S)
    await wait_until(lambda: failed_over(rt), "the first check to take the job over", 20, every=0.1)

    new = FakeBackend()
    new.hold = asyncio.Event()
    run_b = asyncio.create_task(runner_for(rt, new).run(gen.id))
    await started(rt, new)
    job = job_id_for(gen.id)
    await redis.psetex(in_progress_key_prefix + job, 600_000, b"1")  # B's arq holds the job
    keys = Keys(rt.settings.redis.key_prefix)
    try:
        assert await rt.core._take_over(stale, stale_before) == 0
        assert (await row(rt, gen.id)).state is State.RUNNING
        assert await redis.exists(in_progress_key_prefix + job), "the new run's hold is there"
        assert await redis.sismember(keys.member_running(gen.member), str(gen.id))
        assert await rt.queue.position(gen.id, line="fake") is None
    finally:
        new.hold.set()
        frozen.hold.set()
        assert await run_b == "succeeded"
        assert await run_a == "superseded"


async def test_a_worker_that_comes_back_leaves_the_new_runs_arq_keys_alone(rt: Runtime, redis: Redis) -> None:
    """arq keys a job by its generation (``gen:<id>``), for every run of it. A real arq worker
    whose run was taken over ends it as superseded: arq's clean-up of that run would delete the
    in-progress key, the job and its place in arq's queue of the run that replaced it; genbot's
    worker skips it."""
    gen = await submitted(rt)
    job = job_id_for(gen.id)
    frozen = FakeBackend()
    frozen.hold = asyncio.Event()
    a_runner = runner_for(rt, frozen)
    a_runner.failover_after_s = 3600  # frozen: its heartbeat stopped
    a = build_worker(
        rt.settings, runner=a_runner, queue=rt.queue, line="fake", concurrency=1, handle_signals=False
    )
    a_main = asyncio.create_task(a.main())
    new = FakeBackend()
    new.hold = asyncio.Event()
    b_runner = runner_for(rt, new)
    b = build_worker(
        rt.settings, runner=b_runner, queue=rt.queue, line="fake", concurrency=1, handle_signals=False
    )
    b_main: asyncio.Task[None] | None = None
    try:
        await started(rt, frozen)
        a_run = a.tasks[job]
        await heartbeat_stopped(gen.id)
        await wait_until(lambda: failed_over(rt), "the sweep to take the job over", 20, every=0.1)
        b_main = asyncio.create_task(b.main())
        await started(rt, new)
        assert await redis.exists(in_progress_key_prefix + job), "B's arq holds the job"

        frozen.hold.set()  # A wakes up: its run is superseded, and arq cleans up after it
        await asyncio.wait_for(a_run, 20)
        assert await redis.exists(in_progress_key_prefix + job), "B's hold on the job is still there"
        assert await redis.exists(job_key_prefix + job), "the arq job B runs is still there"
        keys = Keys(rt.settings.redis.key_prefix)
        assert await redis.sismember(keys.member_running(gen.member), str(gen.id))
        new.hold.set()
        done = await wait_until(lambda: succeeded(rt, gen.id), "B to end the job", 20)
        assert done.attempts == 1 and done.result_key == result_key(gen.id, 1)
    finally:
        new.hold.set()
        frozen.hold.set()
        for worker, task in ((a, a_main), (b, b_main)):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await close_worker(worker)
