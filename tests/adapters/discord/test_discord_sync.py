"""`genbot discord sync`: the commands registered with Discord, generated from the command specs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.app import runtime, serve_bot, sync_discord_commands
from bot.config import ConfigError
from bot.embedded_redis import EmbeddedRedis
from tests.adapters.discord.fake import APP_ID, FakeDiscord
from tests.conftest import make_settings


async def test_sync_registers_described_options_with_choices_and_ranges(
    fake: FakeDiscord, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        discord={"token": "bot-token", "api_base_url": fake.base_url},
    )
    async with runtime(settings) as rt:
        assert await sync_discord_commands(rt, guild=42) == 4
    (put,) = fake.of("PUT", rf"^/applications/{APP_ID}/guilds/42/commands$")
    commands = {c["name"]: c for c in put.json}
    assert set(commands) == {"imagine", "queue", "cancel", "status"}
    options = {o["name"]: o for o in commands["imagine"]["options"]}
    assert commands["imagine"]["options"][0]["name"] == "prompt"
    assert options["prompt"]["required"] is True and options["prompt"]["type"] == 3
    assert options["prompt"]["description"] == "What to draw"
    assert [c["value"] for c in options["size"]["choices"]] == ["512x512", "768x768", "512x768", "768x512"]
    assert (options["steps"]["min_value"], options["steps"]["max_value"]) == (1, 50)
    assert (options["seed"]["min_value"], options["seed"]["max_value"]) == (0, 2**32 - 1)
    assert options["steps"]["required"] is False
    assert commands["status"]["options"][0]["required"] is True
    assert commands["imagine"]["contexts"] == [0] or commands["imagine"].get("dm_permission") is False
    assert put.headers["Authorization"] == "Bot bot-token"


async def test_discord_without_a_token_stops_with_one_line_naming_the_setting(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_server.url, sqlite_url, tmp_path, platform="discord")
    async with runtime(settings) as rt:
        with pytest.raises(ConfigError, match="GENBOT_DISCORD__TOKEN"):
            await serve_bot(rt, asyncio.Event())
