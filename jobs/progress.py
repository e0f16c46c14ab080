"""Progress reports and heartbeats of all the jobs a worker runs, written together.

Each running job reports progress (a JSON patch merged into its row's ``meta``, with its heartbeat)
and beats its heartbeat; written one by one, ten jobs running cost ten ``UPDATE``\\s where one
would do. :class:`ProgressWriter` (one per :class:`~jobs.runner.GenerationRunner`, so one per
worker process) writes them as a **group commit**:

- a report made while no write is in flight goes out at once (a lone job waits for nothing);
- the reports made while a write is in flight wait for it, and go together in the next one: a
  single statement for all of them (:meth:`~bot.ports.GenerationStore.record_runs`);
- two reports of one run in one write are merged first (:func:`compose`: what applying the first
  then the second does; a later value wins per key). A heartbeat merges into anything. Where no
  single patch does what the two do (the second merges an object into a key the first deleted or
  replaced with a scalar), the second waits for the next write, so the row ends the same;
- each report returns to its job once its write landed: True when written, False when the row is
  no longer that run's (ended, cancelled, taken over: every write is fenced by state and attempt,
  row by row, so a refused run stops alone); :class:`ProgressNotWritten` when the write failed
  (logged once here; progress is best effort, the caller goes on);
- nothing is dropped: every report (the last step's too) is written, or fails with its write;
- the rows written get their ``progress`` events (a nudge to the renderer) in one pipelined round
  trip per write, beside the jobs, never in their way: while Redis is away the nudges wait, the
  writes do not. A nudge still waiting makes another for the same job needless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.ports import GenerationStore, QueueUnavailable, RunReport

log = logging.getLogger(__name__)

_MISSING = object()


class ProgressNotWritten(Exception):
    """The write that carried this report failed (the writer logged why): the report is lost, the
    job goes on."""


class EventPublisher(Protocol):
    async def publish_events(self, events: Iterable[tuple[int, str]]) -> None: ...


def compose(first: dict[str, Any], later: dict[str, Any]) -> dict[str, Any] | None:
    """One RFC 7396 merge patch that does what applying ``first`` then ``later`` does, to any
    document; None where no single patch can (``later`` merges an object into a key that
    ``first`` deletes or sets to a non-object: the result must drop the document's old keys
    there, which a merge patch cannot say)."""
    out = dict(first)
    for key, value in later.items():
        before = first.get(key, _MISSING)
        if not isinstance(value, dict) or before is _MISSING:
            out[key] = value
        elif isinstance(before, dict):
            inner = compose(before, value)
            if inner is None:
                return None
            out[key] = inner
        else:
            return None
    return out


Key = tuple[int, int]  # (generation id, attempt)


@dataclass(slots=True)
class _Pending:
    """The merged reports of one run in one write, and who waits for it."""

    patch: dict[str, Any] | None = None
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)

    def take(self, patch: dict[str, Any] | None) -> bool:
        """Merge ``patch`` in after what is here; False where that cannot be one patch."""
        if patch is None:
            return True
        if self.patch is None:
            self.patch = dict(patch)
            return True
        merged = compose(self.patch, patch)
        if merged is None:
            return False
        self.patch = merged
        return True


class ProgressWriter:
    """The group commit of one worker's progress reports and heartbeats (see the module)."""

    def __init__(self, store: GenerationStore, events: EventPublisher) -> None:
        self.store = store
        self.events = events
        #: The writes to come, in order: each maps a run to its merged reports. A run's report
        #: goes into the write after the last one that holds that run's, or into that one when
        #: it merges; so a run's reports land in the order they were made.
        self._writes: list[dict[Key, _Pending]] = []
        self._writing: asyncio.Task[None] | None = None
        #: The jobs whose ``progress`` event is yet to go (ordered, each once).
        self._nudges: dict[int, None] = {}
        self._nudging: asyncio.Task[None] | None = None

    async def report(self, generation_id: int, attempt: int, patch: dict[str, Any]) -> bool:
        """Merge ``patch`` into the row's ``meta`` and stamp its heartbeat, while the row is the
        run ``attempt``'s, then nudge the renderer. Returns once written: True, or False when the
        row is no longer that run's. Raises :class:`ProgressNotWritten` when the write failed."""
        return await self._add((generation_id, attempt), patch)

    async def beat(self, generation_id: int, attempt: int) -> bool:
        """Stamp the row's heartbeat while it is the run ``attempt``'s (no event, no ``version``);
        like :meth:`report` otherwise."""
        return await self._add((generation_id, attempt), None)

    async def idle(self) -> None:
        """Return once every write and event made so far has gone (or failed)."""
        while busy := [t for t in (self._writing, self._nudging) if t is not None and not t.done()]:
            await asyncio.wait(busy)

    def forget(self, generation_id: int) -> None:
        """The job ended: a ``progress`` nudge of it that has not gone yet is needless (its end
        tells the renderer)."""
        self._nudges.pop(generation_id, None)

    async def _add(self, key: Key, patch: dict[str, Any] | None) -> bool:
        last = max((n for n, write in enumerate(self._writes) if key in write), default=None)
        if last is not None and self._writes[last][key].take(patch):
            pending = self._writes[last][key]
        else:
            at = 0 if last is None else last + 1
            if at == len(self._writes):
                self._writes.append({})
            pending = self._writes[at][key] = _Pending()
            pending.take(patch)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        pending.waiters.append(done)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_all(), name="genbot-progress-writer")
        return await done

    async def _write_all(self) -> None:
        try:
            while self._writes:
                await self._write(self._writes.pop(0))
        finally:
            # Cancelled (the process stopping): whoever still waits learns it was not written.
            for write in self._writes:
                _settle(write, None)
            self._writes.clear()

    async def _write(self, write: dict[Key, _Pending]) -> None:
        reports = [RunReport(gid, attempt, pending.patch) for (gid, attempt), pending in write.items()]
        try:
            written = await self.store.record_runs(reports)
        except Exception:
            log.warning("the progress write of %d running jobs failed", len(reports), exc_info=True)
            _settle(write, None)
            return
        except BaseException:
            _settle(write, None)
            raise
        for report in reports:
            if report.patch is not None and (report.generation_id, report.attempt) in written:
                self._nudges[report.generation_id] = None
        _settle(write, written)
        if self._nudges and (self._nudging is None or self._nudging.done()):
            self._nudging = asyncio.create_task(self._nudge_all(), name="genbot-progress-events")

    async def _nudge_all(self) -> None:
        while self._nudges:
            ids = list(self._nudges)
            self._nudges.clear()
            try:
                await self.events.publish_events([(gid, "progress") for gid in ids])
            except QueueUnavailable:  # the renderer re-renders from the rows once Redis is back
                log.debug("progress events of %d jobs not published: Redis is unreachable", len(ids))
            except Exception:
                log.warning("publishing the progress events of %d jobs failed", len(ids), exc_info=True)


def _settle(write: dict[Key, _Pending], written: set[Key] | None) -> None:
    """Answer everyone waiting on ``write``: whether their run's row was written, or (``written``
    None) that the write failed."""
    for key, pending in write.items():
        for done in pending.waiters:
            if done.done():  # its job was cancelled meanwhile
                continue
            if written is None:
                done.set_exception(ProgressNotWritten(f"the progress write of generation {key[0]} failed"))
            else:
                done.set_result(key in written)
