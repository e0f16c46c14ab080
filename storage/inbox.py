"""The :class:`~bot.ports.CommandInbox` on Tortoise: acknowledged commands not yet finished."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.expressions import Q

from bot.ports import InboxEntry
from storage.models import InboxRow
from storage.reconnect import insert_once, reconnecting, retries_inside, with_retries


@reconnecting
class TortoiseCommandInbox:
    async def put(self, key: str, platform: str, payload: dict[str, Any]) -> None:
        await insert_once(InboxRow, key, platform=platform, payload=payload)

    async def done(self, key: str) -> None:
        await InboxRow.filter(request_key=key).delete()

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
