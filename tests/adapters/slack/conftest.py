"""Fixtures for the Slack tests: the fake Web API, a runtime configured for Slack pointing at it,
and a client that sends correctly signed requests to the bot's HTTP endpoint as Slack does."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest_asyncio
from redis.asyncio import Redis
from slack_sdk.signature import SignatureVerifier

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from storage.models import GenerationRow
from tests.adapters.slack.fake_slack import TEAM, TOKEN, FakeSlack
from tests.conftest import make_settings

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0001"
ADMIN = "UADMIN"


async def attached(**filters: Any) -> GenerationRow:
    """The newest row matching ``filters`` once its status message is stored in it. The core
    stores the reference after ``chat.postMessage`` answers, so seeing the post in the fake is not
    enough; this polls the database (bounded: it fails after 10 s, it asserts no timing)."""
    for _ in range(1000):
        row = await GenerationRow.filter(**filters).order_by("-id").first()
        if row is not None and row.message.get("message_id"):
            return row
        await asyncio.sleep(0.01)
    raise AssertionError(f"no row with a status message for {filters}")


GENEROUS = {"channel_writes_per_s": 100, "channel_burst": 100, "updates_per_min": 6000, "updates_burst": 100}


def slack_section(fake: FakeSlack, **extra: Any) -> dict[str, Any]:
    """The Slack settings of a test against ``fake``: HTTP mode on a free port, and budgets that
    never hold it back (:data:`GENEROUS`; ``test_slack_limits.py`` keeps Slack's own)."""
    return {
        "bot_token": TOKEN,
        "signing_secret": SECRET,
        "api_base_url": fake.api_url,
        "http_host": "127.0.0.1",
        "http_port": 0,
        **GENEROUS,
        **extra,
    }


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def slack_rt(
    redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path, redis: Redis, fake: FakeSlack
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        redis_server.url,
        sqlite_url,
        tmp_path,
        platform="slack",
        slack=slack_section(fake, admin_user_ids=[ADMIN]),
    )
    async with runtime(settings) as rt:
        yield rt


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class SlackClient:
    """Sends what Slack sends: signed form bodies to the bot's Request URL."""

    def __init__(self, http: aiohttp.ClientSession, url: str, fake: FakeSlack) -> None:
        self.http = http
        self.url = url
        self.fake = fake
        self.sent = 0

    async def post(
        self, body: str, *, secret: str = SECRET, timestamp: int | None = None
    ) -> tuple[int, str, float]:
        """POST a signed body; returns (status, response text, seconds until the answer)."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body),
        }
        started = time.monotonic()
        async with self.http.post(self.url, data=body.encode(), headers=headers) as resp:
            text = await resp.text()
            return resp.status, text, time.monotonic() - started

    def command_body(
        self, command: str, text: str, *, user: str = "UALICE", name: str = "alice", channel: str = CHANNEL
    ) -> str:
        self.sent += 1
        return urlencode(
            {
                "token": "legacy",
                "team_id": TEAM,
                "team_domain": "test",
                "channel_id": channel,
                "channel_name": "general",
                "user_id": user,
                "user_name": name,
                "command": command,
                "text": text,
                "api_app_id": "A0001",
                "is_enterprise_install": "false",
                "response_url": self.fake.response_url(f"{user}-{self.sent}"),
                "trigger_id": f"trigger-{self.sent}",
            }
        )

    async def command(self, command: str, text: str, **kwargs: Any) -> tuple[int, str, float]:
        return await self.post(self.command_body(command, text, **kwargs))

    async def press_cancel(
        self, job: int, message_ts: str, *, user: str, name: str, channel: str = CHANNEL
    ) -> tuple[int, str, float]:
        return await self.press("genbot_cancel", job, message_ts, user=user, name=name, channel=channel)

    async def press(
        self, action_id: str, job: int, message_ts: str, *, user: str, name: str, channel: str = CHANNEL
    ) -> tuple[int, str, float]:
        """A signed block_actions payload: ``user`` pressed ``action_id`` on job ``job``'s message."""
        self.sent += 1
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "test"},
            "user": {"id": user, "username": name, "name": name, "team_id": TEAM},
            "api_app_id": "A0001",
            "token": "legacy",
            "trigger_id": f"trigger-{self.sent}",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "channel": {"id": channel, "name": "general"},
            "message": {"type": "message", "ts": message_ts, "text": ""},
            "response_url": self.fake.response_url(f"{user}-{self.sent}"),
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": f"genbot-actions-{job}",
                    "value": str(job),
                    "action_ts": str(time.time()),
                }
            ],
        }
        return await self.post(urlencode({"payload": json.dumps(payload)}))
