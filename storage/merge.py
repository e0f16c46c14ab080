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


def merge_sql(conn: BaseDBAsyncClient, target: str, patch: str) -> str:
    """The SQL of ``target`` (a JSON column) with ``patch`` (a parameter or column holding the
    patch as JSON text) deep-merged into it, RFC 7396."""
    if is_postgres(conn):
        return f"genbot_merge_patch({target}, {patch}::jsonb)"
    return f"json_patch({target}, {patch})"


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

    assignments = [
        f'"{column}" = ' + merge_sql(conn, f'"{column}"', ph(n)) for n, column in enumerate(merges, start=1)
    ]
    assignments += [f'"{name}" = {ph(n)}' for n, name in enumerate(sets, start=len(merges) + 1)]
    assignments += [
        f'"{name}" = COALESCE("{name}", {ph(n)})'
        for n, name in enumerate(set_once, start=len(merges) + len(sets) + 1)
    ]
    assignments.append('"version" = "version" + 1')
    id_ph = len(merges) + len(sets) + len(set_once) + 1
    sql = f'UPDATE "{table}" SET {", ".join(assignments)} WHERE "id" = {ph(id_ph)}'  # noqa: S608 - names are constants, values are parameters
    return sql, id_ph + 1


def locked_in_id_order(table: str, ids: str) -> str:
    """PostgreSQL: a ``WITH locked`` clause that locks the rows whose ids are in the array ``ids``
    (a parameter), in the order of their ids. A multi-row ``UPDATE`` that joins ``locked`` on its
    rows locks only rows ``locked`` has locked already, so two of them over the same rows wait for
    each other instead of deadlocking (the order a plan visits rows in is not theirs to choose).
    SQLite has one writer at a time and needs none."""
    return (
        f'WITH locked AS (SELECT "id" FROM "{table}" WHERE "id" = ANY({ids}::bigint[]) '  # noqa: S608 - constants
        'ORDER BY "id" FOR UPDATE) '
    )


def update_many_sql(conn: BaseDBAsyncClient, table: str, rows: int) -> str:
    """One ``UPDATE`` of ``rows`` rows, each merging its own patch into ``message`` and ``meta``
    (a NULL patch leaves its column be) and bumping ``version``; a fenced row's ``meta`` patch
    only while its ``meta.rendered`` is still the one given, else ``rendered`` is cleared (see
    :class:`bot.ports.RowUpdate`). Parameters: ``id, message patch, meta patch, fenced,
    rendered_was`` per row (each id at most once), then, on PostgreSQL, the array of the ids
    (:func:`locked_in_id_order`). Returns each row's ``id`` and ``rendered`` after."""
    pg = is_postgres(conn)
    if pg:
        values = ", ".join(
            f"(${n + 1}::bigint, ${n + 2}::text, ${n + 3}::text, ${n + 4}::boolean, ${n + 5}::text)"
            for n in range(0, 5 * rows, 5)
        )
        lock = locked_in_id_order(table, f"${5 * rows + 1}")
        joined, condition = ", locked", ' AND locked."id" = v.column1'
        rendered = "r.\"meta\" ->> 'rendered'"
        returned = f'r."id", {rendered} AS "rendered"'
        moved = f"v.column4 AND ({rendered}) IS DISTINCT FROM v.column5"
    else:
        values = ", ".join("(?, ?, ?, ?, ?)" for _ in range(rows))
        lock = joined = condition = ""
        rendered = "json_extract(r.\"meta\", '$.rendered')"
        # SQLite's RETURNING sees the updated table's own names only
        returned = '"id", json_extract("meta", \'$.rendered\') AS "rendered"'
        moved = f"v.column4 AND ({rendered}) IS NOT v.column5"
    cleared = """'{"rendered": null}'"""
    message = merge_sql(conn, 'r."message"', "v.column2")
    meta = merge_sql(conn, 'r."meta"', "v.column3")
    clear = merge_sql(conn, 'r."meta"', cleared)
    assignments = [
        f'"message" = CASE WHEN v.column2 IS NULL THEN r."message" ELSE {message} END',
        f'"meta" = CASE WHEN {moved} THEN {clear} WHEN v.column3 IS NULL THEN r."meta" ELSE {meta} END',
    ]
    return (
        f'{lock}UPDATE "{table}" AS r SET {", ".join(assignments)}, "version" = r."version" + 1 '  # noqa: S608 - constants
        f'FROM (VALUES {values}) AS v{joined} WHERE r."id" = v.column1{condition} RETURNING {returned}'
    )


def encode_patch(patch: dict[str, Any]) -> str:
    return json.dumps(patch, separators=(",", ":"), ensure_ascii=False)
