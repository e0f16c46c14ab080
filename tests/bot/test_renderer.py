"""The renderer against real Redis and SQLite, with a recording chat adapter."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from bench.counting import Counts
from bot import renderer as renderer_module
from bot.app import Runtime
from bot.config import RendererSettings
from bot.models import Actor, MessageRef, State, StatusView
from bot.ports import PARTIAL, EventsLost, MessageGone, MessageUnreachable, Rate, Spend
from bot.renderer import SLOW_WRITE_S, Renderer
from bot.views import build_view, view_hash
from jobs.backends.base import ImageRequest
from jobs.constants import RENDER_GROUP
from jobs.events import RedisEventFeed
from storage.models import GenerationRow
from tests.image_jobs import image_job

ALICE = Actor("local", "local", "alice", "Alice")


class RecordingChat:
    """A ChatAdapter that keeps the last view of every message and counts edits."""

    platform = "local"

    def __init__(self) -> None:
        self.rates: dict[str, Rate] = {}
        self.views: dict[str, StatusView] = {}
        self.edits: Counter[str] = Counter()
        self.gone: set[str] = set()
        self.posted = 0

    def spends(self, channel: str, ref: MessageRef | None, view: StatusView) -> list[Spend]:
        return []

    async def post_status(self, channel: str, view: StatusView) -> MessageRef:
        self.posted += 1
        ref = MessageRef("local", channel, f"m{self.posted}")
        self.views[ref.message_id] = view
        return ref

    async def edit_status(self, ref: MessageRef, view: StatusView) -> MessageRef:
        if ref.message_id in self.gone:
            raise MessageGone(ref.message_id)
        self.edits[ref.message_id] += 1
        self.views[ref.message_id] = view
        return ref


async def _submit(rt: Runtime, chat: RecordingChat, n: int, *, exact: int = 1000) -> list[tuple[int, str]]:
    out = []
    for i in range(n):
        new = image_job(ALICE, "general", ImageRequest(f"p{i}", "", 512, 512, 5, i), "demo")
        gen, position = await rt.core.submit(new)
        view = build_view(gen, position, None, exact=exact)
        ref = await chat.post_status("general", view)
        await rt.core.attach_message(gen.id, ref, view)
        out.append((gen.id, ref.message_id))
    return out


def _renderer(rt: Runtime, chat: RecordingChat, **settings: float) -> Renderer:
    feed = RedisEventFeed(rt.redis, rt.queue.keys.events, RENDER_GROUP.format(platform="local"), "t1")
    return Renderer(
        store=rt.store,
        queue=rt.queue,
        feed=feed,
        adapter=chat,
        settings=RendererSettings(min_edit_interval_s=0, exact_positions=1000, **settings),
    )


async def _drain(renderer: Renderer) -> None:
    events = await renderer.feed.read(1000, 10)
    renderer._absorb(events)
    await renderer.flush()
    await renderer.feed.ack(events)


async def test_a_burst_of_dequeues_edits_each_waiting_message_once(rt: Runtime) -> None:
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    jobs = await _submit(rt, chat, 20)
    await _drain(renderer)  # the "attached" events: nothing changed, so no edit
    assert sum(chat.edits.values()) == 0

    for gen_id, _ in jobs[:8]:  # eight jobs start in a burst before the renderer reads
        await rt.queue.mark_running(gen_id, line="demo")
        await rt.queue.publish(gen_id, "dequeued")
    await _drain(renderer)

    for index, (_gen_id, message_id) in enumerate(jobs[8:]):
        assert chat.edits[message_id] == 1, "one edit per waiting message, not one per dequeue"
        assert chat.views[message_id].headline.startswith(f"Queued · #{index + 1} in line")
    await _drain(renderer)
    assert sum(chat.edits[m] for _, m in jobs[8:]) == 12, "no edit when nothing changed"


async def test_far_places_are_edited_only_when_their_band_changes(rt: Runtime) -> None:
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    renderer.settings = RendererSettings(min_edit_interval_s=0, exact_positions=3)
    await renderer.feed.ensure_group()
    jobs = await _submit(rt, chat, 8, exact=3)
    await _drain(renderer)
    assert sum(chat.edits.values()) == 0, "each message shows its place already"
    await rt.queue.mark_running(jobs[0][0], line="demo")
    await rt.queue.publish(jobs[0][0], "dequeued")
    await _drain(renderer)
    # Places after the move: #1 #2 #3 exact, then the bands #4-5 and #6-10.
    head = [chat.edits[m] for _, m in jobs[1:4]]
    far = [chat.edits[m] for _, m in jobs[4:]]
    assert head == [1, 1, 1]
    assert far == [0, 1, 0, 0], "only the job that moved from #6-10 to #4-5 is edited"
    assert chat.views[jobs[5][1]].headline.startswith("Queued · #4-5 in line")


async def test_a_deleted_message_is_posted_again_and_the_row_follows(rt: Runtime) -> None:
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gen_id, message_id)] = await _submit(rt, chat, 1)
    chat.gone.add(message_id)
    await rt.queue.mark_running(gen_id, line="demo")
    await rt.store.transition(gen_id, State.RUNNING)
    await rt.queue.publish(gen_id, "started")
    await _drain(renderer)
    gen = await rt.store.get(gen_id)
    assert gen is not None
    assert gen.message["message_id"] == "m2"
    assert chat.views["m2"].headline.startswith("Generating")


async def test_restart_claims_pending_events_of_a_crashed_renderer(rt: Runtime) -> None:
    chat = RecordingChat()
    crashed = _renderer(rt, chat)
    await crashed.feed.ensure_group()
    [(gen_id, message_id)] = await _submit(rt, chat, 1)
    await rt.store.transition(gen_id, State.RUNNING)
    await rt.queue.publish(gen_id, "started")
    events = await crashed.feed.read(100, 10)  # read, then "crash" before rendering or acking
    assert events
    await asyncio.sleep(0.05)

    fresh = _renderer(rt, chat, claim_idle_s=0.01)
    fresh.feed = RedisEventFeed(rt.redis, rt.queue.keys.events, RENDER_GROUP.format(platform="local"), "t2")
    await fresh.recover()
    await fresh.flush()
    assert chat.views[message_id].headline.startswith("Generating")
    pending = await rt.redis.xpending(rt.queue.keys.events, RENDER_GROUP.format(platform="local"))
    assert pending["pending"] == 0


class FlakyStore:
    """The real store, whose reads of rows fail ``failures`` times first (a database blip)."""

    def __init__(self, store: object, failures: int) -> None:
        self._store = store
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def get_many(self, ids: list[int]) -> object:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database went away")
        return await self._store.get_many(ids)  # type: ignore[attr-defined]


async def test_a_failed_read_keeps_the_messages_scheduled(rt: Runtime) -> None:
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    jobs = await _submit(rt, chat, 3)
    await _drain(renderer)
    renderer.store = FlakyStore(rt.store, failures=2)  # type: ignore[assignment]
    await rt.queue.mark_running(jobs[0][0], line="demo")
    await rt.queue.publish(jobs[0][0], "dequeued")
    await _drain(renderer)  # the events are read and acknowledged; the schedule must stay
    failed = [gid for gid, _ in jobs if gid in renderer._failures]
    assert len(failed) == 2 and all(gid in renderer._pending for gid in failed)
    for gid in failed:  # their back-off is over
        renderer._pending[gid].not_before = 0
    await renderer.flush()
    assert chat.views[jobs[1][1]].headline.startswith("Queued · #1 in line")
    assert chat.views[jobs[2][1]].headline.startswith("Queued · #2 in line")


async def test_the_renderer_survives_a_failing_start(rt: Runtime) -> None:
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gen_id, message_id)] = await _submit(rt, chat, 1)
    await rt.store.transition(gen_id, State.RUNNING)
    renderer.store = FlakyStore(rt.store, failures=0)  # type: ignore[assignment]
    real_active_ids = rt.store.active_ids
    calls = 0

    async def failing_once(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database not up yet")
        return await real_active_ids(*args, **kwargs)  # type: ignore[arg-type]

    renderer.store.active_ids = failing_once  # type: ignore[method-assign, attr-defined]
    stop = asyncio.Event()
    task = asyncio.create_task(renderer.run(stop))
    for _ in range(200):
        if message_id in chat.edits:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert calls >= 2
    assert chat.views[message_id].headline.startswith("Generating")


async def test_events_published_while_the_group_was_lost_are_not_skipped(rt: Runtime) -> None:
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gen_id, message_id)] = await _submit(rt, chat, 1)
    await _drain(renderer)
    await rt.redis.delete(rt.queue.keys.events)  # Redis lost the stream and the group
    await rt.store.transition(gen_id, State.RUNNING)
    await rt.queue.publish(gen_id, "started")  # before the renderer's next read
    with pytest.raises(EventsLost):  # NOGROUP: the group comes back at the start of the stream
        await _drain(renderer)
    await _drain(renderer)
    assert chat.views[message_id].headline.startswith("Generating")


async def test_a_lost_stream_makes_the_running_renderer_re_render_from_the_rows(rt: Runtime) -> None:
    """Events published before Redis lost its data are gone with it: the renderer that finds its
    group gone re-renders every message from its row."""
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gen_id, message_id)] = await _submit(rt, chat, 1)
    recoveries: list[int] = []
    recover = renderer.recover

    async def counted() -> None:
        await recover()
        recoveries.append(1)

    renderer.recover = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(renderer.run(stop))
    try:
        async with asyncio.timeout(30):
            while not recoveries:  # the start-up recovery is over
                await asyncio.sleep(0.01)
            await rt.redis.delete(rt.queue.keys.events)  # Redis lost its data...
            await rt.store.transition(gen_id, State.RUNNING)  # ...and the event of this change
            while not chat.views[message_id].headline.startswith("Generating"):
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    assert len(recoveries) == 2


class RefusingChat(RecordingChat):
    """Edits fail with ``error``; posts raise ``post_error`` or return partial references."""

    def __init__(self, error: Exception | None = None, post_error: Exception | None = None) -> None:
        super().__init__()
        self.error = error
        self.post_error = post_error
        self.attempts = 0
        self.partial_posts = False

    async def edit_status(self, ref: MessageRef, view: StatusView) -> MessageRef:
        self.attempts += 1
        if self.error is not None:
            raise self.error
        return await super().edit_status(ref, view)

    async def post_status(self, channel: str, view: StatusView) -> MessageRef:
        if self.post_error is not None and self.posted:
            raise self.post_error
        ref = await super().post_status(channel, view)
        if self.partial_posts and self.posted > 1:
            return MessageRef(ref.platform, ref.channel, ref.message_id, {PARTIAL: True})
        return ref


async def test_a_channel_genbot_may_not_post_in_stops_the_renderer_trying(rt: Runtime) -> None:
    chat = RefusingChat(error=MessageGone("m1"), post_error=MessageUnreachable("no access here"))
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gen_id, _message_id)] = await _submit(rt, chat, 1)
    await rt.store.transition(gen_id, State.RUNNING)
    await rt.queue.publish(gen_id, "started")
    await _drain(renderer)
    gen = await rt.store.get(gen_id)
    assert gen is not None and gen.meta["unreachable"] is True
    assert gen_id not in renderer._pending
    await rt.queue.publish(gen_id, "progress")
    await _drain(renderer)
    assert chat.attempts == 1, "no more requests the platform will refuse"


async def test_repeated_failures_back_off(rt: Runtime) -> None:
    chat = RefusingChat(error=RuntimeError("HTTP 500"))
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gen_id, _message_id)] = await _submit(rt, chat, 1)
    await rt.store.transition(gen_id, State.RUNNING)
    await rt.queue.publish(gen_id, "started")
    waits = []
    for _ in range(4):
        await _drain(renderer)
        waits.append(renderer._pending[gen_id].not_before - time.monotonic())
        renderer._pending[gen_id].not_before = 0  # as if its back-off were over
    assert chat.attempts == 4
    assert waits == sorted(waits) and waits[-1] > 4 * waits[0], waits
    renderer._pending[gen_id].not_before = time.monotonic() + waits[-1]
    await rt.queue.publish(gen_id, "progress")  # new events do not cut the back-off short
    await _drain(renderer)
    assert renderer._pending[gen_id].not_before - time.monotonic() > waits[0]


async def test_a_partial_repost_is_stored_then_finished(rt: Runtime) -> None:
    chat = RefusingChat()
    chat.partial_posts = True
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gen_id, message_id)] = await _submit(rt, chat, 1)
    chat.gone.add(message_id)
    await rt.store.transition(gen_id, State.RUNNING)
    await rt.queue.publish(gen_id, "started")
    await _drain(renderer)
    gen = await rt.store.get(gen_id)
    assert gen is not None and gen.message["message_id"] == "m2"
    assert PARTIAL not in gen.message.get("extra", {})
    assert chat.edits["m2"] == 1, "edited again at once"


async def test_the_breaker_opening_and_closing_re_renders_every_waiting_message(rt: Runtime) -> None:
    from bot.app import build_breaker

    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group("0")
    jobs = await _submit(rt, chat, 3)
    await _drain(renderer)
    breaker = build_breaker(rt, "demo")
    breaker.reset_s = 60.0
    breaker.fail_max = 1

    async def fail() -> None:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        await breaker.call(await breaker.admit(), fail)  # opens it, and announces it
    await _drain(renderer)
    for position, (_gid, mid) in enumerate(jobs, start=1):
        view = chat.views[mid]
        assert view.headline == f"Queued · #{position} in line · waiting for the service"
        assert view.note is not None and "will start when the service recovers" in view.note

    await rt.redis.pexpire(breaker.keys.open, 1)  # its open time is over: half-open
    while await breaker.state() == "open":
        await asyncio.sleep(0.01)

    async def ok() -> None:
        return None

    await breaker.call(await breaker.admit(), ok)  # the probe closes it, and announces it
    await _drain(renderer)
    for _gid, mid in jobs:
        assert "waiting for the service" not in chat.views[mid].headline
        assert chat.views[mid].note is None


async def test_stopping_the_renderer_delivers_the_edits_held_back_by_the_edit_budget(rt: Runtime) -> None:
    """SIGTERM on ``genbot bot`` sets the stop event: every pending render is made before exit,
    even one the per-message edit budget would have delayed, and events already in the stream."""
    chat = RecordingChat()
    feed = RedisEventFeed(rt.redis, rt.queue.keys.events, RENDER_GROUP.format(platform="local"), "t1")
    renderer = Renderer(
        store=rt.store,
        queue=rt.queue,
        feed=feed,
        adapter=chat,
        settings=RendererSettings(min_edit_interval_s=3600, exact_positions=1000),
    )
    await feed.ensure_group("0")
    [(gid, mid)] = await _submit(rt, chat, 1)
    await _drain(renderer)
    # A first edit, then the job runs and finishes while the budget holds every edit back.
    await rt.queue.mark_running(gid, line="demo")
    await rt.store.transition(gid, State.RUNNING)
    await rt.store.record_progress(gid, {"progress": {"step": 1, "total": 5}})
    await rt.queue.publish(gid, "progress")
    await _drain(renderer)
    renderer._last_edit[gid] = time.monotonic()  # the budget of one edit a message per hour
    await rt.store.record_progress(gid, {"progress": {"step": 4, "total": 5}})
    await rt.queue.publish(gid, "progress")
    await _drain(renderer)
    assert chat.views[mid].progress != 0.8, "the budget held this edit back"
    await rt.store.record_progress(gid, {"progress": {"step": 5, "total": 5}})
    await rt.queue.publish(gid, "progress")  # still in the stream, unread, at shutdown

    stop = asyncio.Event()
    stop.set()
    await renderer.run(stop)

    assert chat.views[mid].progress == 1.0
    pending = await rt.redis.xpending(rt.queue.keys.events, RENDER_GROUP.format(platform="local"))
    assert pending["pending"] == 0


async def _unposted(rt: Runtime, prompt: str, *, age_s: float) -> int:
    """A request whose bot died after its submit and before its status post: queued, in line, no
    message; made ``age_s`` ago."""
    new = image_job(ALICE, "general", ImageRequest(prompt, "", 512, 512, 5, 1), "demo")
    gen, _position = await rt.core.submit(new)
    await GenerationRow.filter(id=gen.id).update(created_at=datetime.now(UTC) - timedelta(seconds=age_s))
    return gen.id


async def test_a_request_whose_bot_died_before_posting_gets_its_message_once(rt: Runtime) -> None:
    """Two renderers (two bot processes) meet the request without a message: it is young, so both
    wait (its command may still be posting); once it is older than adopt_after_s, exactly one of
    them posts it in the row's channel, and the row follows that message."""
    chat = RecordingChat()
    first = _renderer(rt, chat, adopt_after_s=60)
    second = _renderer(rt, chat, adopt_after_s=60)
    second.feed = RedisEventFeed(rt.redis, rt.queue.keys.events, RENDER_GROUP.format(platform="local"), "t2")
    await first.feed.ensure_group()
    young = await _unposted(rt, "young", age_s=5)
    old = await _unposted(rt, "old", age_s=61)
    # Both read the rows before either posts, then both try to post the old one at once.
    [young_gen, old_gen] = await rt.store.get_many([young, old])
    view = build_view(old_gen, 2, None)
    await asyncio.gather(*(r._adopt(old_gen, view, "digest", 2) for r in (first, second)))
    for renderer in (first, second):
        await renderer.recover()
        await renderer.flush()
    assert young_gen.message == {}
    assert chat.posted == 1, "only the old one, only once"
    row = await rt.store.get(old)
    assert row is not None and row.message["message_id"] == "m1" and row.message["channel"] == "general"
    assert chat.views["m1"].headline.startswith("Queued · #2 in line"), "it was in line, behind the young one"
    assert "adopting" not in row.meta
    assert young in first._pending, "the young one is looked at again once it is old enough"
    assert first._pending[young].not_before > time.monotonic() + 50
    young_row = await rt.store.get(young)
    assert young_row is not None and young_row.message == {}


