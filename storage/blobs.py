"""The blob store: the images, previews and files jobs make and members attach, by key.

Two kinds, chosen by ``GENBOT_BLOBS__STORE`` (:func:`bot.app` wires them):

- :class:`LocalBlobStore`, a folder (``GENBOT_BLOBS__DIR``): for one machine (``genbot dev``), or
  several that share the folder;
- :class:`DatabaseBlobStore`, the ``blobs`` table of genbot's own database: every bot and worker
  that shares the database reads what any of them wrote, with no server of its own. The default
  when the database is PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tortoise.connection import get_connection

from bot.ports import BlobStore
from storage.merge import is_postgres
from storage.models import BlobRow
from storage.reconnect import reconnecting

_KEY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")
#: The longest key (the ``blobs`` table's ``key`` column).
KEY_MAX = 255


def valid_key(key: str) -> bool:
    """Keys are relative paths of safe characters (``results/12.png``), never climbing out."""
    return len(key) <= KEY_MAX and bool(_KEY.match(key)) and ".." not in key


class LocalBlobStore:
    """Blobs as files under ``root``. Writes are atomic (temporary file, then rename), so a reader
    never sees half an image. Keys are relative paths of safe characters only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not valid_key(key):
            raise ValueError("invalid blob key")
        return self.root / key

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique per write
        tmp.write_bytes(data)
        tmp.replace(path)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    async def prune(self, older_than: datetime, most: int) -> int:
        """Remove at most ``most`` files last written before ``older_than`` (their mtime)."""
        return await asyncio.to_thread(self._prune, older_than.timestamp(), most)

    def _prune(self, cutoff: float, most: int) -> int:
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.rglob("*"):
            if removed >= most:
                break
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # another process pruned it first
                continue
        return removed

    async def get(self, key: str) -> bytes | None:
        try:
            path = self._path(key)
        except ValueError:
            return None
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None


#: An upsert both SQLite (3.24 and later) and PostgreSQL read: a key written again is replaced.
UPSERT = (
    'INSERT INTO "blobs" ("key", "data", "size", "created_at") VALUES ({params}) '
    'ON CONFLICT ("key") DO UPDATE SET "data" = excluded."data", "size" = excluded."size", '
    '"created_at" = excluded."created_at"'
)


@reconnecting
class DatabaseBlobStore:
    """Blobs as rows of the ``blobs`` table. A write is one statement (a reader sees the old
    bytes or the new, never half); writing a key again replaces it, so a retry is harmless."""

    async def put(self, key: str, data: bytes) -> None:
        if not valid_key(key):
            raise ValueError("invalid blob key")
        conn = get_connection("default")
        created = BlobRow._meta.fields_map["created_at"].to_db_value(datetime.now(UTC), BlobRow)
        params = "$1, $2, $3, $4" if is_postgres(conn) else "?, ?, ?, ?"
        await conn.execute_query(UPSERT.format(params=params), [key, data, len(data), created])

    async def get(self, key: str) -> bytes | None:
        if not valid_key(key):
            return None
        found = await BlobRow.filter(key=key).values_list("data", flat=True)
        return bytes(found[0]) if found else None

    async def prune(self, older_than: datetime, most: int) -> int:
        """Remove at most ``most`` rows written before ``older_than`` (oldest first)."""
        old = BlobRow.filter(created_at__lt=older_than).order_by("created_at").limit(most)
        keys = await old.values_list("key", flat=True)
        if not keys:
            return 0
        return int(await BlobRow.filter(key__in=list(keys), created_at__lt=older_than).delete())


#: Blobs removed per statement (or per walk of the folder) when they are pruned.
PRUNE_BATCH = 1000
#: Batches one pruning run removes at most; the next run goes on.
PRUNE_BATCHES_MAX = 20


async def prune_blobs(blobs: BlobStore, keep_days: float, now: datetime | None = None) -> int:
    """Remove the blobs last written more than ``keep_days`` ago, in batches (at most
    :data:`PRUNE_BATCHES_MAX` of :data:`PRUNE_BATCH`); how many went."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    removed = 0
    for _ in range(PRUNE_BATCHES_MAX):
        gone = await blobs.prune(cutoff, PRUNE_BATCH)
        removed += gone
        if gone < PRUNE_BATCH:
            break
    return removed
