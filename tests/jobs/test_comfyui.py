"""The ComfyUI backend against a local fake of its API: the whole stack (the local chat, the
worker, the renderer, Redis, SQLite) draws through it, with progress and previews from its
websocket, its own queue shown, cancel that takes the prompt back (out of its queue, or
interrupted), its failures read as service errors and counted by the breaker, the history read
when the websocket is not there, and its workflow checked at start-up."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from redis.asyncio import Redis

from bot.config import ConfigError, load_settings
from bot.embedded_redis import EmbeddedRedis
from jobs.backends import backend_factory
from jobs.backends.base import ImageRequest
from jobs.backends.comfyui import (
    ComfyUIBackend,
    ComfyUIError,
    ComfyUISettings,
    checkpoints,
    place_in_queue,
    preview_image,
    prompt_graph,
)
from tests.chat_client import ChatClient
from tests.jobs.backend_chat import backend_chat, drawing_with_preview, ended
from tests.jobs.fake_comfyui import CHECKPOINTS, FakeComfyUI

REQUEST = ImageRequest("a red fox in snow", "blur", 512, 768, 6, 42)

#: A workflow of one's own, as "Export (API)" writes it: KSamplerAdvanced (its seed is
#: ``noise_seed``), the prompt nodes found by their titles.
ADVANCED = {
    "10": {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "add_noise": "enable",
            "noise_seed": 0,
            "steps": 30,
            "cfg": 6.5,
            "sampler_name": "dpmpp_2m",
            "scheduler": "karras",
            "start_at_step": 0,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
            "model": ["11", 0],
            "positive": ["20", 0],
            "negative": ["21", 0],
            "latent_image": ["12", 0],
        },
        "_meta": {"title": "KSampler (Advanced)"},
    },
    "11": {
        "class_type": "UNETLoader",
        "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
    },
    "12": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    "20": {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["30", 0], "conditioning_2": ["30", 0]},
    },
    "21": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "", "clip": ["11", 1]},
        "_meta": {"title": "Bad"},
    },
    "30": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "", "clip": ["11", 1]},
        "_meta": {"title": "Prompt"},
    },
    "40": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["10", 0]}},
}


def comfy_chat(
    redis_server: EmbeddedRedis,
    sqlite_url: str,
    tmp_path: Path,
    fake: FakeComfyUI,
    comfyui: dict[str, Any] | None = None,
    **overrides: Any,
) -> contextlib.AbstractAsyncContextManager[ChatClient]:
    section = {"poll_interval_s": 0.05, **(comfyui or {})}
    return backend_chat(redis_server, sqlite_url, tmp_path, fake, "comfyui", section, **overrides)


def settings_of(**section: Any) -> ComfyUISettings:
    return load_settings(
        _env_file=None,
        backend={"name": "comfyui"},
        backends={"comfyui": {"url": "http://gpu:8188", **section}},
    ).backends.validated("comfyui", ComfyUISettings)


def test_the_request_goes_into_genbots_own_workflow() -> None:
    settings = settings_of(sampler="dpmpp_2m", scheduler="karras", cfg=5)
    graph = prompt_graph(REQUEST, settings, "v1-5-pruned-emaonly.safetensors")
    assert graph["6"]["inputs"]["text"] == "a red fox in snow"
    assert graph["7"]["inputs"]["text"] == "blur"
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (512, 768)
    sampler = graph["3"]["inputs"]
    assert (
        sampler["steps"],
        sampler["seed"],
        sampler["sampler_name"],
        sampler["scheduler"],
        sampler["cfg"],
    ) == (
        6,
        42,
        "dpmpp_2m",
        "karras",
        5,
    )
    assert graph["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert settings.graph["6"]["inputs"]["text"] == "", "the workflow itself is left as read"


def test_a_workflow_of_ones_own_names_its_nodes(tmp_path: Path) -> None:
    path = tmp_path / "flux.json"
    path.write_text(json.dumps(ADVANCED))
    with pytest.raises(
        ConfigError, match=r"COMFYUI__PROMPT_NODE: node 20 \(ConditioningCombine\) has no input text"
    ):
        backend_factory(_settings(workflow=str(path)))
    with pytest.raises(
        ConfigError, match="COMFYUI__PROMPT_NODE: the workflow has no node with the id or title 'Positive'"
    ):
        backend_factory(_settings(workflow=str(path), prompt_node="Positive"))
    with pytest.raises(
        ConfigError, match="COMFYUI__MODEL: the sampler's model does not come from a checkpoint"
    ):
        backend_factory(_settings(workflow=str(path), prompt_node="30", model="x.safetensors"))

    settings = settings_of(workflow=str(path), prompt_node="Prompt")
    graph = prompt_graph(REQUEST, settings, None)
    assert graph["30"]["inputs"]["text"] == "a red fox in snow"
    assert graph["21"]["inputs"]["text"] == "blur", "the negative traced from the sampler"
    assert graph["10"]["inputs"]["noise_seed"] == 42 and graph["10"]["inputs"]["steps"] == 6
    assert graph["12"]["inputs"]["width"] == 512


def _settings(**section: Any) -> Any:
    return load_settings(
        _env_file=None,
        backend={"name": "comfyui"},
        backends={"comfyui": {"url": "http://gpu:8188", **section}},
    )


def test_a_workflow_that_is_not_in_api_format_stops_start_up(tmp_path: Path) -> None:
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(
        ConfigError, match=r"COMFYUI__WORKFLOW: .* the web UI's format; save it with Workflow > Export"
    ):
        backend_factory(_settings(workflow=str(ui)))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match=r"COMFYUI__WORKFLOW: .* is not JSON"):
        backend_factory(_settings(workflow=str(broken)))
    with pytest.raises(ConfigError, match="COMFYUI__WORKFLOW: Path does not point to a file"):
        backend_factory(_settings(workflow=str(tmp_path / "missing.json")))
    with pytest.raises(
        ConfigError, match=r"GENBOT_BACKENDS__COMFYUI__URL: Field required \(backend 'comfyui'\)"
    ):
        backend_factory(load_settings(_env_file=None, backend={"name": "comfyui"}))


def test_what_the_service_sends_is_read_in_each_of_its_forms() -> None:
    assert checkpoints({"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["a", "b"]]}}}}) == [
        "a",
        "b",
    ]
    combo = ["COMBO", {"options": ["c"]}]
    assert checkpoints({"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": combo}}}}) == ["c"]
    assert checkpoints({}) == []
    queue = {
        "queue_running": [[4, "run", {}, {}, []]],
        "queue_pending": [[9, "late", {}, {}, []], [6, "mine", {}, {}, []]],
    }
    assert [place_in_queue(queue, p) for p in ("run", "mine", "late", "gone")] == [0, 1, 2, None]
    assert preview_image(struct.pack(">II", 1, 1) + b"jpeg") == b"jpeg"
    assert preview_image(struct.pack(">II", 3, 1) + b"webp") is None, "not a preview event"


async def test_imagine_draws_through_comfyui_with_progress_and_previews(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeComfyUI(step_delay_s=0.05)
    fake.hold_at = 3  # the sampler stays at step 3 until the message has shown it
    async with comfy_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        assert await alice.command(
            "/imagine a red fox in snow negative: blur size: 512x768 steps: 8 seed: 7"
        ) == {"ok": True}
        midway = (
            await alice.wait_for(lambda m: drawing_with_preview(m) and m["status"]["progress"] == 3 / 8)
        )["status"]
        fake.hold_at = None
        final = (await alice.wait_for(ended, timeout=30))["status"]
        async with alice.session.get(alice.base_url + final["image_url"]) as resp:
            image = await resp.read()

    assert final["state"] == "succeeded"
    assert Image.open(io.BytesIO(image)).size == (512, 768)
    (sent,) = fake.prompts()
    graph = sent["prompt"]
    assert (graph["6"]["inputs"]["text"], graph["7"]["inputs"]["text"]) == ("a red fox in snow", "blur")
    assert (graph["3"]["inputs"]["steps"], graph["3"]["inputs"]["seed"]) == (8, 7)
    assert graph["4"]["inputs"]["ckpt_name"] == CHECKPOINTS[0], "the service's first checkpoint"
    assert sent["client_id"] and sent["prompt_id"]
    assert midway["preview_url"], "the websocket's preview frame was the preview"
    assert fake.interrupted == [] and fake.deleted == []


async def test_a_prompt_behind_others_says_so_and_cancel_takes_it_out_of_comfyuis_queue(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeComfyUI()
    fake.hold_at = 1
    async with comfy_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        other = fake.queue_other()  # another client's prompt holds the service
        assert await alice.command("/imagine a patient fox") == {"ok": True}
        waiting = await alice.wait_for(
            lambda m: "waiting in ComfyUI's queue, 1 ahead" in str((m.get("status") or {}).get("headline"))
        )
        assert await alice.command("/cancel") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]
        (sent,) = fake.prompts()
        fake.hold_at = None
        await fake.wait_idle()

    assert waiting["status"]["state"] == "running"
    assert final["state"] == "cancelled"
    assert fake.deleted == [sent["prompt_id"]], "taken out of ComfyUI's queue"
    assert fake.interrupted == [], "the other client's prompt was not interrupted"
    assert fake.finished == [other]


async def test_cancel_interrupts_the_running_prompt(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeComfyUI(step_delay_s=0.2)
    async with comfy_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        assert await alice.command("/imagine a slow fox steps: 50") == {"ok": True}
        await alice.wait_for(
            lambda m: bool(m.get("status")) and (m["status"]["progress"] or 0) > 0, timeout=30
        )
        assert await alice.command("/cancel") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]
        await fake.wait_idle()
        (sent,) = fake.prompts()

    assert final["state"] == "cancelled"
    assert fake.interrupted == [sent["prompt_id"]]


async def test_a_failing_node_reads_as_a_service_error_and_opens_the_breaker(
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeComfyUI()
    fake.fail_next("CUDA out of memory. Tried to allocate 2.00 GiB")
    fake.fail_next("CUDA out of memory. Tried to allocate 2.00 GiB")
    worker = {"breaker_fail_max": 2, "breaker_reset_s": 60}
    caplog.set_level(logging.ERROR, logger="jobs.runner")
    async with comfy_chat(redis_server, sqlite_url, tmp_path, fake, worker=worker) as alice:
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
    assert "KSampler torch.OutOfMemoryError CUDA out of memory" in caplog.text
    assert waiting["status"]["state"] == "queued"
    assert len(fake.prompts()) == 2


@pytest.mark.parametrize("without", ["websocket", "its socket midway"])
async def test_without_the_websocket_the_job_goes_on_by_reading_the_history(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path, without: str
) -> None:
    fake = FakeComfyUI(websocket=without != "websocket")
    if without != "websocket":
        fake.drop_sockets_at = 2
    async with comfy_chat(redis_server, sqlite_url, tmp_path, fake) as alice:
        assert await alice.command("/imagine a fox behind a proxy steps: 4") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]

    assert final["state"] == "succeeded"
    assert any(path.startswith("/history/") for _m, path, _b in fake.requests)


async def test_a_service_that_hangs_times_out_and_its_prompt_is_interrupted(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeComfyUI()
    fake.hang = True
    worker = {"backend_timeout_s": 1.0, "job_timeout_s": 5.0}
    async with comfy_chat(redis_server, sqlite_url, tmp_path, fake, worker=worker) as alice:
        assert await alice.command("/imagine a red fox") == {"ok": True}
        final = (await alice.wait_for(ended, timeout=30))["status"]
        await fake.wait_idle()
        (sent,) = fake.prompts()

    assert final["state"] == "timed_out"
    assert fake.interrupted == [sent["prompt_id"]]


async def test_a_checkpoint_the_service_lacks_is_named_with_the_ones_it_has() -> None:
    fake = FakeComfyUI()
    url = await fake.start()
    try:
        backend = ComfyUIBackend(settings_of(url=url, model="sdxl-turbo.safetensors"))

        async def progress(
            step: int, total: int, preview: bytes | None, *, waiting: str | None = None
        ) -> None:
            raise AssertionError("no progress for a job that never started")

        with pytest.raises(
            ComfyUIError, match=r"MODEL: the service has no checkpoint 'sdxl-turbo.safetensors'; it has: v1-5"
        ):
            await backend.generate(REQUEST, progress)
    finally:
        await fake.stop()
    assert fake.prompts() == []


async def test_a_proxy_that_refuses_the_login_reads_as_a_setting_to_fix() -> None:
    fake = FakeComfyUI(credentials=("genbot", "s3cret"))
    url = await fake.start()
    try:
        wrong = ComfyUIBackend(settings_of(url=url, username="genbot", password="wrong"))

        async def progress(
            step: int, total: int, preview: bytes | None, *, waiting: str | None = None
        ) -> None:
            return None

        with pytest.raises(
            ComfyUIError, match=r"refused genbot's login .* GENBOT_BACKENDS__COMFYUI__USERNAME"
        ):
            await wrong.generate(REQUEST, progress)
        right = ComfyUIBackend(settings_of(url=url, username="genbot", password="s3cret"))
        result = await right.generate(REQUEST, progress)
    finally:
        await fake.stop()
    assert Image.open(io.BytesIO(result.png)).size == (512, 768)