async def test_a_request_whose_message_cannot_be_posted_is_cancelled_not_run(rt: Runtime) -> None:
    chat = RefusingChat(post_error=MessageUnreachable("genbot may not post here."))
    chat.posted = 1  # RefusingChat refuses every post after the first
    renderer = _renderer(rt, chat, adopt_after_s=60)
    await renderer.feed.ensure_group()
    gen_id = await _unposted(rt, "nowhere to go", age_s=120)
    await renderer.recover()
    await renderer.flush()
    row = await rt.store.get(gen_id)
    assert row is not None and row.state is State.CANCELLED and row.error_code == "chat_unavailable"
    assert await rt.queue.position(gen_id, line="demo") is None


async def test_a_message_whose_lease_is_slow_to_come_gets_one_write_not_one_a_second(rt: Runtime) -> None:
    """Redis slow to answer (restarting) as a message's lease is asked for: its write goes on by
    itself after ``SLOW_WRITE_S``, or its lane waits on it; either way the lane must not start a
    second write of the same message meanwhile (every second, one more, each waiting on Redis).
    One lease is asked, one edit made, and the lease is given back."""
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gen_id, message_id)] = await _submit(rt, chat, 1)
    leases: list[str] = []
    lock_many = rt.queue.lock_many

    async def slow_lock(names: list[str], ttl_s: float) -> list[str | None]:
        leases.extend(names)
        if len(leases) == 1:
            await asyncio.sleep(SLOW_WRITE_S * 2.5)
        return await lock_many(names, ttl_s)

    renderer.queue.lock_many = slow_lock  # type: ignore[method-assign]
    try:
        await rt.store.transition(gen_id, State.RUNNING)
        await rt.queue.publish(gen_id, "started")
        await _drain(renderer)
    finally:
        del renderer.queue.lock_many
    assert leases == [f"render:{gen_id}"]
    assert chat.edits[message_id] == 1
    assert chat.views[message_id].headline.startswith("Generating")
    assert await rt.queue.lock(f"render:{gen_id}", 1.0) is not None  # given back


