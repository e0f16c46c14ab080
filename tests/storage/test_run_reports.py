"""``record_runs``: many running jobs' progress reports and heartbeats in one statement, on SQLite and
PostgreSQL (the ``db_url`` fixture), each report fenced by its row's state and attempt."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from bench.counting import Counts
from bot.models import State
from bot.ports import RunReport
from storage import db
from storage.store import RUNS_SLICE, TortoiseGenerationStore
from tests.storage.test_merge_concurrency import _row_in, get, new_generation, reference_merge


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[TortoiseGenerationStore]:
    await db.connect(db_url)
    try:
        yield TortoiseGenerationStore()
    finally:
        await db.close()


async def test_one_statement_writes_each_running_row_its_own_patch_and_refuses_the_others(
    store: TortoiseGenerationStore,
) -> None:
    running = [await _row_in(store, State.RUNNING) for _ in range(6)]
    for gen in running:  # something for the deep merge to keep
        await store.update_meta(gen.id, {"progress": {"step": 0, "total": 9, "unit": "it"}, "keep": gen.id})
    before = {gen.id: await get(store, gen.id) for gen in running}
    finished = await _row_in(store, State.SUCCEEDED)
    queued = await store.create(new_generation())
    taken_over = running[5]  # its run is attempt 0; the row's is now attempt 1
    assert await store.transition(taken_over.id, State.QUEUED, retry=True, attempt=0) is not None
    assert await store.transition(taken_over.id, State.RUNNING, attempt=1) is not None
    taken_over = await get(store, taken_over.id)

    patches = {gen.id: {"progress": {"step": gen.id % 7, "total": 9}, "waiting": None} for gen in running[:4]}
    reports = [RunReport(gid, 0, patch) for gid, patch in patches.items()]
    reports.append(RunReport(running[4].id, 0))  # a heartbeat alone
    reports.append(RunReport(taken_over.id, 0, {"progress": {"step": 5, "total": 9}}))
    reports.append(RunReport(finished.id, 0, {"progress": {"step": 5, "total": 9}}))
    reports.append(RunReport(queued.id, 0, {"progress": {"step": 5, "total": 9}}))

    counts = Counts()
    with counts.counting():
        written = await store.record_runs(reports)

    assert counts.statements == 1
    assert written == {(gid, 0) for gid in patches} | {(running[4].id, 0)}
    for gid, patch in patches.items():
        after = await get(store, gid)
        assert after.meta == reference_merge(before[gid].meta, patch)
        assert after.version == before[gid].version + 1
        assert after.heartbeat_at is not None and after.heartbeat_at > before[gid].heartbeat_at  # type: ignore[operator]
    beaten = await get(store, running[4].id)
    assert beaten.meta == before[running[4].id].meta
    assert beaten.version == before[running[4].id].version, "a heartbeat changes nothing a member sees"
    assert beaten.heartbeat_at > before[running[4].id].heartbeat_at  # type: ignore[operator]
    for untouched in (taken_over, finished, queued):
        assert await get(store, untouched.id) == untouched


async def test_more_reports_than_one_statement_takes_are_all_written(store: TortoiseGenerationStore) -> None:
    gen = await _row_in(store, State.RUNNING)
    others = [await _row_in(store, State.RUNNING) for _ in range(3)]
    # Reports of rows that do not exist fill the slices: they are refused, and cost no row.
    reports = [RunReport(10**9 + n, 0, {"progress": {"step": n}}) for n in range(RUNS_SLICE + 10)]
    reports += [RunReport(o.id, 0, {"progress": {"step": 1, "total": 1}}) for o in others]
    reports.append(RunReport(gen.id, 0, {"progress": {"step": 2, "total": 2}}))

    counts = Counts()
    with counts.counting():
        written = await store.record_runs(reports)

    assert counts.statements == 2
    assert written == {(o.id, 0) for o in others} | {(gen.id, 0)}
    assert (await get(store, gen.id)).meta["progress"] == {"step": 2, "total": 2}


async def test_nothing_to_write_is_no_statement(store: TortoiseGenerationStore) -> None:
    counts = Counts()
    with counts.counting():
        assert await store.record_runs([]) == set()
    assert counts.statements == 0
