"""The AI Horde backend against a local fake of its API, through the whole stack: the request's
place on the Horde in the status message, the image from its link, cancel that takes the request
off the Horde, a request no worker can take or an image a worker censored read as refused (and not
counted against the Horde), and a refused key as a service error."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from redis.asyncio import Redis

from bot.embedded_redis import EmbeddedRedis
from jobs.backends.base import ImageRequest
from jobs.backends.horde import HordeSettings, generate_payload, waiting_words
from tests.chat_client import ChatClient
from tests.jobs.backend_chat import backend_chat, ended
from tests.jobs.fake_horde import FakeHorde


def horde_chat(
    redis_server: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    fake: FakeHorde,
    horde: dict[str, Any] | None = None,
    **overrides: Any,
) -> contextlib.AbstractAsyncContextManager[ChatClient]:
    section = {"poll_interval_s": 0.05, **(horde or {})}
    return backend_chat(
        redis_server, sqlite_url, tmp_path, fake, "horde", section, url_key="url", **overrides
    )


def test_the_request_maps_onto_the_hordes() -> None:
    settings = HordeSettings(models=["AlbedoBase XL (SDXL)"], sampler="k_euler_a", cfg_scale=6)
    payload = generate_payload(ImageRequest("a fox", "blur, text", 512, 768, 20, 42), settings)
    assert payload == {
        "prompt": "a fox ### blur, text",
        "params": {
            "width": 512,
            "height": 768,
            "steps": 20,
            "seed": "42",
            "n": 1,
            "sampler_name": "k_euler_a",
            "cfg_scale": 6,
        },
        "nsfw": False,
        "censor_nsfw": True,
        "r2": True,
        "shared": False,
        "models": ["AlbedoBase XL (SDXL)"],
    }
    assert generate_payload(ImageRequest("a fox", "", 512, 512, 4, 1), HordeSettings())["prompt"] == "a fox"


def test_the_place_on_the_horde_reads_plainly() -> None:
    assert waiting_words({"queue_position": 12, "wait_time": 40, "processing": 0}) == (
        "waiting on the Horde, #12 in its line, about 40 s"
    )
    assert (
        waiting_words({"queue_position": 0, "wait_time": 8, "processing": 1})
        == "drawing on the Horde, about 8 s"
    )
    assert waiting_words({"queue_position": 0, "wait_time": 0, "processing": 0}) == "waiting on the Horde"


async def test_imagine_waits_on_the_horde_then_shows_its_image(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeHorde(ahead=3, drawing=2)
    fake.hold = "waiting"  # each phase holds until the message has shown it

    def headline_is(start: str) -> Callable[[dict[str, Any]], bool]:
        return lambda m: str((m.get("status") or {}).get("headline", "")).startswith(start)

    async with horde_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        assert await alice.command("/imagine a red fox in snow size: 512x768 steps: 12") == {"ok": True}
        waiting = await alice.wait_for(headline_is("Generating · waiting on the Horde"), timeout=30)
        fake.hold = "drawing"
        drawing = await alice.wait_for(headline_is("Generating · drawing on the Horde"), timeout=30)
        fake.hold = None
        final = (await alice.wait_for(ended, timeout=30))["status"]
        async with alice.session.get(alice.base_url + final["image_url"]) as resp:
            image = await resp.read()

    assert final["state"] == "succeeded"
    assert Image.open(io.BytesIO(image)).size == (64, 96), "the fake's WebP, as a PNG"
    assert waiting["status"]["headline"] == "Generating · waiting on the Horde, #4 in its line, about 40 s"
    assert drawing["status"]["headline"] == "Generating · drawing on the Horde, about 5 s"
    (req,) = fake.requests.values()
    assert req.headers["apikey"] == "0000000000" and req.headers["Client-Agent"] == "genbot:1:unknown"
    assert fake.downloads == 1 and fake.deleted == []


async def test_cancel_takes_the_request_off_the_horde(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeHorde(ahead=10_000)
    async with horde_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        assert await alice.command("/imagine a patient fox") == {"ok": True}
        await alice.wait_for(
            lambda m: "waiting on the Horde" in (m.get("status") or {}).get("headline", ""), timeout=30
        )
        assert await alice.command("/cancel") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]

    assert final["state"] == "cancelled"
    assert fake.deleted == list(fake.requests)


@pytest.mark.parametrize("refusal", ["impossible", "censor"])
async def test_what_the_horde_will_not_draw_reads_as_refused_and_does_not_count_against_it(
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    refusal: str,
) -> None:
    fake = FakeHorde(ahead=0)
    setattr(fake, refusal, True)
    caplog.set_level(logging.INFO, logger="jobs.runner")
    worker = {"breaker_fail_max": 1}  # one counted failure would open the breaker
    async with horde_chat(redis_server, sqlite_url, tmp_path, fake, worker=worker) as alice:
        assert await alice.command("/imagine an odd fox") == {"ok": True}
        refused = (await alice.wait_for(ended, timeout=30))["status"]
        setattr(fake, refusal, False)
        assert await alice.command("/imagine a fox") == {"ok": True}
        after = (await alice.wait_for(lambda m: ended(m) and m["status"]["prompt"] == "a fox", timeout=30))[
            "status"
        ]

    assert refused["state"] == "failed" and refused["error"]["title"] == "Refused by the service"
    said = "no worker on the Horde can take" if refusal == "impossible" else "censored the image"
    assert said in caplog.text
    assert after["state"] == "succeeded", "the breaker stayed closed"
    if refusal == "impossible":
        assert fake.deleted == [next(iter(fake.requests))], "the request it cannot take is taken off"


async def test_a_refused_key_is_a_service_error_naming_the_setting(
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeHorde()
    caplog.set_level(logging.ERROR, logger="jobs.runner")
    async with horde_chat(redis_server, sqlite_url, tmp_path, fake, {"api_key": "stolen"}) as alice:
        assert await alice.command("/imagine a fox") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]

    assert final["state"] == "failed" and final["error"]["title"] == "Service error"
    assert "refused the API key (HTTP 401): check GENBOT_BACKENDS__HORDE__API_KEY" in caplog.text
    assert "stolen" not in caplog.text
