"""Sentry and OpenTelemetry, as a deployment switches them on: ``genbot bot`` and ``genbot worker``
as separate processes, reporting to a local Sentry ingest (the SDK's real envelopes:
tests/sentry_server.py) and exporting to a local OTLP/HTTP receiver (protobuf, decoded:
tests/otlp_server.py). The jobs are real: a member's command in the local chat, the queue, the
worker's run. (Their absence, the extras not installed, is tests/test_packaging.py's.)"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import re
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sentry_sdk
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from bot import tracing
from bot.config import ConfigError, load_settings
from bot.embedded_redis import EmbeddedRedis
from bot.logs import JOB, MASK, PLATFORM, working_on
from bot.sentry import scrubbed
from bot.telemetry import started
from tests.chat_client import ChatClient
from tests.cli import ROOT, genbot_running
from tests.otlp_server import ReceivedSpan, otlp_server
from tests.sentry_server import sentry_server

#: Secrets a failing job and a failing command hold, each where a different part of an event
#: carries it: the exception's message, a local variable under a name no scrubber knows, a
#: breadcrumb (a record logged before the failure).
SLACK_TOKEN = "xoxb-1111111111-2222222222-SlackTokenSecret"
WEBHOOK_TOKEN = "WebhookTokenSecret_abcdefghijklmnop"
OPENAI_KEY = "sk-OpenAIKeySecret0123456789"
SECRETS = (SLACK_TOKEN, WEBHOOK_TOKEN, OPENAI_KEY)

PLUGIN = f"""
import logging
from bot.api import Command, JobKind, Plugin

log = logging.getLogger("plugin_boom")

async def boom(job):
    log.info("calling the service with key {OPENAI_KEY}")
    url = "https://discord.com/api/webhooks/1234/{WEBHOOK_TOKEN}"
    raise RuntimeError("the service said no to {SLACK_TOKEN} at " + url[:8])

async def crash(call):
    log.info("answering with key {OPENAI_KEY}")
    url = "https://discord.com/api/webhooks/1234/{WEBHOOK_TOKEN}"
    raise RuntimeError("cannot answer with {SLACK_TOKEN} at " + url[:8])

plugin = Plugin(
    name="boom",
    commands=(
        Command("boom", "A job that fails", job="boom"),
        Command("crash", "An answer that fails", run=crash),
    ),
    jobs=(JobKind("boom", boom, verb="Failing"),),
)
"""
CHAT_URL = re.compile(rb"genbot local chat: (http://127\.0\.0\.1:\d+)")


def _has_state(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: bool(m.get("status")) and m["status"]["state"] == state


@pytest.fixture
def processes_env(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str
) -> dict[str, str]:
    """What a bot and a worker share: this test's Redis and database, the local chat on a free
    port, a quick demo backend, and the plugin of failing jobs and commands on the path."""
    (tmp_path / "plugin_boom.py").write_text(textwrap.dedent(PLUGIN))
    return {
        "PYTHONPATH": f"{ROOT}:{tmp_path}",
        "GENBOT_PLATFORM": "local",
        "GENBOT_REDIS__URL": redis_server.url,
        "GENBOT_DATABASE__URL": sqlite_url,
        "GENBOT_BLOBS__DIR": str(tmp_path / "blobs"),
        "GENBOT_LOCAL__PORT": "0",
        "GENBOT_BACKEND__DEMO_STEP_DELAY_S": "0.02",
        "GENBOT_RENDERER__MIN_EDIT_INTERVAL_S": "0",
        "GENBOT_PLUGINS__MODULES": "plugin_boom:plugin",
    }


@contextlib.asynccontextmanager
async def member(bot: asyncio.subprocess.Process) -> AsyncIterator[ChatClient]:
    """A member of the bot's local chat, connected."""
    assert bot.stdout is not None
    line = await asyncio.wait_for(bot.stdout.readline(), 60)
    match = CHAT_URL.match(line)
    assert match, line
    async with aiohttp.ClientSession() as http:
        alice = ChatClient(http, match.group(1).decode(), "alice")
        await alice.connect()
        try:
            yield alice
        finally:
            await alice.close()


# -- Sentry ---------------------------------------------------------------------------------------


