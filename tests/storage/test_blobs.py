"""The blob stores: a folder, and the database's ``blobs`` table (SQLite and PostgreSQL), which
every bot and worker sharing the database reads."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from bot.config import BlobSettings, load_settings
from bot.embedded_redis import EmbeddedRedis
from jobs.worker import build_sweeper
from storage import blobs as blobs_module
from storage import db
from storage.blobs import DatabaseBlobStore, LocalBlobStore, prune_blobs
from storage.models import BlobRow


@pytest_asyncio.fixture
async def database(db_url: str) -> AsyncIterator[DatabaseBlobStore]:
    await db.connect(db_url)
    try:
        yield DatabaseBlobStore()
    finally:
        await db.close()


async def test_the_database_keeps_blobs_by_key_and_replaces_one_written_again(
    database: DatabaseBlobStore,
) -> None:
    data = bytes(range(256)) * 40  # every byte value: binary, not text
    await database.put("results/1.png", data)
    await database.put("previews/1.jpg", b"first")
    await database.put("previews/1.jpg", b"second, longer")
    assert await database.get("results/1.png") == data
    assert await database.get("previews/1.jpg") == b"second, longer"
    assert await database.get("results/2.png") is None
    rows = {row.key: row.size for row in await BlobRow.all()}
    assert rows == {"results/1.png": len(data), "previews/1.jpg": 14}


async def test_the_database_refuses_keys_that_are_not_safe_paths(database: DatabaseBlobStore) -> None:
    for key in ("../etc/passwd", "/abs", "a/../b", "spaces here", "x" * 256):
        with pytest.raises(ValueError, match="invalid blob key"):
            await database.put(key, b"no")
        assert await database.get(key) is None
    assert await BlobRow.all().count() == 0


async def test_concurrent_writes_of_one_key_leave_one_whole_value(database: DatabaseBlobStore) -> None:
    values = [bytes([n]) * (1000 + n) for n in range(20)]
    await asyncio.gather(*(database.put("previews/7.jpg", value) for value in values))
    assert await database.get("previews/7.jpg") in values
    assert await BlobRow.filter(key="previews/7.jpg").count() == 1


async def test_a_folder_keeps_blobs_as_files(tmp_path: Path) -> None:
    folder = LocalBlobStore(tmp_path)
    await folder.put("results/1.png", b"png")
    assert (tmp_path / "results" / "1.png").read_bytes() == b"png"
    assert await folder.get("results/1.png") == b"png"
    assert await folder.get("../outside") is None


def test_the_database_is_the_default_store_on_postgresql_only() -> None:
    auto = BlobSettings()
    assert auto.in_database("postgres://db/genbot") and auto.in_database("postgresql://db/genbot")
    assert not auto.in_database("sqlite://data/genbot.sqlite3")
    assert BlobSettings(store="database").in_database("sqlite://data/genbot.sqlite3")
    assert not BlobSettings(store="folder").in_database("postgres://db/genbot")


async def test_blobs_past_the_retention_are_pruned_in_batches(
    database: DatabaseBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    for n in range(5):
        await database.put(f"results/{n}.png", b"old")
    await database.put("results/new.png", b"new")
    await (
        BlobRow.filter(key__startswith="results/")
        .exclude(key="results/new.png")
        .update(created_at=now - timedelta(days=31))
    )
    monkeypatch.setattr(blobs_module, "PRUNE_BATCH", 2)  # three batches: 2, 2, 1

    assert await prune_blobs(database, keep_days=30, now=now) == 5
    assert [row.key for row in await BlobRow.all()] == ["results/new.png"]
    assert await prune_blobs(database, keep_days=30, now=now) == 0


async def test_a_folder_prunes_the_files_written_before_the_retention(tmp_path: Path) -> None:
    folder = LocalBlobStore(tmp_path)
    await folder.put("results/old.png", b"old")
    await folder.put("previews/new.jpg", b"new")
    month_ago = (datetime.now(UTC) - timedelta(days=31)).timestamp()
    os.utime(tmp_path / "results" / "old.png", (month_ago, month_ago))

    assert await prune_blobs(folder, keep_days=30) == 1
    assert await folder.get("results/old.png") is None
    assert await folder.get("previews/new.jpg") == b"new"


async def test_the_sweeper_prunes_hourly_only_when_a_retention_is_set(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = load_settings(_env_file=None, redis={"url": redis_server.url})

    async def nothing() -> int:
        return 0

    calls: list[str] = []

    async def pruned() -> int:
        calls.append("pruned")
        return 3

    keeping = build_sweeper(settings, reconcile=nothing, prune_blobs=pruned, handle_signals=False)
    forever = build_sweeper(settings, reconcile=nothing, handle_signals=False)
    try:
        (prune_job,) = [c for c in keeping.cron_jobs if c.name == "genbot-prune"]
        assert (prune_job.minute, prune_job.run_at_startup) == ({0}, True)
        assert [c.name for c in forever.cron_jobs] == ["genbot-sweep"]
        assert await prune_job.coroutine(keeping.ctx) == 3 and calls == ["pruned"]
    finally:
        await keeping.close()
        await forever.close()
