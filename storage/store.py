"""The :class:`~bot.ports.GenerationStore` on Tortoise ORM (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection
from tortoise.expressions import F, Q
from tortoise.queryset import QuerySet

from bot.models import EXPIRING_SECRETS, LOOK, Generation, NewGeneration, State, Stats, sources_of
from bot.ports import RowUpdate, RunReport
from storage.merge import (
    Column,
    encode_patch,
    is_postgres,
    locked_in_id_order,
    merge_sql,
    update_many_sql,
    update_sql,
)
from storage.models import GenerationRow
from storage.reconnect import reconnecting, retries_inside, with_retries

TABLE = GenerationRow._meta.db_table
#: The row of ``counters`` that counts the seeds of Redis's ticket counter.
TICKET_EPOCH_COUNTER = "ticket_epoch"
#: The most ids one read binds: PostgreSQL refuses more than 32,767 arguments to a query, SQLite
#: by default more than 999 (before 3.32) or 32,766 (since); and 1,000 rows are a bounded read.
READ_SLICE = 1000
#: The most reports one statement of :meth:`TortoiseGenerationStore.record_runs` writes (three
#: values each): far under both databases' limits on arguments.
RUNS_SLICE = 500


def snapshot(row: GenerationRow) -> Generation:
    return Generation(
        id=row.id,
        platform=row.platform,
        workspace=row.workspace,
        channel=row.channel,
        user_id=row.user_id,
        user_name=row.user_name,
        prompt=row.prompt,
        options=dict(row.options or {}),
        backend=row.backend,
        state=State(row.state),
        error_code=row.error_code,
        attempts=row.attempts,
        ticket=row.ticket,
        result_key=row.result_key,
        message=dict(row.message or {}),
        meta=dict(row.meta or {}),
        version=row.version,
        created_at=row.created_at,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        finished_at=row.finished_at,
        kind=row.kind,
    )


#: The row of a new generation; the last four columns start at their defaults. A second INSERT
#: with the same ``request_key`` (a retry whose first attempt committed) inserts nothing.
INSERT = (
    'INSERT INTO "{table}" ("platform", "workspace", "channel", "user_id", "user_name", "kind", '
    '"prompt", "options", "meta", "backend", "state", "created_at", "request_key", '
    '"attempts", "message", "version") '
    "VALUES ({params}, 0, '{{}}', 0) "
    'ON CONFLICT ("request_key") DO NOTHING RETURNING "id"'
)


def queued_query() -> QuerySet[GenerationRow]:
    """The sweep's queued rows: read through the ``(state, heartbeat_at)`` index. Unordered: an
    ``ORDER BY id`` makes SQLite walk the whole table in id order; the caller sorts."""
    return GenerationRow.filter(state=State.QUEUED.value)


def stuck_query(heartbeat_before: datetime) -> QuerySet[GenerationRow]:
    """Running rows whose heartbeat is older than ``heartbeat_before``: a range of the
    ``(state, heartbeat_at)`` index."""
    return GenerationRow.filter(state=State.RUNNING.value, heartbeat_at__lt=heartbeat_before)


def scrub_sql(conn: BaseDBAsyncClient, secret: str, expiry: str, platforms: int) -> str:
    """One ``UPDATE`` that removes ``message.extra.<secret>`` and its expiry from the rows where it
    has expired, among the active rows (the ``(state, heartbeat_at)`` index) and the rows of the
    ``platforms`` platforms that finished since a time (the ``(platform, finished_at)`` index):
    never a scan of the table. Parameters: the patch, the states, the platforms, the finished
    since time, the current epoch seconds."""
    pg = is_postgres(conn)
    counter = iter(range(1, 100))

    def ph() -> str:
        return f"${next(counter)}" if pg else "?"

    patch = f'genbot_merge_patch("message", {ph()}::jsonb)' if pg else f'json_patch("message", {ph()})'
    states = ", ".join(ph() for _ in range(2))
    names = ", ".join(ph() for _ in range(platforms))
    since = ph()
    expires = (
        f"(\"message\" -> 'extra' ->> '{expiry}')::float8"
        if pg
        else f"CAST(json_extract(\"message\", '$.extra.{expiry}') AS REAL)"
    )
    return (
        f'UPDATE "{TABLE}" SET "message" = {patch}, "version" = "version" + 1 '  # noqa: S608 - constants
        f'WHERE "id" IN (SELECT "id" FROM "{TABLE}" WHERE "state" IN ({states}) '
        f'UNION ALL SELECT "id" FROM "{TABLE}" WHERE "platform" IN ({names}) AND "finished_at" >= {since}) '
        f"AND {expires} < {ph()}"
    )


def active_ids_sql(conn: BaseDBAsyncClient) -> str:
    """The ids of one platform's active rows (the ``(platform, state)`` index) and of its rows
    finished since a time (the ``(platform, finished_at)`` index): two index ranges, never a walk
    of the platform's finished rows. Unordered. Parameters: the platform, the two active states,
    the platform again, the finished since time."""
    p = [f"${i}" for i in range(1, 6)] if is_postgres(conn) else ["?"] * 5
    return (
        f'SELECT "id" FROM "{TABLE}" WHERE "platform" = {p[0]} AND "state" IN ({p[1]}, {p[2]}) '  # noqa: S608 - constants
        f'UNION SELECT "id" FROM "{TABLE}" WHERE "platform" = {p[3]} AND "finished_at" >= {p[4]}'
    )


def transition_sql(
    conn: BaseDBAsyncClient,
    sets: list[tuple[str, Any]],
    sources: list[str],
    *,
    retry: bool,
    fenced: bool,
    stale: bool = False,
    meta: bool = False,
) -> tuple[str, list[Any]]:
    """One ``UPDATE ... RETURNING`` of a transition: ``sets`` (column, value; ``"ticket"`` only
    where it is NULL), with ``meta`` a JSON patch deep-merged into ``meta`` (its value is the
    first, before those of ``sets``), ``version`` + 1, ``attempts`` + 1 with ``retry``; where the
    row is in one of ``sources`` (and, ``fenced``, at an attempt; ``stale``, with a heartbeat
    older than a time). Returns the SQL and the values of ``sets``; the caller puts the patch
    first, and appends the id, the sources, the attempt and the time."""
    pg = is_postgres(conn)
    count = 0

    def ph() -> str:
        nonlocal count
        count += 1
        return f"${count}" if pg else "?"

    assignments = ['"meta" = ' + merge_sql(conn, '"meta"', ph())] if meta else []
    assignments += [
        f"{column} = COALESCE({column}, {ph()})" if column == '"ticket"' else f"{column} = {ph()}"
        for column, _value in sets
    ]
    assignments.append('"version" = "version" + 1')
    if retry:
        assignments.append('"attempts" = "attempts" + 1')
    where = f'"id" = {ph()} AND "state" IN ({", ".join(ph() for _ in sources)})'
    if fenced:
        where += f' AND "attempts" = {ph()}'
    if stale:
        where += f' AND "heartbeat_at" < {ph()}'
    sql = f'UPDATE "{TABLE}" SET {", ".join(assignments)} WHERE {where} RETURNING *'  # noqa: S608 - constants
    return sql, [value for _column, value in sets]


def runs_sql(conn: BaseDBAsyncClient, n: int) -> str:
    """One ``UPDATE ... FROM (VALUES ...) ... RETURNING`` of ``n`` runs' reports: each row that is
    ``running`` at its report's attempt gets the report's patch deep-merged into ``meta`` (and
    ``version`` + 1), or nothing merged where the patch is NULL (a heartbeat alone), and the
    heartbeat stamped. Parameters: the heartbeat, then ``(id, attempt, patch)`` per report, then
    the ``running`` state, then, on PostgreSQL, the array of the ids (:func:`locked_in_id_order`:
    two such statements sharing rows, a worker cut off and the one that took its job over, never
    deadlock). Returns the ``id`` and ``attempts`` of each row written."""
    pg = is_postgres(conn)
    if pg:
        rows = ", ".join(
            f"(${3 * i + 2}::bigint, ${3 * i + 3}::integer, ${3 * i + 4}::text)" for i in range(n)
        )
        source = f'(VALUES {rows}) AS "v" ("id", "attempt", "patch")'
        heartbeat, state, target = "$1", f"${3 * n + 2}", '"g"'
        lock = locked_in_id_order(TABLE, f"${3 * n + 3}")
        joined, condition = ", locked", ' AND locked."id" = "v"."id"'
    else:
        rows = ", ".join("(?, ?, ?)" for _ in range(n))
        source = (
            '(SELECT "column1" AS "id", "column2" AS "attempt", "column3" AS "patch" '  # noqa: S608 - constants
            f'FROM (VALUES {rows})) AS "v"'
        )
        heartbeat, state, target = "?", "?", f'"{TABLE}"'
        lock = joined = condition = ""
    merged = merge_sql(conn, f'{target}."meta"', '"v"."patch"')
    alias = ' AS "g"' if pg else ""
    # SQLite's RETURNING sees the updated table only (its bare names); PostgreSQL's sees "v" too.
    returned = '"g"."id", "g"."attempts"' if pg else '"id", "attempts"'
    return (
        f'{lock}UPDATE "{TABLE}"{alias} SET '  # noqa: S608 - names are constants, values are parameters
        f'"meta" = CASE WHEN "v"."patch" IS NULL THEN {target}."meta" ELSE {merged} END, '
        f'"heartbeat_at" = {heartbeat}, '
        f'"version" = {target}."version" + CASE WHEN "v"."patch" IS NULL THEN 0 ELSE 1 END '
        f"FROM {source}{joined} "
        f'WHERE {target}."id" = "v"."id" AND {target}."attempts" = "v"."attempt" '
        f'AND {target}."state" = {state}{condition} '
        f"RETURNING {returned}"
    )


def _ph(conn: BaseDBAsyncClient, n: int) -> str:
    """The ``n``-th placeholder of a statement on ``conn``'s database."""
    return f"${n}" if is_postgres(conn) else "?"


