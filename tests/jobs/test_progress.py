"""The progress writer (:mod:`jobs.progress`): the reports and heartbeats of a worker's running jobs
written together, on SQLite and PostgreSQL (``rt_any``) and the run's own Redis. Statements are
counted (:mod:`bench.counting`), never timed."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bench.counting import Counts
from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.models import Generation, State
from bot.ports import RunReport
from jobs.progress import ProgressNotWritten, ProgressWriter, compose
from tests.conftest import make_settings
from tests.faults.harness import wait_until
from tests.jobs.test_runner import FakeBackend, events, row, runner_for, submitted
from tests.storage.test_merge_concurrency import reference_merge

JOBS = 10


@pytest_asyncio.fixture
async def rt_any(
    redis_server: EmbeddedRedis, db_url: str, tmp_path: Path, redis: Redis
) -> AsyncIterator[Runtime]:
    async with runtime(make_settings(redis_server.url, db_url, tmp_path)) as value:
        await value.core.check_tickets()
        yield value


async def running_rows(rt: Runtime, n: int) -> list[Generation]:
    """``n`` rows as their runs leave them once started: ``running`` at attempt 0."""
    rows = []
    for _ in range(n):
        gen = await submitted(rt)
        started = await rt.store.transition(gen.id, State.RUNNING, attempt=0)
        assert started is not None
        rows.append(started)
    return rows


async def taken_over(rt: Runtime, generation_id: int) -> None:
    """What the sweep and the worker that takes a job over leave: the row running at attempt 1."""
    assert await rt.store.transition(generation_id, State.QUEUED, retry=True, attempt=0) is not None
    assert await rt.store.transition(generation_id, State.RUNNING, attempt=1) is not None


def updates(counts: Counts) -> int:
    return counts.sql["UPDATE generations"]


# ---------------------------------------------------------------------------------------------
# The writer


async def test_reports_made_at_once_are_one_statement_and_a_superseded_run_alone_is_refused(
    rt_any: Runtime,
) -> None:
    rt = rt_any
    gens = await running_rows(rt, JOBS)
    victim = gens[3]
    await taken_over(rt, victim.id)
    writer = ProgressWriter(rt.store, rt.queue)

    counts = Counts()
    with counts.counting():
        results = await asyncio.gather(
            *(writer.report(g.id, 0, {"progress": {"step": 1, "total": 4}}) for g in gens),
            *(writer.beat(g.id, 0) for g in gens),
        )

    assert counts.sql == {"UPDATE generations": 1}, counts.sql
    assert results == [g.id != victim.id for g in gens] * 2
    for g in gens:
        after = await row(rt, g.id)
        assert after.meta.get("progress") == (None if g is victim else {"step": 1, "total": 4})
    # Each written row's renderer is nudged, the refused one's is not.
    await wait_until(lambda: events(rt, gens[-1].id), "the progress events", 10, every=0.01)
    for g in gens:
        assert ("progress" in await events(rt, g.id)) is (g is not victim)


async def test_many_jobs_reporting_concurrently_end_with_their_last_patch_in_fewer_statements(
    rt_any: Runtime,
) -> None:
    rt = rt_any
    gens = await running_rows(rt, JOBS)
    writer = ProgressWriter(rt.store, rt.queue)
    steps = 8

    async def job(gen: Generation) -> None:
        for step in range(1, steps + 1):
            patch = {"progress": {"step": step, "total": steps}, "text": f"{gen.id}: {step}"}
            assert await writer.report(gen.id, 0, patch)
            await asyncio.sleep(0)  # a job does some work between two reports

    counts = Counts()
    with counts.counting():
        await asyncio.gather(*(job(g) for g in gens))

    reports = JOBS * steps
    assert updates(counts) == counts.statements < reports / 2, counts.sql
    for g in gens:
        after = await row(rt, g.id)
        assert after.meta["progress"] == {"step": steps, "total": steps}
        assert after.meta["text"] == f"{g.id}: {steps}"
        assert after.version == g.version + steps, "every report was written, none dropped"
    # One pipelined XADD per write at most: never one round trip per report.
    assert counts.round_trips <= updates(counts), counts.redis


async def test_two_reports_of_one_run_in_one_write_merge_the_later_winning(rt_any: Runtime) -> None:
    rt = rt_any
    (gen,) = await running_rows(rt, 1)
    await rt.store.update_meta(gen.id, {"preview": {"key": "previews/a.jpg", "step": 1}, "waiting": "#2"})
    writer = ProgressWriter(rt.store, rt.queue)

    counts = Counts()
    with counts.counting():
        blocker = asyncio.create_task(writer.beat(gen.id, 0))  # in flight: the next ones wait for it
        while not writer._writing or writer._writes:
            await asyncio.sleep(0)
        results = await asyncio.gather(
            writer.report(gen.id, 0, {"progress": {"step": 1, "total": 3}, "waiting": "#1"}),
            writer.report(gen.id, 0, {"progress": {"step": 2, "total": 3}, "waiting": None}),
            writer.beat(gen.id, 0),
        )
        assert await blocker

    assert list(results) == [True, True, True]
    assert updates(counts) == 2, "the one in flight, then the three merged in one"
    after = await row(rt, gen.id)
    assert after.meta["progress"] == {"step": 2, "total": 3}
    assert "waiting" not in after.meta
    assert after.meta["preview"] == {"key": "previews/a.jpg", "step": 1}


async def test_reports_that_one_patch_cannot_hold_land_in_order(rt_any: Runtime) -> None:
    """A preview deleted, then a new one merged in: applied in turn, the new preview has none of
    the old one's keys; one merged patch could not say that, so the second goes in the next write."""
    rt = rt_any
    (gen,) = await running_rows(rt, 1)
    await rt.store.update_meta(gen.id, {"preview": {"key": "previews/a.jpg", "step": 1}})
    writer = ProgressWriter(rt.store, rt.queue)

    counts = Counts()
    with counts.counting():
        results = await asyncio.gather(
            writer.report(gen.id, 0, {"preview": None}),
            writer.report(gen.id, 0, {"preview": {"step": 3}}),
            writer.report(gen.id, 0, {"preview": {"at": "end"}}),
        )

    assert list(results) == [True, True, True]
    assert updates(counts) == 2, "the deletion, then the two that merge"
    assert (await row(rt, gen.id)).meta["preview"] == {"step": 3, "at": "end"}


