"""The sweep stays cheap however many finished rows the table holds: on SQLite and PostgreSQL,
with 100,000 finished generations, the plan of every sweep statement (and of the renderer's
recovery read) reads the active rows (and the recently finished ones) through an index, never the
whole table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from tortoise.connection import get_connection

from bot.models import EXPIRING_SECRETS, State
from storage import db
from storage.merge import encode_patch, is_postgres
from storage.store import TABLE, _db_datetime, active_ids_sql, queued_query, scrub_sql, stuck_query

FINISHED_ROWS = 100_000
PLATFORMS = ["local", "discord", "slack"]

COLUMNS = (
    '"platform", "workspace", "channel", "user_id", "user_name", "prompt", "options", '
    '"backend", "state", "created_at", "finished_at", "heartbeat_at", "attempts", "message", "meta", "version"'
)


@pytest_asyncio.fixture
async def big_table(db_url: str) -> AsyncIterator[bool]:
    """100,000 finished rows a day old and a few active ones; yields whether it is PostgreSQL."""
    await db.connect(db_url)
    conn = get_connection("default")
    pg = is_postgres(conn)
    old = _db_datetime(datetime.now(UTC) - timedelta(days=1))
    fresh = _db_datetime(datetime.now(UTC))
    row = "'discord', 'g', 'c', 'u', 'U', 'a fox', '{}', 'demo', '%s', %s, %s, %s, 0, '{}', '{}', 0"
    try:
        if pg:
            await conn.execute_query(
                f'INSERT INTO "{TABLE}" ({COLUMNS}) SELECT '
                + row % ("succeeded", "$1::timestamptz", "$1::timestamptz", "$1::timestamptz")
                + f" FROM generate_series(1, {FINISHED_ROWS})",
                [old],
            )
        else:
            await conn.execute_query(
                f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {FINISHED_ROWS}) "
                f'INSERT INTO "{TABLE}" ({COLUMNS}) SELECT ' + row % ("succeeded", "?", "?", "?") + " FROM n",
                [old, old, old],
            )
        for state in ("queued", "running", "running"):
            placeholders = ("$1", "NULL", "$1") if pg else ("?", "NULL", "?")
            await conn.execute_query(
                f'INSERT INTO "{TABLE}" ({COLUMNS}) VALUES (' + row % (state, *placeholders) + ")",
                [fresh] if pg else [fresh, fresh],
            )
        await conn.execute_script("ANALYZE")
        yield pg
    finally:
        await db.close()


async def plan(sql: str, values: list[object]) -> str:
    conn = get_connection("default")
    if is_postgres(conn):
        _count, rows = await conn.execute_query("EXPLAIN " + sql, values)
        return "\n".join(str(r["QUERY PLAN"]) for r in rows)
    _count, rows = await conn.execute_query("EXPLAIN QUERY PLAN " + sql, values)
    return "\n".join(str(r["detail"]) for r in rows)


def assert_no_table_scan(text: str, pg: bool) -> None:
    if pg:
        assert "Seq Scan" not in text, text
    else:
        assert all(not line.startswith("SCAN") for line in text.splitlines()), text
    assert "generations_state_heartbeat" in text, text


@pytest.mark.timeout(600)
async def test_no_sweep_statement_reads_the_finished_rows(big_table: bool) -> None:
    pg = big_table
    conn = get_connection("default")
    assert (await conn.execute_query(f'SELECT COUNT(*) AS n FROM "{TABLE}"'))[1][0]["n"] == FINISHED_ROWS + 3

    queued = await plan(queued_query().sql(), [State.QUEUED.value])
    assert_no_table_scan(queued, pg)

    cutoff = datetime.now(UTC) - timedelta(minutes=5)
    stuck = await plan(stuck_query(cutoff).sql(), [State.RUNNING.value, _db_datetime(cutoff)])
    assert_no_table_scan(stuck, pg)

    since = _db_datetime(datetime.now(UTC) - timedelta(minutes=32))
    for secret, expiry in EXPIRING_SECRETS.items():
        values: list[object] = [
            encode_patch({"extra": {secret: None, expiry: None}}),
            "queued",
            "running",
            *PLATFORMS,
            since,
            datetime.now(UTC).timestamp(),
        ]
        scrub = await plan(scrub_sql(conn, secret, expiry, len(PLATFORMS)), values)
        assert_no_table_scan(scrub, pg)
        assert "generations_platform_finished" in scrub, scrub

    # The renderer's recovery: the active rows through an index on the state (PostgreSQL picks
    # either), the recently finished ones through the one on the finish time.
    recover = await plan(active_ids_sql(conn), ["discord", "queued", "running", "discord", since])
    if pg:
        assert "Seq Scan" not in recover, recover
    else:
        assert all(not line.startswith("SCAN") for line in recover.splitlines()), recover
    assert "generations_platform_state" in recover or "generations_state_heartbeat" in recover, recover
    assert "generations_platform_finished" in recover, recover
