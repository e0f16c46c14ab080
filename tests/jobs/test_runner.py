"""The generation job (:class:`jobs.runner.GenerationRunner`) against a real SQLite database and the
run's own Redis. Only the image backend is a fake: it is genbot's own port."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from bot.app import Runtime
from bot.models import Actor, Generation, State
from bot.ports import ImageResult, RunReport
from jobs.backends.base import ImageRequest, ProgressCallback
from jobs.breaker import Breaker, BreakerKeys, BreakerOpen
from jobs.constants import Keys
from jobs.runner import RUNNING_ELSEWHERE, Deferred, GenerationRunner, JobStopped, preview_key, result_key
from tests.image_jobs import image_job, image_kinds

ACTOR = Actor(platform="local", workspace="local", user_id="alice", display_name="Alice")
PNG = b"\x89PNG\r\n\x1a\n fake image"


class FakeBackend:
    """Counts its calls; reports every step with a preview; can fail, hang or wait for a signal."""

    name = "fake"

    def __init__(self, *, fail: bool = False, hang: bool = False) -> None:
        self.fail = fail
        self.hang = hang
        self.calls = 0
        self.cancelled = 0
        self.progress: ProgressCallback | None = None
        self.hold: asyncio.Event | None = None  # set it to make every call wait for it

    async def generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        self.calls += 1
        self.progress = progress
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.fail:
                raise RuntimeError("CUDA out of memory (the details stay in the logs)")
            if self.hang:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        for step in range(1, request.steps + 1):
            await progress(step, request.steps, f"preview {step}".encode())
        return ImageResult(png=PNG)


def shared_breaker(rt: Runtime, fail_max: int = 5, reset_s: float = 60.0) -> Breaker:
    """The breaker of the fake backend, shared through the run's Redis (as every worker's is)."""
    return Breaker(
        rt.redis,
        BreakerKeys.of(Keys(rt.settings.redis.key_prefix), FakeBackend.name),
        fail_max=fail_max,
        reset_s=reset_s,
        probe_ttl_s=30.0,
    )


def counted_progress_writes(runner: GenerationRunner) -> list[dict[str, Any]]:
    """The progress reports ``runner`` writes to rows, as they are written. (The renderer's
    ``progress`` events are nudges, coalesced while one is on its way: they are not counted.)"""
    writes: list[dict[str, Any]] = []
    record_runs = runner.store.record_runs

    async def counted(reports: Sequence[RunReport]) -> set[tuple[int, int]]:
        written = await record_runs(reports)
        writes.extend(
            r.patch for r in reports if r.patch is not None and (r.generation_id, r.attempt) in written
        )
        return written

    runner.store.record_runs = counted  # type: ignore[method-assign]
    return writes


def runner_for(
    rt: Runtime,
    backend: FakeBackend,
    *,
    store: Any = None,
    breaker: Breaker | None = None,
    backend_timeout_s: float = 30.0,
    progress_interval_s: float = 0.0,
    job_timeout_s: float | None = None,
    defer_slice_s: float = 60.0,
    line: str = "fake",
) -> GenerationRunner:
    return GenerationRunner(
        store=store or rt.store,
        queue=rt.queue,
        blobs=rt.blobs,
        kinds=image_kinds(backend, breaker or shared_breaker(rt), line),
        backend_timeout_s=backend_timeout_s,
        progress_interval_s=progress_interval_s,
        job_timeout_s=job_timeout_s,
        defer_slice_s=defer_slice_s,
        failover_after_s=rt.settings.worker.failover_after_s,
    )


async def submitted(rt: Runtime, steps: int = 4) -> Generation:
    """A generation as the bot leaves it: a queued row, a ticket, a waiting arq job."""
    gen, position = await rt.core.submit(
        image_job(
            actor=ACTOR,
            channel="general",
            options=ImageRequest(
                prompt="a red fox in snow", negative="", width=64, height=64, steps=steps, seed=3
            ),
            backend="fake",
        )
    )
    assert await rt.queue.position(gen.id, line="fake") == position
    return gen


async def row(rt: Runtime, generation_id: int) -> Generation:
    gen = await rt.store.get(generation_id)
    assert gen is not None
    return gen


async def events(rt: Runtime, generation_id: int) -> list[str]:
    """The kinds of the events published for one generation, oldest first."""
    entries = await rt.redis.xrange(Keys(rt.settings.redis.key_prefix).events)
    return [fields[b"kind"].decode() for _id, fields in entries if int(fields[b"id"]) == generation_id]


async def assert_not_queued_or_running(rt: Runtime, generation_id: int) -> None:
    keys = Keys(rt.settings.redis.key_prefix)
    assert await rt.redis.zscore(keys.waiting("fake"), str(generation_id)) is None
    assert await rt.queue.position(generation_id, line="fake") is None


async def assert_succeeded_once(rt: Runtime, generation_id: int) -> Generation:
    gen = await row(rt, generation_id)
    assert gen.state is State.SUCCEEDED
    assert gen.error_code is None
    assert gen.result_key == result_key(generation_id)
    assert gen.finished_at is not None
    assert await rt.blobs.get(result_key(generation_id)) == PNG
    await assert_not_queued_or_running(rt, generation_id)
    return gen


# ---------------------------------------------------------------------------------------------
# Running a job twice


async def test_running_a_job_twice_in_a_row_runs_the_backend_once(rt: Runtime) -> None:
    gen = await submitted(rt)
    backend = FakeBackend()
    runner = runner_for(rt, backend)

    assert await runner.run(gen.id) == "succeeded"
    first = await assert_succeeded_once(rt, gen.id)
    assert await runner.run(gen.id) == "succeeded"

    assert backend.calls == 1
    again = await assert_succeeded_once(rt, gen.id)
    assert again.version == first.version
    assert again.finished_at == first.finished_at
    assert again.attempts == 0
    assert (await events(rt, gen.id)).count("finished") == 1


class ReadTogetherStore:
    """The real store, except that the first ``parties`` reads of a row wait for each other:
    concurrent runs all see the row as it was before any of them wrote."""

    def __init__(self, inner: Any, parties: int) -> None:
        self.inner = inner
        self.barrier = asyncio.Barrier(parties)
        self.waiting = parties

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, generation_id: int) -> Generation | None:
        gen = await self.inner.get(generation_id)
        if self.waiting > 0:
            self.waiting -= 1
            await asyncio.wait_for(self.barrier.wait(), 10)
        return gen


async def test_concurrent_runs_that_both_see_it_queued_run_the_backend_once(rt: Runtime) -> None:
    gen = await submitted(rt)
    backend = FakeBackend()
    runner = runner_for(rt, backend, store=ReadTogetherStore(rt.store, 2))

    results = await asyncio.gather(runner.run(gen.id), runner.run(gen.id))

    # The one that lost the start found the row running (or already ended): it leaves it alone.
    assert results.count("succeeded") == 1
    assert set(results) - {"succeeded"} <= {"skipped", RUNNING_ELSEWHERE}
    assert backend.calls == 1
    await assert_succeeded_once(rt, gen.id)
    assert (await events(rt, gen.id)).count("started") == 1


async def test_concurrent_runs_end_succeeded_once(rt: Runtime) -> None:
    gen = await submitted(rt)
    backend = FakeBackend()
    runner = runner_for(rt, backend)

    results = await asyncio.gather(runner.run(gen.id), runner.run(gen.id))

    assert set(results) <= {"succeeded", "skipped", RUNNING_ELSEWHERE}
    assert "succeeded" in results
    assert 1 <= backend.calls <= 2
    await assert_succeeded_once(rt, gen.id)


async def test_a_second_run_of_a_running_job_leaves_it_to_the_first(rt: Runtime) -> None:
    """arq runs a job again when its in-progress key expired, possibly while the first run still
    works: the second run finds the row ``running`` with a fresh heartbeat and leaves the job to
    the first one, without calling the service. The row succeeds once."""
    gen = await submitted(rt)
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    runner = runner_for(rt, backend)

    first = asyncio.create_task(runner.run(gen.id))
    while backend.calls < 1:
        await asyncio.sleep(0.005)
    assert (await row(rt, gen.id)).state is State.RUNNING
    assert await runner.run(gen.id) == RUNNING_ELSEWHERE
    assert backend.calls == 1
    backend.hold.set()

    assert await first == "succeeded"
    finished = await assert_succeeded_once(rt, gen.id)
    assert finished.attempts == 0


async def test_concurrent_writes_of_one_result_all_succeed(rt: Runtime) -> None:
    """What two runs of one generation in one worker process do at their end: write the same
    result key at once. Every write must succeed and the blob must be one whole image."""
    versions = [bytes([n]) * 100_000 for n in range(8)]
    for attempt in range(10):
        results = await asyncio.gather(
            *(rt.blobs.put(result_key(1), data) for data in versions), return_exceptions=True
        )
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        assert not errors, f"attempt {attempt}: {len(errors)} of 8 writes failed, e.g. {errors[0]}"
        assert await rt.blobs.get(result_key(1)) in versions, "the blob is a mix of two writes"


# ---------------------------------------------------------------------------------------------
# Cancelled rows


async def test_a_cancelled_job_never_reaches_the_backend(rt: Runtime) -> None:
    gen = await submitted(rt)
    cancelled = await rt.core.cancel(ACTOR, gen.id)
    assert cancelled.state is State.CANCELLED
    backend = FakeBackend()

    assert await runner_for(rt, backend).run(gen.id) == "cancelled"

    assert backend.calls == 0
    after = await row(rt, gen.id)
    assert after.state is State.CANCELLED
    assert after.error_code == "cancelled"
    assert after.version == cancelled.version
    assert "started" not in await events(rt, gen.id)
    await assert_not_queued_or_running(rt, gen.id)


async def test_a_job_cancelled_in_the_database_only_is_dropped_from_the_queue(rt: Runtime) -> None:
    """The cancel wrote the row but did not reach Redis (it died in between): the worker that
    picks the job up still does not run it, and takes it out of the waiting set."""
    gen = await submitted(rt)
    assert await rt.store.transition(gen.id, State.CANCELLED, error_code="cancelled") is not None
    assert await rt.queue.position(gen.id, line="fake") == 1
    backend = FakeBackend()

    assert await runner_for(rt, backend).run(gen.id) == "cancelled"

    assert backend.calls == 0
    await assert_not_queued_or_running(rt, gen.id)


class CancelAfterReadStore:
    """The real store; the first read of a row is followed by a cancel from elsewhere."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, generation_id: int) -> Generation | None:
        gen = await self.inner.get(generation_id)
        if not self.done:
            self.done = True
            assert await self.inner.transition(generation_id, State.CANCELLED) is not None
        return gen


