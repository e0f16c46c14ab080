"""A TCP proxy in front of PostgreSQL that can lose a reply after the server committed.

It forwards bytes both ways and reads the messages of PostgreSQL's wire protocol (a type byte and
a length) in both directions. It follows the extended query protocol that asyncpg speaks: a
``Parse`` names a statement and its SQL, a ``Bind`` runs one, a ``Sync`` ends the cycle and the
server answers it with ``ReadyForQuery`` once the cycle's implicit transaction has committed.

Armed with a piece of SQL (``lose_reply_after('INSERT INTO "audit_log"')``), the proxy lets the
next cycle that runs such a statement through to the server, holds back every byte of the reply
until its ``ReadyForQuery`` says the server is idle again (the write has committed), and then
closes both connections instead of forwarding it: the ambiguous failure of a connection killed
between a commit and its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
GSS_REQUEST = struct.pack("!ii", 8, 80877104)


def _cstring(data: bytes, start: int) -> tuple[str, int]:
    end = data.index(b"\0", start)
    return data[start:end].decode(), end + 1


class PgProxy:
    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5432) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.armed: list[str] = []  # pieces of SQL whose next reply to lose, one cut each
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def lose_reply_after(self, sql: str, times: int = 1) -> None:
        self.armed += [sql] * times

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection(*self.upstream)
        session = _Session(self)
        up = asyncio.create_task(session.client_to_server(c_reader, s_writer))
        down = asyncio.create_task(session.server_to_client(s_reader, c_writer))
        self._tasks |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
                self._tasks.discard(task)
            for writer in (c_writer, s_writer):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


class _Session:
    """One client connection: which SQL each sync cycle runs, and whether its reply is lost."""

    def __init__(self, proxy: PgProxy) -> None:
        self.proxy = proxy
        self.statements: dict[str, str] = {}
        self.cycle: str | None = None  # the SQL the current cycle binds
        self.cycles: deque[str | None] = deque()  # one per Sync sent, answered in order
        self.negotiating = asyncio.Event()
        self.started = asyncio.Event()

    async def client_to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(8)
        if first in (SSL_REQUEST, GSS_REQUEST):
            self.negotiating.set()  # the server answers with one byte, no message header
            writer.write(first)
            self.started.set()
            first = await reader.readexactly(8)
        (length,) = struct.unpack("!i", first[:4])
        writer.write(first + await reader.readexactly(length - 8))  # the StartupMessage
        self.started.set()
        while True:
            header = await reader.readexactly(5)
            kind = header[:1]
            (length,) = struct.unpack("!i", header[1:])
            body = await reader.readexactly(length - 4)
            if kind == b"P":
                name, at = _cstring(body, 0)
                self.statements[name], _ = _cstring(body, at)
            elif kind == b"B":
                _portal, at = _cstring(body, 0)
                statement, _ = _cstring(body, at)
                self.cycle = self.statements.get(statement)
            elif kind == b"S":
                self.cycles.append(self.cycle)
                self.cycle = None
            writer.write(header + body)
            await writer.drain()

    async def server_to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.started.wait()
        pending = b""
        held: bytes | None = None  # the reply of an armed cycle, until its ReadyForQuery
        while data := await reader.read(65536):
            if self.negotiating.is_set():
                self.negotiating.clear()
                writer.write(data[:1])
                data = data[1:]
            pending += data
            while len(pending) >= 5:
                (length,) = struct.unpack("!i", pending[1:5])
                if len(pending) < 1 + length:
                    break
                message, pending = pending[: 1 + length], pending[1 + length :]
                if held is None and self._armed_cycle():
                    held = b""
                if held is None:
                    writer.write(message)
                else:
                    held += message
                if message[:1] != b"Z":
                    continue
                sql = self.cycles.popleft() if self.cycles else None
                if held is not None:
                    if message[5:6] == b"I" and sql is not None:  # idle: the write has committed
                        self.proxy.armed.pop(0)
                        self.proxy.cuts += 1
                        return  # closes both sides: committed, and never answered
                    writer.write(held)
                    held = None
            await writer.drain()

    def _armed_cycle(self) -> bool:
        """Whether the reply now arriving answers a cycle that runs the armed SQL."""
        sql = self.cycles[0] if self.cycles else None
        return bool(self.proxy.armed) and sql is not None and self.proxy.armed[0] in sql
