"""The local web chat's history (:class:`~bot.ports.ChatLog`) on Tortoise."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tortoise.connection import get_connection
from tortoise.expressions import Q

from bot.ports import ChatRecord
from storage.merge import is_postgres
from storage.models import ChatMessageRow
from storage.reconnect import insert_once, reconnecting, retries_inside, with_retries

TABLE = ChatMessageRow._meta.db_table


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
        # One statement that writes and returns the message (every render of the chat edits one).
        conn = get_connection("default")
        p = ["$1", "$2", "$3"] if is_postgres(conn) else ["?"] * 3
        sql = f'UPDATE "{TABLE}" SET "status" = {p[0]}, "edited_at" = {p[1]} WHERE "id" = {p[2]} RETURNING *'  # noqa: S608 - constants
        fields = ChatMessageRow._meta.fields_map
        values = [
            fields["status"].to_db_value(status, ChatMessageRow),
            fields["edited_at"].to_db_value(datetime.now(UTC), ChatMessageRow),
            message_id,
        ]
        rows = await conn.execute_query_dict(sql, values)
        return _record(ChatMessageRow._init_from_db(**rows[0])) if rows else None

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