async def test_a_job_cancelled_while_the_worker_picks_it_up_is_skipped(rt: Runtime) -> None:
    gen = await submitted(rt)
    backend = FakeBackend()

    result = await runner_for(rt, backend, store=CancelAfterReadStore(rt.store)).run(gen.id)

    assert result == "skipped"
    assert backend.calls == 0
    assert (await row(rt, gen.id)).state is State.CANCELLED
    await assert_not_queued_or_running(rt, gen.id)


# ---------------------------------------------------------------------------------------------
# Failures


async def test_a_backend_error_fails_the_job(rt: Runtime) -> None:
    gen = await submitted(rt)
    backend = FakeBackend(fail=True)

    assert await runner_for(rt, backend).run(gen.id) == "failed"

    after = await row(rt, gen.id)
    assert after.state is State.FAILED
    assert after.error_code == "backend_error"
    assert after.result_key is None
    assert after.finished_at is not None
    assert await rt.blobs.get(result_key(gen.id)) is None
    assert backend.calls == 1
    await assert_not_queued_or_running(rt, gen.id)


async def test_a_backend_slower_than_the_timeout_times_out(rt: Runtime) -> None:
    gen = await submitted(rt)
    backend = FakeBackend(hang=True)

    assert await runner_for(rt, backend, backend_timeout_s=0.2).run(gen.id) == "timed_out"

    after = await row(rt, gen.id)
    assert after.state is State.TIMED_OUT
    assert after.error_code == "timed_out"
    assert after.finished_at is not None
    assert backend.calls == 1
    assert backend.cancelled == 1, "the backend call was not cancelled"
    await assert_not_queued_or_running(rt, gen.id)


