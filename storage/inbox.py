"""The :class:`~bot.ports.CommandInbox` on Tortoise: acknowledged commands not yet finished."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.expressions import Q

from bot.ports import InboxEntry
from storage.models import InboxRow
from storage.reconnect import insert_once, reconnecting


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

    async def claim(self, key: str, now: datetime, stale_before: datetime) -> bool:
        changed = await InboxRow.filter(
            Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale_before), request_key=key
        ).update(claimed_at=now)
        return changed > 0

    async def expire(self, before: datetime) -> int:
        return await InboxRow.filter(created_at__lt=before).delete()