async def test_a_renderer_keeps_nothing_of_messages_that_show_their_end(rt: Runtime) -> None:
    """A bot runs for months: what the renderer keeps per message is dropped once the message shows
    its job's end, so its memory follows the messages still moving, not every job it ever saw."""
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    jobs = await _submit(rt, chat, 5)
    await _drain(renderer)
    for gen_id, _ in jobs[:3]:
        await rt.queue.mark_running(gen_id, line="demo")
        await rt.store.transition(gen_id, State.RUNNING)
        await rt.store.transition(gen_id, State.SUCCEEDED)
        await rt.queue.mark_done(gen_id, line="demo")
        await rt.queue.publish(gen_id, "finished")
    await _drain(renderer)
    ended = {gen_id for gen_id, _ in jobs[:3]}
    assert all(chat.views[m].headline.startswith("Done") for _g, m in jobs[:3])
    kept = (renderer._channel, renderer._shown, renderer._last_edit, renderer._failures, renderer._pending)
    assert all(ended.isdisjoint(d) for d in kept), [sorted(ended & set(d)) for d in kept]
    assert {gen_id for gen_id, _ in jobs[3:]} <= set(renderer._channel), "the waiting ones are kept"


async def test_a_burst_in_one_channel_is_leased_read_and_stored_in_rounds(rt: Runtime) -> None:
    """Forty messages of one channel due at once (every place changed): each is edited once, and
    the renderer leases them, reads their rows and places and stores what they show a round at a
    time (rounds of 1, 2, 4, 8, 16 and 9 messages), not one round trip per message each."""
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    jobs = await _submit(rt, chat, 41)
    await _drain(renderer)
    await rt.queue.mark_running(jobs[0][0], line="demo")
    await rt.store.transition(jobs[0][0], State.RUNNING)
    await rt.queue.publish(jobs[0][0], "dequeued")
    with Counts().counting() as counts:
        await _drain(renderer)
    assert all(chat.edits[message_id] == 1 for _gid, message_id in jobs)
    for n, (gid, message_id) in enumerate(jobs[1:], start=1):
        assert chat.views[message_id].headline.startswith(f"Queued · #{n} in line"), gid
    rounds = 6
    assert counts.sql["SELECT generations"] == rounds
    assert counts.sql["UPDATE generations"] == rounds
    leases = sum(n for label, n in counts.redis.items() if label.startswith("SET"))
    places = sum(n for label, n in counts.redis.items() if label.startswith("ZRANK"))
    assert leases == rounds
    assert places == rounds - 1  # the first round is the started job's alone: it has no place
    rows = [await rt.store.get(gid) for gid, _ in jobs]
    assert all(gen is not None and gen.meta.get("rendered") for gen in rows)
    for gid, _ in jobs:  # every lease is given back
        assert await rt.queue.lock(f"render:{gid}", 1.0) is not None