async def test_five_backend_failures_open_the_breaker_and_the_next_job_waits_in_its_place(
    rt: Runtime,
) -> None:
    backend = FakeBackend(fail=True)
    breaker = shared_breaker(rt)
    runner = runner_for(rt, backend, breaker=breaker, defer_slice_s=0.3)

    for attempt in range(5):
        gen = await submitted(rt)
        assert await runner.run(gen.id) == "failed"
        assert (await row(rt, gen.id)).error_code == "backend_error", attempt
    assert backend.calls == 5
    assert await breaker.state() == "open"

    # The next job meets the open breaker: it is not failed, it waits (here: for its slice, then
    # it is handed back to arq), queued, at its place, with no attempt burnt.
    first = await submitted(rt)
    second = await submitted(rt)
    with pytest.raises(Deferred):
        await runner.run(first.id)
    for gen, position in ((first, 1), (second, 2)):
        after = await row(rt, gen.id)
        assert (after.state, after.attempts, after.error_code) == (State.QUEUED, 0, None)
        assert await rt.queue.position(gen.id, line="fake") == position
    assert backend.calls == 5, "the open breaker let a call through"
    assert "waiting" in await events(rt, first.id)
    assert await rt.queue.backend_down("fake") is not None
    view = await rt.core.view(await row(rt, first.id))
    assert view.headline == "Queued · #1 in line · waiting for the service"
    assert view.note is not None and "will start when the service recovers" in view.note


