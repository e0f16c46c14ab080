from __future__ import annotations

import asyncio
import io
from typing import ClassVar

import pytest
from PIL import Image
from redis.asyncio import Redis

from bot.config import load_settings
from bot.ports import ImageResult
from jobs import breaker as breaker_module
from jobs.backends import BackendNotFound, load_backend
from jobs.backends.base import ImageRequest
from jobs.backends.demo import DemoBackend
from jobs.breaker import FAILURE, SUCCESS, Breaker, BreakerKeys, BreakerOpen
from jobs.constants import Keys
from jobs.imagine import plugin as imagine_plugin

REQUEST = ImageRequest("a red fox in snow", "", 512, 768, 6, 42)


async def test_demo_is_deterministic_and_reports_every_step_with_a_preview() -> None:
    steps: list[tuple[int, int, int]] = []

    async def progress(step: int, total: int, preview: bytes | None) -> None:
        assert preview is not None
        steps.append((step, total, Image.open(io.BytesIO(preview)).width))

    backend = DemoBackend(step_delay_s=0)
    first = await backend.generate(REQUEST, progress)
    second = await backend.generate(REQUEST, progress)
    assert first.png == second.png
    assert [s[:2] for s in steps[:6]] == [(i, 6) for i in range(1, 7)]
    assert Image.open(io.BytesIO(first.png)).size == (512, 768)
    other = await backend.generate(ImageRequest("a red fox in snow", "", 512, 768, 6, 43), progress)
    assert other.png != first.png


async def test_demo_stops_when_cancelled() -> None:
    calls = 0

    async def progress(step: int, total: int, preview: bytes | None) -> None:
        nonlocal calls
        calls += 1

    task = asyncio.create_task(DemoBackend(step_delay_s=0.05).generate(REQUEST, progress))
    await asyncio.sleep(0.12)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls < 6


def test_backend_by_name_or_dotted_path() -> None:
    assert load_backend(load_settings(_env_file=None)).name == "demo"
    custom = load_settings(_env_file=None, backend={"name": "tests.jobs.test_backends:make_custom"})
    assert load_backend(custom).name == "custom"
    with pytest.raises(BackendNotFound, match="GENBOT_BACKEND__NAME"):
        load_backend(load_settings(_env_file=None, backend={"name": "no.such:thing"}))


class _Custom:
    name = "custom"

    async def generate(self, request: ImageRequest, progress: object) -> ImageResult:
        return ImageResult(png=b"png")


MADE: list[object] = []


def make_custom(_settings: object) -> _Custom:
    MADE.append(_settings)
    return _Custom()


async def test_the_image_plugin_makes_its_backend_on_the_first_job_only() -> None:
    """A backend that loads a model does so where images are made: loading the plugins (a bot, a
    sync, ``genbot plugins``) only finds its factory, and a wrong name still stops start-up."""
    MADE.clear()
    custom = load_settings(_env_file=None, backend={"name": "tests.jobs.test_backends:make_custom"})
    plugin = imagine_plugin(custom)
    assert MADE == []
    (kind,) = plugin.jobs
    job = _FakeJob()
    for _ in range(2):
        await kind.run(job)
    assert len(MADE) == 1, "made once, on the first job"
    with pytest.raises(BackendNotFound):
        imagine_plugin(load_settings(_env_file=None, backend={"name": "no.such:thing"}))


class _FakeJob:
    id = 1
    text = "a fox"
    options: ClassVar[dict[str, int]] = {"width": 8, "height": 8, "steps": 1, "seed": 1}
    settings = None
    blobs = None
    backend = "tests.jobs.test_backends:make_custom"

    async def progress(self, *args: object, **kwargs: object) -> None:
        return None


async def test_the_breaker_counts_failures_in_a_row_over_all_workers(redis: Redis) -> None:
    """Two workers' breakers share the count: one worker failing again and again while the other
    succeeds in between never opens it (a worker's own streak does not count); failures in a row
    spread over both workers do."""
    keys = BreakerKeys.of(Keys("bt"), "demo")
    worker_a = Breaker(redis, keys, fail_max=3, reset_s=30.0, probe_ttl_s=30.0)
    worker_b = Breaker(redis, keys, fail_max=3, reset_s=30.0, probe_ttl_s=30.0)

    async def failing() -> None:
        raise RuntimeError("this prompt chokes the backend")

    async def fine() -> str:
        return "ok"

    for _ in range(6):
        with pytest.raises(RuntimeError):
            await worker_a.call(await worker_a.admit(), failing)
        assert await worker_b.call(await worker_b.admit(), fine) == "ok"
    assert await worker_a.state() == "closed"

    with pytest.raises(RuntimeError):
        await worker_a.call(await worker_a.admit(), failing)
    with pytest.raises(RuntimeError):
        await worker_b.call(await worker_b.admit(), failing)
    assert await worker_a.state() == "closed", "two failures in a row, of three"
    with pytest.raises(RuntimeError):
        await worker_a.call(await worker_a.admit(), failing)
    assert await worker_b.state() == "open"
    with pytest.raises(BreakerOpen):
        await worker_b.admit()