async def test_leases_of_many_messages_are_taken_and_given_back_each_on_its_own(rt: Runtime) -> None:
    names = ["render:1", "render:2", "render:3"]
    held = await rt.queue.lock("render:2", 5.0)
    tokens = await rt.queue.lock_many(names, 5.0)
    assert tokens[1] is None and tokens[0] is not None and tokens[2] is not None
    assert await rt.queue.lock_many(names, 5.0) == [None, None, None]
    # a token that does not hold its lock lets go of nothing
    await rt.queue.unlock_many(
        [("render:1", tokens[0]), ("render:2", "not-the-holder"), ("render:3", tokens[2])]
    )
    assert held is not None and await rt.queue.lock("render:2", 5.0) is None
    again = await rt.queue.lock_many(names, 5.0)
    assert again[0] is not None and again[1] is None and again[2] is not None


async def test_a_slow_write_holds_its_lease_until_it_ends_while_its_round_goes_on(rt: Runtime) -> None:
    """A platform write slower than ``SLOW_WRITE_S`` (a client waiting out a 429 of its message's
    own route) goes on by itself: the rest of its round is written and settled meanwhile, and the
    slow message's lease stays taken (no other renderer may write it) until its write ends, when
    what it shows is stored and the lease given back."""
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    jobs = await _submit(rt, chat, 3)
    await _drain(renderer)
    slow_gid, slow_message = jobs[0]
    before = await rt.store.get(slow_gid)
    assert before is not None
    shown_before = before.meta.get("rendered")
    release = asyncio.Event()
    edit = chat.edit_status

    async def slow_edit(ref: MessageRef, view: StatusView) -> MessageRef:
        if ref.message_id == slow_message:
            await release.wait()
        return await edit(ref, view)

    chat.edit_status = slow_edit  # type: ignore[method-assign]
    for gid, _message in jobs:
        await rt.store.transition(gid, State.RUNNING)
        await rt.queue.mark_running(gid, line="demo")
        await rt.queue.publish(gid, "started")
    renderer._absorb(await renderer.feed.read(1000, 10))
    renderer._lanes["general"] = set(renderer._pending)  # one lane, one round for all three
    flushing = asyncio.create_task(renderer.flush(within=SLOW_WRITE_S * 3))
    while sum(chat.edits[m] for _g, m in jobs[1:]) < 2 or slow_gid not in renderer._writing:
        await asyncio.sleep(0.05)
    await asyncio.sleep(SLOW_WRITE_S * 1.5)  # the round is over, settled without the slow one
    for gid, _message in jobs[1:]:
        row = await rt.store.get(gid)
        assert row is not None and row.meta.get("rendered")
        assert await rt.queue.lock(f"render:{gid}", 1.0) is not None  # given back
    assert await rt.queue.lock(f"render:{slow_gid}", 1.0) is None  # still the slow write's
    slow_row = await rt.store.get(slow_gid)
    assert slow_row is not None and slow_row.meta.get("rendered") == shown_before
    release.set()
    await flushing
    await renderer.flush()
    assert chat.views[slow_message].headline.startswith("Generating")
    assert chat.edits[slow_message] == 1
    row = await rt.store.get(slow_gid)
    assert row is not None and row.meta.get("rendered") not in (None, shown_before)
    assert await rt.queue.lock(f"render:{slow_gid}", 1.0) is not None  # given back at its end


