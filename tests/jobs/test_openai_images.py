"""The OpenAI Images backend against a local fake of the API (Server-Sent Events included), through
the whole stack: its streamed previews in the status message, cancel that closes the stream, a
prompt its moderation refuses read as such (and not counted against the service), its failures
read as service errors, and its settings checked."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from redis.asyncio import Redis

from bot.config import ConfigError, load_settings
from bot.embedded_redis import EmbeddedRedis
from jobs.backends import backend_factory
from jobs.backends.openai_images import size_for
from jobs.imagine import plugin as imagine_plugin
from tests.chat_client import ChatClient
from tests.jobs.backend_chat import backend_chat, drawing_with_preview, ended
from tests.jobs.fake_openai import KEY, FakeOpenAI


def openai_chat(
    redis_server: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    fake: FakeOpenAI,
    key: str = KEY,
    **overrides: Any,
) -> contextlib.AbstractAsyncContextManager[ChatClient]:
    section = {"api_key": key}
    return backend_chat(
        redis_server, sqlite_url, tmp_path, fake, "openai", section, url_key="base_url", **overrides
    )


def test_the_size_asked_picks_the_models_size_of_that_shape() -> None:
    assert size_for(512, 512) == "1024x1024"
    assert size_for(768, 512) == "1536x1024"
    assert size_for(512, 768) == "1024x1536"


def test_a_key_is_required_for_openai_itself() -> None:
    settings = load_settings(_env_file=None, backend={"name": "openai"})
    with pytest.raises(ConfigError, match="GENBOT_BACKENDS__OPENAI__API_KEY is required for OpenAI"):
        backend_factory(settings)
    compatible = {"openai": {"base_url": "http://127.0.0.1:9/v1"}}
    backend_factory(load_settings(_env_file=None, backend={"name": "openai"}, backends=compatible))


async def test_imagine_streams_previews_then_the_image(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeOpenAI(delay_s=0.1)
    fake.hang = True  # the stream holds after its first partial image until the message showed it
    async with openai_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        assert await alice.command("/imagine a red fox in snow size: 768x512") == {"ok": True}
        midway = (await alice.wait_for(drawing_with_preview, timeout=30))["status"]
        fake.hang = False
        final = (await alice.wait_for(ended, timeout=30))["status"]
        async with alice.session.get(alice.base_url + final["image_url"]) as resp:
            image = await resp.read()

    assert final["state"] == "succeeded"
    assert Image.open(io.BytesIO(image)).size == (153, 102), "the fake's stand-in of 1536x1024"
    (sent,) = fake.requests
    assert (sent["model"], sent["prompt"], sent["size"], sent["stream"]) == (
        "gpt-image-1",
        "a red fox in snow",
        "1536x1024",
        True,
    )
    assert sent["partial_images"] == 2 and "seed" not in sent and "steps" not in sent
    assert midway["preview_url"], "a partial image was the preview"
    assert midway["progress"] == 1 / 3, "the first of two partial images, then the image"


async def test_cancel_closes_the_stream(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeOpenAI()
    fake.hang = True
    async with openai_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        assert await alice.command("/imagine a slow fox") == {"ok": True}
        await alice.wait_for(lambda m: bool(m.get("status")) and bool(m["status"]["preview_url"]), timeout=30)
        assert await alice.command("/cancel") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]
        for _ in range(500):  # the fake notices the closed connection on its next look (20 ms)
            if fake.closed_early:
                break
            await asyncio.sleep(0.01)

    assert final["state"] == "cancelled"
    assert fake.closed_early == 1


async def test_a_refused_prompt_reads_as_refused_and_the_service_is_not_counted_failing(
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeOpenAI()
    caplog.set_level(logging.INFO, logger="jobs.runner")
    worker = {"breaker_fail_max": 1}  # one counted failure would open the breaker
    async with openai_chat(redis_server, sqlite_url, tmp_path, fake, worker=worker) as alice:
        assert await alice.command("/imagine something forbidden") == {"ok": True}
        refused = (await alice.wait_for(ended, timeout=30))["status"]
        assert await alice.command("/imagine a fox") == {"ok": True}
        after = (await alice.wait_for(lambda m: ended(m) and m["status"]["prompt"] == "a fox", timeout=30))[
            "status"
        ]

    assert refused["state"] == "failed" and refused["error"]["title"] == "Refused by the service"
    assert "safety system" not in str(refused), "what the service said stays in the log"
    assert "rejected as a result of our safety system" in caplog.text
    assert after["state"] == "succeeded", "the breaker stayed closed"


async def test_a_wrong_key_and_a_failing_service_read_as_service_errors(
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeOpenAI()
    caplog.set_level(logging.ERROR, logger="jobs.runner")
    async with openai_chat(redis_server, sqlite_url, tmp_path, fake, key="sk-wrong") as alice:
        assert await alice.command("/imagine a fox") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]
    assert final["error"]["title"] == "Service error"
    assert "refused genbot's key (HTTP 401): check GENBOT_BACKENDS__OPENAI__API_KEY" in caplog.text
    assert "sk-wrong" not in caplog.text

    fake = FakeOpenAI()
    fake.fail_next(500)
    caplog.clear()
    async with openai_chat(redis_server, sqlite_url, tmp_path / "again", fake) as alice:
        assert await alice.command("/imagine a hare") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]
    assert final["error"]["title"] == "Service error"
    assert "answered HTTP 500: The server had an error" in caplog.text
    assert len(fake.requests) == 1, "the SDK does not retry: the breaker and the queue decide"


async def test_imagine_offers_only_what_the_service_takes(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    """No negative prompt, steps or seed: /imagine has no such options with this backend (Discord
    and Slack list none), and the status message claims none."""
    settings = load_settings(
        _env_file=None, backend={"name": "openai"}, backends={"openai": {"api_key": "k"}}
    )
    (command,) = imagine_plugin(settings).commands
    assert [o.name for o in command.options] == ["prompt", "size"]

    fake = FakeOpenAI()
    async with openai_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        assert await alice.command("/imagine an owl size: 512x768") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]

    assert final["state"] == "succeeded"
    assert final["details"].startswith("512x768") and "steps" not in final["details"]
    assert "seed" not in final["details"] and "without" not in final["details"]
    (sent,) = fake.requests
    assert sent["prompt"] == "an owl" and sent["size"] == "1024x1536"