async def test_a_waiting_job_starts_when_the_breaker_half_opens_and_its_probe_closes_it(rt: Runtime) -> None:
    breaker = shared_breaker(rt, fail_max=1, reset_s=0.3)
    failing = FakeBackend(fail=True)
    assert await runner_for(rt, failing, breaker=breaker).run((await submitted(rt)).id) == "failed"
    assert await breaker.state() == "open"

    healthy = FakeBackend()
    gen = await submitted(rt)
    # It waits while the breaker is open, then is the probe, succeeds and closes the breaker.
    assert await runner_for(rt, healthy, breaker=breaker).run(gen.id) == "succeeded"
    assert healthy.calls == 1
    assert await breaker.state() == "closed"
    assert await rt.queue.backend_down("fake") is None


async def test_in_half_open_only_one_call_of_all_workers_is_the_probe(rt: Runtime) -> None:
    """Two workers (two breakers on one Redis): while one probes, the other is refused."""
    first, second = shared_breaker(rt, fail_max=1, reset_s=0.05), shared_breaker(rt, fail_max=1, reset_s=0.05)
    admission = await first.admit()

    async def fail() -> None:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        await first.call(admission, fail)
    assert await second.state() == "open", "the other worker sees the opening"
    while await second.state() == "open":
        await asyncio.sleep(0.01)
    probe = await second.admit()
    assert probe.probe
    with pytest.raises(BreakerOpen):
        await first.admit()
    with pytest.raises(BreakerOpen):
        await second.admit()

    async def ok() -> str:
        return "fine"

    assert await second.call(probe, ok) == "fine"
    assert await first.state() == "closed"
    assert not (await first.admit()).probe


async def test_failures_of_several_workers_add_up(rt: Runtime) -> None:
    breakers = [shared_breaker(rt, fail_max=4) for _ in range(2)]

    async def fail() -> None:
        raise RuntimeError("down")

    for n in range(4):
        breaker = breakers[n % 2]
        with pytest.raises(RuntimeError):
            await breaker.call(await breaker.admit(), fail)
    assert await breakers[0].state() == "open"


async def test_a_cancelled_probe_gives_its_turn_back(rt: Runtime) -> None:
    breaker = shared_breaker(rt, fail_max=1, reset_s=0.05)

    async def fail() -> None:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        await breaker.call(await breaker.admit(), fail)
    while await breaker.state() == "open":
        await asyncio.sleep(0.01)
    probe = await breaker.admit()
    await breaker.release(probe)
    assert (await breaker.admit()).probe, "the released probe turn went to the next caller"


async def test_a_backend_that_hangs_opens_the_breaker_too(rt: Runtime) -> None:
    backend = FakeBackend(hang=True)
    breaker = shared_breaker(rt, fail_max=2)
    runner = runner_for(rt, backend, breaker=breaker, backend_timeout_s=0.05, defer_slice_s=0.1)
    for _ in range(2):
        assert await runner.run((await submitted(rt)).id) == "timed_out"
    assert await breaker.state() == "open"
    gen = await submitted(rt)
    with pytest.raises(Deferred):
        await runner.run(gen.id)
    assert (await row(rt, gen.id)).state is State.QUEUED
    assert backend.calls == 2