class FailingWrites:
    """The real store, except that its batched writes fail while ``failing`` (a database that
    refuses them: the runner's other statements still go through)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failing = True
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def record_runs(self, reports: Sequence[RunReport]) -> set[tuple[int, int]]:
        if self.failing:
            self.failed += 1
            raise ConnectionRefusedError("the database refused the progress write")
        written: set[tuple[int, int]] = await self.inner.record_runs(reports)
        return written


async def test_a_failed_write_tells_its_reports_and_the_next_write_goes_on(rt_any: Runtime) -> None:
    rt = rt_any
    gens = await running_rows(rt, 3)
    store = FailingWrites(rt.store)
    writer = ProgressWriter(store, rt.queue)

    failed = await asyncio.gather(
        *(writer.report(g.id, 0, {"progress": {"step": 1, "total": 2}}) for g in gens), return_exceptions=True
    )
    assert all(isinstance(f, ProgressNotWritten) for f in failed), failed
    assert store.failed == 1, "one write for the three"

    store.failing = False
    again = [writer.report(g.id, 0, {"progress": {"step": 2, "total": 2}}) for g in gens]
    assert await asyncio.gather(*again) == [True] * 3
    for g in gens:
        assert (await row(rt, g.id)).meta["progress"] == {"step": 2, "total": 2}


# ---------------------------------------------------------------------------------------------
# Through the runner: jobs of one worker


async def test_jobs_of_one_runner_share_their_writes_and_only_the_taken_over_one_stops(
    rt_any: Runtime,
) -> None:
    rt = rt_any
    gens = [await submitted(rt, steps=6) for _ in range(JOBS)]
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    runner = runner_for(rt, backend)
    runs = [asyncio.create_task(runner.run(g.id)) for g in gens]
    await wait_until(lambda: backend.calls == JOBS, "every job to call the service", 20, every=0.01)
    victim = gens[4]
    await taken_over(rt, victim.id)  # its worker was thought dead: another runs it now
    taken = await row(rt, victim.id)

    counts = Counts()
    with counts.counting():
        backend.hold.set()
        outcomes = await asyncio.gather(*runs)

    assert outcomes == ["superseded" if g is victim else "succeeded" for g in gens]
    after = await row(rt, victim.id)
    assert (after.state, after.attempts, after.meta) == (State.RUNNING, 1, taken.meta), "left to its new run"
    for g in gens:
        if g is not victim:
            done = await row(rt, g.id)
            assert done.state is State.SUCCEEDED
            assert done.meta["progress"] == {"step": 6, "total": 6}
    # 9 jobs x 6 reports and the victim's refused one; each job's start and end are UPDATEs too.
    reports = (JOBS - 1) * 6 + 1
    assert updates(counts) - 2 * (JOBS - 1) < reports, counts.sql


async def test_a_failing_progress_write_does_not_fail_the_jobs(rt_any: Runtime) -> None:
    rt = rt_any
    gens = [await submitted(rt, steps=3) for _ in range(4)]
    store = FailingWrites(rt.store)
    runner = runner_for(rt, FakeBackend(), store=store)

    outcomes = await asyncio.gather(*(runner.run(g.id) for g in gens))

    assert outcomes == ["succeeded"] * 4
    assert store.failed >= 1
    for g in gens:
        done = await row(rt, g.id)
        assert (done.state, done.error_code) == (State.SUCCEEDED, None)
        assert "progress" not in done.meta


# ---------------------------------------------------------------------------------------------
# compose: one patch for two


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["null", "int", "str", "obj", "obj"] if depth < 3 else ["null", "int", "str"])
    if kind == "obj":
        return {rng.choice("abcd"): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return {"null": None, "int": rng.randint(0, 3), "str": rng.choice(["x", "y"])}[kind]


@pytest.mark.parametrize("seed", range(5))
def test_compose_does_what_the_two_patches_do_in_turn(seed: int) -> None:
    rng = random.Random(seed)
    composed = refused = 0
    for _ in range(400):
        doc, first, later = (random_json(rng, 1) or {} for _ in range(3))
        if not isinstance(first, dict) or not isinstance(later, dict):
            continue
        both = compose(first, later)
        if both is None:
            refused += 1
            continue
        composed += 1
        in_turn = reference_merge(reference_merge(doc, first), later)
        assert json.dumps(reference_merge(doc, both), sort_keys=True) == json.dumps(in_turn, sort_keys=True)
    assert composed > 100 and refused > 0
