"""The blob store for images: a local folder by default."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")


class LocalBlobStore:
    """Blobs as files under ``root``. Writes are atomic (temporary file, then rename), so a reader
    never sees half an image. Keys are relative paths of safe characters only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key:
            raise ValueError("invalid blob key")
        return self.root / key

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique per write
        tmp.write_bytes(data)
        tmp.replace(path)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    async def get(self, key: str) -> bytes | None:
        try:
            path = self._path(key)
        except ValueError:
            return None
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
