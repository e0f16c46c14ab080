"""Reads of tens of thousands of rows work on SQLite and PostgreSQL: :meth:`get_many` of 40,000
ids, and :meth:`active_ids` of a renderer recovering with a big backlog.

PostgreSQL refuses a query of more than 32,767 arguments, so there the 40,000 ids test the
slicing. SQLite's limit is whatever its build says (32,766 by default, 250,000 in Debian's), so
there they may not."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from tortoise.connection import get_connection

from storage import db
from storage.merge import is_postgres
from storage.store import READ_SLICE, TABLE, TortoiseGenerationStore, _db_datetime

ROWS = 40_000
#: Row ``i`` (1-based) has the state ``STATES[i % 8]`` and finished (``"old"``: a day ago,
#: ``"recent"``: a minute ago) as ``FINISHED[i % 8]``; every third row is Slack's, the rest Discord's.
STATES = ["succeeded", "failed", "queued", "running", "cancelled", "timed_out", "queued", "succeeded"]
FINISHED = ["old", "recent", None, None, "old", "recent", None, "old"]

COLUMNS = (
    '"platform", "workspace", "channel", "user_id", "user_name", "prompt", "options", '
    '"backend", "state", "created_at", "finished_at", "attempts", "message", "meta", "version"'
)


def platform_of(i: int) -> str:
    return "slack" if i % 3 == 0 else "discord"


def select_rows(recent: str, old: str) -> str:
    """The SELECT list of row ``i``: its number goes in ``channel``, so a test maps ids to it."""
    states = " ".join(f"WHEN {k} THEN '{s}'" for k, s in enumerate(STATES))
    finished = " ".join(
        f"WHEN {k} THEN {recent if f == 'recent' else old}" for k, f in enumerate(FINISHED) if f
    )
    return (
        "CASE WHEN i % 3 = 0 THEN 'slack' ELSE 'discord' END, 'g', CAST(i AS TEXT), 'u', 'U', 'a fox', "
        f"'{{}}', 'demo', CASE i % 8 {states} END, {old}, CASE i % 8 {finished} ELSE NULL END, "
        "0, '{}', '{}', 0"
    )


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[TortoiseGenerationStore]:
    """40,000 rows of two platforms in every state, inserted in one statement."""
    await db.connect(db_url)
    conn = get_connection("default")
    now = datetime.now(UTC)
    old, recent = _db_datetime(now - timedelta(days=1)), _db_datetime(now - timedelta(minutes=1))
    try:
        if is_postgres(conn):
            select = select_rows("$1::timestamptz", "$2::timestamptz")
            await conn.execute_query(
                f'INSERT INTO "{TABLE}" ({COLUMNS}) SELECT {select} FROM generate_series(1, {ROWS}) AS i',
                [recent, old],
            )
        else:
            # SQLite numbers the ``?`` in order of appearance: created_at, then the CASE.
            select = select_rows("?2", "?1")
            await conn.execute_query(
                f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) "
                f'INSERT INTO "{TABLE}" ({COLUMNS}) SELECT {select} FROM n',
                [old, recent],
            )
        yield TortoiseGenerationStore()
    finally:
        await db.close()


async def numbers() -> dict[int, int]:
    """Row id -> the row's number ``i``."""
    _count, rows = await get_connection("default").execute_query(f'SELECT "id", "channel" FROM "{TABLE}"')
    return {int(r["id"]): int(r["channel"]) for r in rows}


async def test_get_many_reads_40000_ids_in_the_order_given(store: TortoiseGenerationStore) -> None:
    number = await numbers()
    assert len(number) == ROWS > 32_767  # PostgreSQL refuses one query of them all
    ids = list(number)
    random.Random(7).shuffle(ids)

    gens = await store.get_many(ids)

    assert [g.id for g in gens] == ids
    assert all(g.channel == str(number[g.id]) and g.state.value == STATES[number[g.id] % 8] for g in gens)


async def test_get_many_skips_missing_ids_and_repeats(store: TortoiseGenerationStore) -> None:
    ids = sorted(await numbers())
    wanted = [ids[READ_SLICE], ids[0], 10 * ROWS, ids[READ_SLICE], ids[-1], ids[0]]

    assert [g.id for g in await store.get_many(wanted)] == [ids[READ_SLICE], ids[0], ids[-1]]
    assert await store.get_many([]) == []


async def test_active_ids_are_the_platform_s_active_and_recently_finished_rows(
    store: TortoiseGenerationStore,
) -> None:
    number = await numbers()
    since = datetime.now(UTC) - timedelta(minutes=30)
    expected = sorted(
        gid
        for gid, i in number.items()
        if platform_of(i) == "discord"
        and (STATES[i % 8] in ("queued", "running") or FINISHED[i % 8] == "recent")
    )
    assert len(expected) > 15_000  # a big backlog, yet far from every row

    ids = await store.active_ids("discord", finished_since=since)

    assert ids == expected
    assert ids == [g.id for g in await store.list_active("discord", finished_since=since)]
    # No finished row is recent enough: only the queued and running ones.
    later = datetime.now(UTC)
    assert await store.active_ids("discord", finished_since=later) == [
        gid for gid in expected if STATES[number[gid] % 8] in ("queued", "running")
    ]
    assert await store.active_ids("matrix", finished_since=since) == []
