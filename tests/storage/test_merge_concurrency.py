"""Merge updates and guarded transitions under real concurrency, on SQLite and PostgreSQL.

No mocks: every test runs against a migrated database (the ``db_url`` fixture, SQLite then
PostgreSQL), and the concurrency test runs several OS processes, each with its own connection(s),
writing to one row at once. A read-modify-write in Python would lose keys here; so would a merge
that is not one atomic statement.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.models import TERMINAL, Actor, Generation, NewGeneration, State
from bot.ports import RowUpdate
from jobs.backends.base import ImageRequest
from storage import db
from storage.models import GenerationRow
from storage.store import TortoiseGenerationStore
from tests.image_jobs import image_job

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
UPDATES_PER_PROCESS = 250
TOTAL_UPDATES = PROCESSES * UPDATES_PER_PROCESS


def new_generation(user: str = "u1") -> NewGeneration:
    return image_job(
        actor=Actor(platform="local", workspace="w", user_id=user, display_name=user),
        channel="general",
        options=ImageRequest(prompt="a red fox", negative="", width=512, height=512, steps=8, seed=1),
        backend="demo",
    )


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[TortoiseGenerationStore]:
    await db.connect(db_url)
    try:
        yield TortoiseGenerationStore()
    finally:
        await db.close()


def canonical(value: Any) -> str:
    """Type-strict comparison form (``True`` and ``1`` differ, key order does not)."""
    return json.dumps(value, sort_keys=True)


def reference_merge(target: Any, patch: Any) -> Any:
    """RFC 7396, section 2, as written."""
    if isinstance(patch, dict):
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = reference_merge(result.get(key), value)
        return result
    return patch


async def get(store: TortoiseGenerationStore, generation_id: int) -> Generation:
    gen = await store.get(generation_id)
    assert gen is not None
    return gen


# ---------------------------------------------------------------------------------------------
# 1,000 concurrent merges from several processes


async def _spawn_writer(
    db_url: str, generation_id: int, first: int, many: int | None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.storage.merge_writer",
        db_url,
        str(generation_id),
        str(first),
        str(UPDATES_PER_PROCESS),
        *([] if many is None else [str(many)]),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _run_writers(db_url: str, generation_id: int, many: int | None = None) -> list[dict[str, Any]]:
    """Run the writer processes on ``generation_id``; with ``many``, every other one of them
    patches that row and ``many`` in batches (:meth:`update_many`), the rest only the first row,
    in single merges."""
    procs = [
        await _spawn_writer(db_url, generation_id, p * UPDATES_PER_PROCESS, many if p % 2 else None)
        for p in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if line.strip() != b"ready":
                _out, err = await proc.communicate()
                pytest.fail(f"writer did not start: {line!r} {err.decode()[-2000:]}")
        for proc in procs:  # the start signal, as close to simultaneous as a pipe allows
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        await asyncio.gather(*(proc.stdin.drain() for proc in procs if proc.stdin is not None))
        reports = []
        for proc in procs:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()[-2000:]
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
        return reports
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_concurrent_merges_from_several_processes_lose_no_key(
    store: TortoiseGenerationStore, db_url: str
) -> None:
    gen = await store.create(new_generation())
    await store.update_message(gen.id, {"platform": "local", "refs": {"seed": True}})
    before = await get(store, gen.id)

    reports = await _run_writers(db_url, gen.id)

    errors = [e for r in reports for e in r["errors"]]
    assert not errors, f"{len(errors)} of {TOTAL_UPDATES} merges failed, e.g. {errors[:3]}"
    assert sum(r["ok"] for r in reports) == TOTAL_UPDATES
    after = await get(store, gen.id)
    refs = after.message["refs"]
    missing_nested = [i for i in range(TOTAL_UPDATES) if refs.get(f"k{i}") != i]
    missing_top = [i for i in range(TOTAL_UPDATES) if after.message.get(f"top{i}") != i]
    assert not missing_nested, f"{len(missing_nested)} nested keys lost, e.g. {missing_nested[:10]}"
    assert not missing_top, f"{len(missing_top)} top-level keys lost, e.g. {missing_top[:10]}"
    # the keys that were there before every writer started survive too
    assert refs["seed"] is True
    assert after.message["platform"] == "local"
    assert len(refs) == TOTAL_UPDATES + 1
    assert len(after.message) == TOTAL_UPDATES + 2
    assert after.version == before.version + TOTAL_UPDATES
    assert after.meta == before.meta
    assert after.state is State.QUEUED


# ---------------------------------------------------------------------------------------------
# RFC 7396 semantics, the same on both databases

#: (target, patch, expected): RFC 7396 appendix A (the cases with an object on both sides),
#: then the cases genbot relies on.
RFC_CASES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    # nested merge keeps siblings at every depth
    (
        {"refs": {"discord": {"id": "1", "token": "t"}, "slack": {"ts": "2"}}, "x": 1},
        {"refs": {"discord": {"token": None, "edited": True}}},
        {"refs": {"discord": {"id": "1", "edited": True}, "slack": {"ts": "2"}}, "x": 1},
    ),
    # deleting a key that is not there is a no-op; deleting a whole subtree
    ({"a": 1}, {"zz": None}, {"a": 1}),
    ({"a": {"b": {"c": 1}}, "d": 2}, {"a": None}, {"d": 2}),
    # arrays are replaced, never merged, and keep their nulls and nested objects as they are
    ({"a": [1, 2, 3]}, {"a": [4]}, {"a": [4]}),
    ({"a": [1]}, {"a": [None, {"x": None}, []]}, {"a": [None, {"x": None}, []]}),
    ({"a": [1]}, {"a": []}, {"a": []}),
    # an object replaces a scalar or an array; nulls inside a new object are dropped
    ({"a": 5}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ({"a": [1]}, {"a": {"b": 1, "c": None}}, {"a": {"b": 1}}),
    # an empty object merges nothing; an empty patch changes nothing
    ({"a": {"b": 1}}, {"a": {}}, {"a": {"b": 1}}),
    ({"a": 1}, {"a": {}}, {"a": {}}),
    ({"a": 1}, {}, {"a": 1}),
    # scalar types survive the round trip
    (
        {},
        {"t": True, "f": False, "i": 2**53 + 1, "n": -7, "s": "x", "h": 0.5, "e": ""},
        {"t": True, "f": False, "i": 2**53 + 1, "n": -7, "s": "x", "h": 0.5, "e": ""},
    ),
    # keys and strings that need quoting
    (
        {"a.b": 1},
        {"": 1, "a.b": {"c": "d"}, "{x,y}": 'q"uote', "ключ": "значение ✓", "a b": "line\nbreak"},
        {"": 1, "a.b": {"c": "d"}, "{x,y}": 'q"uote', "ключ": "значение ✓", "a b": "line\nbreak"},
    ),
]


async def test_merge_follows_rfc7396(store: TortoiseGenerationStore) -> None:
    gen = await store.create(new_generation())
    wrong = []
    for target, patch, expected in RFC_CASES:
        assert canonical(reference_merge(target, patch)) == canonical(expected)  # the table itself
        for column in ("message", "meta"):
            await GenerationRow.filter(id=gen.id).update(**{column: target})
            before = await get(store, gen.id)
            if column == "message":
                await store.update_message(gen.id, patch)
            else:
                await store.update_meta(gen.id, patch)
            after = await get(store, gen.id)
            got = after.message if column == "message" else after.meta
            other_before = before.meta if column == "message" else before.message
            other_after = after.meta if column == "message" else after.message
            if canonical(got) != canonical(expected):
                wrong.append((column, target, patch, expected, got))
            assert canonical(other_after) == canonical(other_before)
            assert after.version == before.version + 1
    assert not wrong, "\n".join(f"{c}: {t} + {p}: expected {e}, got {g}" for c, t, p, e, g in wrong)


async def test_a_batch_of_merges_follows_rfc7396_row_by_row(store: TortoiseGenerationStore) -> None:
    """:meth:`update_many`: one statement, one row per case, each merging its own patch into
    ``meta`` and (every other row) ``message``; a None patch leaves its column as it was."""
    rows = [await store.create(new_generation()) for _ in RFC_CASES]
    for gen, (target, _patch, _expected) in zip(rows, RFC_CASES, strict=True):
        await GenerationRow.filter(id=gen.id).update(meta=target, message={"keep": [1, {"x": None}]})
    before = {gen.id: await get(store, gen.id) for gen in rows}
    await store.update_many(
        [
            RowUpdate(gen.id, message=patch if n % 2 else None, meta=patch)
            for n, (gen, (_target, patch, _expected)) in enumerate(zip(rows, RFC_CASES, strict=True))
        ]
    )
    wrong = []
    for n, (gen, (target, patch, expected)) in enumerate(zip(rows, RFC_CASES, strict=True)):
        after = await get(store, gen.id)
        if canonical(after.meta) != canonical(expected):
            wrong.append(("meta", target, patch, expected, after.meta))
        message = reference_merge({"keep": [1, {"x": None}]}, patch) if n % 2 else {"keep": [1, {"x": None}]}
        if canonical(after.message) != canonical(message):
            wrong.append(
                ("message", {"keep": [1, {"x": None}]}, patch if n % 2 else None, message, after.message)
            )
        assert after.version == before[gen.id].version + 1
        assert after.state is State.QUEUED
    assert not wrong, "\n".join(f"{c}: {t} + {p}: expected {e}, got {g}" for c, t, p, e, g in wrong)


async def test_a_batch_patching_one_row_twice_applies_both_in_order(store: TortoiseGenerationStore) -> None:
    a, b = await store.create(new_generation()), await store.create(new_generation())
    await store.update_many(
        [
            RowUpdate(a.id, meta={"x": 1, "y": {"z": 1}}),
            RowUpdate(b.id, meta={"b": True}),
            RowUpdate(a.id, meta={"x": 2, "y": {"w": 2}}),
            RowUpdate(a.id, message={"m": 1}),
        ]
    )
    after_a, after_b = await get(store, a.id), await get(store, b.id)
    assert after_a.meta == {**a.meta, "x": 2, "y": {"z": 1, "w": 2}}
    assert after_a.message == {**a.message, "m": 1}
    assert after_a.version == a.version + 3
    assert after_b.meta == {**b.meta, "b": True} and after_b.version == b.version + 1


async def test_a_fenced_store_of_what_a_message_shows_is_refused_once_another_stored_its_own(
    store: TortoiseGenerationStore,
) -> None:
    """A renderer's store of its digest is made only while the row still has the digest it read;
    else the row's digest is cleared (nothing else of the patch is written) and the id returned.
    Unfenced updates in the same statement are not concerned."""
    kept, moved, fresh, plain = [await store.create(new_generation()) for _ in range(4)]
    await store.update_meta(kept.id, {"rendered": "a"})
    await store.update_meta(moved.id, {"rendered": "b2"})  # another renderer's, since "b" was read
    refused = await store.update_many(
        [
            RowUpdate(kept.id, meta={"rendered": "a2", "shown_place": 3}, fenced=True, rendered_was="a"),
            RowUpdate(moved.id, meta={"rendered": "b3", "shown_place": 4}, fenced=True, rendered_was="b"),
            RowUpdate(fresh.id, meta={"rendered": "c"}, fenced=True, rendered_was=None),
            RowUpdate(plain.id, meta={"rendered": "d"}),
        ]
    )
    assert refused == {moved.id}
    rows = {gen.id: (await get(store, gen.id)).meta for gen in (kept, moved, fresh, plain)}
    assert rows[kept.id]["rendered"] == "a2" and rows[kept.id]["shown_place"] == 3
    assert "rendered" not in rows[moved.id] and "shown_place" not in rows[moved.id]
    assert rows[fresh.id]["rendered"] == "c"
    assert rows[plain.id]["rendered"] == "d"
    # a fence on a row whose digest was cleared (None) holds against one stored since
    assert await store.update_many([RowUpdate(moved.id, meta={"rendered": "e"}, fenced=True)]) == set()
    assert (await get(store, moved.id)).meta["rendered"] == "e"


async def test_concurrent_batches_from_several_processes_lose_no_key(
    store: TortoiseGenerationStore, db_url: str
) -> None:
    """Writers patching the same rows at once: half of them both rows in batches of
    :meth:`update_many` (as a renderer's round writes), the other half the first row in single
    merges. Every key of every writer is in the rows it patched."""
    first = await store.create(new_generation())
    second = await store.create(new_generation())
    reports = await _run_writers(db_url, first.id, many=second.id)
    errors = [e for r in reports for e in r["errors"]]
    assert not errors, f"{len(errors)} of {TOTAL_UPDATES} merges failed, e.g. {errors[:3]}"
    batched = [
        i
        for p in range(1, PROCESSES, 2)
        for i in range(p * UPDATES_PER_PROCESS, (p + 1) * UPDATES_PER_PROCESS)
    ]
    for gen, keys, was in (
        (await get(store, first.id), range(TOTAL_UPDATES), first),
        (await get(store, second.id), batched, second),
    ):
        refs = gen.message["refs"]
        missing = [i for i in keys if refs.get(f"k{i}") != i or gen.message.get(f"top{i}") != i]
        assert not missing, f"row {gen.id}: {len(missing)} keys lost, e.g. {missing[:10]}"
        assert len(refs) == len(keys)
        assert gen.version == was.version + len(keys)


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.randrange(-1000, 1000)
    if kind == 1:
        return rng.choice(["", "x", "fox", "ü", 'a"b'])
    if kind == 2:
        return rng.choice([True, False])
    if kind == 3:
        return rng.choice([0.5, -2.25, 1024.125])
    if kind == 4:
        return [rng.choice([1, "a", None, {"k": None}]) for _ in range(rng.randrange(3))]
    return _random_patch(rng, depth + 1)


def _random_patch(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    keys = ["a", "b", "c", "d", "refs", "progress"]
    patch: dict[str, Any] = {}
    for _ in range(rng.randrange(1, 4)):
        patch[rng.choice(keys)] = None if rng.random() < 0.25 else _random_value(rng, depth)
    return patch


async def test_a_long_random_sequence_of_merges_matches_rfc7396(
    store: TortoiseGenerationStore,
) -> None:
    """Both databases end where the RFC's own algorithm ends, patch after patch."""
    gen = await store.create(new_generation())
    rng = random.Random(7396)
    expected: dict[str, Any] = dict(gen.meta)
    for step in range(150):
        patch = _random_patch(rng)
        expected = reference_merge(expected, patch)
        await store.update_meta(gen.id, patch)
        if step % 10 == 9:
            assert canonical((await get(store, gen.id)).meta) == canonical(expected), step
    after = await get(store, gen.id)
    assert canonical(after.meta) == canonical(expected)
    assert after.version == gen.version + 150


# ---------------------------------------------------------------------------------------------
# Guarded transitions


async def _row_in(store: TortoiseGenerationStore, state: State) -> Generation:
    gen = await store.create(new_generation())
    path = {
        State.QUEUED: [],
        State.RUNNING: [State.RUNNING],
        State.SUCCEEDED: [State.RUNNING, State.SUCCEEDED],
        State.FAILED: [State.RUNNING, State.FAILED],
        State.TIMED_OUT: [State.RUNNING, State.TIMED_OUT],
        State.CANCELLED: [State.CANCELLED],
    }[state]
    for target in path:
        assert await store.transition(gen.id, target) is not None
    return await get(store, gen.id)


async def test_succeeded_is_final(store: TortoiseGenerationStore) -> None:
    gen = await _row_in(store, State.SUCCEEDED)
    assert await store.transition(gen.id, State.FAILED, error_code="backend_error") is None
    after = await get(store, gen.id)
    assert after.state is State.SUCCEEDED
    assert after.error_code is None
    assert after.version == gen.version
    assert after.finished_at == gen.finished_at


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
async def test_no_transition_leaves_a_terminal_state(store: TortoiseGenerationStore, terminal: State) -> None:
    gen = await _row_in(store, terminal)
    for target in State:
        assert await store.transition(gen.id, target, retry=True) is None, (terminal, target)
    after = await get(store, gen.id)
    assert after.state is terminal
    assert after.version == gen.version
    assert after.attempts == gen.attempts


async def test_twenty_concurrent_starts_exactly_one_wins(store: TortoiseGenerationStore) -> None:
    gen = await _row_in(store, State.QUEUED)
    results = await asyncio.gather(*(store.transition(gen.id, State.RUNNING) for _ in range(20)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1, f"{len(winners)} of 20 concurrent queued -> running transitions won"
    after = await get(store, gen.id)
    assert after.state is State.RUNNING
    assert after.version == gen.version + 1
    assert winners[0].version == after.version


async def test_twenty_concurrent_finishes_exactly_one_wins(store: TortoiseGenerationStore) -> None:
    gen = await _row_in(store, State.RUNNING)
    targets = [State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED] * 5
    results = await asyncio.gather(
        *(store.transition(gen.id, target, error_code=f"e{i}") for i, target in enumerate(targets))
    )
    winners = [(i, r) for i, r in enumerate(results) if r is not None]
    assert len(winners) == 1, f"{len(winners)} of 20 concurrent finishes won"
    i, winner = winners[0]
    after = await get(store, gen.id)
    assert after.state is targets[i] is winner.state
    assert after.error_code == f"e{i}"
    assert after.version == gen.version + 1


# ---------------------------------------------------------------------------------------------
# Progress reports


async def test_late_progress_after_success_changes_nothing(store: TortoiseGenerationStore) -> None:
    gen = await store.create(new_generation())
    assert await store.record_progress(gen.id, {"progress": {"step": 0, "total": 2}}) is False
    assert (await get(store, gen.id)).meta == gen.meta

    assert await store.transition(gen.id, State.RUNNING) is not None
    assert await store.record_progress(gen.id, {"progress": {"step": 1, "total": 2}}) is True
    running = await get(store, gen.id)
    assert running.meta == {**gen.meta, "progress": {"step": 1, "total": 2}}
    assert running.heartbeat_at is not None

    assert await store.transition(gen.id, State.SUCCEEDED, result_key="results/x.png") is not None
    done = await get(store, gen.id)
    late = {"progress": {"step": 2, "total": 2}, "preview": {"key": "previews/x.jpg", "step": 2}}
    assert await store.record_progress(gen.id, late) is False
    after = await get(store, gen.id)
    assert after.state is State.SUCCEEDED
    assert after.meta == done.meta == {**gen.meta, "progress": {"step": 1, "total": 2}}
    assert after.version == done.version
    assert after.heartbeat_at == done.heartbeat_at
    assert after.result_key == "results/x.png"


async def test_progress_racing_the_finish_never_touches_the_finished_row(
    store: TortoiseGenerationStore,
) -> None:
    """Five reporters send progress back to back while the row succeeds: each is accepted until
    the finish and refused from then on, and nothing is written after the finish."""
    gen = await _row_in(store, State.RUNNING)
    outcomes: list[list[bool]] = [[] for _ in range(5)]

    async def reporter(n: int) -> None:
        for step in range(2000):
            ok = await store.record_progress(gen.id, {"progress": {"step": step}, f"r{n}": step})
            outcomes[n].append(ok)
            if not ok:
                break

    reporters = [asyncio.create_task(reporter(n)) for n in range(5)]
    while sum(map(len, outcomes)) < 10:
        await asyncio.sleep(0)
    done = await store.transition(gen.id, State.SUCCEEDED, result_key="results/y.png")
    await asyncio.gather(*reporters)

    assert done is not None and done.state is State.SUCCEEDED
    for n, results in enumerate(outcomes):
        assert results[-1] is False, f"reporter {n} was never refused after the finish"
        assert all(results[:-1]), f"reporter {n} was refused before the finish"
    after = await get(store, gen.id)
    assert after.state is State.SUCCEEDED
    assert after.version == done.version
    assert after.meta == done.meta
    accepted = sum(len(r) - 1 for r in outcomes)
    assert after.version == gen.version + accepted + 1
