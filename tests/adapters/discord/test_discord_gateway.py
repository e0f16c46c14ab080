"""``genbot bot`` on Discord as production starts it: :func:`bot.app.serve_bot` logs in over REST,
asks the configured base's ``GET /gateway/bot`` where the gateway is, and connects to it (the
fake's WebSocket), with a real worker behind it. Commands arrive as gateway dispatches."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import discord
import discord.gateway
import pytest
import pytest_asyncio
from PIL import Image
from redis.asyncio import Redis

import bot.app
from adapters.discord.client import GenbotClient
from bot.app import Runtime, runtime, serve_bot
from bot.embedded_redis import EmbeddedRedis
from bot.models import State
from tests.adapters.discord.fake import APP_ID, BOT_ID, Recorded, interaction_payload
from tests.adapters.discord.fake_gateway import (
    GUILD_ID,
    HEARTBEAT,
    HEARTBEAT_ACK,
    IDENTIFY,
    FakeGateway,
    GatewaySession,
)
from tests.conftest import make_settings
from tests.stack import worker_running

WEBHOOK = rf"^/webhooks/{APP_ID}/"
DEFAULT_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


def is_final(r: Recorded) -> bool:
    return bool(r.files) and any(name.startswith("genbot-") for name, _ in r.files.values())


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    server = FakeGateway()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(autouse=True)
def _restore_default_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """A safety net only: the tests assert that the start-up path restores it itself."""
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", DEFAULT_GATEWAY)


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[GenbotClient]:
    """The clients serve_bot builds, for looking at their state (nothing else is changed)."""
    built: list[GenbotClient] = []
    real = bot.app.build_discord_client

    def capture(*args: Any, **kwargs: Any) -> GenbotClient:
        built.append(client := real(*args, **kwargs))
        return client

    monkeypatch.setattr(bot.app, "build_discord_client", capture)
    return built


async def until(
    check: Callable[[], Any], fake: FakeGateway, task: asyncio.Task[None], timeout: float = 15
) -> Any:
    """Poll ``check`` until truthy; fail early if serve_bot died, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        if task.done():
            task.result()
            raise AssertionError("serve_bot returned before the stop event")
        if time.monotonic() > deadline:
            frames = [(s.shard, [f.get("op") for f in s.received]) for s in fake.sessions]
            raise AssertionError(
                f"timed out; gateway: {frames}; requests: " + ", ".join(r.route for r in fake.requests[-30:])
            )
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def bot_serving(
    fake: FakeGateway,
    redis_server: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    **discord_settings: Any,
) -> AsyncIterator[tuple[Runtime, asyncio.Task[None]]]:
    """A worker and serve_bot(platform=discord) against ``fake``; on exit sets stop and checks
    that serve_bot returns promptly, and that the process-wide REST base and gateway are restored."""
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        platform="discord",
        discord={"token": "bot-token", "api_base_url": fake.base_url, **discord_settings},
    )
    old_base = discord.http.Route.BASE
    async with runtime(settings) as rt, worker_running(rt):
        stop = asyncio.Event()
        task = asyncio.create_task(serve_bot(rt, stop), name="test-serve-bot")
        try:
            yield rt, task
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)  # returns (or raises what killed it), no hang
    assert old_base == discord.http.Route.BASE, "the REST base is restored"
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == DEFAULT_GATEWAY, "the gateway is restored"


