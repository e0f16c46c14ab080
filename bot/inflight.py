"""The commands a bot process has acknowledged and not yet finished, so that it can stop without
stranding them.

An adapter acknowledges a command (Slack's ``ack()``, Discord's defer, the local chat's answer)
before the core has posted its status message; a process that exits then leaves an acknowledged
request behind. Each adapter runs every command inside :meth:`InFlight.track` (or, for the work
it does after it has answered, in a task of :meth:`InFlight.spawn`); on stop it stops
taking new commands, then :meth:`InFlight.drain` waits for the tracked ones to finish (each posts
its status message and links it to its row), and only then does the process flush its renders and
close its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from typing import Any

log = logging.getLogger(__name__)

#: How long a stopping bot waits for the commands it acknowledged (an orchestrator's grace period
#: is 10 s by default in Docker, 30 s in Kubernetes).
DRAIN_TIMEOUT_S = 8.0


class InFlight:
    """A set of running command tasks, and whether new ones are still taken."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the current task as a command in flight until the block ends."""
        task = asyncio.current_task()
        assert task is not None, "track() runs inside a task"
        self._tasks.add(task)
        self._idle.clear()
        try:
            yield
        finally:
            self._tasks.discard(task)
            if not self._tasks:
                self._idle.set()

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``work`` in a task of its own, counted in flight from now (before it first runs, so
        a drain that starts in between waits for it). An exception it lets out is logged, never
        left unobserved; ``work`` should answer its member itself first."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a command task failed", exc_info=error)

    async def drain(self, grace_s: float = DRAIN_TIMEOUT_S) -> int:
        """Take no new command (``closed``: the adapter answers "restarting"), wait up to
        ``grace_s`` for those in flight, then cancel what is left. Returns how many were
        cancelled (their rows, if they have one, are adopted later: see the renderer)."""
        self.closed = True
        if self._tasks:
            log.info("waiting for %d acknowledged commands to finish", len(self._tasks))
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            left = list(self._tasks)
            log.warning(
                "%d acknowledged commands did not finish in %.0f s; stopping them", len(left), grace_s
            )
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            return len(left)
        return 0