async def test_a_failing_job_and_a_failing_command_reach_sentry_tagged_and_without_secrets(
    tmp_path: Path, processes_env: dict[str, str]
) -> None:
    async with sentry_server() as sentry:
        env = {**processes_env, "GENBOT_SENTRY__DSN": sentry.dsn, "GENBOT_SENTRY__ENVIRONMENT": "staging"}
        async with (
            genbot_running("bot", tmp_path, env) as bot,
            genbot_running("worker", tmp_path, env),
            member(bot) as alice,
        ):
            assert await alice.command("/boom") == {"ok": True}
            failed = await alice.wait_for(_has_state("failed"), timeout=30)
            job = str(failed["status"]["job"])
            job_event = await sentry.wait_for_event(lambda e: e.get("tags", {}).get("genbot.job") == job)
            assert await alice.command("/crash") == {"ok": True}
            command_event = await sentry.wait_for_event(
                lambda e: e.get("tags", {}).get("genbot.process") == "bot"
            )

    release = f"genbot@{importlib.metadata.version('genbot')}"
    # The job's failure, from the worker, as genbot logged it, with the exception and its frames.
    assert {"genbot.job": job, "genbot.platform": "local", "genbot.process": "worker"}.items() <= (
        job_event["tags"].items()
    )
    assert job_event["release"] == release
    assert job_event["environment"] == "staging"
    assert job_event["logentry"]["formatted"] == f"job {job} of kind boom failed"
    (exception,) = job_event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == f"the service said no to {MASK} at https://"
    frame = exception["stacktrace"]["frames"][-1]
    assert frame["function"] == "boom"
    assert frame["vars"]["url"] == f"'https://discord.com/api/webhooks/{MASK}'"
    assert {
        "message": f"calling the service with key {MASK}",
        "category": "plugin_boom",
    }.items() <= job_event["breadcrumbs"]["values"][-1].items()

    # The command's, from the bot: its platform, no job.
    assert command_event["tags"]["genbot.platform"] == "local"
    assert "genbot.job" not in command_event["tags"]
    assert command_event["release"] == release
    assert command_event["logentry"]["formatted"] == "command /crash failed"
    (exception,) = command_event["exception"]["values"]
    assert exception["value"] == f"cannot answer with {MASK} at https://"

    # Nothing anywhere in what was sent holds a secret.
    assert not sentry.refused
    for envelope in sentry.envelopes:
        for secret in SECRETS:
            assert secret.encode() not in envelope.body


def test_events_are_tagged_with_the_work_of_the_task_that_makes_them() -> None:
    event: Any = {
        "tags": {"genbot.process": "worker"},
        "message": f"posting to https://discord.com/api/webhooks/1/{WEBHOOK_TOKEN}",
        "extra": {"headers": [("Authorization", f"Bearer {OPENAI_KEY}")]},
    }
    with working_on(12, "discord"):
        sent = scrubbed(event, {})
    assert sent["tags"] == {"genbot.process": "worker", "genbot.job": "12", "genbot.platform": "discord"}
    assert sent["message"] == f"posting to https://discord.com/api/webhooks/{MASK}"
    assert sent["extra"] == {"headers": [("Authorization", f"Bearer {MASK}")]}
    assert event["message"].endswith(WEBHOOK_TOKEN), "the event given is not changed"
    assert JOB.get() is None and PLATFORM.get() is None
    assert scrubbed({"message": "idle"}, {}) == {"message": "idle", "tags": {}}


@pytest.mark.parametrize(
    "dsn", ["not a dsn", "https://sentry.example.com/1", "https://key@sentry.example.com/", "ftp://k@h/1"]
)
def test_a_dsn_sentry_cannot_use_is_one_line_naming_the_variable(dsn: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, sentry={"dsn": dsn})
    assert str(caught.value) == (
        "GENBOT_SENTRY__DSN: must be a Sentry DSN, https://KEY@HOST/PROJECT (the project's Client Keys "
        "page shows it)"
    )


def test_nothing_starts_unless_a_setting_asks() -> None:
    settings = load_settings(_env_file=None)
    assert not settings.sentry.dsn.get_secret_value()
    assert not settings.otel.enabled
    with started(settings, "worker"):
        assert not sentry_sdk.get_client().is_active()
        assert not isinstance(trace.get_tracer_provider(), TracerProvider)


