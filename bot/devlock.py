"""One ``genbot dev`` per data folder.

Two of them on one folder would share its SQLite file, each with a Redis of its own: each one's
sweep would see the other's running jobs as lost and run them again. The lock is an exclusive
``flock`` on ``<data>/genbot.lock``, which holds the owner's pid for the message; the OS releases it
when the process ends, however it ends, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from bot.config import StartupError

LOCK_FILE = "genbot.lock"


@contextlib.contextmanager
def data_folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (the folder is created if needed).

    Raises :class:`StartupError` at once, naming the holder's pid, if another process holds it.
    The lock file stays behind on exit (removing it would race with a process about to lock it).
    The descriptor is not inherited by child processes (Python's default), so the embedded
    redis-server never keeps the lock of a genbot that died.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StartupError(
                f"another genbot dev is running on {folder.resolve()} (pid {holder}): stop it first, "
                "or run this one from another folder (each folder keeps its own data/)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
