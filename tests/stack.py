"""Run the whole of ``genbot dev`` inside a test: the local chat, the renderer and a worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bot.app import PlatformWatch, Runtime, serve_bot, serve_worker


@contextlib.asynccontextmanager
async def bot_running(
    rt: Runtime, watch: PlatformWatch | None = None
) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """Start the local chat and the renderer; yields ``(base_url, stop)``. Stops on exit."""
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_bot(rt, stop, on_listening=ready.set_result, watch=watch))
    port = await asyncio.wait_for(ready, 10)
    try:
        yield f"http://127.0.0.1:{port}", stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def worker_running(rt: Runtime) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve_worker(rt, stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def stack_running(rt: Runtime) -> AsyncIterator[str]:
    """The bot and a worker; yields the chat's base URL."""
    async with worker_running(rt), bot_running(rt) as (base_url, _stop):
        yield base_url
