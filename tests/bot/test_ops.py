"""What an operator reads over HTTP (``/healthz``, ``/readyz``, ``/metrics``) from a running bot
and worker, and the logs: text or JSON lines that carry the job and the platform and no secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bot.app import PlatformWatch, ops_running, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.logs import JOB, PLATFORM, configure, working_on
from jobs.breaker import BreakerKeys
from tests.chat_client import ChatClient
from tests.conftest import make_settings
from tests.jobs.backend_chat import ended
from tests.stack import bot_running, worker_running


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus's text format as ``{(name, labels): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def read(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_health_readiness_and_metrics_over_http(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_server.url, sqlite_url, tmp_path, ops={"port": 0})
    succeeded = (
        "genbot_jobs_finished_total",
        (("backend", "demo"), ("kind", "imagine"), ("outcome", "succeeded")),
    )
    runs = ("genbot_job_run_seconds_count", (("backend", "demo"),))
    posts = ("genbot_platform_writes_total", (("action", "post"), ("platform", "local")))
    async with runtime(settings) as rt, aiohttp.ClientSession() as http:
        watch = PlatformWatch()
        async with ops_running(rt, watch=watch, lines=["demo"]) as port:
            ops = f"http://127.0.0.1:{port}"
            assert await read(http, f"{ops}/healthz") == (200, {"status": "ok"})
            status, before_bot = await read(http, f"{ops}/readyz")
            async with worker_running(rt), bot_running(rt, watch) as (base, _stop):
                status_up, up = await read(http, f"{ops}/readyz")
                before = samples((await read(http, f"{ops}/metrics"))[1])
                alice = ChatClient(http, base, "alice")
                await alice.connect()
                assert await alice.command("/imagine a counted fox") == {"ok": True}
                await alice.wait_for(ended, timeout=30)
                await alice.close()
                after = samples((await read(http, f"{ops}/metrics"))[1])

                keys = BreakerKeys.of(rt.queue.keys, "demo")
                await rt.redis.set(keys.open, "1", px=60_000)
                await rt.redis.set(keys.tripped, "1")
                status_tripped, tripped = await read(http, f"{ops}/readyz")
                gauges = samples((await read(http, f"{ops}/metrics"))[1])

    assert status == 503 and before_bot["checks"] == {
        "redis": "ok",
        "database": "ok",
        "platform": "the session with the chat platform is not up",
        "breaker demo": "ok",
    }
    assert status_up == 200 and up["status"] == "ready"
    assert after[succeeded] == before.get(succeeded, 0) + 1
    assert after[runs] == before.get(runs, 0) + 1
    assert after[posts] >= before.get(posts, 0) + 1, "the status message's first post"
    assert ("genbot_job_wait_seconds_count", (("backend", "demo"),)) in after
    assert after[("genbot_queue_depth", (("line", "demo"),))] == 0
    assert status_tripped == 503 and tripped["checks"]["breaker demo"].startswith("the service is failing")
    assert tripped["checks"]["redis"] == "ok"
    assert gauges[("genbot_breaker_open", (("backend", "demo"),))] == 1


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing to a string for the test; pytest's own handlers back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    yield out
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


SECRET_LINES = (
    "posting with xoxb-1234-5678-abcdefgh failed",
    "answering https://hooks.slack.com/actions/T1/2/abcdef",
    "editing https://discord.com/api/v10/webhooks/123456/aW50ZXJhY3Rpb246MTIzNDU2Nzg5/messages/@original",
    "header Authorization: Bot MTIzNDU2Nzg5MDEyMzQ1Njc4.OTAx.secretsecretsecret",
)


def test_json_logs_carry_the_job_and_platform_and_never_a_secret(captured: io.StringIO) -> None:
    configure("INFO", "json", captured)
    log = logging.getLogger("genbot.test")
    log.info("before any job")
    with working_on(12, "slack"):
        for line in SECRET_LINES:
            log.warning(line)
        try:
            raise RuntimeError("the service said: invalid key sk-abcdefghijklmnopqrstuvwx")
        except RuntimeError:
            log.exception("the job failed")
    assert JOB.get() is None and PLATFORM.get() is None, "as they were, after"

    records = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert records[0]["message"] == "before any job" and records[0]["job"] is None
    for record in records[1:]:
        assert (record["job"], record["platform"], record["logger"]) == (12, "slack", "genbot.test")
        assert {"time", "level", "message"} <= record.keys()
    text = captured.getvalue()
    for secret in ("xoxb-1234", "T1/2/abcdef", "aW50ZXJhY3Rpb24", "secretsecretsecret", "sk-abcdefghij"):
        assert secret not in text, secret
    assert text.count("[secret]") >= len(SECRET_LINES) + 1
    assert "Traceback" in records[-1]["exc_info"], "the traceback stays, masked"


def test_text_logs_name_the_job_and_platform_after_the_message(captured: io.StringIO) -> None:
    configure("INFO", "text", captured)
    log = logging.getLogger("genbot.test")
    with working_on(7, "discord"):
        log.warning("edit refused with xoxb-1-2-3456789")
    (line,) = captured.getvalue().splitlines()
    assert line.endswith("WARNING genbot.test: edit refused with [secret] [job 7 discord]")
