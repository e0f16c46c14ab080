"""The renderer: the scheduler of every write to one platform's status messages.

It reads the event stream (a consumer group shared by every bot process of the platform) and keeps
each message in step with its row, within the platform's budgets:

- **One pending render per message.** An event marks its message pending with a priority; a newer
  event only raises that priority. The render reads the row when it runs, so it always shows the
  newest state: there are never two queued edits of one message, never an older state after a
  newer one.
- **Priorities.** A first status post and a final result (:attr:`Priority.FIRST`) go before state
  changes (:attr:`Priority.STATE`), which go before head places and progress
  (:attr:`Priority.HEAD`), which go before places further back (:attr:`Priority.FAR`).
- **Lanes.** Writes go out per channel, one at a time in each (the platforms budget per
  channel), up to :data:`WRITE_CONCURRENCY` channels at once. A channel waiting out its budget or
  a 429 holds back nothing else; a message held by a 429 of its own (Discord's cap on edits of old
  messages) holds back nothing else in its channel.
- **Budgets.** Before a write the lane takes what it costs (:meth:`ChatAdapter.spends`) from the
  token buckets every bot process shares (:class:`~bot.ports.Budgets`); a 429 holds its scope for
  ``Retry-After`` in every process. Nobody sleeps on a 429 inside someone else's turn.
- **Compare-and-set.** A render holds a short lease on its message (a Redis lock), reads the row
  and compares the view's digest with the one the row says the message shows (``meta.rendered``),
  writes, and stores the new digest before it lets go. Two renderers never make the same edit twice,
  and never land an older state after a newer one.
- **Places.** When the line moves, one read of the waiting list finds the messages whose shown
  place changed (:func:`bot.views.place`: exact near the head, 1-2-5 bands further back), so a
  message in a long line costs O(log N) edits while it waits.

After a restart it takes over the events a dead renderer left pending and looks at every
non-terminal message of its platform (by id, in slices); unchanged views cost no edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.config import RendererSettings
from bot.errors import ErrorCode
from bot.logs import working_on
from bot.metrics import PLATFORM_RATE_LIMITED, PLATFORM_WRITES, RENDER_LAG
from bot.models import Generation, MessageRef, State, StatusView
from bot.ports import (
    ALL_WAITING,
    BREAKER_EVENT,
    HANDED_OVER,
    PARTIAL,
    Budgets,
    ChatAdapter,
    Event,
    EventFeed,
    EventsLost,
    GenerationStore,
    JobQueue,
    MessageGone,
    MessageUnreachable,
    NotYet,
    QueueUnavailable,
    RateLimited,
    RowUpdate,
    Spend,
)
from bot.views import build_view, place, view_hash, wait_seconds

log = logging.getLogger(__name__)

#: Channels written to at once.
WRITE_CONCURRENCY = 16
#: A write still going after this long is left to finish by itself; its lane goes on.
SLOW_WRITE_S = 1.0
#: Messages of one channel leased, read and written together in a lane's round, at most.
LANE_BATCH = 16
#: Rows read per dispatch to learn their channel (bounded, whatever the line's length).
LOOK_BATCH = 500
RETRY_S = 2.0
MAX_RETRY_S = 300.0
RECOVER_FINISHED = timedelta(hours=1)
#: At shutdown, at most this many batches of events are read before the last flush, and the
#: lanes get this long to write what is due within the budgets.
DRAIN_ROUNDS = 20
DRAIN_S = 10.0
#: A claim to post a lost status message (a renderer's, or a command's run again after its bot
#: died: Genbot.revive_commands), older than this, is taken over.
ADOPT_CLAIM_S = 300.0
#: Someone else holds the claim to post a lost status message: look again after this long.
CLAIMED_RETRY_S = 5.0
#: The lease on one message while it is rendered (longer than any write takes).
LEASE_S = 120.0
#: Another renderer holds the lease: look again after this long.
LEASED_RETRY_S = 0.5
#: The line is read at most this often, however many dequeues arrive.
PLACES_EVERY_S = 0.25
#: ETA basis and breaker state are read at most this often per backend.
BASIS_TTL_S = 1.0
#: A round (read the events, dispatch) starts at most this often: the events of a busy moment
#: are read, leased and rendered together, not one round trip each.
ROUND_S = 0.025


class Priority(enum.IntEnum):
    FIRST = 0  # a first status post, a final result
    STATE = 1  # a job starts, is set aside, waits for the service
    HEAD = 2  # a place near the head, progress
    FAR = 3  # a place further back


EVENT_PRIORITY = {
    "finished": Priority.FIRST,
    "unposted": Priority.FIRST,
    "started": Priority.STATE,
    "dequeued": Priority.STATE,
    "waiting": Priority.STATE,
    "attached": Priority.STATE,
    "progress": Priority.HEAD,
}


@dataclass
class Pending:
    priority: Priority
    not_before: float
    seq: int


@dataclass(slots=True)
class _Taken:
    """A message leased for a render, with its row and (queued) its place, read in its round."""

    gid: int
    pending: Pending
    lease: str
    gen: Generation
    position: int | None


@dataclass(slots=True)
class _Settle:
    """What a lane round's writes leave to do once they end: the rows to update, the leases to
    let go (see :meth:`Renderer._settle`)."""

    updates: list[RowUpdate] = field(default_factory=list)
    leases: list[tuple[str, str]] = field(default_factory=list)
    settled: bool = False


class Renderer:
    def __init__(
        self,
        *,
        store: GenerationStore,
        queue: JobQueue,
        feed: EventFeed,
        adapter: ChatAdapter,
        settings: RendererSettings,
        budgets: Budgets | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.feed = feed
        self.adapter = adapter
        self.settings = settings
        self.budgets = budgets
        self._pending: dict[int, Pending] = {}
        self._seq = itertools.count()
        self._channel: dict[int, str | None] = {}  # generation id -> channel (None: not ours)
        self._lanes: dict[str, set[int]] = {}  # channel -> its pending ids
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._shown: dict[int, int] = {}  # generation id -> the place (low end) its message shows
        self._last_edit: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._places_dirty = True
        self._places_at = 0.0
        self._basis: dict[str, tuple[float, tuple[float, int], float | None]] = {}
        self._writes = asyncio.Semaphore(WRITE_CONCURRENCY)
        self._under_way: set[asyncio.Task[float]] = set()  # writes under way (some the lanes went on without)
        self._writing: set[int] = set()  # messages with a write under way
        self._draining = False  # at shutdown: no edit held back for min_edit_interval_s
        self.edits = 0  # platform writes made, for tests and stats

    # -- the loop -----------------------------------------------------------------------------

    async def recover(self) -> None:
        """Look at every non-terminal message (and every one finished in the last
        ``RECOVER_FINISHED`` window, in case its final event was lost), and take over stale events.
        Unchanged views cost no edit: their digest matches the row's."""
        since = datetime.now(UTC) - RECOVER_FINISHED
        for gid in await self.store.active_ids(self.adapter.platform, finished_since=since):
            self._schedule(gid, Priority.STATE)
            self._channel.pop(gid, None)  # read it again: it may have moved on
        stale = await self.feed.claim_stale(int(self.settings.claim_idle_s * 1000), 1000)
        self._absorb(stale)
        await self.dispatch()
        await self.feed.ack(stale)
        self._places_dirty = True

    async def run(self, stop: asyncio.Event) -> None:
        """Render until ``stop`` is set, then drain. Survives Redis and database outages, at
        start-up too: a failed round is tried again every ``RETRY_S``, for as long as it takes.
        The first failure of a streak is logged (a Redis outage as one warning line, anything else
        with its traceback), the rest quietly; the first good round after a streak looks at every
        message again, since events published meanwhile may be lost. So does a round that finds
        the event stream gone (Redis lost its data)."""
        recovered = False
        failures = 0
        last_claim = last_round = time.monotonic()
        try:
            while not stop.is_set():
                if (rest := last_round + ROUND_S - time.monotonic()) > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), rest)
                    continue
                last_round = time.monotonic()
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
                    self._absorb(events)
                    await self.dispatch()
                    await self.feed.ack(events, later=True)
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
        finally:
            tasks = [*self._lane_tasks.values(), *self._under_way]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """On shutdown: take the events already in the stream (without waiting for more), then
        give the lanes ``DRAIN_S`` to write what is due, within the budgets. What is left stays
        unacknowledged or in the rows: the next renderer takes it over."""
        try:
            events: list[Event] = []
            for _round in range(DRAIN_ROUNDS):
                batch = await self.feed.read(self.settings.batch, 1)
                if not batch:
                    break
                events += batch
            self._absorb(events)
            self._draining = True
            await self.flush(within=DRAIN_S)
            await self.feed.ack(events)
        except Exception:
            log.warning("flushing the renders at shutdown failed", exc_info=True)

    async def flush(self, *, within: float = 30.0) -> None:
        """Dispatch what is due and wait (at most ``within`` seconds) until every lane has written what
        it can now. For shutdown and tests; :meth:`run` does not wait for its lanes."""
        deadline = time.monotonic() + within
        while True:
            await self.dispatch(places_now=True)
            lanes: list[asyncio.Task[Any]] = [
                t for t in (*self._lane_tasks.values(), *self._under_way) if not t.done()
            ]
            if not lanes:
                if not self._ready():
                    return
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.wait(lanes, timeout=left)

    def _block_ms(self) -> int:
        if not self._pending:
            return 1000
        wait = min(p.not_before for p in self._pending.values()) - time.monotonic()
        if self._places_dirty:
            wait = min(wait, self._places_at + PLACES_EVERY_S - time.monotonic())
        return max(1, min(1000, int(wait * 1000)))

    def _absorb(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.kind == "dequeued":
                self._places_dirty = True
            if event.kind == BREAKER_EVENT or event.generation_id == ALL_WAITING:
                # Every waiting message changes: look at all of them again.
                self._shown.clear()
                self._basis.clear()
                self._places_dirty = True
                continue
            if self._channel.get(event.generation_id, "") is None:
                continue  # another platform's
            self._schedule(event.generation_id, EVENT_PRIORITY.get(event.kind, Priority.STATE))

    def _schedule(self, gid: int, priority: Priority, at: float = 0.0) -> None:
        """Mark ``gid`` to render no earlier than ``at`` (monotonic), at ``priority`` or better."""
        pending = self._pending.get(gid)
        if pending is None:
            self._pending[gid] = Pending(priority, at, next(self._seq))
            channel = self._channel.get(gid)
            if channel is not None:
                self._lanes.setdefault(channel, set()).add(gid)
            return
        pending.priority = min(pending.priority, priority)
        if at < pending.not_before and gid not in self._failures:
            pending.not_before = at

    def _requeue(self, gid: int, taken: Pending, at: float = 0.0) -> None:
        """Put back a render taken for writing, in its place (merged with one scheduled since)."""
        self._schedule(gid, taken.priority, at)
        pending = self._pending[gid]
        pending.seq = min(pending.seq, taken.seq)
        if at > pending.not_before:
            pending.not_before = at

    def _unschedule(self, gid: int) -> Pending | None:
        pending = self._pending.pop(gid, None)
        channel = self._channel.get(gid)
        if channel is not None and (lane := self._lanes.get(channel)) is not None:
            lane.discard(gid)
        return pending

    def _forget(self, gid: int) -> None:
        """Drop everything kept about ``gid`` (its message shows its end, or cannot be shown): a
        long-running bot keeps state only for the messages still moving. A late event of it costs
        one read of its row."""
        self._unschedule(gid)
        self._channel.pop(gid, None)
        self._failures.pop(gid, None)
        self._last_edit.pop(gid, None)
        self._shown.pop(gid, None)

    def _ready(self) -> list[int]:
        now = time.monotonic()
        return [gid for gid, p in self._pending.items() if p.not_before <= now]

    # -- dispatch -----------------------------------------------------------------------------

    async def dispatch(self, *, places_now: bool = False) -> None:
        """Refresh places if the line moved, learn the channel of pending messages not seen yet
        (at most ``LOOK_BATCH`` rows a round), and start a lane for every channel with a message
        due."""
        now = time.monotonic()
        if self._places_dirty and (places_now or now - self._places_at >= PLACES_EVERY_S):
            await self._refresh_places()
        unknown = sorted(
            (gid for gid in self._ready() if gid not in self._channel),
            key=lambda g: (self._pending[g].priority, self._pending[g].seq),
        )[:LOOK_BATCH]
        if unknown:
            for gen in await self.store.get_many(unknown):
                self._learn(gen)
            for gid in set(unknown) - set(self._channel):  # the row is gone
                self._forget(gid)
        now = time.monotonic()
        for channel, lane in self._lanes.items():
            task = self._lane_tasks.get(channel)
            if task is not None and not task.done():
                continue
            if any(self._pending[g].not_before <= now for g in lane if g in self._pending):
                self._lane_tasks[channel] = asyncio.create_task(
                    self._run_lane(channel), name=f"genbot-render-{channel}"
                )
        for channel in [c for c, lane in self._lanes.items() if not lane]:
            del self._lanes[channel]
            task = self._lane_tasks.get(channel)
            if task is not None and task.done():
                del self._lane_tasks[channel]

    def _learn(self, gen: Generation) -> None:
        if gen.platform != self.adapter.platform:
            self._channel[gen.id] = None
            self._unschedule(gen.id)
            return
        self._channel[gen.id] = gen.channel
        shown = gen.meta.get("shown_place")
        if isinstance(shown, int) and gen.id not in self._shown:
            self._shown[gen.id] = shown
        if gen.id in self._pending:
            self._lanes.setdefault(gen.channel, set()).add(gen.id)

    async def _refresh_places(self) -> None:
        """After the line moved: mark every message whose shown place changed (near the head at
        :attr:`Priority.HEAD`, further back at :attr:`Priority.FAR`)."""
        self._places_dirty = False
        self._places_at = time.monotonic()
        lined_up = await self.queue.lined_up()
        exact = self.settings.exact_positions
        waiting = {gid for gid, _line in lined_up}
        for gid in [g for g in self._shown if g not in waiting]:
            del self._shown[gid]
        for gid in [g for g, c in self._channel.items() if c is None and g not in waiting]:
            del self._channel[gid]  # another platform's, gone from the line
        ahead: dict[str, int] = {}  # per line: a position counts the jobs of its own line
        for gid, line in lined_up:
            position = ahead[line] = ahead.get(line, 0) + 1
            if self._channel.get(gid, "") is None:
                continue
            low = place(position, exact)[0]
            if self._shown.get(gid) != low:
                self._schedule(gid, Priority.HEAD if position <= exact else Priority.FAR)

    # -- lanes --------------------------------------------------------------------------------

    async def _run_lane(self, channel: str) -> None:
        """Write the due messages of ``channel``, best first, one at a time, in rounds: the
        messages of a round are leased, read and placed in one round trip each, and their rows
        (the digest shown, the message reference) written and leases let go in one more after.
        A round grows (up to :data:`LANE_BATCH`) while its writes go out back to back, and shrinks
        to what went out before a budget held the lane, so a lane that writes once a second reads
        one message at a time."""
        size = 1
        held = False  # the last round ended on a hold
        while True:
            due = self._due(channel)
            if not due:
                return
            written, hold = await self._lane_round(due[:size])
            if hold > 0:  # the channel's budget (or a 429 on it): wait, this lane only
                size = max(1, written)
                held = True
                await asyncio.sleep(hold)
            elif written >= size and not held:
                size = min(LANE_BATCH, size * 2)
            else:
                held = False

    def _due(self, channel: str) -> list[int]:
        """The messages of ``channel`` to render now, best first. Progress or a place only, within
        its message's edit interval, would wait anyway (see :meth:`_render`): it waits before its
        lease and its read of the row, not after."""
        lane = self._lanes.get(channel)
        if not lane:
            return []
        now = time.monotonic()
        due = []
        for gid in lane:
            pending = self._pending.get(gid)
            if pending is None or pending.not_before > now or gid in self._writing:
                continue
            if pending.priority >= Priority.HEAD and not self._draining:
                earliest = self._last_edit.get(gid, 0.0) + self.settings.min_edit_interval_s
                if now < earliest:
                    pending.not_before = earliest
                    continue
            due.append(gid)
        return sorted(due, key=lambda g: (self._pending[g].priority, self._pending[g].seq))

    async def _lane_round(self, gids: list[int]) -> tuple[int, float]:
        """Lease, read and write ``gids`` in order. Returns how many were taken before the lane
        had to wait, and how long it must (0: not at all). A write that takes longer than
        :data:`SLOW_WRITE_S` (a platform client waiting out a 429 of that message's own route)
        goes on by itself, holding its message's lease, and the round goes on without it."""
        settle = _Settle()
        taken: list[_Taken] = []
        started = 0  # of taken: those whose write started (each lets go of its own lease)
        try:
            try:
                taken = await self._take(gids, settle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                for gid in gids:
                    self._failed(gid, exc)
                return 0, 0.0
            for n, item in enumerate(taken):
                started = n + 1
                write = asyncio.create_task(
                    self._write_safely(item, settle), name=f"genbot-render-{item.gid}"
                )
                self._under_way.add(write)  # until it ends: a stop cancels it with the lanes
                write.add_done_callback(self._under_way.discard)
                done, _ = await asyncio.wait({write}, timeout=SLOW_WRITE_S)
                if not done:
                    continue
                hold = write.result()
                if hold > 0:  # this one did not go out either
                    return n, hold
            return len(gids), 0.0
        finally:
            # Read for nothing (the lane must wait, or the round was cancelled): put back, and
            # let go; the next round reads them again.
            for rest in taken[started:]:
                self._requeue(rest.gid, rest.pending)
                settle.leases.append((f"render:{rest.gid}", rest.lease))
            await self._settle(settle)

    async def _take(self, gids: list[int], settle: _Settle) -> list[_Taken]:
        """Lease ``gids`` (one round trip), read the rows of those leased (one statement) and the
        places of those queued (one round trip). A message another renderer holds is looked at
        again a little later; one whose row is gone or is another platform's is forgotten. The
        leases of the messages returned are theirs to let go of (:meth:`_write_safely`); the rest
        go to ``settle``."""
        tokens = await self.queue.lock_many([f"render:{gid}" for gid in gids], LEASE_S)
        leased: dict[int, tuple[Pending, str]] = {}
        for gid, token in zip(gids, tokens, strict=True):
            if token is None:  # another renderer is at it; it stores what it showed
                if (pending := self._pending.get(gid)) is not None:
                    pending.not_before = time.monotonic() + LEASED_RETRY_S
                continue
            taken = self._unschedule(gid)  # from here, a new event schedules a new render
            if taken is None:  # forgotten meanwhile (the event stream was lost)
                settle.leases.append((f"render:{gid}", token))
            else:
                leased[gid] = (taken, token)
        try:
            rows = await self.store.get_many(list(leased))
            ours = [gen for gen in rows if gen.platform == self.adapter.platform]
            queued = [gen for gen in ours if gen.state is State.QUEUED]
            places = await self.queue.positions([(gen.id, gen.backend) for gen in queued])
        except BaseException:
            for gid, (taken, token) in leased.items():
                self._requeue(gid, taken)
                settle.leases.append((f"render:{gid}", token))
            raise
        position = dict(zip((gen.id for gen in queued), places, strict=True))
        for gid in leased.keys() - {gen.id for gen in ours}:
            self._forget(gid)
            settle.leases.append((f"render:{gid}", leased[gid][1]))
        return [
            _Taken(gen.id, leased[gen.id][0], leased[gen.id][1], gen, position.get(gen.id)) for gen in ours
        ]

    async def _settle(self, settle: _Settle) -> None:
        """Store what the round's writes showed, then let go of its leases (in that order: the
        next renderer to lease a message finds its row up to date). A write still going on by
        itself settles its own when it ends."""
        settle.settled = True
        updates, settle.updates = settle.updates, []
        leases, settle.leases = settle.leases, []
        try:
            if updates:
                try:
                    refused = await self.store.update_many(updates)
                except Exception as exc:
                    # What the messages show is not stored: render them again (the same view
                    # costs one more edit), later each time.
                    for update in updates:
                        self._schedule(update.generation_id, Priority.STATE)
                        self._failed(update.generation_id, exc)
                else:
                    for gid in refused:
                        # Another renderer wrote it meanwhile (this lease ran out during a write
                        # held up for minutes): which write landed last is unknown, so write it again.
                        log.warning(
                            "another renderer wrote the message of %s meanwhile; writing it again", gid
                        )
                        self._schedule(gid, Priority.FIRST)
        finally:
            if leases:
                with contextlib.suppress(Exception):  # a lease left behind expires
                    await self.queue.unlock_many(leases)

    def _failed(self, gid: int, exc: Exception) -> None:
        """Redis, the database or the platform failed: the message stays pending, later each time,
        so that a request the platform keeps refusing does not become a storm of them."""
        failures = self._failures.get(gid, 0) + 1
        self._failures[gid] = failures
        delay = min(RETRY_S * 2 ** (failures - 1), MAX_RETRY_S)
        if isinstance(exc, QueueUnavailable) or failures > 1:
            log.debug("rendering %s failed (%d in a row)", gid, failures, exc_info=exc)
        else:
            log.error("rendering %s failed; next try in %.0f s", gid, delay, exc_info=exc)
        if (pending := self._pending.get(gid)) is not None:
            pending.not_before = time.monotonic() + delay

    async def _write_safely(self, item: _Taken, settle: _Settle) -> float:
        """Render a leased message now if its view changed. Returns how long its channel must wait
        before the next write (0: at once)."""
        gid = item.gid
        self._writing.add(gid)  # one write per message at a time (a slow one goes on by itself)
        try:
            with working_on(gid, self.adapter.platform):
                return await self._render(item.gen, item.pending, item.position, settle)
        except asyncio.CancelledError:
            self._requeue(gid, item.pending)
            raise
        except Exception as exc:
            self._requeue(gid, item.pending)
            self._failed(gid, exc)
            return 0.0
        finally:
            self._writing.discard(gid)
            settle.leases.append((f"render:{gid}", item.lease))  # held until the write ended
            if settle.settled:  # a slow write: its round is over
                await self._settle(settle)

    async def _view(self, gen: Generation, position: int | None) -> tuple[StatusView, int | None]:
        aside = None
        eta = None
        down = False
        if gen.state is not State.QUEUED:
            position = None
        else:
            basis, down_in = await self._backend(gen.backend)
            down = down_in is not None
            if position is None:
                aside = await self.queue.aside(gen)
            elif basis[1]:
                eta = wait_seconds(position, *basis)
        shown_before = gen.meta.get("shown_place")
        view = build_view(
            gen,
            position,
            eta,
            aside=aside,
            backend_down=down,
            exact=self.settings.exact_positions,
            shown_before=shown_before if isinstance(shown_before, int) else None,
        )
        low = place(position, self.settings.exact_positions)[0] if position is not None else None
        return view, low

    async def _backend(self, backend: str) -> tuple[tuple[float, int], float | None]:
        cached = self._basis.get(backend)
        now = time.monotonic()
        if cached is not None and now - cached[0] < BASIS_TTL_S:
            return cached[1], cached[2]
        line = await self.queue.line_basis(backend)
        basis, down = (line.mean_run_s, line.capacity), line.down_in
        self._basis[backend] = (now, basis, down)
        return basis, down

    async def _render(self, gen: Generation, taken: Pending, position: int | None, settle: _Settle) -> float:
        if gen.meta.get("unreachable"):  # the platform does not let genbot post there at all
            self._forget(gen.id)
            return 0.0
        ref = MessageRef.from_json(gen.message)
        if ref is None and not self._orphaned(gen):
            return 0.0  # the command posting it is still at work; attach_message nudges us
        view, low = await self._view(gen, position)
        if low is None:
            self._shown.pop(gen.id, None)
        else:
            self._shown[gen.id] = low
        digest = view_hash(view)
        if digest == gen.meta.get("rendered"):
            self._failures.pop(gen.id, None)
            if gen.state.terminal:
                self._forget(gen.id)
            return 0.0
        now = time.monotonic()
        earliest = self._last_edit.get(gen.id, 0.0) + self.settings.min_edit_interval_s
        if now < earliest and not gen.state.terminal and ref is not None and not self._draining:
            self._requeue(gen.id, taken, earliest)
            return 0.0
        spends = self.adapter.spends(gen.channel, ref, view)
        if self.budgets is not None and spends:
            wait = await self.budgets.take(spends)
            if wait > 0:
                self._requeue(gen.id, taken)
                return wait
        try:
            async with self._writes:
                if ref is None:
                    await self._adopt(gen, view, digest, low)
                    return 0.0
                new_ref = await self._edit(gen, ref, view)
        except RateLimited as limited:
            return await self._limited(gen, taken, limited, spends)
        except NotYet as later:
            await self.store.update_message(gen.id, later.ref.to_json())
            self._requeue(gen.id, taken, time.monotonic() + later.retry_after)
            return 0.0
        if new_ref is None:
            return 0.0
        self.edits += 1
        self._written(gen, "edit" if new_ref.message_id == ref.message_id else "post")
        self._last_edit[gen.id] = time.monotonic()
        self._failures.pop(gen.id, None)
        partial = bool(new_ref.extra.get(PARTIAL))
        if partial:
            extra = {k: v for k, v in new_ref.extra.items() if k != PARTIAL}
            new_ref = MessageRef(new_ref.platform, new_ref.channel, new_ref.message_id, extra)
        shown = {"rendered": None if partial else digest, "shown_place": low}
        if new_ref != ref:  # posted anew (the old one was deleted): where it is, stored at once
            await self.store.update(gen.id, message=new_ref.to_json(), meta=shown)
        else:  # what it shows: with the round's others, before its lease goes
            was = gen.meta.get("rendered")
            settle.updates.append(
                RowUpdate(gen.id, meta=shown, fenced=True, rendered_was=was if isinstance(was, str) else None)
            )
        if partial:  # posted without everything it shows: edit it again, soon
            self._schedule(gen.id, Priority.FIRST)
        elif gen.state.terminal:
            self._forget(gen.id)
        return 0.0

    async def _limited(
        self, gen: Generation, taken: Pending, limited: RateLimited, spends: list[Spend]
    ) -> float:
        """A 429: hold its scope in every process; the message stays pending. A scope of the
        message alone holds only it; any other holds the lane."""
        log.info("rate limited on %s for %.1f s (job %s)", limited.scope, limited.retry_after, gen.id)
        PLATFORM_RATE_LIMITED.labels(self.adapter.platform).inc()
        if limited.ref is not None:
            await self.store.update_message(gen.id, limited.ref.to_json())
        if self.budgets is not None:
            await self.budgets.hold(limited.scope, limited.retry_after)
        if any(limited.scope == s.scope for s in spends):
            self._requeue(gen.id, taken)
            return limited.retry_after
        self._requeue(gen.id, taken, time.monotonic() + limited.retry_after)
        return 0.0

    def _written(self, gen: Generation, action: str) -> None:
        """Count a write to the platform, and how long after the job's last change it came."""
        PLATFORM_WRITES.labels(self.adapter.platform, action).inc()
        changed = max(t for t in (gen.created_at, gen.started_at, gen.heartbeat_at, gen.finished_at) if t)
        RENDER_LAG.labels(self.adapter.platform).observe(
            max(0.0, (datetime.now(UTC) - changed).total_seconds())
        )

    async def _edit(self, gen: Generation, ref: MessageRef, view: StatusView) -> MessageRef | None:
        try:
            return await self.adapter.edit_status(ref, view)
        except MessageGone:
            log.info("status message of %s is gone; posting a new one", gen.id)
        try:
            return await self.adapter.post_status(gen.channel, view)
        except MessageUnreachable as exc:
            log.error("giving up on the status message of %s: %s", gen.id, exc.member_detail)
            await self.store.update_meta(gen.id, {"unreachable": True})
            self._forget(gen.id)
            return None

    def _orphaned(self, gen: Generation) -> bool:
        """Whether ``gen`` has no status message because the bot that took its command could not
        post it: it handed it over (``HANDED_OVER``: a 429, an error, or its bot stopping), or it
        is older than ``adopt_after_s`` (its bot died; a live command gives up on its post after
        half of that). If it is younger, look again when it is old enough."""
        if gen.state.terminal and gen.started_at is None and not gen.meta.get(HANDED_OVER):
            return False  # it never ran: its command answered the member (refused, cancelled)
        if gen.meta.get(HANDED_OVER):
            return True
        age = (datetime.now(UTC) - gen.created_at).total_seconds()
        if age >= self.settings.adopt_after_s:
            return True
        self._schedule(gen.id, Priority.FIRST, time.monotonic() + self.settings.adopt_after_s - age)
        self._pending[gen.id].not_before = max(
            self._pending[gen.id].not_before, time.monotonic() + self.settings.adopt_after_s - age
        )
        return False

    async def _adopt(self, gen: Generation, view: StatusView, digest: str, low: int | None) -> None:
        """Post the status message of a request whose command could not (see :meth:`_orphaned`),
        in the row's channel, and link it to the row. One renderer of all those running claims
        it first, so it is posted once."""
        stale = datetime.now(UTC).timestamp() - ADOPT_CLAIM_S
        if not await self.store.claim_unposted(gen.id, stale_before=stale):
            # Posted meanwhile, or another renderer (or a command run again) is posting it: look
            # again a little later, in case that one gives up.
            self._schedule(gen.id, Priority.FIRST, time.monotonic() + CLAIMED_RETRY_S)
            return
        if not gen.meta.get(HANDED_OVER):
            log.warning("the status message of %s was never posted (its bot stopped); posting it now", gen.id)
        try:
            ref = await self.adapter.post_status(gen.channel, view)
        except MessageUnreachable as exc:
            # Nobody could ever see this request: it does not run.
            log.error("cancelling %s: its status message cannot be posted: %s", gen.id, exc.member_detail)
            await self.store.update_meta(gen.id, {"unreachable": True, "adopting": None})
            cancelled = await self.store.transition(
                gen.id, State.CANCELLED, error_code=ErrorCode.CHAT_UNAVAILABLE.value
            )
            if cancelled is not None and not await self.queue.remove_waiting(gen.id, line=gen.backend):
                await self.queue.abort_running(gen.id)
            self._forget(gen.id)
            return
        except BaseException:
            await self.store.update_meta(gen.id, {"adopting": None})  # another round may claim it
            raise
        self.edits += 1
        self._written(gen, "post")
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
        ticket = await self.queue.ticket_of(gen.id, line=gen.backend) if gen.ticket is None else None
        await self.store.update(
            gen.id,
            message=ref.to_json(),
            meta={
                "adopting": None,
                HANDED_OVER: None,
                "rendered": None if partial else digest,
                "shown_place": low,
            },
            ticket=ticket,
        )
        if partial or not gen.state.terminal:
            self._schedule(gen.id, Priority.FIRST)  # it may have moved on while it was posted
        else:
            self._forget(gen.id)
