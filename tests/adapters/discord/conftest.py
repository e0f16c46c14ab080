"""A Discord stack against the local fake: the real client (logged in over REST), renderer, worker,
Redis and SQLite. Interactions are delivered through the client's own gateway parser."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest_asyncio
from redis.asyncio import Redis

from adapters.discord.client import GenbotClient
from bot.app import Runtime, build_renderer, discord_session, runtime
from bot.embedded_redis import EmbeddedRedis
from tests.adapters.discord.fake import APP_ID, FakeDiscord
from tests.conftest import make_settings
from tests.stack import worker_running


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.stop()


@dataclass
class Clock:
    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class DiscordStack:
    rt: Runtime
    client: GenbotClient
    fake: FakeDiscord
    clock: Clock

    def deliver(self, payload: dict[str, Any]) -> None:
        self.fake.token_channels[payload["token"]] = payload["channel_id"]
        self.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]

    async def until(self, check: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if result := check():
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    "timed out; requests: " + ", ".join(r.route for r in self.fake.requests[-30:])
                )
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def discord_stack(
    fake: FakeDiscord,
    redis_server: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    *,
    worker: bool = True,
    **overrides: Any,
) -> AsyncIterator[DiscordStack]:
    """The stack; ``worker=False`` leaves out the worker, so that jobs stay queued for as long as
    a test needs them there. ``discord={...}`` adds to the Discord settings."""
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        platform="discord",
        discord={
            "token": "bot-token",
            "application_id": int(APP_ID),
            "api_base_url": fake.base_url,
            **overrides.pop("discord", {}),
        },
        **overrides,
    )
    clock = Clock()
    old_base = discord.http.Route.BASE
    async with contextlib.AsyncExitStack() as running:
        rt = await running.enter_async_context(runtime(settings))
        if worker:
            await running.enter_async_context(worker_running(rt))
        client = await running.enter_async_context(discord_session(rt, clock=clock))
        renderer = build_renderer(rt, client.chat)
        await renderer.feed.ensure_group()
        stop = asyncio.Event()
        task = asyncio.create_task(renderer.run(stop))
        try:
            yield DiscordStack(rt, client, fake, clock)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    assert old_base == discord.http.Route.BASE, "the REST base is restored"


@pytest_asyncio.fixture
async def stack(
    fake: FakeDiscord, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[DiscordStack]:
    async with discord_stack(fake, redis_server, sqlite_url, tmp_path) as value:
        yield value
