"""A local Sentry ingest: what the Sentry SDK sends to a DSN ``http://KEY@127.0.0.1:PORT/PROJECT``,
received as Sentry's own endpoint receives it (``POST /api/PROJECT/envelope/``, the key in the
``X-Sentry-Auth`` header, the body gzip-compressed, which aiohttp's server undoes) and read as
the envelope format says: a header line, then items, each a header line and a payload (of the
header's ``length`` bytes, else up to the next newline)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fake_server import serve

KEY = "0123456789abcdef0123456789abcdef"
PROJECT = "1"


@dataclass(frozen=True)
class Item:
    header: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.header.get("type", ""))

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.payload))


@dataclass(frozen=True)
class Envelope:
    header: dict[str, Any]
    items: list[Item]
    #: The decompressed body, for what must appear nowhere in it.
    body: bytes


def parse_envelope(body: bytes) -> Envelope:
    """An envelope's header and items. Raises ValueError for what is not one."""
    header_line, _, rest = body.partition(b"\n")
    header = json.loads(header_line)
    items = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_line)
        length = item_header.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            if len(rest) < length:
                raise ValueError(f"an item of {length} bytes has only {len(rest)}")
            payload, rest = rest[:length], rest[length:].removeprefix(b"\n")
        items.append(Item(item_header, payload))
    return Envelope(header, items, body)


class SentryServer:
    """Keeps every envelope it is sent (with the right key, to the right project)."""

    def __init__(self) -> None:
        self.port = 0
        self.envelopes: list[Envelope] = []
        self.refused: list[str] = []
        self._changed = asyncio.Condition()

    @property
    def dsn(self) -> str:
        return f"http://{KEY}@127.0.0.1:{self.port}/{PROJECT}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{project}/envelope/", self._envelope)
        return app

    async def _envelope(self, request: web.Request) -> web.Response:
        auth = request.headers.get("X-Sentry-Auth", "")
        if request.match_info["project"] != PROJECT or f"sentry_key={KEY}" not in auth:
            self.refused.append(f"{request.path} {auth}")
            return web.json_response({"detail": "bad project or key"}, status=401)
        try:
            envelope = parse_envelope(await request.read())
        except ValueError as exc:
            self.refused.append(str(exc))
            return web.json_response({"detail": str(exc)}, status=400)
        async with self._changed:
            self.envelopes.append(envelope)
            self._changed.notify_all()
        return web.json_response({"id": envelope.header.get("event_id")})

    def events(self) -> list[dict[str, Any]]:
        """The events received so far (items of type ``event``), in order."""
        return [item.json() for env in self.envelopes for item in env.items if item.type == "event"]

    async def wait_for_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first event that satisfies ``predicate`` (``timeout``: a hang guard)."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                for event in self.events():
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no such event; got {self.events()} (refused: {self.refused})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)


@contextlib.asynccontextmanager
async def sentry_server() -> AsyncIterator[SentryServer]:
    server = SentryServer()
    runner, server.port = await serve(server.app())
    try:
        yield server
    finally:
        await runner.cleanup()
