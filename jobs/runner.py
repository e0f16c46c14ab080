"""The generation job: one run of one generation, from ``queued`` to a terminal state.

Safe to run twice for the same generation (arq re-runs a job whose worker died): every state change
is a guarded transition on the row, so a second run finds the row terminal and stops, or finds it
``running`` (the first run died) and runs it again; a late progress report never touches a finished row.

Order of the first steps matters for cancellation: the job leaves the waiting set *before* the row
becomes ``running``. A cancel that still finds it waiting removes it before it starts; a cancel that
does not find it there aborts the running job, and a progress report that finds the row no longer
``running`` stops the backend.

A job that meets the open circuit breaker waits, and keeps its place
-------------------------------------------------------------------
Before anything else the job asks the shared breaker (:mod:`jobs.breaker`) for leave to call the
backend. While it is refused, the job **waits inside the worker**: its row stays ``queued``, its
entry in the waiting set stays where it is (so its position, and the order of the jobs, do not
change), its status message says the image service is unavailable and that it will start when it
recovers. It asks again when the breaker's open time runs out (at most every
:data:`BREAKER_POLL_S`); it stops waiting if it leaves the queue meanwhile (a cancel).

Why not arq's ``Retry(defer=...)``: genbot's arq scores are tickets, not times, and arq does
``ZINCRBY score defer_ms`` on a retry: the job would not wait at all, it would only move back
``defer_ms`` tickets, behind jobs submitted after it. The worker slots held by waiting jobs are held
by the *head* of the queue, in ticket order, so nothing behind them could start anyway.

A wait is bounded by :data:`DEFER_SLICE_S` per arq run, so that arq's own job timeout never fires on
a waiting job: past it the job raises :class:`Deferred`, and the arq function gives arq's try back
(``arq:retry:<id>`` is decremented) and raises ``Retry(defer=0)``, which leaves the score, hence the
ticket, as it was. No attempt is burnt either way: neither the row's ``attempts`` nor arq's tries.

Timeouts: the backend call has ``worker.backend_timeout_s`` (inside the breaker: a backend that
hangs is a failing backend); the whole run, from the moment the job leaves the queue until its
image is stored, has ``worker.job_timeout_s`` (:class:`JobClock`). Either ends the job as
``timed_out``. The clock stops while a made image waits on Redis for bookkeeping (the breaker's
verdict, the run time): a Redis that restarts then must not turn a made image into a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot import tracing
from bot.api import Attachment, JobKind, Result
from bot.errors import ErrorCode
from bot.logs import at_work, working_on
from bot.metrics import JOB_RUN, JOB_WAIT, JOBS_FINISHED
from bot.models import Generation, State
from bot.ports import (
    RESULT_TEXT_MAX,
    BlobStore,
    FileResult,
    GenerationStore,
    ImageResult,
    ImagesResult,
    QueueUnavailable,
    Refused,
    TextResult,
)
from bot.ports import JobStopped as JobStoppedBase
from bot.text import clean_block, clean_line
from jobs.breaker import Admission, Breaker, BreakerOpen, NotAFailure
from jobs.progress import ProgressNotWritten, ProgressWriter
from jobs.queue import Opened, RedisJobQueue
from jobs.results import contact_sheet, file_of, images_files, result_key, run_stem

log = logging.getLogger(__name__)


#: A job waiting for the breaker asks it again at least this often.
BREAKER_POLL_S = 1.0
#: The longest a job waits for the breaker in one arq run; then it is handed back to arq.
DEFER_SLICE_S = 60.0


def defer_slice_s(breaker_reset_s: float) -> float:
    """How long a job waits for the breaker in one arq run: one open period, at most
    :data:`DEFER_SLICE_S` (arq's job timeout, and so how long a killed worker's job stays held,
    grows with it)."""
    return min(DEFER_SLICE_S, breaker_reset_s)


class JobClock:
    """The job timeout of one run, which can stop while the job waits on Redis for bookkeeping
    of its own, and go on from where it stopped."""

    def __init__(self, timeout: asyncio.Timeout) -> None:
        self._timeout = timeout
        self._left: float | None = None

    def stop(self) -> None:
        when = self._timeout.when()
        if when is not None and self._left is None:
            self._left = when - asyncio.get_running_loop().time()
            self._timeout.reschedule(None)

    def resume(self) -> None:
        if self._left is not None:
            self._timeout.reschedule(asyncio.get_running_loop().time() + self._left)
            self._left = None


class JobStopped(JobStoppedBase, NotAFailure):
    """Raised from the progress callback when the row stopped being ``running`` (cancelled)."""


class InputGone(FileNotFoundError, NotAFailure):
    """A file a member attached is no longer in the blob store: the job fails, and the service
    is not to blame (the breaker does not count it)."""


class Deferred(Exception):
    """The job waited :data:`DEFER_SLICE_S` for the breaker: hand it back to arq at its ticket."""


def preview_key(generation_id: int, attempt: int = 0) -> str:
    return f"previews/{run_stem(generation_id, attempt)}.jpg"


#: What a run that found its job run by another (live) run returns: arq's keys of the job are that
#: run's, and this one leaves them alone (``jobs.worker``), as a run taken over does ("superseded").
RUNNING_ELSEWHERE = "running elsewhere"
#: The longest ``waiting`` line a job may report.
WAITING_MAX = 200


@dataclass(slots=True)
class _Run:
    """One run of a job. ``attempt`` is the row's ``attempts`` as the run started it: every write
    of the run is fenced by it, so once the sweep has taken the job over (``attempts`` + 1) a
    worker that was cut off cannot touch the row, its place in Redis or its member's place.
    ``lost``: a beat found the row no longer this run's (cancelled, or taken over); the next
    progress report stops the job. ``superseded``: a write found the row taken over.
    ``released``: the member's place was freed with the end (:meth:`GenerationRunner._finish`),
    and must not be freed again (a second release would let another held job start)."""

    attempt: int
    lost: bool = False
    superseded: bool = False
    released: bool = False
    #: When the row's heartbeat was last stamped by this run (monotonic): a progress write stamps
    #: it too, and spares the heartbeat a beat.
    stamped_at: float = dataclasses.field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class KindRuntime:
    """A job kind as a worker runs it: its plugin's settings, and its backends' breakers (by name)."""

    kind: JobKind
    breakers: Mapping[str, Breaker]
    settings: Any = None


@dataclass(slots=True)
class _Job:
    """A job as its function sees it (:class:`bot.api.Job`)."""

    id: int
    text: str
    options: Mapping[str, Any]
    settings: Any
    blobs: BlobStore
    backend: str
    report: Callable[[int | None, int | None, str | None, bytes | None, str | None], Any]

    async def progress(
        self,
        step: int | None = None,
        total: int | None = None,
        *,
        text: str | None = None,
        preview: bytes | None = None,
        waiting: str | None = None,
    ) -> None:
        await self.report(step, total, text, preview, waiting)

    def attachment(self, option: str) -> Attachment:
        return Attachment.of(self.options[option])

    async def read(self, attachment: Attachment) -> bytes:
        data = await self.blobs.get(attachment.blob)
        if data is None:
            raise InputGone(f"the file {attachment.name!r} of job {self.id} is gone ({attachment.blob})")
        return data


class GenerationRunner:
    def __init__(
        self,
        *,
        store: GenerationStore,
        queue: RedisJobQueue,
        blobs: BlobStore,
        kinds: Mapping[str, KindRuntime],
        backend_timeout_s: float,
        progress_interval_s: float,
        max_running: int = 1,
        job_timeout_s: float | None = None,
        defer_slice_s: float = DEFER_SLICE_S,
        failover_after_s: float = 60.0,
    ) -> None:
        self.store = store
        self.queue = queue
        self.blobs = blobs
        self.kinds = kinds
        self.backend_timeout_s = backend_timeout_s
        self.progress_interval_s = progress_interval_s
        self.max_running = max_running
        self.job_timeout_s = job_timeout_s
        self.defer_slice_s = defer_slice_s
        self.failover_after_s = failover_after_s
        #: Generations whose job is waiting for the breaker right now (see :meth:`waiting_for_backend`).
        self._waiting: set[int] = set()
        #: The progress reports and heartbeats of every job this runner runs, written together.
        self.progress = ProgressWriter(store, queue)

    async def run(
        self,
        generation_id: int,
        *,
        line: str | None = None,
        last_try: bool = False,
        ticket: int | None = None,
    ) -> str:
        """Run the generation; returns its final state (or why nothing ran).

        ``last_try``: arq will not run this job again, so an interruption fails the row
        (``worker_lost``) instead of queueing it again. ``ticket``: the job's arq score, which
        is its ticket, for when the row does not have it yet. ``line``: the line the job was taken
        from (the worker's), where a job whose row is gone is cleaned from.
        """
        with working_on(generation_id), tracing.job_span(generation_id):
            outcome = await self._run(generation_id, line=line, last_try=last_try, ticket=ticket)
            tracing.annotate({tracing.JOB_OUTCOME: outcome})
            return outcome

    async def _run(self, generation_id: int, *, line: str | None, last_try: bool, ticket: int | None) -> str:
        gen = await self.store.get(generation_id)
        if gen is not None:
            at_work(platform=gen.platform)
            tracing.annotate(
                {tracing.JOB_KIND: gen.kind, tracing.JOB_BACKEND: gen.backend, tracing.PLATFORM: gen.platform}
            )
        if gen is None or gen.state.terminal:
            if gen is not None or line is not None:
                await self.queue.mark_done(generation_id, line=gen.backend if gen else str(line))
            return gen.state.value if gen else "missing"
        runtime = self.kinds.get(gen.kind)
        breaker = runtime.breakers.get(gen.backend) if runtime is not None else None
        if runtime is None or breaker is None:
            # Its plugin (or that backend of it) is not loaded on this worker: the job cannot
            # run here, or anywhere its line is read from (every worker of a line is alike).
            log.error(
                "generation %s is of job kind %r on backend %r, which no loaded plugin runs",
                gen.id,
                gen.kind,
                gen.backend,
            )
            return await self._finish(gen, State.FAILED, ErrorCode.INTERNAL)
        opened: Opened | None = None
        if gen.state is State.QUEUED:
            # Its workspace's pause, the breaker's leave and the start, in one round trip
            # (ADMIT_START) when the breaker lets the job through at once; when it does not,
            # nothing was written, and the job waits for it below, then starts.
            opened = await self.queue.admit_and_start(
                generation_id,
                gen.member,
                self.max_running,
                int(gen.ticket or ticket or 0),
                workspace=(gen.platform, gen.workspace),
                line=gen.backend,
                breaker=breaker,
            )
            if opened.paused:
                # An admin paused the workspace as this job was picked: set it aside. Resuming puts
                # it back in its place (and the sweep would, were a resume to race with this).
                return await self._set_aside(gen, ticket, "paused")
        admission: Admission | None
        if opened is not None and opened.admission is not None:
            admission = opened.admission
        else:
            opened = None
            admission = await self._admission(gen, breaker)
        if admission is None:
            current = await self.store.get(generation_id)
            return "skipped" if current is None or not current.state.terminal else current.state.value
        # The events of the start, told in one round trip with "started".
        events: list[tuple[int, str]] = []
        try:
            if gen.state is State.QUEUED:
                place = gen.ticket or ticket or 0
                if opened is not None:  # admitted and started at once
                    was_waiting, moved = opened.started
                else:
                    was_waiting, moved = await self.queue.start(
                        generation_id,
                        gen.member,
                        self.max_running,
                        int(place),
                        workspace=(gen.platform, gen.workspace),
                        line=gen.backend,
                    )
                if was_waiting == "paused":  # paused between the check above and now
                    return await self._set_aside(gen, place, "paused")
                # The member's other jobs left the line: the ones behind moved up.
                events += [(other, "dequeued") for other in moved]
                if was_waiting is None:
                    # The member already runs as many jobs as they may: this one waits aside
                    # until one of theirs ends (see _release).
                    await self.queue.publish_events(events)
                    return await self._set_aside(gen, place, "held")
                if was_waiting:
                    events.append((generation_id, "dequeued"))
                # The ticket goes in with the start: a job can start before its command stored
                # it (with the status message), and a row that ran must say where it stood.
                started = await self.store.transition(
                    generation_id, State.RUNNING, ticket=place or None, attempt=gen.attempts
                )
                if started is None:
                    # Moved on between the worker's pick and now: cancelled, or started by a
                    # concurrent run (whose Redis entries are already right).
                    await self.queue.publish_events(events)
                    current = await self.store.get(generation_id)
                    if current is None or current.state is not State.RUNNING:
                        await self._release(gen)
                        return "skipped"
                    return RUNNING_ELSEWHERE
                gen = started
                if started.started_at is not None:
                    wait = (started.started_at - started.created_at).total_seconds()
                    JOB_WAIT.labels(gen.backend).observe(max(0.0, wait))
            else:  # running again: its worker died, and arq gave the job to this one
                stale_before = datetime.now(UTC) - timedelta(seconds=self.failover_after_s)
                claimed = await self.store.claim_again(generation_id, gen.attempts, stale_before=stale_before)
                if claimed is None:
                    # Its run is alive (it still beats), or the row moved on: not this worker's.
                    current = await self.store.get(generation_id)
                    return (
                        RUNNING_ELSEWHERE
                        if current is not None and current.state is State.RUNNING
                        else "skipped"
                    )
                gen = claimed
                await self.queue.mark_running(generation_id, line=gen.backend)
                await self.queue.claim_running(gen.member, generation_id)
            run = _Run(gen.attempts)
            await self.queue.publish_events([*events, (generation_id, "started")])
            beating = asyncio.create_task(self._beat(gen, run), name=f"genbot-heartbeat-{generation_id}")
            try:
                async with asyncio.timeout(self.job_timeout_s) as deadline:
                    return await self._generate_and_store(
                        gen, run, runtime, breaker, admission, JobClock(deadline)
                    )
            except TimeoutError:  # the job timeout (the backend's own is handled inside)
                log.warning("generation %s exceeded the job timeout", generation_id)
                return await self._finish(gen, State.TIMED_OUT, ErrorCode.TIMED_OUT, run=run)
            except asyncio.CancelledError:
                await self._interrupted(gen, run, last_try=last_try, ticket=ticket)
                raise
            finally:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
                if not run.superseded and not run.released:
                    await self._release(gen)
        finally:
            await breaker.release(admission)

    async def _beat(self, gen: Generation, run: _Run) -> None:
        """Stamp the row's heartbeat while the job runs (every sixth of ``failover_after_s``,
        unless a progress write just did), so the sweep knows its worker is alive. A beat that
        finds the row no longer this run's marks the run lost: its next progress report stops it.
        Runs beside the job, never in its way: a database that is away only misses beats."""
        every = self.failover_after_s / 6
        while not run.lost:
            await asyncio.sleep(every - (time.monotonic() - run.stamped_at))
            if time.monotonic() - run.stamped_at < every * 0.9:
                continue  # a progress write stamped it meanwhile
            try:
                alive = await self.progress.beat(gen.id, run.attempt)
            except ProgressNotWritten:  # the writer logged why
                log.warning("the heartbeat of generation %s was not written", gen.id)
                await asyncio.sleep(min(every, 1.0))
                continue
            except Exception:
                log.warning("the heartbeat of generation %s failed", gen.id, exc_info=True)
                await asyncio.sleep(min(every, 1.0))
                continue
            run.stamped_at = time.monotonic()
            if not alive:
                run.lost = True
                log.info("generation %s is no longer this run's (attempt %d)", gen.id, run.attempt)

    async def _set_aside(self, gen: Generation, ticket: int | None, why: str) -> str:
        """The job does not start now and is out of the line; its row stays ``queued`` and keeps
        its ticket (the arq score, if the row does not have it yet), so it comes back in its place."""
        await self.queue.mark_done(gen.id, line=gen.backend)
        if gen.ticket is None and ticket:
            await self.store.update(gen.id, ticket=int(ticket))
        await self.queue.publish(gen.id, "dequeued")
        return why

    async def _release(self, gen: Generation) -> None:
        """``gen`` no longer runs: free its member's place, and put the member's oldest held job
        (one still queued) back in the queue at its own ticket. Best effort: the sweep puts back
        a held job whose member runs nothing."""
        try:
            held = await self.queue.release(gen.member, gen.id, self.max_running)
        except Exception:
            log.warning("releasing the place of generation %s failed", gen.id, exc_info=True)
            return
        await self._put_back_held(gen, held)

    async def _put_back_held(self, gen: Generation, held: tuple[int, int] | None) -> None:
        """After ``gen``'s place was freed (:meth:`RedisJobQueue.release` answered ``held``): put
        the member's oldest held job that is still queued back in the queue. Best effort."""
        try:
            while held is not None:
                held_id, ticket = held
                row = await self.store.get(held_id)
                if row is None or row.state is not State.QUEUED:
                    # cancelled while held: take the next one
                    held = await self.queue.release(gen.member, None, self.max_running)
                    continue
                if await self.queue.is_paused(row.platform, row.workspace):
                    return  # the resume puts it back in line, with the rest of its workspace
                await self.queue.restore(held_id, ticket, line=row.backend)
                if (again := await self.store.get(held_id)) is None or again.state is not State.QUEUED:
                    await self.queue.remove_waiting(
                        held_id, line=row.backend
                    )  # cancelled while it was put back
                await self.queue.publish(held_id, "dequeued")
                return
        except Exception:
            log.warning("releasing the place of generation %s failed", gen.id, exc_info=True)

    async def _admission(self, gen: Generation, breaker: Breaker) -> Admission | None:
        """Wait until the breaker lets this job call the backend (see the module docstring).

        Returns None when the job left the queue while it waited (cancelled). Raises
        :class:`Deferred` after ``defer_slice_s`` of waiting."""
        self._waiting.add(gen.id)
        try:
            admission = await self._wait_for_admission(gen, breaker)
        except asyncio.CancelledError:
            raise  # still marked as waiting: see waiting_for_backend
        except BaseException:
            self._waiting.discard(gen.id)
            raise
        self._waiting.discard(gen.id)
        return admission

    def waiting_for_backend(self, generation_id: int) -> bool:
        """Whether the job of ``generation_id`` was stopped (cancelled, the worker shutting down)
        while it waited for the breaker: it had not started, so the interruption must not count
        as one of arq's tries. Asking forgets it."""
        if generation_id in self._waiting:
            self._waiting.discard(generation_id)
            return True
        return False

    async def _wait_for_admission(self, gen: Generation, breaker: Breaker) -> Admission | None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.defer_slice_s
        told = False
        while True:
            try:
                return await breaker.admit(gen.id)
            except BreakerOpen as exc:
                retry_in = exc.retry_in
            except QueueUnavailable:
                # Redis is away: no leave can be had, and none refused. Wait, as for the breaker.
                left = give_up_at - loop.time()
                if left <= 0:
                    raise Deferred from None
                await asyncio.sleep(min(BREAKER_POLL_S, left))
                continue
            if not told:
                told = True
                log.info("generation %s waits for the image service (breaker open)", gen.id)
                # The status message learns why it waits (the renderer reads the breaker).
                await self.queue.publish(gen.id, "waiting")
            if gen.state is State.QUEUED and await self.queue.position(gen.id, line=gen.backend) is None:
                current = await self.store.get(gen.id)
                if current is None or current.state is not State.QUEUED:
                    return None  # cancelled meanwhile (or Redis lost it: the sweep puts it back)
                if await self.queue.is_paused(gen.platform, gen.workspace):
                    return None  # paused meanwhile: the resume puts it back in its place
            left = give_up_at - loop.time()
            if left <= 0:
                raise Deferred
            await asyncio.sleep(min(max(retry_in, 0.05), BREAKER_POLL_S, left))

    async def _generate_and_store(
        self,
        gen: Generation,
        run: _Run,
        runtime: KindRuntime,
        breaker: Breaker,
        admission: Admission,
        clock: JobClock,
    ) -> str:
        """Run the job's function, store its result, end the row, then record the run time.
        ``clock`` (the job timeout) runs while the result is made and stored, and stops while the
        job waits on Redis for its own bookkeeping (the breaker's verdict, the run time): a Redis
        that restarts then must not turn a made result into a timeout."""
        generation_id = gen.id
        last_report = -math.inf  # the first report goes out at once

        async def progress(
            step: int | None, total: int | None, text: str | None, preview: bytes | None, waiting: str | None
        ) -> None:
            nonlocal last_report
            if run.lost:
                raise JobStopped
            now = time.monotonic()
            last = step is not None and total is not None and step >= total
            if not last and now - last_report < self.progress_interval_s:
                return
            last_report = now
            patch: dict[str, object] = {}
            if step is not None and total is not None:
                patch["progress"] = {"step": step, "total": total}
                patch["waiting"] = None  # a step ends a wait in the service's line
            if waiting is not None:
                patch["waiting"] = clean_line(waiting)[:WAITING_MAX] or None
            if text is not None:
                patch["text"] = clean_block(text)[:RESULT_TEXT_MAX]
            try:
                if preview is not None:
                    key = preview_key(generation_id, run.attempt)
                    await self.blobs.put(key, preview)
                    patch["preview"] = {"key": key, "step": step}
                # Written with the other running jobs' reports (jobs/progress.py), which also
                # nudges the renderer, beside the job, never in its way.
                recorded = await self.progress.report(generation_id, run.attempt, patch)
            except ProgressNotWritten:  # best effort: the writer logged why
                log.warning("progress report of generation %s was not written", generation_id)
                return
            except Exception:
                # A progress report is best effort: losing one must not fail the job.
                log.warning("progress report of generation %s failed", generation_id, exc_info=True)
                return
            if not recorded:
                raise JobStopped
            run.stamped_at = now

        job = _Job(gen.id, gen.prompt, dict(gen.options), runtime.settings, self.blobs, gen.backend, progress)
        started = time.monotonic()
        try:
            try:
                # The timeout sits inside the breaker: a backend that hangs is a failing backend.
                result = await breaker.call(admission, self._generate, runtime.kind, job, clock)
            finally:
                self.progress.forget(generation_id)  # its end tells the renderer
        except JobStopped:  # the row ended (cancelled) or was taken over: it stays so
            return await self._finish(gen, None, None, run=run)
        except TimeoutError:
            return await self._finish(gen, State.TIMED_OUT, ErrorCode.TIMED_OUT, run=run)
        except Refused as refused:
            log.info("the service refused job %s of kind %s: %s", generation_id, gen.kind, refused)
            return await self._finish(gen, State.FAILED, ErrorCode.BACKEND_REFUSED, run=run)
        except Exception:
            log.exception("job %s of kind %s failed", generation_id, gen.kind)
            return await self._finish(gen, State.FAILED, ErrorCode.BACKEND_ERROR, run=run)

        took = time.monotonic() - started
        clock.resume()
        try:
            key, meta = await self._store_result(generation_id, run, result)
        except Exception:
            log.exception("storing the result of generation %s failed", generation_id)
            return await self._finish(gen, State.FAILED, ErrorCode.INTERNAL, run=run)
        clock.stop()
        # The row first: it is the truth, and the result is there (its text or files go in the
        # same statement). The run time (only the ETA needs it) goes with the end's round trip.
        state = await self._finish(gen, State.SUCCEEDED, None, result_key=key, run=run, took=took, meta=meta)
        if not run.superseded:
            JOB_RUN.labels(gen.backend).observe(took)
        return state

    async def _store_result(
        self, generation_id: int, run: _Run, result: Result
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Keep ``result`` where the status message finds it (see :mod:`jobs.results`): images
        and files in the blob store. Returns the key of the image it shows and the patch of the
        row's ``meta`` with the files it carries or its text: both go on the row with the end
        (one guarded statement, so a row that ended meanwhile gets neither)."""
        shown = result_key(generation_id, run.attempt)
        if isinstance(result, ImageResult):
            await self.blobs.put(shown, result.png)
            return shown, None
        if isinstance(result, ImagesResult):
            files = images_files(generation_id, result, run.attempt)
            sheet = await asyncio.to_thread(contact_sheet, result.pngs)
            for file, data in zip(files, result.pngs, strict=True):
                await self.blobs.put(file.key, data)
            await self.blobs.put(shown, sheet)
            return shown, {"files": [dataclasses.asdict(f) for f in files]}
        if isinstance(result, FileResult):
            file = file_of(generation_id, result, run.attempt)
            await self.blobs.put(file.key, result.data)
            return None, {"files": [dataclasses.asdict(file)]}
        if isinstance(result, TextResult):
            return None, {"text": clean_block(result.text)[:RESULT_TEXT_MAX]}
        raise TypeError(f"a job returned {type(result).__name__}, not one of bot.api.Result")

    async def _generate(self, kind: JobKind, job: _Job, clock: JobClock) -> Result:
        async with asyncio.timeout(self.backend_timeout_s):
            result = await kind.run(job)
        clock.stop()  # the breaker hears of it next: see _generate_and_store
        return result

    async def _interrupted(self, gen: Generation, run: _Run, *, last_try: bool, ticket: int | None) -> None:
        """The job was cancelled under us: by a member's cancel (the row is already
        ``cancelled``: nothing to do) or by the worker shutting down (the row is still
        ``running``). On shutdown arq runs the job again, so the row goes back to ``queued`` at
        its old place, unless this was arq's last try: then it fails as ``worker_lost``."""
        generation_id = gen.id
        current = await self.store.get(generation_id)
        if current is not None and current.attempts != run.attempt:
            run.superseded = True  # taken over: the row, its place and its events are the new run's
            return
        if current is None or current.state is not State.RUNNING:
            await self.queue.mark_done(generation_id, line=gen.backend)
        elif last_try:
            await self._finish(gen, State.FAILED, ErrorCode.WORKER_LOST, run=run)
            return
        elif (ticket := current.ticket or ticket) is not None:
            # Back into the waiting set first, so that the row never reads "queued" without a place.
            await self.queue.submit(generation_id, line=gen.backend, ticket=ticket)
            back = await self.store.transition(generation_id, State.QUEUED, retry=True, attempt=run.attempt)
            if back is None:
                await self.queue.remove_waiting(generation_id, line=gen.backend)  # cancelled meanwhile
            else:
                await self.store.update_meta(generation_id, {"progress": None, "preview": None, "text": None})
                log.info("generation %s interrupted by shutdown; queued again", generation_id)
        await self.queue.publish(generation_id, "dequeued")

    async def _finish(
        self,
        gen: Generation,
        state: State | None,
        error: ErrorCode | None,
        *,
        result_key: str | None = None,
        run: _Run | None = None,
        took: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Move the row to ``state`` (None: it already moved on), clean Redis, tell the renderer.
        With ``run``, only while the row is that run's: a run that was taken over leaves the row,
        the job's place and its events to the new run, and returns ``"superseded"``; else the
        run's member place is freed in the same round trip as the end (``run.released``), and
        ``took`` (the backend call's seconds) is recorded for the ETA there too. ``meta``: a
        patch of the row's ``meta`` written with the transition (a result's text or files)."""
        generation_id = gen.id
        done = None
        if state is not None:
            done = await self.store.transition(
                generation_id,
                state,
                error_code=error.value if error else None,
                result_key=result_key,
                attempt=run.attempt if run is not None else None,
                meta=meta,
            )
        if done is None and run is not None:
            current = await self.store.get(generation_id)
            if current is not None and current.attempts != run.attempt:
                run.superseded = True
                log.warning(
                    "generation %s was taken over while this worker ran it (attempt %d; now %d): "
                    "this run's end is dropped",
                    generation_id,
                    run.attempt,
                    current.attempts,
                )
                return "superseded"
        held = await self.queue.finished(
            generation_id,
            line=gen.backend,
            # As when a result's text or files were written before the end: a run whose row
            # had moved on by then was not timed.
            runtime=took if done is not None or meta is None else None,
            release=(gen.member, self.max_running) if run is not None else None,
        )
        if run is not None:
            run.released = True
            await self._put_back_held(gen, held)
        if done is not None:
            outcome = error.value if error is not None and done.state is State.FAILED else done.state.value
            JOBS_FINISHED.labels(gen.kind, gen.backend, outcome).inc()
            if error is not None:
                tracing.failed(tracing.JOB_ERROR, error.value)
        if done is None:
            current = await self.store.get(generation_id)
            return current.state.value if current else "missing"
        return done.state.value
