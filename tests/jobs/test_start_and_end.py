"""A job's first and last Redis steps, each one round trip, against a real Redis: the pause
check, the breaker's leave and the start (``RedisJobQueue.admit_and_start``, one script), and the
end, its run time and the release of its member's place (``RedisJobQueue.finished``, one
pipeline); and the row's end with the result's text (``transition`` with ``meta``, one statement)."""

from __future__ import annotations

from bot.app import Runtime
from bot.models import State
from jobs.backends.base import ImageRequest
from jobs.breaker import Breaker, BreakerKeys
from jobs.constants import Keys
from jobs.queue import Opened
from tests.image_jobs import image_job
from tests.jobs.test_runner import ACTOR

LINE = "fake"
MEMBER = "local:alice"
WORKSPACE = ("local", "w1")


def breaker_of(rt: Runtime) -> Breaker:
    return Breaker(
        rt.redis,
        BreakerKeys.of(Keys(rt.settings.redis.key_prefix), LINE),
        fail_max=5,
        reset_s=60,
        probe_ttl_s=30,
    )


async def test_admit_and_start_pauses_refuses_or_starts_as_its_three_steps_did(rt: Runtime) -> None:
    queue, breaker = rt.queue, breaker_of(rt)
    first, _ = await queue.submit(1, line=LINE)
    second, _ = await queue.submit(2, line=LINE)
    running = queue.keys.member_running(MEMBER)

    async def open_job(generation_id: int, ticket: int) -> Opened:
        return await queue.admit_and_start(
            generation_id, MEMBER, 1, ticket, workspace=WORKSPACE, line=LINE, breaker=breaker
        )

    # Its workspace is paused: nothing is written, nothing asked of the breaker.
    await queue.pause(*WORKSPACE, True)
    await rt.redis.set(breaker.keys.tripped, 1)
    opened = await open_job(1, first)
    assert opened.paused and opened.admission is None
    assert not await rt.redis.exists(breaker.keys.probe), "no probe taken"
    assert await queue.waiting(LINE) == [1, 2] and not await rt.redis.exists(running)
    await queue.pause(*WORKSPACE, False)

    # The breaker is open: refused for as long as it stays open, and nothing is written.
    await rt.redis.set(breaker.keys.open, 1, px=5000)
    opened = await open_job(1, first)
    assert not opened.paused and opened.admission is None
    assert 0 < opened.retry_in <= 5
    assert await queue.waiting(LINE) == [1, 2] and not await rt.redis.exists(running)

    # Half-open: the head job is the probe, and starts.
    await rt.redis.delete(breaker.keys.open)
    opened = await open_job(1, first)
    admission = opened.admission
    assert admission is not None and admission.probe
    assert await rt.redis.get(breaker.keys.probe) == admission.probe_token.encode()
    assert opened.started == (True, [])
    assert await queue.waiting(LINE) == [2]
    assert await rt.redis.smembers(running) == {b"1"}

    # Closed again: a normal call; the member runs one already, so it is held, its ticket kept.
    await rt.redis.delete(breaker.keys.tripped, breaker.keys.probe)
    await rt.redis.set("arq:in-progress:gen:1", 1)  # job 1 runs
    opened = await open_job(2, second)
    admission = opened.admission
    assert admission is not None and not admission.probe
    assert opened.started == (None, [])
    assert await queue.waiting(LINE) == []
    assert await rt.redis.zscore(queue.keys.member_held(MEMBER), "2") == second


async def test_finished_ends_records_the_run_time_and_frees_the_place(rt: Runtime) -> None:
    queue = rt.queue
    await queue.submit(1, line=LINE)
    await rt.redis.sadd(queue.keys.member_running(MEMBER), "1")
    await rt.redis.zadd(queue.keys.member_held(MEMBER), {"2": 7})

    held = await queue.finished(1, line=LINE, runtime=1.5, release=(MEMBER, 1))
    assert held == (2, 7), "the member's oldest held job may start"
    assert await queue.waiting(LINE) == []
    assert not await rt.redis.exists(queue.keys.member_running(MEMBER))
    assert await rt.redis.lrange(queue.keys.runtimes(LINE), 0, -1) == [b"1.500"]
    last = (await rt.redis.xrevrange(queue.keys.events, count=1))[0][1]
    assert last == {b"id": b"1", b"kind": b"finished"}

    # Without them: the end alone; the run times and the places are not touched.
    await rt.redis.sadd(queue.keys.member_running(MEMBER), "3")
    assert await queue.finished(3, line=LINE) is None
    assert await rt.redis.smembers(queue.keys.member_running(MEMBER)) == {b"3"}
    assert await rt.redis.llen(queue.keys.runtimes(LINE)) == 1


async def test_an_end_with_a_text_writes_it_only_with_the_transition(rt: Runtime) -> None:
    gen, _ = await rt.core.submit(
        image_job(ACTOR, "general", ImageRequest("a fox", "", 64, 64, 2, 1), backend=LINE)
    )
    started = await rt.store.transition(gen.id, State.RUNNING, attempt=gen.attempts)
    assert started is not None
    await rt.store.update_meta(gen.id, {"progress": {"step": 2, "total": 2}})

    # A run that was taken over (another attempt) writes neither the end nor the text.
    assert (
        await rt.store.transition(gen.id, State.SUCCEEDED, attempt=gen.attempts + 1, meta={"text": "x"})
        is None
    )
    row = await rt.store.get(gen.id)
    assert row is not None and row.state is State.RUNNING and "text" not in row.meta

    done = await rt.store.transition(gen.id, State.SUCCEEDED, attempt=gen.attempts, meta={"text": "done"})
    assert done is not None and done.state is State.SUCCEEDED
    assert done.meta["text"] == "done"
    assert done.meta["progress"] == {"step": 2, "total": 2}, "merged into meta, not over it"
    assert done.version > started.version
