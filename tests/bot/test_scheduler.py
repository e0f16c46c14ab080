"""The render scheduler against real Redis and SQLite: lanes, budgets, 429 holds, two renderers
racing, a first post handed over, and places that go back only with a reason."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict

from bot.app import Runtime
from bot.config import RendererSettings
from bot.errors import ErrorText
from bot.models import Actor, CommandRequest, MessageRef, State, StatusView
from bot.ports import HANDED_OVER, Rate, RateLimited, Spend
from bot.renderer import Renderer
from bot.views import MOVED_BACK, build_view, view_hash
from jobs.backends.base import ImageRequest
from jobs.budgets import RedisBudgets
from jobs.constants import RENDER_GROUP
from jobs.events import RedisEventFeed
from tests.bot.test_renderer import _drain, _submit
from tests.image_jobs import image_job

ALICE = Actor("local", "local", "alice", "Alice")


class TimedChat:
    """A ChatAdapter that records every write with its time, takes a little while per write, and
    can answer 429 for a channel until a given time."""

    platform = "local"

    def __init__(self, *, per_s: float = 100.0, burst: int = 100, delay_s: float = 0.0) -> None:
        self.rates = {"chan": Rate(per_s, burst)}
        self.delay_s = delay_s
        self.writes: dict[str, list[tuple[float, StatusView]]] = defaultdict(list)
        self.storm_until: dict[str, float] = {}
        self.limited = 0
        self.posted = 0

    def spends(self, channel: str, ref: MessageRef | None, view: StatusView) -> list[Spend]:
        return [Spend("chan", ref.channel if ref is not None else channel)]

    def _check(self, channel: str) -> None:
        until = self.storm_until.get(channel, 0.0)
        if time.monotonic() < until:
            self.limited += 1
            raise RateLimited(f"chan:{channel}", until - time.monotonic())

    async def post_status(self, channel: str, view: StatusView) -> MessageRef:
        self._check(channel)
        self.posted += 1
        ref = MessageRef("local", channel, f"{channel}-m{self.posted}")
        await asyncio.sleep(self.delay_s * random.random())
        self.writes[ref.message_id].append((time.monotonic(), view))
        return ref

    async def edit_status(self, ref: MessageRef, view: StatusView) -> MessageRef:
        self._check(ref.channel)
        await asyncio.sleep(self.delay_s * random.random())
        self.writes[ref.message_id].append((time.monotonic(), view))
        return ref


def _renderer(rt: Runtime, chat: TimedChat, consumer: str = "r1", **settings: float) -> Renderer:
    feed = RedisEventFeed(rt.redis, rt.queue.keys.events, RENDER_GROUP.format(platform="local"), consumer)
    return Renderer(
        store=rt.store,
        queue=rt.queue,
        feed=feed,
        adapter=chat,  # type: ignore[arg-type]
        settings=RendererSettings(min_edit_interval_s=0, **settings),
        budgets=RedisBudgets(rt.redis, rt.queue.keys.prefix, chat.rates),
    )


async def _submit_in(rt: Runtime, chat: TimedChat, channel: str, n: int) -> list[tuple[int, str]]:
    out = []
    for i in range(n):
        new = image_job(ALICE, channel, ImageRequest(f"p{i}", "", 512, 512, 5, i), "demo")
        gen, position = await rt.core.submit(new)
        view = build_view(gen, position, None)
        ref = await chat.post_status(channel, view)
        await rt.core.attach_message(gen.id, ref, view)
        out.append((gen.id, ref.message_id))
    return out


async def _run_until(renderers: list[Renderer], done: object, timeout: float = 30.0) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in renderers]
    try:
        async with asyncio.timeout(timeout):
            while not await done():  # type: ignore[operator]
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_two_renderers_never_repeat_an_edit_nor_land_an_older_state(rt: Runtime) -> None:
    """Two bot processes' renderers (one consumer group, two consumers) render 30 jobs while they
    run through their states with progress: every message's writes go forward only, no two in a
    row are the same, and each ends on its final state."""
    chat = TimedChat(delay_s=0.02)
    first, second = _renderer(rt, chat, "r1"), _renderer(rt, chat, "r2")
    await first.feed.ensure_group()
    jobs = await _submit(rt, chat, 30, exact=10)  # type: ignore[arg-type]

    async def work() -> None:
        for gid, _mid in jobs:
            await rt.queue.mark_running(gid, line="demo")
            await rt.store.transition(gid, State.RUNNING)
            await rt.queue.publish(gid, "dequeued")
            for step in range(1, 5):
                await rt.store.record_progress(gid, {"progress": {"step": step, "total": 4}})
                await rt.queue.publish(gid, "progress")
                await asyncio.sleep(0.005)
            await rt.store.transition(gid, State.SUCCEEDED, result_key=f"results/{gid}.png")
            await rt.queue.publish(gid, "finished")

    async def all_final() -> bool:
        return all(chat.writes[mid] and chat.writes[mid][-1][1].state is State.SUCCEEDED for _, mid in jobs)

    worker = asyncio.create_task(work())
    await _run_until([first, second], all_final)
    await worker
    order = {State.QUEUED: 0, State.RUNNING: 1, State.SUCCEEDED: 2}
    for _gid, mid in jobs:
        views = [v for _, v in chat.writes[mid]]
        digests = [view_hash(v) for v in views]
        assert all(a != b for a, b in itertools.pairwise(digests)), f"{mid}: an edit repeated"
        ranks = [(order[v.state], v.progress or 0.0) for v in views]
        assert ranks == sorted(ranks), f"{mid}: an older state landed after a newer one: {ranks}"
    assert first.edits and second.edits, "both renderers took part"


async def test_a_429_storm_in_one_channel_holds_back_nothing_else(rt: Runtime) -> None:
    chat = TimedChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    stormy = await _submit_in(rt, chat, "general", 3)
    calm = await _submit_in(rt, chat, "other", 3)
    chat.storm_until["general"] = time.monotonic() + 3.0
    started = time.monotonic()
    for gid, _mid in stormy + calm:
        await rt.store.transition(gid, State.CANCELLED)
        await rt.queue.publish(gid, "finished")

    calm_at: list[float] = []
    hold_key = f"{rt.queue.keys.prefix}:budget-hold:chan:general"

    async def calm_done() -> bool:
        done = all(chat.writes[mid][-1][1].state is State.CANCELLED for _, mid in calm)
        if done:
            calm_at.append(time.monotonic())
            # The hold is in Redis, for every bot process, and the stormy channel shows no change.
            assert await rt.redis.pttl(hold_key) > 0
            assert all(chat.writes[mid][-1][1].state is State.QUEUED for _, mid in stormy)
        return done

    await _run_until([renderer], calm_done)
    assert calm_at[0] - started < 2.0, "the other channel did not wait for the storm"

    async def stormy_done() -> bool:
        return all(chat.writes[mid][-1][1].state is State.CANCELLED for _, mid in stormy)

    await _run_until([renderer], stormy_done)
    assert time.monotonic() - started >= 2.9, "written once the storm was over"
    assert chat.limited <= 2, "the held channel is not hammered while it is held"


async def test_a_channel_budget_paces_writes_and_finals_go_first(rt: Runtime) -> None:
    """A channel with 5 writes a second: 12 jobs finish at once while 12 others make progress; the
    final results are written before any progress."""
    chat = TimedChat(per_s=5, burst=1)
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    jobs = await _submit(rt, chat, 24, exact=10)  # type: ignore[arg-type]
    for gid, _mid in jobs:
        await rt.queue.mark_running(gid, line="demo")
        await rt.store.transition(gid, State.RUNNING)
    for gid, _mid in jobs[12:]:
        await rt.store.record_progress(gid, {"progress": {"step": 1, "total": 2}})
        await rt.queue.publish(gid, "progress")
    for gid, _mid in jobs[:12]:
        await rt.store.transition(gid, State.FAILED, error_code="backend_error")
        await rt.queue.publish(gid, "finished")

    async def finals_done() -> bool:
        return all(chat.writes[mid] and chat.writes[mid][-1][1].state is State.FAILED for _, mid in jobs[:12])

    started = time.monotonic()
    await _run_until([renderer], finals_done)
    elapsed = time.monotonic() - started
    last_final = max(chat.writes[mid][-1][0] for _, mid in jobs[:12])
    progress_writes = [t for _, mid in jobs[12:] for t, _v in chat.writes[mid][1:]]
    assert all(t >= last_final for t in progress_writes), "no progress before a final result"
    assert elapsed >= 1.8, f"12 writes at 5 a second after a burst of 1 take over 2 s ({elapsed:.1f} s)"


class HandOver:
    """A responder whose status post meets a 429, as a busy Slack channel answers."""

    def __init__(self) -> None:
        self.replies: list[str] = []

    async def reply(self, text: str) -> None:
        self.replies.append(text)

    async def reply_error(self, error: ErrorText) -> None:
        self.replies.append(error.title)

    def spends(self, view: StatusView) -> list[Spend]:
        return [Spend("chan", "general")]

    async def post_status(self, view: StatusView) -> MessageRef:
        raise RateLimited("chan:general", 1.0)


async def test_a_first_post_that_meets_a_429_is_posted_by_the_renderer_not_cancelled(rt: Runtime) -> None:
    chat = TimedChat()
    renderer = _renderer(rt, chat, adopt_after_s=600)
    rt.core.budgets = renderer.budgets
    await renderer.feed.ensure_group()
    responder = HandOver()
    await rt.core.handle(CommandRequest(ALICE, "general", "imagine", {"prompt": "a fox"}), responder)
    assert responder.replies == [], "no error for the member: their message is coming"
    [gen] = await rt.store.list_active("local")
    assert gen.state is State.QUEUED and gen.meta[HANDED_OVER] is True
    assert await rt.queue.position(gen.id, line="demo") == 1

    async def posted() -> bool:
        row = await rt.store.get(gen.id)
        return row is not None and bool(row.message.get("message_id"))

    await _run_until([renderer], posted, timeout=10)  # at once, not after adopt_after_s
    row = await rt.store.get(gen.id)
    assert row is not None and HANDED_OVER not in row.meta
    assert chat.writes[row.message["message_id"]][0][1].title.startswith("Queued · #1 in line")


async def test_a_place_that_goes_back_says_why(rt: Runtime) -> None:
    chat = TimedChat()
    renderer = _renderer(rt, chat)
    await renderer.feed.ensure_group()
    jobs = await _submit(rt, chat, 3, exact=10)  # type: ignore[arg-type]
    (held, _), (_second, second_mid), _third = jobs
    ticket = await rt.queue.ticket_of(held, line="demo")
    assert ticket is not None
    await rt.queue.remove_waiting(held, line="demo")  # set aside (as a held job is), keeping its ticket
    await rt.queue.publish(held, "dequeued")
    await _drain(renderer)
    assert chat.writes[second_mid][-1][1].title.startswith("Queued · #1 in line")
    assert chat.writes[second_mid][-1][1].note is None
    await rt.queue.restore(held, ticket, line="demo")  # it rejoins, ahead, at its ticket
    await rt.queue.publish(held, "dequeued")
    await _drain(renderer)
    back = chat.writes[second_mid][-1][1]
    assert back.title.startswith("Queued · #2 in line") and back.note == MOVED_BACK
    await rt.queue.mark_running(held, line="demo")  # it starts: the others move up, and the note goes
    await rt.queue.publish(held, "dequeued")
    await _drain(renderer)
    assert chat.writes[second_mid][-1][1].note is None


async def test_a_channel_its_budget_holds_to_one_write_at_a_time_reads_one_message_a_round(
    rt: Runtime,
) -> None:
    """A channel whose budget lets one write go out at a time (Slack's one a second): once
    its first rounds met the budget, its rounds stay at one message, so nothing is leased and read
    that cannot be written at once. Every message still gets its write."""
    chat = TimedChat(per_s=1.0, burst=1)
    renderer = _renderer(rt, chat, exact_positions=1000)
    await renderer.feed.ensure_group()
    jobs = await _submit_in(rt, chat, "busy", 4)
    await _drain(renderer)
    sizes: list[int] = []
    lane_round = renderer._lane_round

    async def counted(gids: list[int]) -> tuple[int, float]:
        sizes.append(len(gids))
        return await lane_round(gids)

    renderer._lane_round = counted  # type: ignore[method-assign]
    await rt.queue.mark_running(jobs[0][0], line="demo")
    await rt.store.transition(jobs[0][0], State.RUNNING)
    await rt.queue.publish(jobs[0][0], "dequeued")
    await _drain(renderer)
    assert all(len(chat.writes[message_id]) == 2 for _gid, message_id in jobs)  # posted, then edited
    # the first round (of 1) went out at once and the second grew to 2 before the lane met its
    # budget; from the hold on, one message a round
    assert sizes[:2] == [1, 2] and set(sizes[2:]) == {1}, sizes