async def test_a_job_cancelled_while_it_waits_for_the_breaker_stops_waiting(rt: Runtime) -> None:
    breaker = shared_breaker(rt, fail_max=1)
    assert (
        await runner_for(rt, FakeBackend(fail=True), breaker=breaker).run((await submitted(rt)).id)
        == "failed"
    )
    gen = await submitted(rt)
    backend = FakeBackend()
    run = asyncio.create_task(runner_for(rt, backend, breaker=breaker).run(gen.id))
    while "waiting" not in await events(rt, gen.id):
        await asyncio.sleep(0.01)
    await rt.core.cancel(ACTOR, gen.id)
    assert await asyncio.wait_for(run, 10) == "cancelled"
    assert backend.calls == 0


async def test_a_job_stopped_while_it_waits_for_the_breaker_used_no_try(rt: Runtime) -> None:
    """Stopping the worker while a job waits for the breaker must not cost one of arq's tries:
    the job had not started (``generate`` gives the try back when the runner says so)."""
    breaker = shared_breaker(rt, fail_max=1)
    assert (
        await runner_for(rt, FakeBackend(fail=True), breaker=breaker).run((await submitted(rt)).id)
        == "failed"
    )
    gen = await submitted(rt)
    runner = runner_for(rt, FakeBackend(), breaker=breaker)
    run = asyncio.create_task(runner.run(gen.id))
    while "waiting" not in await events(rt, gen.id):
        await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert runner.waiting_for_backend(gen.id) is True
    assert runner.waiting_for_backend(gen.id) is False  # asked once, forgotten


async def test_a_job_waiting_for_the_breaker_is_set_aside_when_its_workspace_is_paused(rt: Runtime) -> None:
    admin = Actor("local", "local", "root", "Root", is_admin=True)
    breaker = shared_breaker(rt, fail_max=1, reset_s=0.3)
    assert (
        await runner_for(rt, FakeBackend(fail=True), breaker=breaker).run((await submitted(rt)).id)
        == "failed"
    )
    gen = await submitted(rt)
    backend = FakeBackend()
    run = asyncio.create_task(runner_for(rt, backend, breaker=breaker).run(gen.id))
    while "waiting" not in await events(rt, gen.id):
        await asyncio.sleep(0.01)
    assert await rt.core.pause(admin, paused=True) == 1
    assert await asyncio.wait_for(run, 10) in ("skipped", "paused")  # set aside, waiting or once admitted
    assert backend.calls == 0
    assert (await row(rt, gen.id)).state is State.QUEUED
    await rt.core.pause(admin, paused=False)
    assert await rt.queue.position(gen.id, line="fake") == 1  # back in its place


async def test_start_sets_aside_a_job_of_a_paused_workspace(rt: Runtime) -> None:
    gen = await submitted(rt)
    await rt.queue.pause("local", "local", True)
    assert await rt.queue.start(gen.id, ACTOR.member, 1, 1, workspace=("local", "local"), line="fake") == (
        "paused",
        [],
    )
    assert await rt.queue.position(gen.id, line="fake") is None
    assert await rt.redis.scard(rt.queue.keys.member_running(ACTOR.member)) == 0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Progress


async def test_progress_is_throttled_but_the_last_step_is_always_recorded(rt: Runtime) -> None:
    gen = await submitted(rt, steps=20)
    runner = runner_for(rt, FakeBackend(), progress_interval_s=10.0)
    writes = counted_progress_writes(runner)
    assert await runner.run(gen.id) == "succeeded"

    # the first report goes out at once, then nothing for 10 s but the last step
    assert [w["progress"]["step"] for w in writes] == [1, 20]
    assert "progress" in await events(rt, gen.id)  # the renderer was nudged
    after = await row(rt, gen.id)
    assert after.meta["progress"] == {"step": 20, "total": 20}
    assert after.meta["preview"] == {"key": preview_key(gen.id), "step": 20}
    assert await rt.blobs.get(preview_key(gen.id)) == b"preview 20"