# -- OpenTelemetry --------------------------------------------------------------------------------


async def test_jobs_and_commands_export_spans_over_otlp(
    tmp_path: Path, processes_env: dict[str, str]
) -> None:
    async with otlp_server() as otlp:
        env = {
            **processes_env,
            "GENBOT_OTEL__ENABLED": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        }
        bot_env = {**env, "OTEL_SERVICE_NAME": "genbot-chat-eu"}
        async with (
            genbot_running("bot", tmp_path, bot_env) as bot,
            genbot_running("worker", tmp_path, env),
            member(bot) as alice,
        ):
            assert await alice.command("/imagine a lighthouse at dusk steps: 2") == {"ok": True}
            drawn = int((await alice.wait_for(_has_state("succeeded"), timeout=30))["status"]["job"])
            assert await alice.command("/boom") == {"ok": True}
            failed = int((await alice.wait_for(_has_state("failed"), timeout=30))["status"]["job"])
        # Both processes stopped: what their batches still held went out as they did.

    version = importlib.metadata.version("genbot")
    (drawn_run,) = _job_spans(otlp.named("genbot.job"), drawn)
    assert drawn_run.kind == "SPAN_KIND_CONSUMER"
    assert drawn_run.scope == "genbot"
    assert drawn_run.attributes == {
        tracing.JOB_ID: drawn,
        tracing.JOB_KIND: "imagine",
        tracing.JOB_BACKEND: "demo",
        tracing.PLATFORM: "local",
        tracing.JOB_OUTCOME: "succeeded",
    }
    assert drawn_run.status == "STATUS_CODE_UNSET"
    assert drawn_run.ended
    assert {
        "service.name": "genbot-worker",
        "service.version": version,
        "genbot.process": "worker",
    }.items() <= (drawn_run.resource.items())

    (failed_run,) = _job_spans(otlp.named("genbot.job"), failed)
    assert failed_run.attributes == {
        tracing.JOB_ID: failed,
        tracing.JOB_KIND: "boom",
        tracing.JOB_BACKEND: "boom",  # a kind without a backend is its own line
        tracing.PLATFORM: "local",
        tracing.JOB_OUTCOME: "failed",
        tracing.JOB_ERROR: "backend_error",
    }
    assert (failed_run.status, failed_run.status_message) == ("STATUS_CODE_ERROR", "backend_error")

    commands = {span.attributes[tracing.COMMAND]: span for span in otlp.named("genbot.command")}
    assert set(commands) == {"imagine", "boom"}
    assert commands["imagine"].kind == "SPAN_KIND_SERVER"
    assert commands["imagine"].attributes == {
        tracing.COMMAND: "imagine",
        tracing.PLATFORM: "local",
        tracing.JOB_ID: drawn,
        tracing.COMMAND_OUTCOME: "ok",
    }
    assert commands["boom"].attributes[tracing.JOB_ID] == failed
    # OTEL_SERVICE_NAME, read by the SDK itself, names the bot's service.
    assert {"service.name": "genbot-chat-eu", "genbot.process": "bot"}.items() <= commands[
        "imagine"
    ].resource.items()
    assert not otlp.refused
    # No member's text goes out: the prompt is in no span.
    assert not any("lighthouse" in repr(span.attributes) for span in otlp.spans)


def _job_spans(spans: list[ReceivedSpan], job: int) -> list[ReceivedSpan]:
    return [span for span in spans if span.attributes.get(tracing.JOB_ID) == job]


def test_spans_cost_nothing_and_break_nothing_without_an_sdk() -> None:
    """In this process no tracer provider is installed: the spans are the API's no-ops, and what
    is set on them goes nowhere (nor fails)."""
    with tracing.job_span(7):
        tracing.annotate({tracing.JOB_KIND: "imagine", tracing.JOB_BACKEND: None})
        tracing.failed(tracing.JOB_ERROR, "internal")
    with pytest.raises(ValueError, match="boom"), tracing.command_span("imagine", "local"):
        raise ValueError("boom")
