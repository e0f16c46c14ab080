"""The generation job: one run of one generation, from ``queued`` to a terminal state.

Safe to run twice for the same generation (arq re-runs a job whose worker died): every state change
is a guarded transition on the row, so a second run finds the row terminal and stops, or finds it
``running`` (the first run died) and runs it again; a late progress report never touches a finished row.

Order of the first steps matters for cancellation: the job leaves the waiting set *before* the row
becomes ``running``. A cancel that still finds it waiting removes it before it starts; a cancel that
does not find it there aborts the running job, and a progress report that finds the row no longer
``running`` stops the backend.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from bot.errors import ErrorCode
from bot.models import Generation, State
from bot.ports import (
    BlobStore,
    GenerationStore,
    ImageBackend,
    ImageRequest,
    ImageResult,
    ProgressCallback,
)
from jobs.breaker import Breaker, BreakerOpen, NotAFailure
from jobs.queue import RedisJobQueue

log = logging.getLogger(__name__)


class JobStopped(NotAFailure):
    """Raised from the progress callback when the row stopped being ``running`` (cancelled)."""


def result_key(generation_id: int) -> str:
    return f"results/{generation_id}.png"


def preview_key(generation_id: int) -> str:
    return f"previews/{generation_id}.jpg"


class GenerationRunner:
    def __init__(
        self,
        *,
        store: GenerationStore,
        queue: RedisJobQueue,
        blobs: BlobStore,
        backend: ImageBackend,
        breaker: Breaker,
        backend_timeout_s: float,
        progress_interval_s: float,
        max_running: int = 1,
    ) -> None:
        self.store = store
        self.queue = queue
        self.blobs = blobs
        self.backend = backend
        self.breaker = breaker
        self.backend_timeout_s = backend_timeout_s
        self.progress_interval_s = progress_interval_s
        self.max_running = max_running

    async def run(self, generation_id: int, *, last_try: bool = False, ticket: int | None = None) -> str:
        """Run the generation; returns its final state (or why nothing ran).

        ``last_try``: arq will not run this job again, so an interruption fails the row
        (``worker_lost``) instead of queueing it again. ``ticket``: the job's arq score, which
        is its ticket, for when the row does not have it yet.
        """
        gen = await self.store.get(generation_id)
        if gen is None or gen.state.terminal:
            await self.queue.mark_done(generation_id)
            return gen.state.value if gen else "missing"
        if gen.state is State.QUEUED:
            if await self.queue.is_paused(gen.platform, gen.workspace):
                # An admin paused the workspace as this job was picked: set it aside. The row stays
                # queued with its ticket; resuming puts it back in its place (and the sweep would,
                # were a resume to race with this).
                await self.queue.mark_done(generation_id)
                if gen.ticket is None and ticket is not None:
                    await self.store.update(generation_id, ticket=int(ticket))
                await self.queue.publish(generation_id, "dequeued")
                return "paused"
            place = gen.ticket or ticket or 0
            was_waiting, moved = await self.queue.start(
                generation_id, gen.member, self.max_running, int(place)
            )
            for other in moved:  # the member's other jobs left the line, so the ones behind moved up
                await self.queue.publish(other, "dequeued")
            if was_waiting is None:
                # The member already runs as many jobs as they may: this one waits aside, keeping
                # its ticket, until one of theirs ends (see _release).
                if gen.ticket is None:
                    await self.store.update(generation_id, ticket=int(place))
                await self.queue.publish(generation_id, "dequeued")
                return "held"
            if was_waiting:
                await self.queue.publish(generation_id, "dequeued")
            started = await self.store.transition(generation_id, State.RUNNING)
            if started is None:
                # Moved on between the worker's pick and now: cancelled, or started by a
                # concurrent run (whose Redis entries are already right).
                current = await self.store.get(generation_id)
                if current is None or current.state is not State.RUNNING:
                    await self._release(gen)
                return "skipped"
            gen = started
        else:  # running again: its worker died
            await self.queue.claim_running(gen.member, generation_id)
        await self.queue.publish(generation_id, "started")
        try:
            return await self._generate_and_store(gen)
        except asyncio.CancelledError:
            await self._interrupted(generation_id, last_try=last_try, ticket=ticket)
            raise
        finally:
            await self._release(gen)

    async def _release(self, gen: Generation) -> None:
        """``gen`` no longer runs: free its member's place, and put the member's oldest held job
        (one still queued) back in the queue at its own ticket. Best effort: the sweep puts back
        a held job whose member runs nothing."""
        ended: int | None = gen.id
        try:
            while (held := await self.queue.release(gen.member, ended, self.max_running)) is not None:
                ended = None
                held_id, ticket = held
                row = await self.store.get(held_id)
                if row is None or row.state is not State.QUEUED:
                    continue  # cancelled while held: take the next one
                await self.queue.restore(held_id, ticket)
                await self.queue.publish(held_id, "dequeued")
                return
        except Exception:
            log.warning("releasing the place of generation %s failed", gen.id, exc_info=True)

    async def _generate_and_store(self, gen: Generation) -> str:
        generation_id = gen.id
        request: ImageRequest = gen.imagine_options()
        last_report = -math.inf  # the first report goes out at once

        async def progress(step: int, total: int, preview: bytes | None) -> None:
            nonlocal last_report
            now = time.monotonic()
            if step < total and now - last_report < self.progress_interval_s:
                return
            last_report = now
            patch: dict[str, object] = {"progress": {"step": step, "total": total}}
            try:
                if preview is not None:
                    await self.blobs.put(preview_key(generation_id), preview)
                    patch["preview"] = {"key": preview_key(generation_id), "step": step}
                recorded = await self.store.record_progress(generation_id, patch)
            except Exception:
                # A progress report is best effort: losing one must not fail the image.
                log.warning("progress report of generation %s failed", generation_id, exc_info=True)
                return
            if not recorded:
                raise JobStopped
            await self.queue.publish(generation_id, "progress")

        started = time.monotonic()
        try:
            # The timeout sits inside the breaker: a backend that hangs is a failing backend.
            result = await self.breaker.call(self._generate, request, progress)
        except JobStopped:
            return await self._finish(generation_id, None, None)
        except TimeoutError:
            return await self._finish(generation_id, State.TIMED_OUT, ErrorCode.TIMED_OUT)
        except BreakerOpen:
            return await self._finish(generation_id, State.FAILED, ErrorCode.BACKEND_UNAVAILABLE)
        except Exception:
            log.exception("backend failed for generation %s", generation_id)
            return await self._finish(generation_id, State.FAILED, ErrorCode.BACKEND_ERROR)

        try:
            await self.blobs.put(result_key(generation_id), result.png)
        except Exception:
            log.exception("storing the image of generation %s failed", generation_id)
            return await self._finish(generation_id, State.FAILED, ErrorCode.INTERNAL)
        try:
            await self.queue.record_runtime(self.backend.name, time.monotonic() - started)
        except Exception:  # only the ETA needs it
            log.warning("recording the run time failed", exc_info=True)
        return await self._finish(generation_id, State.SUCCEEDED, None, result_key=result_key(generation_id))

    async def _generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        return await asyncio.wait_for(
            self.backend.generate(request, progress), timeout=self.backend_timeout_s
        )

    async def _interrupted(self, generation_id: int, *, last_try: bool, ticket: int | None) -> None:
        """The job was cancelled under us: by a member's cancel (the row is already
        ``cancelled``: nothing to do) or by the worker shutting down (the row is still
        ``running``). On shutdown arq runs the job again, so the row goes back to ``queued`` at
        its old place, unless this was arq's last try: then it fails as ``worker_lost``."""
        current = await self.store.get(generation_id)
        if current is None or current.state is not State.RUNNING:
            await self.queue.mark_done(generation_id)
        elif last_try:
            await self._finish(generation_id, State.FAILED, ErrorCode.WORKER_LOST)
            return
        elif (ticket := current.ticket or ticket) is not None:
            # Back into the waiting set first, so that the row never reads "queued" without a place.
            await self.queue.submit(generation_id, ticket=ticket)
            if await self.store.transition(generation_id, State.QUEUED, retry=True) is None:
                await self.queue.remove_waiting(generation_id)  # cancelled meanwhile
            else:
                await self.store.update_meta(generation_id, {"progress": None, "preview": None})
                log.info("generation %s interrupted by shutdown; queued again", generation_id)
        await self.queue.publish(generation_id, "dequeued")

    async def _finish(
        self,
        generation_id: int,
        state: State | None,
        error: ErrorCode | None,
        *,
        result_key: str | None = None,
    ) -> str:
        """Move the row to ``state`` (None: it already moved on), clean Redis, tell the renderer."""
        done = None
        if state is not None:
            done = await self.store.transition(
                generation_id, state, error_code=error.value if error else None, result_key=result_key
            )
        await self.queue.mark_done(generation_id)
        await self.queue.publish(generation_id, "finished")
        if done is None:
            current = await self.store.get(generation_id)
            return current.state.value if current else "missing"
        return done.state.value
