"""`genbot discord sync`: the commands registered with Discord, generated from the command specs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.app import runtime, serve_bot, sync_discord_commands
from bot.commands import admin_specs
from bot.config import ConfigError, StartupError
from bot.embedded_redis import EmbeddedRedis, free_port
from tests.adapters.discord.fake import APP_ID, FakeDiscord
from tests.cli import run_genbot
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
        assert await sync_discord_commands(rt, guild=42) == 5
    (put,) = fake.of("PUT", rf"^/applications/{APP_ID}/guilds/42/commands$")
    commands = {c["name"]: c for c in put.json}
    assert set(commands) == {"imagine", "queue", "cancel", "status", "admin"}
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


async def test_sync_registers_admin_as_one_group_for_manage_server_only(
    fake: FakeDiscord, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    """``genbot discord sync`` (global, as in production): ``/admin`` with one subcommand per admin
    spec, hidden by default from members without Manage Server (bit 5, 32), guild only."""
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        discord={"token": "bot-token", "api_base_url": fake.base_url},
    )
    async with runtime(settings) as rt:
        assert await sync_discord_commands(rt) == 5
    (put,) = fake.of("PUT", rf"^/applications/{APP_ID}/commands$")
    (admin,) = [c for c in put.json if c["name"] == "admin"]
    assert admin["type"] == 1
    # discord.py sends the bits as a JSON number; Discord takes it and stores the string "32".
    assert str(admin["default_member_permissions"]) == "32"
    assert admin["dm_permission"] is False and admin["contexts"] == [0]
    for member_command in (c for c in put.json if c["name"] != "admin"):
        assert member_command["default_member_permissions"] is None, "member commands stay visible"

    specs = {s.name: s for s in admin_specs()}
    subcommands = {o["name"]: o for o in admin["options"]}
    assert list(subcommands) == list(specs)
    for name, sub in subcommands.items():
        assert sub["type"] == 1, f"{name} is a subcommand"
        assert sub["description"] == specs[name].description
        assert [o["name"] for o in sub.get("options", [])] == [o.name for o in specs[name].options]
    ban = {o["name"]: o for o in subcommands["ban"]["options"]}
    assert ban["member"]["type"] == 6 and ban["member"]["required"] is True
    assert [c["value"] for c in ban["jobs"]["choices"]] == ["cancel", "keep"]
    assert ban["reason"]["type"] == 3 and ban["reason"]["required"] is False
    assert subcommands["unban"]["options"][0]["type"] == 6
    match = subcommands["block"]["options"][1]
    assert [c["value"] for c in match["choices"]] == ["word", "substring"]
    job = subcommands["cancel"]["options"][0]
    assert (job["type"], job["min_value"], job["required"]) == (4, 1, True)
    limit = subcommands["audit"]["options"][0]
    assert (limit["min_value"], limit["max_value"]) == (1, 100)


async def test_discord_without_a_token_stops_with_one_line_naming_the_setting(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_server.url, sqlite_url, tmp_path, platform="discord")
    async with runtime(settings) as rt:
        with pytest.raises(ConfigError, match="GENBOT_DISCORD__TOKEN"):
            await serve_bot(rt, asyncio.Event())


@pytest.mark.parametrize("command", ["bot", "sync"])
async def test_a_token_discord_refuses_is_a_config_error_naming_the_setting(
    fake: FakeDiscord,
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    command: str,
) -> None:
    """discord.py's LoginFailure (Discord's 401 on ``/users/@me``) becomes genbot's ConfigError,
    for ``genbot bot`` and ``genbot discord sync`` alike; nothing is registered."""
    fake.bot_token = "the-real-token"
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        platform="discord",
        discord={"token": "a-stale-token", "api_base_url": fake.base_url},
    )
    async with runtime(settings) as rt:
        start = serve_bot(rt, asyncio.Event()) if command == "bot" else sync_discord_commands(rt, guild=42)
        with pytest.raises(ConfigError) as caught:
            await start
    assert str(caught.value).startswith("GENBOT_DISCORD__TOKEN: Discord refused the bot token")
    assert [r.status for r in fake.requests] == [401]
    assert not fake.of("PUT", "commands")


async def test_discord_out_of_reach_names_the_api_base_url(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/v10"
    settings = make_settings(
        redis_server.url, sqlite_url, tmp_path, discord={"token": "bot-token", "api_base_url": closed}
    )
    async with runtime(settings) as rt:
        with pytest.raises(StartupError) as caught:
            await sync_discord_commands(rt)
    assert str(caught.value).startswith(f"cannot reach Discord at {closed} (")
    assert str(caught.value).endswith("check GENBOT_DISCORD__API_BASE_URL and the network")


@pytest.mark.parametrize("args", [("bot", "--platform", "discord"), ("discord", "sync")])
async def test_the_command_line_says_one_line_for_a_refused_token(
    fake: FakeDiscord,
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    args: tuple[str, ...],
) -> None:
    """``genbot bot`` and ``genbot discord sync`` as processes: exit code 2, one line, no traceback."""
    fake.bot_token = "the-real-token"
    env = {
        "GENBOT_DATABASE__URL": sqlite_url,
        "GENBOT_REDIS__URL": redis_server.url,
        "GENBOT_DISCORD__TOKEN": "a-stale-token",
        "GENBOT_DISCORD__API_BASE_URL": fake.base_url,
    }
    exited = await run_genbot(*args, cwd=tmp_path, env=env)
    assert exited.code == 2
    assert exited.one_line() == (
        "genbot: GENBOT_DISCORD__TOKEN: Discord refused the bot token (401 Unauthorized): copy it again "
        "from the Developer Portal (your application > Bot > Reset Token)"
    )
