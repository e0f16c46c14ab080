"""The job of the fleet simulation (``bench/fleet.py``): a plugin, loaded by every ``genbot
worker`` of the fleet with ``GENBOT_PLUGINS__MODULES=bench.fleet_jobs:plugin``.

``/fleet text seconds: 1`` queues a job that sleeps ``seconds`` in four steps, reporting progress
as an image job does, and returns which host ran it. ``seconds: 0`` holds the job until the bench
sets :data:`RELEASE` in Redis (a job that runs for as long as a measurement needs).

Every run is recorded in the Redis list ``runs_key`` at ``runs_url``, as a JSON object per event
(``{"job", "host", "event": "start"|"end", "t"}``, ``t`` from the host's clock: the namespaces of the
simulation share one kernel, hence one clock). The bench counts runs from there, exactly: a job
started twice is a duplicate unless the bench took its first host away. A start that cannot be
recorded fails the run (Redis is out of reach: the worker could not have claimed it either); an end
that cannot be recorded (its host was cut off meanwhile) is left out, and the row says how the job
ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.api import Call, Command, Job, JobKind, JobRequest, Option, Plugin, TextResult

#: Set by the bench to end every held job (``seconds: 0``).
RELEASE = "fleet:release"
#: A held job ends by itself after this long, whatever the bench does.
HOLD_MAX_S = 300.0
STEPS = 4


class FleetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The name of the simulated host this worker runs on.
    host: str = "?"
    #: Where runs are recorded (the simulation's own redis-server); empty: nowhere.
    runs_url: str = ""
    runs_key: str = "fleet:runs"


class _Recorder:
    """One Redis client per worker process, made at its first use (short timeouts: a host cut
    off must not hang a job on its bookkeeping)."""

    def __init__(self) -> None:
        self._clients: dict[str, Redis] = {}

    def client(self, url: str) -> Redis:
        if url not in self._clients:
            self._clients[url] = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return self._clients[url]

    async def record(self, settings: FleetSettings, job: int, event: str) -> None:
        if not settings.runs_url:
            return
        entry = json.dumps({"job": job, "host": settings.host, "event": event, "t": time.time()})
        await self.client(settings.runs_url).rpush(settings.runs_key, entry)  # type: ignore[misc]

    async def released(self, settings: FleetSettings) -> bool:
        if not settings.runs_url:
            return True
        try:
            return bool(await self.client(settings.runs_url).exists(RELEASE))
        except (RedisError, OSError):  # cut off: hold on
            return False


_recorder = _Recorder()


def prepare(call: Call) -> JobRequest:
    return JobRequest(call.options["text"], {"seconds": float(call.options.get("seconds", 1.0))})


async def fleet(job: Job) -> TextResult:
    settings: FleetSettings = job.settings
    await _recorder.record(settings, job.id, "start")
    seconds = float(job.options["seconds"])
    if seconds > 0:
        for step in range(1, STEPS + 1):
            await asyncio.sleep(seconds / STEPS)
            await job.progress(step, STEPS)
    else:
        deadline = time.monotonic() + HOLD_MAX_S
        while not await _recorder.released(settings) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)  # the bench's key, in another process's Redis
        await job.progress(STEPS, STEPS)
    with contextlib.suppress(RedisError, OSError):
        await _recorder.record(settings, job.id, "end")
    return TextResult(f"ran on {settings.host}")


plugin = Plugin(
    name="fleet",
    commands=(
        Command(
            "fleet",
            "A job of the fleet simulation",
            (
                Option("text", "string", "A label", required=True),
                Option("seconds", "number", "How long it runs (0: until released)", min=0, max=600),
            ),
            job="fleet",
            prepare=prepare,
        ),
    ),
    jobs=(JobKind("fleet", fleet, verb="Running"),),
    settings=FleetSettings,
)