async def test_a_write_that_outlived_its_lease_does_not_leave_its_older_view_stored(rt: Runtime) -> None:
    """A write held up for longer than its lease (a platform client waiting out 429s for minutes):
    meanwhile another renderer took the lease, wrote the newer state and stored its digest. When
    the late write lands, which of the two the message shows is unknown; its store is refused (a
    compare-and-set on the digest it read), the row's digest cleared, and the message written
    again with the row's newest state."""
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gid, message_id)] = await _submit(rt, chat, 1)
    await _drain(renderer)
    release = asyncio.Event()
    edit = chat.edit_status

    async def held_up(ref: MessageRef, view: StatusView) -> MessageRef:
        if chat.edits[ref.message_id] == 0:
            await release.wait()
        return await edit(ref, view)

    chat.edit_status = held_up  # type: ignore[method-assign]
    await rt.store.transition(gid, State.RUNNING)
    await rt.queue.mark_running(gid, line="demo")
    await rt.queue.publish(gid, "started")
    flushing = asyncio.create_task(_drain(renderer))
    while gid not in renderer._writing:
        await asyncio.sleep(0.01)
    # the other renderer, after this lease ran out: the job ended, it showed that and stored it
    await rt.store.transition(gid, State.FAILED, error_code="backend_error")
    await rt.store.update_meta(gid, {"rendered": "the other renderer's digest"})
    release.set()
    await flushing
    await renderer.flush()
    final = chat.views[message_id]
    assert chat.edits[message_id] == 2 and not final.headline.startswith("Generating")
    row = await rt.store.get(gid)
    assert row is not None and row.meta["rendered"] == view_hash(final)


async def test_a_stop_leaves_no_write_running_and_no_lease_taken(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bot stopped while a write is in flight (its platform slow to answer, past the drain's
    time): when the renderer's run returns, no write of it is still running (it would write after
    its process closed the database and the platform client), and the message's lease is given
    back, so the next bot renders it at once rather than after the lease's two minutes."""
    monkeypatch.setattr(renderer_module, "DRAIN_S", 0.3)
    chat = RecordingChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    [(gid, message_id)] = await _submit(rt, chat, 1)
    await _drain(renderer)
    never = asyncio.Event()
    edit = chat.edit_status

    async def stuck(ref: MessageRef, view: StatusView) -> MessageRef:
        await never.wait()
        return await edit(ref, view)

    chat.edit_status = stuck  # type: ignore[method-assign]
    await rt.store.transition(gid, State.RUNNING)
    await rt.queue.mark_running(gid, line="demo")
    await rt.queue.publish(gid, "started")
    stop = asyncio.Event()
    stop.set()  # stopped at once: the event is read and its write started by the drain
    await renderer.run(stop)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("genbot-render-") and not t.done()]
    assert chat.edits[message_id] == 0
    assert await rt.queue.lock(f"render:{gid}", 1.0) is not None