async def test_without_throttling_every_step_is_recorded(rt: Runtime) -> None:
    gen = await submitted(rt, steps=20)
    runner = runner_for(rt, FakeBackend(), progress_interval_s=0.0)
    writes = counted_progress_writes(runner)
    assert await runner.run(gen.id) == "succeeded"
    assert [w["progress"]["step"] for w in writes] == list(range(1, 21))
    assert (await row(rt, gen.id)).meta["progress"] == {"step": 20, "total": 20}


async def test_a_late_progress_report_leaves_the_finished_row_alone(rt: Runtime) -> None:
    gen = await submitted(rt, steps=4)
    backend = FakeBackend()
    assert await runner_for(rt, backend).run(gen.id) == "succeeded"
    done = await row(rt, gen.id)
    kinds = await events(rt, gen.id)

    assert backend.progress is not None
    # a late report is refused, and tells the backend to stop
    with pytest.raises(JobStopped):
        await backend.progress(2, 4, b"late preview")
    with pytest.raises(JobStopped):
        await backend.progress(4, 4, None)

    after = await row(rt, gen.id)
    assert after.state is State.SUCCEEDED
    assert after.meta == done.meta
    assert after.version == done.version
    assert after.heartbeat_at == done.heartbeat_at
    assert await events(rt, gen.id) == kinds, "a late report published a progress event"


async def test_a_failing_progress_report_is_not_a_backend_failure(rt: Runtime) -> None:
    """Progress is the runner's own bookkeeping. When it cannot store a preview (here: a real
    filesystem error, ``previews`` is a file), the image the backend made must not be thrown
    away, the job must not be reported as ``backend_error``, and the breaker must not count it."""
    rt.blobs.root.mkdir(parents=True, exist_ok=True)
    (rt.blobs.root / "previews").write_bytes(b"not a directory")
    gen = await submitted(rt)
    backend = FakeBackend()
    breaker = shared_breaker(rt, fail_max=1)

    result = await runner_for(rt, backend, breaker=breaker).run(gen.id)

    after = await row(rt, gen.id)
    assert (result, after.error_code) == ("succeeded", None)
    assert await breaker.state() == "closed"
    await assert_succeeded_once(rt, gen.id)


async def test_a_cancel_while_the_backend_runs_stops_it_at_the_next_progress_report(rt: Runtime) -> None:
    gen = await submitted(rt, steps=4)
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    run = asyncio.create_task(runner_for(rt, backend).run(gen.id))
    while backend.calls < 1:
        await asyncio.sleep(0.005)
    await rt.core.cancel(ACTOR, gen.id)  # no arq worker here: only the row says "stop"
    backend.hold.set()
    assert await run == "cancelled"
    assert await rt.blobs.get(result_key(gen.id)) is None, "the image was not finished"
    after = await row(rt, gen.id)
    assert after.state is State.CANCELLED
    assert after.meta.get("progress") is None


async def test_an_interruption_on_arqs_last_try_fails_the_job_as_worker_lost(rt: Runtime) -> None:
    gen = await submitted(rt)
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    run = asyncio.create_task(runner_for(rt, backend).run(gen.id, last_try=True))
    while backend.calls < 1:
        await asyncio.sleep(0.005)
    run.cancel()  # the worker shuts down
    with pytest.raises(asyncio.CancelledError):
        await run
    after = await row(rt, gen.id)
    assert after.state is State.FAILED
    assert after.error_code == "worker_lost"
    await assert_not_queued_or_running(rt, gen.id)


async def test_an_interruption_before_the_ticket_reached_the_row_keeps_the_arq_ticket(rt: Runtime) -> None:
    gen = await submitted(rt)  # submit() alone: the row gets its ticket with the message
    assert (await row(rt, gen.id)).ticket is None
    ticket = gen.ticket
    assert ticket is not None
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    runner = runner_for(rt, backend)
    run = asyncio.create_task(runner.run(gen.id, ticket=ticket))
    while backend.calls < 1:
        await asyncio.sleep(0.005)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert (await row(rt, gen.id)).state is State.QUEUED
    assert await rt.redis.zscore(Keys(rt.settings.redis.key_prefix).waiting("fake"), str(gen.id)) == ticket


# ---------------------------------------------------------------------------------------------
# Timeouts: both end as timed_out, and the member reads what to do


