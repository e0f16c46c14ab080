"""genbot on the local chat, drawing through a fake image service: the whole stack (the chat, a
worker, the renderer, Redis, SQLite) with ``GENBOT_BACKEND__NAME=<name>`` and its section."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bot.app import runtime
from bot.embedded_redis import EmbeddedRedis
from tests.chat_client import ChatClient
from tests.conftest import make_settings
from tests.stack import stack_running


class FakeService(Protocol):
    def start(self) -> Awaitable[str]: ...

    def stop(self) -> Awaitable[None]: ...


@contextlib.asynccontextmanager
async def backend_chat(
    redis_server: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    fake: FakeService,
    name: str,
    section: dict[str, Any],
    url_key: str = "url",
    **overrides: Any,
) -> AsyncIterator[ChatClient]:
    """Start ``fake``, then genbot with backend ``name`` whose section is ``section`` and the
    fake's address under ``url_key``; yields a member's chat client."""
    url = await fake.start()
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        backend={"name": name},
        backends={name: {url_key: url, **section}},
        **overrides,
    )
    try:
        async with runtime(settings) as rt, stack_running(rt) as base, aiohttp.ClientSession() as http:
            alice = ChatClient(http, base, "alice")
            await alice.connect()
            try:
                yield alice
            finally:
                await alice.close()
    finally:
        await fake.stop()


def ended(message: dict[str, Any]) -> bool:
    """A status message whose job has ended, however."""
    status = message.get("status")
    return bool(status) and status["state"] in ("succeeded", "failed", "cancelled", "timed_out")


def drawing_with_preview(message: dict[str, Any]) -> bool:
    """A status message of a job under way, with a step and a preview shown."""
    status = message.get("status") or {}
    return (
        status.get("state") == "running" and bool(status.get("preview_url")) and bool(status.get("progress"))
    )