def _db_datetime(value: datetime) -> Any:
    """A datetime as Tortoise itself writes it for this column on this database."""
    field = GenerationRow._meta.fields_map["heartbeat_at"]
    return field.to_db_value(value, GenerationRow)


@reconnecting
class TortoiseGenerationStore:
    """Every write is one atomic statement; see :mod:`storage.merge` for the JSON merges. The two
    writes of the submit path are written by hand for speed; the rest goes through Tortoise."""

    async def create(self, new: NewGeneration) -> Generation:
        """Insert the row of ``new``; safe to retry: a second call with the same
        ``new.request_key`` returns the row the first made."""
        # One hand-written INSERT: this is the hot path of every /imagine, and building a model
        # instance costs more than the statement itself (see bench/).
        conn = get_connection("default")
        now = datetime.now(UTC)
        options = dict(new.options)
        meta = {LOOK: dict(new.look)} if new.look else {}
        values = [
            new.actor.platform,
            new.actor.workspace,
            new.channel,
            new.actor.user_id,
            new.actor.display_name,
            new.kind,
            new.text,
            encode_patch(options),
            encode_patch(meta),
            new.backend,
            State.QUEUED.value,
            _db_datetime(now),
            new.request_key,
        ]
        pg = is_postgres(conn)
        params = ", ".join(f"${i}" for i in range(1, len(values) + 1)) if pg else ", ".join("?" * len(values))
        rows = await conn.execute_query_dict(INSERT.format(table=TABLE, params=params), values)
        if not rows:  # an earlier attempt of this insert committed: that row is the one
            row = await GenerationRow.get(request_key=new.request_key)
            return snapshot(row)
        new_id = int(rows[0]["id"])
        return Generation(
            id=new_id,
            platform=new.actor.platform,
            workspace=new.actor.workspace,
            channel=new.channel,
            user_id=new.actor.user_id,
            user_name=new.actor.display_name,
            prompt=new.text,
            options=options,
            backend=new.backend,
            state=State.QUEUED,
            error_code=None,
            attempts=0,
            ticket=None,
            result_key=None,
            message={},
            meta=meta,
            version=0,
            created_at=now,
            kind=new.kind,
        )

    async def get(self, generation_id: int) -> Generation | None:
        return await self._get(generation_id)

    async def _get(self, generation_id: int) -> Generation | None:
        # Hand-written, as the hottest read of all (every job's start, every render): building
        # the ORM's query cost more than running it.
        rows = await self._select(f'"id" = {_ph(get_connection("default"), 1)}', [generation_id])
        return rows[0] if rows else None

    async def get_many(self, ids: Sequence[int]) -> list[Generation]:
        """The rows of ``ids``, in the order given, each once (at its first place); ids without a
        row are left out. Reads :data:`READ_SLICE` ids per query, however many are given."""
        wanted = list(dict.fromkeys(ids))
        found: dict[int, Generation] = {}
        conn = get_connection("default")
        for start in range(0, len(wanted), READ_SLICE):
            chunk = wanted[start : start + READ_SLICE]
            places = ", ".join(_ph(conn, n) for n in range(1, len(chunk) + 1))
            for gen in await self._select(f'"id" IN ({places})', chunk):
                found[gen.id] = gen
        return [found[i] for i in wanted if i in found]

    @staticmethod
    async def _select(where: str, values: list[Any]) -> list[Generation]:
        conn = get_connection("default")
        rows = await conn.execute_query_dict(f'SELECT * FROM "{TABLE}" WHERE {where}', values)  # noqa: S608 - constants
        return [snapshot(GenerationRow._init_from_db(**row)) for row in rows]

    async def update(
        self,
        generation_id: int,
        *,
        message: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        ticket: int | None = None,
    ) -> None:
        merges: list[Column] = []
        values: list[Any] = []
        for column, patch in (("message", message), ("meta", meta)):
            if patch is not None:
                merges.append(column)  # type: ignore[arg-type]
                values.append(encode_patch(patch))
        set_once = ("ticket",) if ticket is not None else ()
        values += [ticket] if ticket is not None else []
        conn = get_connection("default")
        sql, _ = update_sql(conn, TABLE, merges=tuple(merges), set_once=set_once)
        await conn.execute_query(sql, [*values, generation_id])

    async def update_many(self, updates: Sequence[RowUpdate]) -> set[int]:
        conn = get_connection("default")
        refused: set[int] = set()
        left = list(updates)
        while left:
            # One statement per slice in which each row appears once (a row patched twice is
            # patched again by the next one, in order).
            batch: dict[int, RowUpdate] = {}
            later: list[RowUpdate] = []
            for update in left:
                if update.generation_id in batch or len(batch) >= READ_SLICE:
                    later.append(update)
                else:
                    batch[update.generation_id] = update
            values: list[Any] = []
            for update in batch.values():
                values += [
                    update.generation_id,
                    None if update.message is None else encode_patch(update.message),
                    None if update.meta is None else encode_patch(update.meta),
                    update.fenced,
                    update.rendered_was,
                ]
            if is_postgres(conn):
                values.append(list(batch))
            for row in await conn.execute_query_dict(update_many_sql(conn, TABLE, len(batch)), values):
                update = batch[int(row["id"])]
                if update.fenced and row["rendered"] != (update.meta or {}).get("rendered"):
                    refused.add(update.generation_id)
            left = later
        return refused

    async def update_message(self, generation_id: int, patch: dict[str, Any]) -> None:
        await self.update(generation_id, message=patch)

    async def update_meta(self, generation_id: int, patch: dict[str, Any]) -> None:
        await self.update(generation_id, meta=patch)

    async def record_progress(
        self, generation_id: int, patch: dict[str, Any], *, attempt: int | None = None
    ) -> bool:
        conn = get_connection("default")
        sql, next_ph = update_sql(conn, TABLE, merges=("meta",), sets=("heartbeat_at",))
        pg = is_postgres(conn)

        def ph(n: int) -> str:
            return f"${n}" if pg else "?"

        sql += f' AND "state" = {ph(next_ph)}'
        values: list[Any] = [encode_patch(patch), _db_datetime(datetime.now(UTC)), generation_id]
        values.append(State.RUNNING.value)
        if attempt is not None:
            sql += f' AND "attempts" = {ph(next_ph + 1)}'
            values.append(attempt)
        changed, _rows = await conn.execute_query(sql, values)
        return changed > 0

    async def beat(self, generation_id: int, attempt: int) -> bool:
        conn = get_connection("default")
        p = ["$1", "$2", "$3", "$4"] if is_postgres(conn) else ["?"] * 4
        sql = (
            f'UPDATE "{TABLE}" SET "heartbeat_at" = {p[0]} '  # noqa: S608 - constants
            f'WHERE "id" = {p[1]} AND "state" = {p[2]} AND "attempts" = {p[3]}'
        )
        now = _db_datetime(datetime.now(UTC))
        changed, _rows = await conn.execute_query(sql, [now, generation_id, State.RUNNING.value, attempt])
        return changed > 0

    async def record_runs(self, reports: Sequence[RunReport]) -> set[tuple[int, int]]:
        # One statement for every running job of a worker (jobs/progress.py batches them).
        conn = get_connection("default")
        ordered = sorted(reports, key=lambda r: (r.generation_id, r.attempt))
        now = _db_datetime(datetime.now(UTC))
        written: set[tuple[int, int]] = set()
        for start in range(0, len(ordered), RUNS_SLICE):
            chunk = ordered[start : start + RUNS_SLICE]
            values: list[Any] = [now]
            for report in chunk:
                patch = encode_patch(report.patch) if report.patch is not None else None
                values += [report.generation_id, report.attempt, patch]
            values.append(State.RUNNING.value)
            if is_postgres(conn):
                values.append(sorted({report.generation_id for report in chunk}))
            rows = await conn.execute_query_dict(runs_sql(conn, len(chunk)), values)
            written.update((int(row["id"]), int(row["attempts"])) for row in rows)
        return written

    @retries_inside
    async def claim_again(
        self, generation_id: int, attempt: int, *, stale_before: datetime
    ) -> Generation | None:
        now = datetime.now(UTC)
        changed = await with_retries(
            lambda: GenerationRow.filter(
                id=generation_id,
                state=State.RUNNING.value,
                attempts=attempt,
                heartbeat_at__lt=stale_before,
            ).update(attempts=F("attempts") + 1, heartbeat_at=now, version=F("version") + 1),
            "claim_again",
        )
        current = await with_retries(lambda: self._get(generation_id), "claim_again")
        if current is None or current.state is not State.RUNNING or current.attempts != attempt + 1:
            return None
        # Retried after its reply was lost? The stamp tells whether this call claimed it.
        return current if changed or current.heartbeat_at == now else None

    @retries_inside
    async def transition(
        self,
        generation_id: int,
        target: State,
        *,
        error_code: str | None = None,
        result_key: str | None = None,
        retry: bool = False,
        ticket: int | None = None,
        attempt: int | None = None,
        stale_before: datetime | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Generation | None:
        # Every transition stamps the heartbeat with this instant: when a retry finds the row
        # already in ``target`` (the first attempt committed, its reply was lost), the stamp
        # tells whether this call moved it, or another one did.
        now = datetime.now(UTC)
        stamp = _db_datetime(now)
        sets: list[tuple[str, Any]] = [('"state"', target.value), ('"heartbeat_at"', stamp)]
        if target is State.RUNNING:
            sets.append(('"started_at"', stamp))
        if target.terminal:
            sets.append(('"finished_at"', stamp))
        if error_code is not None or target is State.RUNNING:
            sets.append(('"error_code"', error_code))
        if result_key is not None:
            sets.append(('"result_key"', result_key))
        if ticket is not None:  # set once: a row's ticket never changes
            sets.append(('"ticket"', ticket))
        sources = [src.value for src in sources_of(target)]
        conn = get_connection("default")
        sql, values = transition_sql(
            conn,
            sets,
            sources,
            retry=retry,
            fenced=attempt is not None,
            stale=stale_before is not None,
            meta=meta is not None,
        )
        if meta is not None:
            values.insert(0, encode_patch(meta))
        values += [generation_id, *sources] + ([attempt] if attempt is not None else [])
        values += [_db_datetime(stale_before)] if stale_before is not None else []
        # One statement that writes and returns the row; a second read only when it was refused.
        rows = await with_retries(lambda: conn.execute_query_dict(sql, values), "transition")
        if rows:
            return snapshot(GenerationRow._init_from_db(**rows[0]))
        current = await with_retries(lambda: self._get(generation_id), "transition")
        if current is None or current.state is not target or current.heartbeat_at != now:
            return None
        return current

    @retries_inside
    async def claim_unposted(self, generation_id: int, *, stale_before: float) -> bool:
        conn = get_connection("default")
        pg = is_postgres(conn)
        if pg:
            unposted = "(\"message\" ->> 'message_id') IS NULL"
            claimed = "(\"meta\" ->> 'adopting')::float8"
            patch, stale, row = 'genbot_merge_patch("meta", $1::jsonb)', "$2", "$3"
        else:
            unposted = "json_extract(\"message\", '$.message_id') IS NULL"
            claimed = "CAST(json_extract(\"meta\", '$.adopting') AS REAL)"
            patch, stale, row = 'json_patch("meta", ?)', "?", "?"
        sql = (
            f'UPDATE "{TABLE}" SET "meta" = {patch}, "version" = "version" + 1 '  # noqa: S608 - constants
            f'WHERE {unposted} AND ({claimed} IS NULL OR {claimed} < {stale}) AND "id" = {row}'
        )
        now = datetime.now(UTC).timestamp()
        changed, _rows = await with_retries(
            lambda: conn.execute_query(sql, [encode_patch({"adopting": now}), stale_before, generation_id]),
            "claim_unposted",
        )
        if changed:
            return True
        # Retried after its reply was lost? Then the claim it finds is its own.
        current = await with_retries(lambda: self._get(generation_id), "claim_unposted")
        return current is not None and current.meta.get("adopting") == now

    async def next_ticket_epoch(self, at_least: int) -> int:
        # One statement: the first seed inserts ``at_least``; every later one takes the larger of
        # one more than the last and ``at_least``. (A retry after a lost reply skips an epoch:
        # harmless, epochs are plenty.)
        conn = get_connection("default")
        if is_postgres(conn):
            sql = (
                'INSERT INTO "counters" ("name", "value") VALUES ($1, $2) ON CONFLICT ("name") '
                'DO UPDATE SET "value" = GREATEST("counters"."value" + 1, $2) RETURNING "value"'
            )
        else:
            sql = (
                'INSERT INTO "counters" ("name", "value") VALUES (?, ?) ON CONFLICT ("name") '
                'DO UPDATE SET "value" = MAX("counters"."value" + 1, "excluded"."value") RETURNING "value"'
            )
        rows = await conn.execute_query_dict(sql, [TICKET_EPOCH_COUNTER, at_least])
        return int(rows[0]["value"])

    async def max_ticket(self) -> int:
        """The highest ticket any row holds (0 when none has one); an index lookup."""
        return await self._max_ticket(get_connection("default"))

    @staticmethod
    async def _max_ticket(conn: BaseDBAsyncClient) -> int:
        rows = await conn.execute_query_dict(f'SELECT MAX("ticket") AS "high" FROM "{TABLE}"')  # noqa: S608 - a constant
        return int(rows[0]["high"] or 0)

    async def list_active(
        self, platform: str | None = None, *, finished_since: datetime | None = None
    ) -> list[Generation]:
        active = Q(state__in=[State.QUEUED.value, State.RUNNING.value])
        if finished_since is not None:
            active |= Q(finished_at__gte=finished_since)
        query = GenerationRow.filter(active)
        if platform is not None:
            query = query.filter(platform=platform)
        return [snapshot(row) for row in await query.order_by("id")]

    async def active_ids(self, platform: str, *, finished_since: datetime) -> list[int]:
        conn = get_connection("default")
        values = [
            platform,
            State.QUEUED.value,
            State.RUNNING.value,
            platform,
            _db_datetime(finished_since),
        ]
        _count, rows = await conn.execute_query(active_ids_sql(conn), values)
        return sorted(int(row["id"]) for row in rows)

    async def list_queued(self) -> list[Generation]:
        return sorted((snapshot(row) for row in await queued_query()), key=lambda g: g.id)

    async def list_stuck(self, heartbeat_before: datetime) -> list[Generation]:
        return sorted((snapshot(row) for row in await stuck_query(heartbeat_before)), key=lambda g: g.id)

    async def scrub_expired_secrets(
        self, now: datetime, *, platforms: Sequence[str], finished_since: datetime
    ) -> int:
        conn = get_connection("default")
        changed = 0
        for secret, expiry in EXPIRING_SECRETS.items():
            sql = scrub_sql(conn, secret, expiry, len(platforms))
            values = [
                encode_patch({"extra": {secret: None, expiry: None}}),
                State.QUEUED.value,
                State.RUNNING.value,
                *platforms,
                _db_datetime(finished_since),
                now.timestamp(),
            ]
            count, _rows = await conn.execute_query(sql, values)
            changed += count
        return changed

    async def list_for_user(
        self, platform: str, workspace: str, user_id: str, states: Sequence[State]
    ) -> list[Generation]:
        rows = await GenerationRow.filter(
            platform=platform,
            workspace=workspace,
            user_id=user_id,
            state__in=[s.value for s in states],
        ).order_by("id")
        return [snapshot(row) for row in rows]

    async def list_workspace(
        self, platform: str, workspace: str, states: Sequence[State]
    ) -> list[Generation]:
        rows = await GenerationRow.filter(
            platform=platform, workspace=workspace, state__in=[s.value for s in states]
        ).order_by("id")
        return [snapshot(row) for row in rows]

    async def discard(self, generation_id: int) -> None:
        await GenerationRow.filter(id=generation_id, state=State.QUEUED.value, ticket=None).delete()

    async def stats(self, platform: str, workspace: str, since: datetime) -> Stats:
        rows = await GenerationRow.filter(
            platform=platform, workspace=workspace, created_at__gte=since
        ).values_list("state", "error_code", "created_at", "started_at", "finished_at")
        by_code: dict[str, int] = {}
        waits: list[float] = []
        runs: list[float] = []
        succeeded = active = 0
        for state, code, created, started, finished in rows:
            if started is not None:
                waits.append((started - created).total_seconds())
            if state == State.SUCCEEDED.value:
                succeeded += 1
                if started is not None and finished is not None:
                    runs.append((finished - started).total_seconds())
            elif state in (State.QUEUED.value, State.RUNNING.value):
                active += 1
            else:
                key = code or state
                by_code[key] = by_code.get(key, 0) + 1
        return Stats(
            submitted=len(rows),
            succeeded=succeeded,
            by_code=by_code,
            active=active,
            mean_wait_s=sum(waits) / len(waits) if waits else None,
            mean_run_s=sum(runs) / len(runs) if runs else None,
        )
