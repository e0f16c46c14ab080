"""The :class:`~bot.ports.CommandInbox` on Tortoise: acknowledged commands not yet finished.

A record is written before its command's ack goes out, so a burst of commands would queue that many
INSERTs (and commits) in front of their acks. :meth:`TortoiseCommandInbox.put` commits in groups
instead: the records that arrive while one INSERT is being written are written together in the
next one (one statement, one commit), so 200 concurrent commands cost a few writes, not 200.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tortoise.connection import get_connection
from tortoise.expressions import Q

from bot.ports import InboxEntry
from storage.merge import is_postgres
from storage.models import InboxRow
from storage.reconnect import reconnecting, retries_inside, with_retries


@reconnecting
class TortoiseCommandInbox:
    def __init__(self) -> None:
        #: Records waiting for the next group's INSERT, each with its writer's future.
        self._waiting: list[tuple[InboxRow, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def put(self, key: str, platform: str, payload: dict[str, Any]) -> None:
        """Record a command; returns once its group is committed. Safe to retry (one record per
        ``key``: a retry's duplicate is ignored). A group that fails fails every put in it."""
        row = InboxRow(request_key=key, platform=platform, payload=payload, created_at=datetime.now(UTC))
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="genbot-inbox-writer")
        await written

    async def _write_groups(self) -> None:
        """Write what waits, one group at a time, until nothing does."""
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await InboxRow.bulk_create([row for row, _ in group], ignore_conflicts=True)
            except Exception as exc:
                for _, written in group:
                    if not written.done():
                        written.set_exception(exc)
            else:
                for _, written in group:
                    if not written.done():
                        written.set_result(None)

    async def done(self, key: str) -> None:
        # Every command ends here: one hand-written statement (the ORM's DELETE costs more to build).
        conn = get_connection("default")
        key_ph = "$1" if is_postgres(conn) else "?"
        sql = f'DELETE FROM "{InboxRow._meta.db_table}" WHERE "request_key" = {key_ph}'  # noqa: S608 - constants
        await conn.execute_query(sql, [key])

    async def stale(self, platform: str, before: datetime, limit: int) -> list[InboxEntry]:
        rows = (
            await InboxRow.filter(platform=platform, created_at__lt=before)
            .order_by("created_at")
            .limit(limit)
        )
        return [InboxEntry(row.request_key, row.platform, dict(row.payload), row.created_at) for row in rows]

    @retries_inside
    async def claim(self, key: str, now: datetime, stale_before: datetime) -> bool:
        changed = await with_retries(
            lambda: InboxRow.filter(
                Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale_before), request_key=key
            ).update(claimed_at=now),
            "claim",
        )
        if changed:
            return True
        # Retried after its reply was lost? Then the claim it finds is its own.
        row = await with_retries(lambda: InboxRow.get_or_none(request_key=key), "claim")
        return row is not None and row.claimed_at == now

    async def expire(self, before: datetime) -> int:
        return await InboxRow.filter(created_at__lt=before).delete()
