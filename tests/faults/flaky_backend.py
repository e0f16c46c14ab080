"""A backend for the fault scenarios: the demo backend, except that while the Redis counter
``faults:fail-next`` is above zero each call takes one from it and fails at once (an image service
that answers 500). Shared by every worker process, so the test decides exactly how many calls fail.
``GENBOT_BACKEND__NAME=tests.faults.flaky_backend:make``."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.config import Settings
from bot.ports import ImageResult
from jobs.backends.base import ImageRequest, ProgressCallback
from jobs.backends.demo import DemoBackend

FAIL_NEXT = "faults:fail-next"
CALLS = "faults:calls"


class FlakyBackend:
    name = "flaky"

    def __init__(self, redis_url: str, step_delay_s: float) -> None:
        self.redis = Redis.from_url(redis_url)
        self.demo = DemoBackend(step_delay_s=step_delay_s)

    async def generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        await self.redis.incr(CALLS)
        if int(await self.redis.decr(FAIL_NEXT)) >= 0:
            raise RuntimeError("the image service answered 500")
        return await self.demo.generate(request, progress)


def make(settings: Settings) -> FlakyBackend:
    return FlakyBackend(settings.redis.url, settings.backend.demo_step_delay_s)
