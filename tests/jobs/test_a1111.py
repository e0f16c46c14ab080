"""The AUTOMATIC1111 backend against a local fake of its web API: the whole stack (the local chat,
the worker, the renderer, Redis, SQLite) draws through it, with progress and previews in the status
message, cancel that interrupts the service, its failures read as service errors and counted by the
breaker, and its settings checked."""

from __future__ import annotations

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
from jobs.backends.a1111 import A1111Backend, A1111Error, A1111Settings, step_of, txt2img_payload
from jobs.backends.base import ImageRequest
from tests.chat_client import ChatClient
from tests.jobs.backend_chat import backend_chat, drawing_with_preview, ended
from tests.jobs.fake_a1111 import MODELS, FakeA1111

REQUEST = ImageRequest("a red fox in snow", "blur", 512, 768, 6, 42)


def a1111_chat(
    redis_server: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    fake: FakeA1111,
    a1111: dict[str, Any] | None = None,
    **overrides: Any,
) -> contextlib.AbstractAsyncContextManager[ChatClient]:
    section = {"poll_interval_s": 0.02, **(a1111 or {})}
    return backend_chat(
        redis_server, sqlite_url, tmp_path, fake, "a1111", section, url_key="url", **overrides
    )


def test_the_request_maps_onto_txt2img() -> None:
    settings = A1111Settings(
        url="http://gpu:7860/", model="v1-5-pruned-emaonly", sampler="Euler a", cfg_scale=5
    )
    payload = txt2img_payload(REQUEST, settings, "genbot-1")
    assert payload == {
        "prompt": "a red fox in snow",
        "negative_prompt": "blur",
        "width": 512,
        "height": 768,
        "steps": 6,
        "seed": 42,
        "batch_size": 1,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
        "force_task_id": "genbot-1",
        "sampler_name": "Euler a",
        "cfg_scale": 5,
        "override_settings": {"sd_model_checkpoint": "v1-5-pruned-emaonly"},
        "override_settings_restore_afterwards": True,
    }
    assert settings.url == "http://gpu:7860"


def test_progress_is_taken_only_from_this_jobs_task() -> None:
    state = {"sampling_step": 3, "sampling_steps": 6}
    assert step_of({"state": state, "current_task": "genbot-1", "current_image": "aGk="}, "genbot-1") == (
        3,
        6,
        "aGk=",
    )
    assert step_of({"state": state, "current_task": "someone-else"}, "genbot-1") is None
    assert step_of({"state": state}, "genbot-1") == (3, 6, None), "a service older than current_task"
    assert (
        step_of({"state": {"sampling_step": 0, "sampling_steps": 0}, "current_task": "genbot-1"}, "genbot-1")
        is None
    )


def test_settings_are_checked_at_start_up_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"GENBOT_BACKENDS__A1111__URL: Field required \(backend 'a1111'\)"):
        backend_factory(load_settings(_env_file=None, backend={"name": "a1111"}))
    bad = {"a1111": {"url": "gpu:7860"}}
    with pytest.raises(ConfigError, match=r"GENBOT_BACKENDS__A1111__URL: .*http://"):
        backend_factory(load_settings(_env_file=None, backend={"name": "a1111"}, backends=bad))
    alone = {"a1111": {"url": "http://gpu:7860", "username": "genbot"}}
    with pytest.raises(ConfigError, match="USERNAME and GENBOT_BACKENDS__A1111__PASSWORD go together"):
        backend_factory(load_settings(_env_file=None, backend={"name": "a1111"}, backends=alone))
    typo = {"a1111": {"url": "http://gpu:7860", "modle": "x"}}
    with pytest.raises(ConfigError, match="GENBOT_BACKENDS__A1111__MODLE: is not a setting of it"):
        backend_factory(load_settings(_env_file=None, backend={"name": "a1111"}, backends=typo))