class HangingResultBlobs:
    """The real blob store, except that storing a result never returns (a stuck disk)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def put(self, key: str, data: bytes) -> None:
        if key.startswith("results/"):
            await asyncio.Event().wait()
        await self.inner.put(key, data)

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)


async def assert_member_reads_timed_out(rt: Runtime, generation_id: int) -> None:
    gen = await row(rt, generation_id)
    assert (gen.state, gen.error_code) == (State.TIMED_OUT, "timed_out")
    view = await rt.core.view(gen)
    assert view.headline == "Took too long"
    assert view.error is not None
    assert view.error.what == "The job took longer than this server allows and was stopped."
    assert (
        view.error.todo == "Try again with a smaller request (for an image: fewer steps or a smaller size)."
    )


async def test_the_backend_timeout_reaches_the_member_as_timed_out(rt: Runtime) -> None:
    gen = await submitted(rt)
    assert await runner_for(rt, FakeBackend(hang=True), backend_timeout_s=0.1).run(gen.id) == "timed_out"
    await assert_member_reads_timed_out(rt, gen.id)


async def test_the_job_timeout_reaches_the_member_as_timed_out(rt: Runtime) -> None:
    gen = await submitted(rt)
    runner = GenerationRunner(
        store=rt.store,
        queue=rt.queue,
        blobs=HangingResultBlobs(rt.blobs),
        kinds=image_kinds(FakeBackend(), shared_breaker(rt), "fake"),
        backend_timeout_s=30.0,
        progress_interval_s=0.0,
        job_timeout_s=0.3,
    )
    assert await runner.run(gen.id) == "timed_out"
    await assert_member_reads_timed_out(rt, gen.id)
    await assert_not_queued_or_running(rt, gen.id)


async def test_a_made_image_is_not_a_timeout_while_its_bookkeeping_waits_for_redis(rt: Runtime) -> None:
    """Redis restarting just as an image is made: the breaker's verdict and the run time wait for
    it (here each for longer than the whole job timeout). The job timeout stops meanwhile: the
    member gets the image, not "timed out"; and it still runs while the image is stored."""
    gen = await submitted(rt)
    breaker = shared_breaker(rt)
    success = breaker._success

    async def verdict_waiting_for_redis(**kwargs: Any) -> Any:
        await asyncio.sleep(0.5)
        return await success(**kwargs)

    breaker._success = verdict_waiting_for_redis  # type: ignore[assignment]
    finished = rt.queue.finished

    async def end_waiting_for_redis(generation_id: int, **kwargs: Any) -> Any:
        # The end's round trip, which carries the run time and the member's place.
        await asyncio.sleep(0.5)
        return await finished(generation_id, **kwargs)

    runner = runner_for(rt, FakeBackend(), breaker=breaker, job_timeout_s=0.3)
    runner.queue.finished = end_waiting_for_redis  # type: ignore[method-assign]
    try:
        assert await runner.run(gen.id) == "succeeded"
    finally:
        del runner.queue.finished
    await assert_succeeded_once(rt, gen.id)
    assert await rt.queue.mean_runtime(FakeBackend.name) < rt.settings.worker.default_run_s

    # The clock goes on while the image is stored: a stuck store still times out.
    stuck = await submitted(rt)
    runner = runner_for(rt, FakeBackend(), breaker=breaker, job_timeout_s=0.3)
    runner.blobs = HangingResultBlobs(rt.blobs)
    assert await runner.run(stuck.id) == "timed_out"
    await assert_member_reads_timed_out(rt, stuck.id)


async def test_run_times_count_for_the_backend_setting_the_rows_carry(rt: Runtime) -> None:
    """The bot reads the ETA's mean run time under the row's backend setting (say
    ``mypkg.sd:make``), which need not be the backend object's own name."""
    gen, _ = await rt.core.submit(
        image_job(ACTOR, "general", ImageRequest("a fox", "", 64, 64, 2, 1), backend="mypkg.sd:make")
    )
    assert await rt.queue.mean_runtime("mypkg.sd:make") == rt.settings.worker.default_run_s
    assert await runner_for(rt, FakeBackend(), line="mypkg.sd:make").run(gen.id) == "succeeded"
    assert await rt.queue.mean_runtime("mypkg.sd:make") < rt.settings.worker.default_run_s
    assert await rt.redis.llen(rt.queue.keys.runtimes(FakeBackend.name)) == 0
