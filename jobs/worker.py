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

from arq import Retry, Worker
from arq.connections import RedisSettings
from arq.constants import retry_key_prefix
from arq.cron import cron
from arq.worker import func

from bot.config import Settings
from bot.models import JOB_ID_PREFIX, job_id_for
from jobs.constants import GENERATE_FUNCTION, SWEEP_QUEUE_SUFFIX, WORKER_ALIVE_MS
from jobs.queue import RedisJobQueue, redis_settings_for
from jobs.runner import Deferred, GenerationRunner, defer_slice_s

#: arq runs a job again after its worker stopped (SIGTERM: at once; SIGKILL: when its in-progress
#: key expires), this many times in all.
MAX_TRIES = 3
#: arq's limit for one run is the job timeout (which the runner enforces itself, to end the job as
#: ``timed_out``) plus the longest wait for the breaker plus this margin.
ARQ_TIMEOUT_MARGIN_S = 10.0


async def generate(ctx: dict[str, Any], generation_id: int) -> str:
    """The arq job. Idempotent: see :class:`jobs.runner.GenerationRunner`.

    A job that only waited for the circuit breaker (it waited its slice, or the worker stopped
    while it waited) did not try anything: arq's try is given back, and ``Retry(defer=0)`` leaves
    its score, its ticket, unchanged, so it keeps its place."""
    runner: GenerationRunner = ctx["runner"]
    try:
        return await runner.run(generation_id, last_try=ctx["job_try"] >= MAX_TRIES, ticket=ctx.get("score"))
    except Deferred:
        await ctx["redis"].decr(retry_key_prefix + job_id_for(generation_id))
        raise Retry(defer=0) from None
    except asyncio.CancelledError:
        if runner.waiting_for_backend(generation_id):
            await ctx["redis"].decr(retry_key_prefix + job_id_for(generation_id))
        raise


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
    if every < 1:  # every few seconds
        minute, second = None, set(range(0, 60, max(1, round(every * 60))))
    else:
        minute, second = set(range(0, 60, round(every))), {0}
    return Worker(
        functions=[],
        cron_jobs=[
            cron(
                sweep,
                name="genbot-sweep",
                minute=minute,
                second=second,
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
    return redis_settings_for(settings.redis.url)


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
                timeout=settings.worker.job_timeout_s
                + defer_slice_s(settings.worker.breaker_reset_s)
                + ARQ_TIMEOUT_MARGIN_S,
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