async def test_imagine_draws_through_the_service_with_progress_and_previews(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeA1111(step_delay_s=0.05, credentials=("genbot", "s3cret"))
    fake.hold_at = 3  # the drawing stays at step 3 until the message has shown it
    a1111 = {
        "username": "genbot",
        "password": "s3cret",
        "model": MODELS[0]["model_name"],
        "sampler": "k_euler_a",
    }
    async with a1111_chat(redis_server, sqlite_url, tmp_path, fake, a1111) as alice:
        assert await alice.command("/imagine a red fox in snow size: 512x768 steps: 8 seed: 7") == {
            "ok": True
        }
        at_three = await alice.wait_for(
            lambda m: drawing_with_preview(m) and m["status"]["progress"] == 3 / 8
        )
        midway = at_three["status"]
        fake.hold_at = None
        final = (await alice.wait_for(ended, timeout=30))["status"]
        async with alice.session.get(alice.base_url + final["image_url"]) as resp:
            image = await resp.read()

    assert final["state"] == "succeeded"
    assert Image.open(io.BytesIO(image)).size == (512, 768)
    (sent,) = fake.called("/sdapi/v1/txt2img")
    assert (sent["prompt"], sent["steps"], sent["seed"], sent["sampler_name"]) == (
        "a red fox in snow",
        8,
        7,
        "k_euler_a",
    )
    assert sent["override_settings"] == {"sd_model_checkpoint": "v1-5-pruned-emaonly"}
    assert fake.called("/sdapi/v1/sd-models") and fake.called("/sdapi/v1/samplers"), "names checked"
    assert midway["progress"] == 3 / 8, "the service's step reached the message"
    assert midway["preview_url"], "its live image was the preview"
    assert fake.interrupts == 0


async def test_cancel_interrupts_the_service(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeA1111(step_delay_s=0.2)
    async with a1111_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        assert await alice.command("/imagine a slow fox steps: 50") == {"ok": True}
        await alice.wait_for(
            lambda m: bool(m.get("status")) and (m["status"]["progress"] or 0) > 0, timeout=30
        )
        assert await alice.command("/cancel") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]
        await fake.wait_idle()

    assert final["state"] == "cancelled"
    assert fake.interrupts == 1
    assert len(fake.finished) == 1 and fake.stopped_at < 50, "the service stopped drawing early"


async def test_a_failing_service_reads_as_a_service_error_and_opens_the_breaker(
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeA1111()
    fake.fail_next(500, "CUDA out of memory. Tried to allocate 2.00 GiB")
    fake.fail_next(500, "CUDA out of memory. Tried to allocate 2.00 GiB")
    worker = {"breaker_fail_max": 2, "breaker_reset_s": 60}
    caplog.set_level(logging.ERROR, logger="jobs.runner")
    async with a1111_chat(redis_server, sqlite_url, tmp_path, fake, worker=worker) as alice:
        for n in range(2):
            assert await alice.command(f"/imagine fox {n}") == {"ok": True}
            await alice.wait_for(lambda m, n=n: ended(m) and m["status"]["prompt"] == f"fox {n}", timeout=30)
        assert await alice.command("/imagine fox 2") == {"ok": True}
        waiting = await alice.wait_for(
            lambda m: (
                bool(m.get("status"))
                and m["status"]["prompt"] == "fox 2"
                and "not answering" in (m["status"]["note"] or "")
            ),
            timeout=30,
        )
        said = [m["status"] for m in alice.messages.values() if m.get("status") and ended(m)]

    assert [s["error"]["title"] for s in said] == ["Service error", "Service error"]
    assert all("CUDA" not in str(s) for s in said), "what the service said stays in the log"
    assert "CUDA out of memory" in caplog.text
    assert waiting["status"]["state"] == "queued", "the third waits for the service, it does not fail"
    assert len(fake.called("/sdapi/v1/txt2img")) == 2


async def test_a_wrong_login_fails_the_job_and_says_which_settings(
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeA1111(credentials=("genbot", "s3cret"))
    caplog.set_level(logging.ERROR, logger="jobs.runner")
    a1111 = {"username": "genbot", "password": "wrong"}
    async with a1111_chat(redis_server, sqlite_url, tmp_path, fake, a1111) as alice:
        assert await alice.command("/imagine a red fox") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]

    assert final["state"] == "failed" and final["error"]["title"] == "Service error"
    assert "refused genbot's login (HTTP 401)" in caplog.text
    assert "GENBOT_BACKENDS__A1111__PASSWORD" in caplog.text and "wrong" not in caplog.text


async def test_a_service_that_hangs_times_out_and_is_asked_to_stop(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeA1111()
    fake.hang = True
    worker = {"backend_timeout_s": 1.0, "job_timeout_s": 5.0}
    async with a1111_chat(redis_server, sqlite_url, tmp_path, fake, worker=worker) as alice:
        assert await alice.command("/imagine a red fox") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]
        fake.hang = False
        await fake.wait_idle()

    assert final["state"] == "timed_out"
    assert fake.interrupts == 1


async def test_a_model_the_service_lacks_is_named_with_the_ones_it_has() -> None:
    fake = FakeA1111()
    url = await fake.start()
    try:
        backend = A1111Backend(A1111Settings(url=url, model="sdxl-turbo"))

        async def progress(step: int, total: int, preview: bytes | None) -> None:
            raise AssertionError("no progress for a job that never started")

        with pytest.raises(A1111Error, match=r"MODEL: the service has no model 'sdxl-turbo'; it has: v1-5"):
            await backend.generate(REQUEST, progress)
    finally:
        await fake.stop()
    assert fake.called("/sdapi/v1/txt2img") == []
