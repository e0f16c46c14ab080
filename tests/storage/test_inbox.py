"""The command inbox commits in groups: a burst of records costs one INSERT, not one each, on
SQLite and PostgreSQL, and a record written twice (a retry) is still one record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from storage import db
from storage.inbox import TortoiseCommandInbox
from storage.models import InboxRow


@pytest_asyncio.fixture
async def inbox(db_url: str) -> AsyncIterator[TortoiseCommandInbox]:
    await db.connect(db_url)
    try:
        yield TortoiseCommandInbox()
    finally:
        await db.close()


async def test_a_burst_of_records_is_one_insert_and_each_put_returns_once_it_is_written(
    inbox: TortoiseCommandInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    inserts: list[int] = []
    bulk_create = InboxRow.bulk_create

    async def counted(objects: list[InboxRow], **kwargs: Any) -> Any:
        inserts.append(len(objects))
        return await bulk_create(objects, **kwargs)

    monkeypatch.setattr(InboxRow, "bulk_create", counted)
    before = datetime.now(UTC) - timedelta(seconds=1)
    await asyncio.gather(*(inbox.put(f"key-{i}", "local", {"n": i}) for i in range(50)))
    assert inserts == [50]
    entries = await inbox.stale("local", datetime.now(UTC) + timedelta(seconds=1), 100)
    assert sorted(e.payload["n"] for e in entries) == list(range(50))
    assert all(e.created_at >= before for e in entries)


async def test_a_record_put_again_stays_one_record(inbox: TortoiseCommandInbox) -> None:
    await inbox.put("again", "slack", {"first": True})
    await inbox.put("again", "slack", {"first": False})  # a retry whose first reply was lost
    [row] = await InboxRow.all()
    assert row.payload == {"first": True}
    await inbox.done("again")
    assert await InboxRow.all().count() == 0
