"""Start-up on Slack: every way it can fail is one :class:`ConfigError` or :class:`StartupError`
naming the setting to fix, raised by the frontend's start (``genbot bot`` prints it as one line)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.app import Runtime, build_frontend, runtime
from bot.config import ConfigError, StartupError
from bot.embedded_redis import EmbeddedRedis, free_port
from tests.adapters.slack.conftest import SECRET
from tests.adapters.slack.fake_slack import TOKEN, FakeSlack
from tests.cli import run_genbot
from tests.conftest import make_settings


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def slack_runtime(
    redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path, redis: Redis
) -> Callable[..., AbstractAsyncContextManager[Runtime]]:
    """``slack_runtime(**slack_settings)``: a runtime on Slack, in HTTP mode unless told otherwise."""

    def make(**slack: object) -> AbstractAsyncContextManager[Runtime]:
        base = {"bot_token": TOKEN, "signing_secret": SECRET, "http_host": "127.0.0.1", "http_port": 0}
        settings = make_settings(redis_server.url, sqlite_url, tmp_path, platform="slack", slack=base | slack)
        return runtime(settings)

    return make


async def _start(rt: Runtime) -> None:
    frontend = build_frontend(rt)
    try:
        await frontend.start()
    finally:
        await frontend.stop()


async def test_a_bot_token_slack_refuses_names_the_setting(
    slack_runtime: Callable[..., AbstractAsyncContextManager[Runtime]], fake: FakeSlack
) -> None:
    async with slack_runtime(bot_token="xoxb-revoked", api_base_url=fake.api_url) as rt:
        with pytest.raises(ConfigError) as caught:
            await _start(rt)
    assert str(caught.value) == "GENBOT_SLACK__BOT_TOKEN: Slack refused the bot token (not_authed)"


async def test_an_app_token_slack_refuses_names_the_setting(
    slack_runtime: Callable[..., AbstractAsyncContextManager[Runtime]], fake: FakeSlack
) -> None:
    async with slack_runtime(app_token="xapp-revoked", api_base_url=fake.api_url) as rt:
        with pytest.raises(ConfigError) as caught:
            await _start(rt)
    assert str(caught.value).startswith(
        "GENBOT_SLACK__APP_TOKEN: Slack refused the app-level token (not_authed)"
    )
    assert not fake.sockets, "no Socket Mode connection was attempted"


async def test_a_web_api_out_of_reach_names_the_base_url(
    slack_runtime: Callable[..., AbstractAsyncContextManager[Runtime]],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/"
    async with slack_runtime(api_base_url=closed) as rt:
        with pytest.raises(StartupError) as caught:
            await _start(rt)
    assert str(caught.value).startswith(f"cannot reach Slack's Web API at {closed} (")
    assert str(caught.value).endswith("check GENBOT_SLACK__API_BASE_URL")


async def test_http_mode_on_a_busy_port_names_the_port_setting(
    slack_runtime: Callable[..., AbstractAsyncContextManager[Runtime]], fake: FakeSlack, held_port: int
) -> None:
    async with slack_runtime(api_base_url=fake.api_url, http_port=held_port) as rt:
        with pytest.raises(StartupError) as caught:
            await _start(rt)
    assert str(caught.value) == (
        f"port {held_port} on 127.0.0.1 is in use: set GENBOT_SLACK__HTTP_PORT to a free port"
    )


async def test_the_command_line_says_one_line_for_a_refused_token(
    fake: FakeSlack, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    """``genbot bot`` on Slack as a process: exit code 2, one line, no traceback."""
    env = {
        "GENBOT_DATABASE__URL": sqlite_url,
        "GENBOT_REDIS__URL": redis_server.url,
        "GENBOT_PLATFORM": "slack",
        "GENBOT_SLACK__BOT_TOKEN": "xoxb-revoked",
        "GENBOT_SLACK__SIGNING_SECRET": SECRET,
        "GENBOT_SLACK__API_BASE_URL": fake.api_url,
        "GENBOT_SLACK__HTTP_PORT": "0",
    }
    exited = await run_genbot("bot", cwd=tmp_path, env=env)
    assert exited.code == 2
    assert exited.one_line() == "genbot: GENBOT_SLACK__BOT_TOKEN: Slack refused the bot token (not_authed)"
