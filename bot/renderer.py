"""The renderer: keeps every status message of one platform in step with its row.

It reads the event stream through a consumer group, coalesces the events of a batch per message,
reads each row and its live position, builds the view, and edits the message only when the view
changed (the digest of the last rendered view is kept in the row, so a restart does not re-edit).

Positions: when a job leaves the waiting set, every message behind it shows a stale position. One
read of the waiting list per batch (not per dequeue) finds them; the first
``renderer.exact_positions`` are refreshed at once, the ones further back at most every
``renderer.far_refresh_s`` seconds. Each message is edited at most every
``renderer.min_edit_interval_s`` seconds; what arrives in between is folded into the next edit.

After a restart it claims the events a crashed renderer left pending and re-renders every
non-terminal message of its platform from its row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from bot.config import RendererSettings
from bot.errors import ErrorCode
from bot.models import Generation, MessageRef, State, StatusView
from bot.ports import (
    ALL_WAITING,
    BREAKER_EVENT,
    PARTIAL,
    ChatAdapter,
    Event,
    EventFeed,
    EventsLost,
    GenerationStore,
    JobQueue,
    MessageGone,
    MessageUnreachable,
    QueueUnavailable,
)
from bot.views import build_view, eta_seconds, view_hash

log = logging.getLogger(__name__)

EDIT_CONCURRENCY = 8
RETRY_S = 2.0
MAX_RETRY_S = 300.0
RECOVER_FINISHED = timedelta(hours=1)
#: At shutdown, at most this many batches of events are read before the last flush.
DRAIN_ROUNDS = 20
#: A claim to post a lost status message (a renderer's, or a command's run again after its bot
#: died: Genbot.revive_commands), older than this, is taken over.
ADOPT_CLAIM_S = 300.0


class Renderer:
    def __init__(
        self,
        *,
        store: GenerationStore,
        queue: JobQueue,
        feed: EventFeed,
        adapter: ChatAdapter,
        settings: RendererSettings,
    ) -> None:
        self.store = store
        self.queue = queue
        self.feed = feed
        self.adapter = adapter
        self.settings = settings
        self._due: dict[int, float] = {}  # generation id -> monotonic time it may be edited
        self._last_edit: dict[int, float] = {}
        self._shown_position: dict[int, int] = {}
        self._failures: dict[int, int] = {}  # generation id -> failed renders in a row
        self._positions_dirty = True
        self._edits = asyncio.Semaphore(EDIT_CONCURRENCY)
        self.edits = 0  # count of platform edits, for tests and stats

    # -- the loop -----------------------------------------------------------------------------

    async def recover(self) -> None:
        """Re-render every non-terminal message (and every one finished in the last
        ``RECOVER_FINISHED`` window, in case its final event was lost) from its row, and take over
        stale events. Unchanged views cost no edit: their digest matches the row's."""
        since = datetime.now(UTC) - RECOVER_FINISHED
        for gen in await self.store.list_active(self.adapter.platform, finished_since=since):
            self._due.setdefault(gen.id, 0.0)
        stale = await self.feed.claim_stale(int(self.settings.claim_idle_s * 1000), 1000)
        await self._absorb(stale)
        await self.flush()
        await self.feed.ack(stale)

    async def run(self, stop: asyncio.Event) -> None:
        """Render until ``stop`` is set, then flush what is due. Survives Redis and database
        outages, at start-up too: a failed round is tried again every ``RETRY_S``, for as long as
        it takes. The first failure of a streak is logged (a Redis outage as one warning line,
        anything else with its traceback), the rest quietly; the first good round after a streak
        re-renders every message from its row, since events published meanwhile may be lost.
        So does a round that finds the event stream gone (Redis lost its data)."""
        recovered = False
        failures = 0
        last_claim = time.monotonic()
        while not stop.is_set():
            try:
                if not recovered:
                    await self.recover()
                    recovered = True
                events = await self.feed.read(self.settings.batch, self._block_ms())
                if time.monotonic() - last_claim > max(1.0, self.settings.claim_idle_s):
                    events += await self.feed.claim_stale(
                        int(self.settings.claim_idle_s * 1000), self.settings.batch
                    )
                    last_claim = time.monotonic()
                await self._absorb(events)
                await self.flush()
                await self.feed.ack(events)
            except asyncio.CancelledError:
                raise
            except EventsLost:
                log.warning("the event stream was lost (Redis lost its data); re-rendering from the rows")
                recovered = False
                continue
            except Exception as exc:
                failures += 1
                recovered = False
                if failures == 1 and isinstance(exc, QueueUnavailable):
                    log.warning(
                        "render rounds fail: Redis is unreachable; trying again every %.0f s", RETRY_S
                    )
                elif failures == 1:
                    log.exception("render round failed; trying again every %.0f s", RETRY_S)
                else:
                    log.debug("render round failed again (%d in a row)", failures, exc_info=True)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_S)
                continue
            if failures:
                log.warning("render rounds work again after %d failed ones", failures)
                failures = 0
        await self.drain()

    async def drain(self) -> None:
        """On shutdown: take the events already in the stream (without waiting for more), then
        make every edit that is due or held back by the edit budget, at once. What still fails
        stays unacknowledged: the next renderer takes it over."""
        try:
            events: list[Event] = []
            for _round in range(DRAIN_ROUNDS):
                batch = await self.feed.read(self.settings.batch, 1)
                if not batch:
                    break
                events += batch
            await self._absorb(events)
            await self.flush(force=True)
            await self.feed.ack(events)
        except Exception:
            log.warning("flushing the renders at shutdown failed", exc_info=True)

    def _block_ms(self) -> int:
        if not self._due:
            return 1000
        wait = min(self._due.values()) - time.monotonic()
        return max(1, min(1000, int(wait * 1000)))

    async def _absorb(self, events: Iterable[Event]) -> None:
        now = time.monotonic()
        for event in events:
            if event.kind == "dequeued":
                self._positions_dirty = True
            if event.kind == BREAKER_EVENT or event.generation_id == ALL_WAITING:
                # Every waiting message changes: refresh them as after a move of the queue (the
                # head at once, the ones further back at their pace).
                self._shown_position.clear()
                self._positions_dirty = True
                continue
            if event.generation_id in self._failures and event.generation_id in self._due:
                continue  # backing off: its retry is scheduled and will show the latest row
            self._due[event.generation_id] = min(self._due.get(event.generation_id, now), now)

    # -- rendering ----------------------------------------------------------------------------

    async def flush(self, *, force: bool = False) -> None:
        """Render every message that is due (every scheduled one with ``force``).

        If reading Redis or the database fails, what was due stays scheduled (a little later)."""
        now = time.monotonic()
        ready = [gid for gid, at in self._due.items() if force or at <= now]
        dirty = self._positions_dirty
        try:
            order = await self.queue.waiting() if dirty else None
            if order is not None:
                self._positions_dirty = False
                ready += self._schedule_positions(order)
            if not ready:
                return
            for gid in ready:
                self._due.pop(gid, None)
            gens = [g for g in await self.store.get_many(ready) if g.platform == self.adapter.platform]
            if order is not None:
                positions = {gid: i + 1 for i, gid in enumerate(order)}
            else:  # one ZRANK per queued message: no scan of the whole queue
                positions = {
                    g.id: p
                    for g in gens
                    if g.state is State.QUEUED and (p := await self.queue.position(g.id))
                }
            backends = {g.backend for g in gens}
            etas = {backend: await self.queue.eta_basis(backend) for backend in backends}
            waiting_backends = {g.backend for g in gens if g.state is State.QUEUED}
            down = {b for b in waiting_backends if await self.queue.backend_down(b) is not None}
        except Exception:
            retry_at = time.monotonic() + RETRY_S
            for gid in ready:
                self._due[gid] = min(self._due.get(gid, retry_at), retry_at)
            self._positions_dirty = self._positions_dirty or dirty
            raise
        for gid in set(ready) - {g.id for g in gens}:  # rows gone, or of another platform
            self._forget(gid)
        await asyncio.gather(
            *(
                self._render_safely(g, positions.get(g.id), etas[g.backend], g.backend in down, force)
                for g in gens
            )
        )

    async def _render_safely(
        self, gen: Generation, position: int | None, basis: tuple[float, int], down: bool, force: bool
    ) -> None:
        try:
            await self._render(gen, position, basis, down=down, force=force)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The platform or the database failed: try this message again, later each time, so
            # that a request the platform keeps refusing does not become a storm of them.
            failures = self._failures.get(gen.id, 0) + 1
            self._failures[gen.id] = failures
            delay = min(RETRY_S * 2 ** (failures - 1), MAX_RETRY_S)
            log.exception("rendering %s failed (%d in a row); next try in %.0f s", gen.id, failures, delay)
            self._due[gen.id] = time.monotonic() + delay

    def _orphaned(self, gen: Generation) -> bool:
        """Whether ``gen`` has no status message because the bot that took its command died
        before posting it: it is older than ``adopt_after_s`` (a live command gives up on its
        post after half of that). If it is younger, look again when it is old enough."""
        if gen.state.terminal and gen.started_at is None:
            return False  # it never ran: its command answered the member (refused, cancelled)
        age = (datetime.now(UTC) - gen.created_at).total_seconds()
        if age >= self.settings.adopt_after_s:
            return True
        at = time.monotonic() + self.settings.adopt_after_s - age
        self._due[gen.id] = min(self._due.get(gen.id, at), at)
        return False

    async def _adopt(self, gen: Generation, view: StatusView, digest: str) -> None:
        """Post the status message of a request whose bot died before it could (see
        :meth:`_orphaned`), in the row's channel, and link it to the row. One renderer of all
        those running claims it first, so it is posted once."""
        stale = datetime.now(UTC).timestamp() - ADOPT_CLAIM_S
        if not await self.store.claim_unposted(gen.id, stale_before=stale):
            return
        log.warning("the status message of %s was never posted (its bot stopped); posting it now", gen.id)
        try:
            async with self._edits:
                ref = await self.adapter.post_status(gen.channel, view)
        except MessageUnreachable as exc:
            # Nobody could ever see this request: it does not run.
            log.error("cancelling %s: its status message cannot be posted: %s", gen.id, exc.member_detail)
            await self.store.update_meta(gen.id, {"unreachable": True, "adopting": None})
            cancelled = await self.store.transition(
                gen.id, State.CANCELLED, error_code=ErrorCode.CHAT_UNAVAILABLE.value
            )
            if cancelled is not None and not await self.queue.remove_waiting(gen.id):
                await self.queue.abort_running(gen.id)
            self._forget(gen.id)
            return
        except BaseException:
            await self.store.update_meta(gen.id, {"adopting": None})  # another round may claim it
            raise
        self.edits += 1
        self._last_edit[gen.id] = time.monotonic()
        partial = bool(ref.extra.get(PARTIAL))
        if partial:
            ref = MessageRef(
                ref.platform,
                ref.channel,
                ref.message_id,
                {k: v for k, v in ref.extra.items() if k != PARTIAL},
            )
        # Its command stored no ticket either: the one it holds in the line, if it waits there.
        ticket = await self.queue.ticket_of(gen.id) if gen.ticket is None else None
        await self.store.update(
            gen.id,
            message=ref.to_json(),
            meta={"adopting": None, "rendered": None if partial else digest},
            ticket=ticket,
        )
        if partial or not gen.state.terminal:
            self._due[gen.id] = time.monotonic()  # it may have moved on while it was posted
        else:
            self._forget(gen.id)

    def _schedule_positions(self, order: list[int]) -> list[int]:
        """After the queue moved: the messages to refresh now (near the head); the ones further
        back are scheduled at most every ``far_refresh_s``."""
        now = time.monotonic()
        waiting = set(order)
        for gid in [g for g in self._shown_position if g not in waiting]:
            del self._shown_position[gid]
        refresh_now = []
        for index, gid in enumerate(order):
            position = index + 1
            if self._shown_position.get(gid) == position:
                continue
            if position <= self.settings.exact_positions:
                refresh_now.append(gid)
                continue
            # A message this renderer has not edited yet was posted (or rendered) just now.
            at = self._last_edit.setdefault(gid, now) + self.settings.far_refresh_s
            self._due[gid] = min(self._due.get(gid, at), at)
        return refresh_now

    def _forget(self, gid: int) -> None:
        self._due.pop(gid, None)
        self._failures.pop(gid, None)
        self._last_edit.pop(gid, None)
        self._shown_position.pop(gid, None)

    async def _render(
        self,
        gen: Generation,
        position: int | None,
        basis: tuple[float, int],
        *,
        down: bool = False,
        force: bool = False,
    ) -> None:
        """Edit ``gen``'s message if its view changed. ``force`` (shutdown): now, whatever the
        edit budget says."""
        if gen.meta.get("unreachable"):  # the platform does not let genbot post there at all
            self._forget(gen.id)
            return
        ref = MessageRef.from_json(gen.message)
        if ref is None and not self._orphaned(gen):
            return  # the command posting it is still at work; attach_message will nudge us
        if gen.state is not State.QUEUED:
            position = None
        eta = None
        if position is not None and basis[1]:
            eta = eta_seconds(position, basis[0], basis[1])
        aside = None
        if gen.state is State.QUEUED and position is None:
            aside = await self.queue.aside(gen)
        view = build_view(gen, position, eta, aside=aside, backend_down=down and gen.state is State.QUEUED)
        digest = view_hash(view)
        if position is not None:
            self._shown_position[gen.id] = position
        if digest == gen.meta.get("rendered"):
            if gen.state.terminal:
                self._forget(gen.id)
            return
        now = time.monotonic()
        earliest = self._last_edit.get(gen.id, 0.0) + self.settings.min_edit_interval_s
        if now < earliest and not gen.state.terminal and not force:
            self._due[gen.id] = min(self._due.get(gen.id, earliest), earliest)
            return
        if ref is None:
            await self._adopt(gen, view, digest)
            return
        async with self._edits:
            try:
                new_ref = await self.adapter.edit_status(ref, view)
            except MessageGone:
                log.info("status message of %s is gone; posting a new one", gen.id)
                try:
                    new_ref = await self.adapter.post_status(gen.channel, view)
                except MessageUnreachable as exc:
                    log.error("giving up on the status message of %s: %s", gen.id, exc.member_detail)
                    await self.store.update_meta(gen.id, {"unreachable": True})
                    self._forget(gen.id)
                    return
            self.edits += 1
        self._last_edit[gen.id] = time.monotonic()
        self._failures.pop(gen.id, None)
        partial = bool(new_ref.extra.get(PARTIAL))
        if partial:
            extra = {k: v for k, v in new_ref.extra.items() if k != PARTIAL}
            new_ref = MessageRef(new_ref.platform, new_ref.channel, new_ref.message_id, extra)
        if new_ref != ref:
            await self.store.update_message(gen.id, new_ref.to_json())
        if partial:  # posted without everything it shows: edit it again, now
            self._due[gen.id] = time.monotonic()
            return
        await self.store.update_meta(gen.id, {"rendered": digest})
        if gen.state.terminal:
            self._forget(gen.id)
