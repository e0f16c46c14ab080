"""Deep merge of a JSON patch into a JSON column, in one atomic statement.

The patch follows RFC 7396 (JSON Merge Patch): objects merge recursively, anything else replaces,
and ``null`` deletes a key. Because each write is a single ``UPDATE`` that merges into whatever the
row holds at that instant, concurrent writers never lose each other's keys, on either database:

- SQLite: the built-in ``json_patch`` is RFC 7396.
- PostgreSQL: ``jsonb ||`` is shallow, so migration 0002 installs ``genbot_merge_patch``, a
  recursive plpgsql function with the same semantics; the row lock the ``UPDATE`` takes serialises
  the writers.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from tortoise.backends.base.client import BaseDBAsyncClient

Column = Literal["message", "meta"]

PG_MERGE_FUNCTION = """
CREATE OR REPLACE FUNCTION genbot_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
    v jsonb;
    merged jsonb;
BEGIN
    IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    IF target IS NULL OR jsonb_typeof(target) <> 'object' THEN
        merged := '{}'::jsonb;
    ELSE
        merged := target;
    END IF;
    FOR k, v IN SELECT key, value FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            merged := merged - k;
        ELSE
            merged := jsonb_set(merged, ARRAY[k], genbot_merge_patch(merged -> k, v));
        END IF;
    END LOOP;
    RETURN merged;
END
$$;
"""

PG_DROP_MERGE_FUNCTION = "DROP FUNCTION IF EXISTS genbot_merge_patch(jsonb, jsonb);"


def is_postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


def update_sql(
    conn: BaseDBAsyncClient,
    table: str,
    *,
    merges: tuple[Column, ...] = (),
    sets: tuple[str, ...] = (),
    set_once: tuple[str, ...] = (),
) -> tuple[str, int]:
    """One ``UPDATE`` of the row ``id`` that merges a JSON patch into each column of ``merges``,
    sets each column of ``sets``, sets each column of ``set_once`` only if it is NULL (a value
    written once and never changed, such as a ticket), and bumps ``version``.

    Parameters, in order: one patch per merged column, one value per set column, one per
    set-once column, then the id. Returns the SQL and the number of the first free placeholder
    (to append conditions).
    """
    pg = is_postgres(conn)

    def ph(n: int) -> str:
        return f"${n}" if pg else "?"

    assignments = []
    for n, column in enumerate(merges, start=1):
        merged = (
            f'genbot_merge_patch("{column}", {ph(n)}::jsonb)' if pg else f'json_patch("{column}", {ph(n)})'
        )
        assignments.append(f'"{column}" = {merged}')
    assignments += [f'"{name}" = {ph(n)}' for n, name in enumerate(sets, start=len(merges) + 1)]
    assignments += [
        f'"{name}" = COALESCE("{name}", {ph(n)})'
        for n, name in enumerate(set_once, start=len(merges) + len(sets) + 1)
    ]
    assignments.append('"version" = "version" + 1')
    id_ph = len(merges) + len(sets) + len(set_once) + 1
    sql = f'UPDATE "{table}" SET {", ".join(assignments)} WHERE "id" = {ph(id_ph)}'  # noqa: S608 - names are constants, values are parameters
    return sql, id_ph + 1


def update_many_sql(conn: BaseDBAsyncClient, table: str, rows: int) -> str:
    """One ``UPDATE`` of ``rows`` rows, each merging its own patch into ``message`` and ``meta``
    (a NULL patch leaves its column be) and bumping ``version``. Parameters: ``id, message patch,
    meta patch`` per row (each id at most once), then, on PostgreSQL, the array of the ids.

    On PostgreSQL the rows are locked first, in the order of their ids (``locked``), so two such
    statements over the same rows wait for each other instead of deadlocking: the ``UPDATE``
    joins only rows that ``locked`` has already locked. (SQLite has one writer at a time.)"""
    if is_postgres(conn):
        values = ", ".join(
            f"(${n + 1}::bigint, ${n + 2}::jsonb, ${n + 3}::jsonb)" for n in range(0, 3 * rows, 3)
        )
        merge = "genbot_merge_patch"
        lock = (
            f'WITH locked AS (SELECT "id" FROM "{table}" WHERE "id" = ANY(${3 * rows + 1}::bigint[]) '  # noqa: S608 - constants
            'ORDER BY "id" FOR UPDATE) '
        )
        joined, condition = ", locked", ' AND locked."id" = v.column1'
    else:
        values = ", ".join("(?, ?, ?)" for _ in range(rows))
        merge = "json_patch"
        lock = joined = condition = ""
    assignments = [
        f'"{col}" = CASE WHEN v.{patch} IS NULL THEN r."{col}" ELSE {merge}(r."{col}", v.{patch}) END'
        for col, patch in (("message", "column2"), ("meta", "column3"))
    ]
    return (
        f'{lock}UPDATE "{table}" AS r SET {", ".join(assignments)}, "version" = r."version" + 1 '  # noqa: S608 - constants
        f'FROM (VALUES {values}) AS v{joined} WHERE r."id" = v.column1{condition}'
    )


def encode_patch(patch: dict[str, Any]) -> str:
    return json.dumps(patch, separators=(",", ":"), ensure_ascii=False)
