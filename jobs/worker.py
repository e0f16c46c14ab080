"""The arq worker of ``genbot worker`` (and of ``genbot dev``).

:func:`build_worker` makes an ``arq.Worker`` from the settings and ready dependencies; the process
that calls it owns the database connection and the Redis pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from arq import Worker
from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import func

from bot.config import Settings
from bot.models import JOB_ID_PREFIX
from jobs.constants import GENERATE_FUNCTION, SWEEP_QUEUE_SUFFIX, WORKER_ALIVE_MS
from jobs.queue import RedisJobQueue
from jobs.runner import GenerationRunner

#: arq runs a job again after its worker stopped (SIGTERM: at once; SIGKILL: when its in-progress
#: key expires), this many times in all.
MAX_TRIES = 3


async def generate(ctx: dict[str, Any], generation_id: int) -> str:
    """The arq job. Idempotent: see :class:`jobs.runner.GenerationRunner`."""
    runner: GenerationRunner = ctx["runner"]
    return await runner.run(generation_id, last_try=ctx["job_try"] >= MAX_TRIES, ticket=ctx.get("score"))


async def sweep(ctx: dict[str, Any]) -> int:
    """The arq cron job: heal stuck and lost generations (``Genbot.reconcile``)."""
    reconcile: Callable[[], Awaitable[int]] = ctx["reconcile"]
    return await reconcile()


def build_sweeper(
    settings: Settings, *, reconcile: Callable[[], Awaitable[int]], handle_signals: bool = True
) -> Worker:
    """An arq worker of its own queue that runs :func:`sweep` every ``worker.sweep_every_min``
    minutes (and at start). Its own queue, because a cron job in the generation queue would wait
    behind every waiting job (their scores are tickets); ``unique`` cron ids make one worker
    process of many run each sweep."""
    every = settings.worker.sweep_every_min
    return Worker(
        functions=[],
        cron_jobs=[
            cron(
                sweep,
                name="genbot-sweep",
                minute=set(range(0, 60, every)),
                second=0,
                run_at_startup=True,
                unique=True,
                timeout=max(60, every * 60),
            )
        ],
        queue_name=settings.redis.queue_name + SWEEP_QUEUE_SUFFIX,
        redis_settings=redis_settings(settings),
        max_jobs=1,
        keep_result=0,
        poll_delay=1.0,
        handle_signals=handle_signals,
        ctx={"reconcile": reconcile},
    )


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis.url)


def build_worker(
    settings: Settings,
    *,
    runner: GenerationRunner,
    queue: RedisJobQueue,
    handle_signals: bool = True,
    burst: bool = False,
) -> Worker:
    """An arq worker that runs generation jobs in ticket order, ``worker.concurrency`` at a time,
    and beats a heartbeat so the ETA knows how many workers are alive."""
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    beat_task: asyncio.Task[None] | None = None

    async def beat() -> None:
        while True:
            with contextlib.suppress(Exception):
                await queue.worker_heartbeat(worker_id, settings.worker.concurrency)
            await asyncio.sleep(WORKER_ALIVE_MS / 3000)

    async def on_startup(_ctx: dict[str, Any]) -> None:
        nonlocal beat_task
        await queue.worker_heartbeat(worker_id, settings.worker.concurrency)
        beat_task = asyncio.create_task(beat(), name="genbot-worker-heartbeat")

    async def after_job_end(ctx: dict[str, Any]) -> None:
        # After arq's own clean-up of the run: see RedisJobQueue.repair.
        job_id = str(ctx.get("job_id", ""))
        if job_id.startswith(JOB_ID_PREFIX):
            with contextlib.suppress(Exception):
                await queue.repair(int(job_id.removeprefix(JOB_ID_PREFIX)))

    async def on_shutdown(_ctx: dict[str, Any]) -> None:
        if beat_task is not None:
            beat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat_task
        with contextlib.suppress(Exception):
            await queue.worker_gone(worker_id)

    return Worker(
        functions=[
            func(
                generate,
                name=GENERATE_FUNCTION,
                timeout=settings.worker.job_timeout_s,
                max_tries=MAX_TRIES,
            )
        ],
        queue_name=settings.redis.queue_name,
        redis_settings=redis_settings(settings),
        max_jobs=settings.worker.concurrency,
        allow_abort_jobs=True,
        keep_result=60,
        poll_delay=0.2,
        handle_signals=handle_signals,
        burst=burst,
        ctx={"runner": runner},
        on_startup=on_startup,  # type: ignore[arg-type]  # arq's protocol wants Dict, not dict
        after_job_end=after_job_end,
        on_shutdown=on_shutdown,  # type: ignore[arg-type]
    )
