"""The arq worker of ``genbot worker`` (and of ``genbot dev``).

:func:`build_worker` makes the ``arq.Worker`` of one line (a backend's jobs: see
:mod:`jobs.constants`) from the settings and ready dependencies; a process runs one per line it
serves (:func:`served_lines`), and owns the database connection and the Redis pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from arq import Retry, Worker
from arq.constants import retry_key_prefix
from arq.cron import cron
from arq.worker import func

from bot.config import CONCURRENCY_MAX, ConfigError, Settings
from bot.models import JOB_ID_PREFIX, job_id_for
from bot.ports import QueueUnavailable
from jobs.connections import REDIS_DOWN, Outage, redis_pool
from jobs.constants import GENERATE_FUNCTION, SWEEP_QUEUE_SUFFIX, WORKER_ALIVE_MS
from jobs.poll import CLAIM, LineRead, poll_iteration, start_jobs
from jobs.queue import RedisJobQueue
from jobs.runner import RUNNING_ELSEWHERE, Deferred, GenerationRunner, defer_slice_s

log = logging.getLogger(__name__)

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
        outcome = await runner.run(
            generation_id, line=ctx["line"], last_try=ctx["job_try"] >= MAX_TRIES, ticket=ctx.get("score")
        )
        ctx[OUTCOME] = outcome
        if outcome in HANDS_OFF:
            ctx[HANDS_OFF_KEY].add(ctx["job_id"])
        return outcome
    except Deferred:
        await _give_try_back(ctx, generation_id)
        raise Retry(defer=0) from None
    except asyncio.CancelledError:
        if runner.waiting_for_backend(generation_id):
            await _give_try_back(ctx, generation_id)
        raise


#: Where :func:`generate` leaves what the run came to, for ``after_job_end``.
OUTCOME = "genbot_outcome"
#: The outcomes after which the job may be back in line while arq cleans up its run, so that arq's
#: clean-up deleted the arq job it found in place (``RedisJobQueue.repair`` gives it back): set
#: aside and put back meanwhile (held, paused), taken over by a new run (superseded), or found
#: moved on (skipped: a failover may have put it back in line as it was read).
REPAIRED_AFTER = frozenset({"held", "paused", "superseded", "skipped", RUNNING_ELSEWHERE})
#: The outcomes of a run whose job's arq keys (``gen:<id>``, one per generation) are another run's:
#: it was taken over, or another live run holds it. arq's clean-up of this run would delete that
#: run's in-progress key (its hold, which the member's running cap and a cancel read), its job and
#: its place in arq's queue: :class:`PatientWorker` skips it.
HANDS_OFF = frozenset({"superseded", RUNNING_ELSEWHERE})
#: The worker's ctx entry: the ids of the jobs whose clean-up is skipped (a set shared by its runs).
HANDS_OFF_KEY = "genbot_hands_off"


async def _give_try_back(ctx: dict[str, Any], generation_id: int) -> None:
    """Undo arq's count of this run as a try (it waited, and tried nothing). Best effort: while
    Redis is away the try stays counted."""
    with contextlib.suppress(*REDIS_DOWN):
        await ctx["redis"].decr(retry_key_prefix + job_id_for(generation_id))


async def sweep(ctx: dict[str, Any]) -> int:
    """The arq cron job: heal lost generations (``Genbot.reconcile``). While Redis is away the
    sweep says so once and skips its runs (arq would log a traceback for each)."""
    return await _heal(ctx, "reconcile")


async def check_failover(ctx: dict[str, Any]) -> int:
    """The arq cron job: take over the running jobs whose worker stopped beating
    (``Genbot.fail_over``), every quarter of ``worker.failover_after_s``."""
    return await _heal(ctx, "fail_over")


async def _heal(ctx: dict[str, Any], name: str) -> int:
    heal: Callable[[], Awaitable[int]] = ctx[name]
    outage: Outage = ctx["outage"]
    try:
        healed = await heal()
    except QueueUnavailable as exc:
        outage.note(exc)  # arq's cron paces the next try
        return 0
    outage.ok()
    return healed


class PatientWorker(Worker):
    """An arq worker that rides out Redis outages instead of ending.

    arq's poll loop ends the worker on the first Redis error it meets (a restart refuses
    connections for a few seconds), and a claim cut short by one leaves its slot taken for good.
    Here a poll that meets an outage is logged once (:class:`~jobs.connections.Outage`), waited out
    with backoff and tried again, for as long as Redis is away; the slot of a claim cut short is
    given back. Jobs running meanwhile go on (their own Redis calls wait, then fail as jobs do).

    With ``read`` (the worker of a line), a poll reads the line's waiting set instead of the
    head of arq's queue (:mod:`jobs.poll`); without it (the sweeper), it reads as arq does.

    A worker of a line also paces its polls itself (arq's own delay is 0): while every slot is
    busy it polls again **as soon as a job ends** (at most ``poll_delay`` later, for the abort
    checks), not after a whole ``poll_delay``: arq's fixed sleep capped a worker at
    ``max_jobs / poll_delay`` jobs a second however short they were (50/s at 10 jobs at once).
    After a poll that started jobs it reads again at once (more may wait); after one that started
    none (nothing waits, or other workers were faster) it waits ``poll_delay``.

    Its claim of a job is arq's, in one script instead of four round trips
    (:func:`jobs.poll.start_jobs`).
    """

    def __init__(self, *args: Any, read: LineRead | None = None, **kwargs: Any) -> None:
        pace_s = float(kwargs.get("poll_delay", 0.5))
        if read is not None:
            kwargs["poll_delay"] = 0  # paced in _poll_iteration
        super().__init__(*args, **kwargs)
        self.outage = Outage(f"worker of {self.queue_name}", log)
        self.read = read
        self.pace_s = pace_s
        self._polled = False
        #: How many jobs the last poll started.
        self._started = 0
        #: Set when a job ends and gives its slot back.
        self._slot_freed = asyncio.Event()
        #: arq's claim of a job as one script (:func:`jobs.poll.start_jobs`), once the pool exists.
        self._claim: Any = None

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    async def _poll_iteration(self) -> None:
        try:
            if self.read is None:
                await super()._poll_iteration()
            else:
                await self._pace()
                await poll_iteration(self, self.read)
        except REDIS_DOWN as exc:
            await self.outage.failed(exc)
        else:
            self.outage.ok()

    async def _pace(self) -> None:
        """Wait until the next poll of a line is worth it (see the class docstring)."""
        if not self._polled:
            self._polled = True
            return
        self._slot_freed.clear()
        if not self._started:
            await asyncio.sleep(self.pace_s)  # nothing to start last time: wait for new jobs
        elif self.job_counter >= self.max_jobs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), self.pace_s)

    async def finish_job(self, job_id: str, *args: Any, **kwargs: Any) -> None:
        """arq's clean-up of a run, unless the run left the job's keys to another (:data:`HANDS_OFF`)."""
        hands_off: set[str] = self.ctx.setdefault(HANDS_OFF_KEY, set())
        if job_id in hands_off:
            hands_off.discard(job_id)
            return
        await super().finish_job(job_id, *args, **kwargs)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        before = len(self.tasks)  # a started job is a new task (arq keys them by job id)
        self._started = 0
        if self._claim is None:
            self._claim = self.pool.register_script(CLAIM)
        try:
            await start_jobs(self, self._claim, job_ids)
            self._started = len(self.tasks) - before
        except REDIS_DOWN:
            # arq counted the job whose claim failed, and holds its slot: give both back.
            self.job_counter -= 1
            self.sem.release()
            raise


async def close_worker(worker: Worker) -> None:
    """Stop ``worker`` and close its pool: its running jobs are cancelled (arq puts them back in
    the queue). arq's ``close()`` re-raises the ``CancelledError`` of the jobs it stops: that is
    the stop asked for, and is swallowed, unless the task calling this is itself cancelled."""
    try:
        await worker.close()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


#: How long one pruning run may take.
PRUNE_TIMEOUT_S = 600


async def prune(ctx: dict[str, Any]) -> int:
    """The arq cron job: remove the blobs older than ``blobs.keep_days`` (``prune_blobs``)."""
    prune_blobs: Callable[[], Awaitable[int]] = ctx["prune_blobs"]
    removed = await prune_blobs()
    if removed:
        log.info("removed %d blobs older than the retention", removed)
    return removed


def build_sweeper(
    settings: Settings,
    *,
    reconcile: Callable[[], Awaitable[int]],
    fail_over: Callable[[], Awaitable[int]] | None = None,
    prune_blobs: Callable[[], Awaitable[int]] | None = None,
    handle_signals: bool = True,
) -> Worker:
    """An arq worker of its own queue that runs :func:`sweep` every ``worker.sweep_every_min``
    minutes (and at start), with ``fail_over`` :func:`check_failover` every quarter of
    ``worker.failover_after_s`` (and at start), and with ``prune_blobs`` :func:`prune` hourly (and
    at start). Its own queue, because a cron job in the generation queue would wait behind every
    waiting job (their scores are tickets); ``unique`` cron ids make one worker process of many run
    each. Its cron jobs run side by side, so a long sweep never holds up a failover check."""
    every = settings.worker.sweep_every_min
    if every < 1:  # every few seconds
        minute, second = None, set(range(0, 60, max(1, round(every * 60))))
    else:
        minute, second = set(range(0, 60, round(every))), {0}
    jobs = [
        cron(
            sweep,
            name="genbot-sweep",
            minute=minute,
            second=second,
            run_at_startup=True,
            unique=True,
            timeout=max(60, every * 60),
        )
    ]
    if fail_over is not None:
        check_every = settings.worker.failover_check_s
        jobs.append(
            cron(
                check_failover,
                name="genbot-failover",
                second=set(range(0, 60, check_every)),
                run_at_startup=True,
                unique=True,
                timeout=max(30, check_every * 2),
            )
        )
    if prune_blobs is not None:
        jobs.append(
            cron(
                prune,
                name="genbot-prune",
                minute={0},
                second={30},
                run_at_startup=True,
                unique=True,
                timeout=PRUNE_TIMEOUT_S,
            )
        )
    return PatientWorker(
        functions=[],
        cron_jobs=jobs,
        queue_name=settings.redis.queue_name + SWEEP_QUEUE_SUFFIX,
        redis_pool=redis_pool(settings.redis.url, max_connections=settings.redis.max_connections),
        max_jobs=len(jobs),
        keep_result=0,
        poll_delay=1.0,
        handle_signals=handle_signals,
        ctx={
            "reconcile": reconcile,
            "fail_over": fail_over,
            "prune_blobs": prune_blobs,
            "outage": Outage("sweep (skipped while Redis is away)", log),
        },
    )


def served_lines(settings: Settings, lines: Iterable[str]) -> dict[str, int]:
    """The lines a worker serves and how many jobs of each it runs at once: ``worker.lines``
    (``name`` or ``name=jobs``; every one of ``lines`` if empty), ``worker.concurrency`` where no
    number is given. Raises :class:`ConfigError` for a line no loaded plugin has."""
    known = list(dict.fromkeys(lines))
    if not settings.worker.lines:
        return dict.fromkeys(known, settings.worker.concurrency)
    served: dict[str, int] = {}
    for entry in settings.worker.lines:
        name, sep, jobs = entry.rpartition("=")
        if not sep:
            name, jobs = entry, str(settings.worker.concurrency)
        if name not in known:
            raise ConfigError(
                f"GENBOT_WORKER__LINES: no job kind runs on {name!r}; the lines are {', '.join(known)}"
            )
        if not jobs.isdigit() or not 1 <= int(jobs) <= CONCURRENCY_MAX:
            raise ConfigError(f"GENBOT_WORKER__LINES: {entry!r}: the jobs at once are 1 to {CONCURRENCY_MAX}")
        served[name] = int(jobs)
    return served


def build_worker(
    settings: Settings,
    *,
    runner: GenerationRunner,
    queue: RedisJobQueue,
    line: str,
    concurrency: int,
    handle_signals: bool = True,
    burst: bool = False,
) -> Worker:
    """An arq worker that runs the jobs of ``line`` in ticket order, ``concurrency`` at a time,
    and beats a heartbeat so the ETA knows the line's live capacity."""
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    beat_task: asyncio.Task[None] | None = None

    async def beat() -> None:
        while True:
            with contextlib.suppress(Exception):
                await queue.worker_heartbeat(worker_id, concurrency, line=line)
            await asyncio.sleep(WORKER_ALIVE_MS / 3000)

    async def on_startup(_ctx: dict[str, Any]) -> None:
        nonlocal beat_task
        await queue.worker_heartbeat(worker_id, concurrency, line=line)
        beat_task = asyncio.create_task(beat(), name=f"genbot-worker-heartbeat-{line}")

    async def after_job_end(ctx: dict[str, Any]) -> None:
        # After arq's own clean-up of the run: see RedisJobQueue.repair.
        job_id = str(ctx.get("job_id", ""))
        if ctx.pop(OUTCOME, "held") not in REPAIRED_AFTER:
            return  # a run that ended its job (or found it ended) left nothing to give back
        if job_id.startswith(JOB_ID_PREFIX):
            with contextlib.suppress(Exception):
                await queue.repair(int(job_id.removeprefix(JOB_ID_PREFIX)), line=line)

    async def on_shutdown(_ctx: dict[str, Any]) -> None:
        if beat_task is not None:
            beat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat_task
        with contextlib.suppress(Exception):
            await queue.worker_gone(worker_id, line=line)

    pool = redis_pool(settings.redis.url, max_connections=settings.redis.max_connections)
    return PatientWorker(
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
        queue_name=queue.line_queue(line),
        redis_pool=pool,
        read=LineRead(
            pool,
            waiting_key=queue.keys.waiting(line),
            queue_name=queue.line_queue(line),
            orphan_read_key=queue.keys.orphan_read(line),
        ),
        max_jobs=concurrency,
        allow_abort_jobs=True,
        keep_result=60,
        poll_delay=0.2,
        handle_signals=handle_signals,
        burst=burst,
        ctx={"runner": runner, "line": line, HANDS_OFF_KEY: set()},
        on_startup=on_startup,
        after_job_end=after_job_end,
        on_shutdown=on_shutdown,
    )