async def test_half_open_the_probe_is_the_head_jobs(redis: Redis) -> None:
    """Jobs 1 and 2 wait for the open breaker in the line, in that order. Once it half-opens, job
    2's worker asking first does not make it the probe: position 1 is the next job to start."""
    keys = Keys("bt")
    breaker = Breaker(redis, BreakerKeys.of(keys, "demo"), fail_max=1, reset_s=0.2, probe_ttl_s=30.0)
    await redis.zadd(keys.waiting("demo"), {"1": 1, "2": 2})

    async def failing() -> None:
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError):
        await breaker.call(await breaker.admit(), failing)
    while await breaker.state() == "open":
        await asyncio.sleep(0.01)
    with pytest.raises(BreakerOpen):
        await breaker.admit(2)
    probe = await breaker.admit(1)
    assert probe.probe


async def test_breaker_opens_after_fail_max_and_lets_one_probe_through_half_open(redis: Redis) -> None:
    breaker = Breaker(redis, BreakerKeys.of(Keys("bt"), "demo"), fail_max=2, reset_s=0.2, probe_ttl_s=30.0)
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("backend down")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            await breaker.call(await breaker.admit(), failing)
    with pytest.raises(BreakerOpen) as opened:
        await breaker.admit()
    assert calls == 2, "open: the backend is not called"
    assert 0 < opened.value.retry_in <= 0.2

    while await breaker.state() == "open":
        await asyncio.sleep(0.01)
    release = asyncio.Event()
    probes = 0

    async def slow_ok() -> str:
        nonlocal probes
        probes += 1
        await release.wait()
        return "ok"

    probe = await breaker.admit()
    first = asyncio.create_task(breaker.call(probe, slow_ok))
    others = await asyncio.gather(*(breaker.admit() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(o, BreakerOpen) for o in others), "half-open: one probe at a time"
    release.set()
    assert await first == "ok"
    assert probes == 1
    assert await breaker.state() == "closed"
    assert await breaker.call(await breaker.admit(), slow_ok) == "ok"


async def test_a_call_whose_verdict_redis_cannot_hear_keeps_its_result(redis: Redis) -> None:
    """Redis goes away while the backend works: the image is made, and neither the success nor
    a failure that Redis cannot count turns into another error."""
    breaker = Breaker(redis, BreakerKeys.of(Keys("bt"), "demo"), fail_max=2, reset_s=30.0, probe_ttl_s=30.0)
    admission = await breaker.admit()
    dead = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    breaker._success = dead.register_script(SUCCESS)
    breaker._failure = dead.register_script(FAILURE)

    async def fine() -> str:
        return "the image"

    async def failing() -> None:
        raise RuntimeError("backend down")

    try:
        assert await breaker.call(admission, fine) == "the image"
        with pytest.raises(RuntimeError, match="backend down"):
            await breaker.call(await breaker.admit(), failing)
    finally:
        await dead.aclose()


async def test_half_open_a_job_behind_takes_the_probe_when_the_head_does_not(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head job's worker never asks (it died): after the grace, the next waiting job probes."""
    monkeypatch.setattr(breaker_module, "PROBE_HEAD_GRACE_S", 0.2)
    keys = Keys("bt")
    breaker = Breaker(redis, BreakerKeys.of(keys, "demo"), fail_max=1, reset_s=0.1, probe_ttl_s=30.0)
    await redis.zadd(keys.waiting("demo"), {"1": 1, "2": 2})

    async def failing() -> None:
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError):
        await breaker.call(await breaker.admit(), failing)
    while await breaker.state() == "open":
        await asyncio.sleep(0.01)
    with pytest.raises(BreakerOpen):
        await breaker.admit(2)
    async with asyncio.timeout(10):
        while True:
            try:
                probe = await breaker.admit(2)
                break
            except BreakerOpen:
                await asyncio.sleep(0.02)
    assert probe.probe
