"""The local web chat's history (:class:`~bot.ports.ChatLog`) on Tortoise."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tortoise.expressions import Q

from bot.ports import ChatRecord
from storage.models import ChatMessageRow
from storage.reconnect import insert_once, reconnecting, retries_inside, with_retries


def _record(row: ChatMessageRow) -> ChatRecord:
    return ChatRecord(
        id=row.id,
        author_id=row.author_id,
        author_name=row.author_name,
        bot=row.bot,
        text=row.text,
        status=row.status,
        ephemeral_to=row.ephemeral_to,
        created_at=row.created_at.isoformat(),
        edited_at=row.edited_at.isoformat() if row.edited_at else None,
    )


@reconnecting
class TortoiseChatLog:
    @retries_inside
    async def add(
        self,
        *,
        author_id: str,
        author_name: str,
        bot: bool,
        text: str | None = None,
        status: dict[str, Any] | None = None,
        ephemeral_to: str | None = None,
    ) -> ChatRecord:
        key = uuid.uuid4().hex  # one per message, across the retries: never posted twice
        row = await with_retries(
            lambda: insert_once(
                ChatMessageRow,
                key,
                author_id=author_id,
                author_name=author_name,
                bot=bot,
                text=text,
                status=status,
                ephemeral_to=ephemeral_to,
            ),
            "add",
        )
        return _record(row)

    async def set_status(self, message_id: int, status: dict[str, Any]) -> ChatRecord | None:
        changed = await ChatMessageRow.filter(id=message_id).update(
            status=status, edited_at=datetime.now(UTC)
        )
        return await self.get(message_id) if changed else None

    async def get(self, message_id: int) -> ChatRecord | None:
        row = await ChatMessageRow.get_or_none(id=message_id)
        return _record(row) if row else None

    async def history(self, viewer: str, limit: int) -> list[ChatRecord]:
        rows = (
            await ChatMessageRow.filter(Q(ephemeral_to__isnull=True) | Q(ephemeral_to=viewer))
            .order_by("-id")
            .limit(limit)
        )
        return [_record(row) for row in reversed(rows)]