async def test_serve_bot_connects_to_the_announced_gateway_and_answers_imagine(
    gateway: FakeGateway,
    clients: list[GenbotClient],
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    fake = gateway
    async with bot_serving(fake, redis_server, sqlite_url, tmp_path) as (rt, task):
        # Login over REST, then the shard count and gateway address from the configured base.
        session: GatewaySession = await until(lambda: fake.live(0) if fake.identified() else None, fake, task)
        assert [r.route for r in fake.requests[:3]] == [
            "GET /users/@me",
            "GET /oauth2/applications/@me",
            "GET /gateway/bot",
        ]
        assert session.query == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
        (identify,) = session.of(IDENTIFY)
        assert identify["d"]["token"] == "bot-token"
        assert identify["d"]["shard"] == [0, 1]
        assert identify["d"]["intents"] == discord.Intents(guilds=True).value
        (client,) = clients

        # Heartbeats: the first at once after HELLO, then every interval, each acknowledged.
        await until(lambda: len(session.of(HEARTBEAT)) >= 3, fake, task)
        acks = [f for f in session.sent if f["op"] == HEARTBEAT_ACK]
        assert len(acks) >= 2
        assert client.latency < 1.0, "the ACKs reached the client's keep-alive"
        # READY and the GUILD_CREATE were taken in (the guild's cached).
        guild = await until(lambda: client.get_guild(int(GUILD_ID)), fake, task)
        assert guild.name == "genbot test"
        assert client.user is not None and str(client.user.id) == BOT_ID

        payload = interaction_payload(name="imagine", options={"prompt": "a red fox", "steps": 3})
        await fake.deliver(payload)
        token = payload["token"]
        final = await until(
            lambda: [r for r in fake.of("PATCH", WEBHOOK + token) if is_final(r)], fake, task, timeout=15
        )

        mine = [r for r in fake.requests if token in r.path]
        assert mine[0].route == f"POST /interactions/{payload['id']}/{token}/callback"
        assert mine[0].json["type"] == 5, "deferred"
        assert mine[1].route == f"PATCH /webhooks/{APP_ID}/{token}/messages/@original"
        assert mine[1].json["embeds"][0]["description"] == "a red fox"
        assert mine[1].json["embeds"][0]["title"].startswith("Queued")
        name, data = next(iter(final[-1].files.values()))
        assert final[-1].json["embeds"][0]["image"]["url"] == f"attachment://{name}"
        assert Image.open(io.BytesIO(data)).size == (512, 512)
        (row,) = await rt.store.list_for_user("discord", GUILD_ID, "300000000000000001", list(State))
        assert row.prompt == "a red fox"

        # The heartbeat carries the last sequence number the client saw.
        seq = session.seq
        await until(lambda: any(f["d"] == seq for f in session.of(HEARTBEAT)), fake, task)
        assert not task.done()

    # stop.set() ended serve_bot; the client said goodbye on the gateway with a normal close.
    assert session.close_code == 1000
    assert len(fake.sessions) == 1, "no reconnects"


async def test_fixed_shard_count_identifies_every_shard_at_the_configured_gateway(
    gateway: FakeGateway,
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    fake = gateway
    fake.shards = 1  # what /gateway/bot advises; the setting wins
    async with bot_serving(fake, redis_server, sqlite_url, tmp_path, shard_count=2) as (_rt, task):
        # discord.py waits 5 s before each IDENTIFY but the first (its identify rate limit).
        await until(lambda: len(fake.identified()) == 2, fake, task, timeout=15)
        assert fake.of("GET", r"^/gateway/bot$"), "the address came from the configured base"
        shards = sorted(tuple(s.of(IDENTIFY)[0]["d"]["shard"]) for s in fake.identified())
        assert shards == [(0, 2), (1, 2)]
        assert all(s.ready for s in fake.identified())
        # The guild belongs to one shard; its interaction arrives there and is answered.
        payload = interaction_payload(name="imagine", options={"prompt": "two shards", "steps": 2})
        session = await fake.deliver(payload)
        assert session.shard == (fake.shard_of(GUILD_ID), 2)
        token = payload["token"]
        await until(lambda: [r for r in fake.of("PATCH", WEBHOOK + token) if is_final(r)], fake, task)
    assert [s.close_code for s in fake.sessions] == [1000, 1000]


async def test_a_session_invalidated_is_identified_again_at_the_configured_gateway(
    gateway: FakeGateway,
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """INVALID_SESSION (op 9, not resumable) makes discord.py IDENTIFY anew at its default gateway:
    that must still be the configured base's, not gateway.discord.gg."""
    fake = gateway
    async with bot_serving(fake, redis_server, sqlite_url, tmp_path) as (_rt, task):
        await until(lambda: fake.live(0) is not None and fake.live(0).ready, fake, task)  # type: ignore[union-attr]
        await fake.invalidate(0, resumable=False)
        await until(lambda: len(fake.identified()) == 2 and fake.identified()[1].ready, fake, task)
        first, second = fake.identified()
        assert first.close_code == 1000 and second.open
        assert second.session_id != first.session_id
        payload = interaction_payload(name="imagine", options={"prompt": "after a new session", "steps": 2})
        await fake.deliver(payload)
        token = payload["token"]
        await until(lambda: [r for r in fake.of("PATCH", WEBHOOK + token) if is_final(r)], fake, task)
