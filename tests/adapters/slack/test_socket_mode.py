"""Socket Mode: with an app-level token the bot connects to Slack over a WebSocket instead of
listening for HTTP, and acks each envelope on it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from redis.asyncio import Redis

from bot.app import runtime, serve_bot
from bot.embedded_redis import EmbeddedRedis
from storage.models import GenerationRow
from tests.adapters.slack.conftest import CHANNEL
from tests.adapters.slack.fake_slack import APP_TOKEN, TEAM, TOKEN, FakeSlack
from tests.conftest import make_settings


async def test_socket_mode_acks_the_envelope_then_posts_the_status(
    redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path, redis: Redis, fake: FakeSlack
) -> None:
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        platform="slack",
        slack={"bot_token": TOKEN, "app_token": APP_TOKEN, "api_base_url": fake.api_url},
    )
    stop = asyncio.Event()
    async with runtime(settings) as rt:
        task = asyncio.create_task(serve_bot(rt, stop))
        try:
            await fake.wait_until(lambda: bool(fake.sockets))
            payload = {
                "team_id": TEAM,
                "channel_id": CHANNEL,
                "user_id": "UALICE",
                "user_name": "alice",
                "command": "/imagine",
                "text": "a fox over a socket",
                "response_url": fake.response_url("socket"),
                "trigger_id": "t1",
            }
            sent = time.monotonic()
            await fake.send_envelope("slash_commands", payload, "env-1")
            await fake.wait_until(lambda: any(r.get("envelope_id") == "env-1" for r in fake.socket_replies))
            assert time.monotonic() - sent < 2.5
            await fake.wait_until(lambda: bool(fake.called("chat.postMessage")))
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
        [row] = await GenerationRow.all()
        assert row.prompt == "a fox over a socket" and row.message["channel"] == CHANNEL
    assert not fake.called("auth.test")[1:], "auth.test once, at start"
