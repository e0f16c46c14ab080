"""The core's commands through a recording responder, against real Redis and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from bot.app import Runtime
from bot.errors import ErrorCode, ErrorText
from bot.models import Actor, CommandRequest, MessageRef, State, StatusView
from bot.ports import InboxEntry, Spend
from bot.service import BoundedResponder
from bot.text import NAME_MAX, REPLY_MAX
from jobs.backends.base import ImageRequest
from jobs.queue import SUBMIT
from storage.models import GenerationRow, InboxRow
from tests.image_jobs import image_job

ALICE = Actor("local", "local", "alice", "Alice")
BOB = Actor("local", "local", "bob", "Bob")
ADMIN = Actor("local", "local", "admin", "Admin", is_admin=True)
OTHER_SERVER = Actor("local", "elsewhere", "alice", "Alice")


class Recorder:
    def __init__(self) -> None:
        self.replies: list[str] = []
        self.said: list[str] = []
        self.errors: list[ErrorText] = []
        self.posted: list[StatusView] = []

    async def reply(self, text: str) -> None:
        self.replies.append(text)

    async def say(self, text: str) -> None:
        self.said.append(text)

    async def reply_error(self, error: ErrorText) -> None:
        self.errors.append(error)

    def spends(self, view: StatusView) -> list[Spend]:

        return []

    async def post_status(self, view: StatusView) -> MessageRef:
        self.posted.append(view)
        return MessageRef("local", "general", f"m{len(self.posted)}")


async def run(rt: Runtime, actor: Actor, name: str, **options: str) -> Recorder:
    recorder = Recorder()
    await rt.core.handle(CommandRequest(actor, "general", name, options), recorder)
    return recorder


async def test_imagine_posts_a_status_message_and_stores_its_reference(rt: Runtime) -> None:
    out = await run(rt, ALICE, "imagine", prompt="a red fox", seed="7")
    assert out.errors == []
    [view] = out.posted
    assert view.headline.startswith("Queued · #1 in line")
    gen = await rt.store.get(view.job)
    assert gen is not None
    assert gen.message["message_id"] == "m1"
    assert gen.meta["position_at_submit"] == 1
    assert gen.ticket == 1
    assert gen.options["seed"] == 7


async def test_queue_lists_only_my_jobs_with_positions(rt: Runtime) -> None:
    await run(rt, ALICE, "imagine", prompt="one")
    await run(rt, BOB, "imagine", prompt="two")
    await run(rt, ALICE, "imagine", prompt="three")
    [text] = (await run(rt, ALICE, "queue")).replies
    assert "#1 in line" in text and "#3 in line" in text
    assert "two" not in text
    [empty] = (await run(rt, ADMIN, "queue")).replies
    assert "no jobs" in empty


async def test_cancel_rules(rt: Runtime) -> None:
    job = (await run(rt, ALICE, "imagine", prompt="mine")).posted[0].job
    assert (await run(rt, BOB, "cancel", job=str(job))).errors[0].code.value == "not_allowed"
    assert (await run(rt, OTHER_SERVER, "cancel", job=str(job))).errors[0].code.value == "not_found"
    assert (await run(rt, ADMIN, "cancel", job=str(job))).replies == [f"Cancelled job {job}."]
    gen = await rt.store.get(job)
    assert gen is not None and gen.state is State.CANCELLED and gen.error_code == "cancelled_by_admin"
    again = await run(rt, ALICE, "cancel", job=str(job))
    assert "already finished" in again.errors[0].what
    assert (await run(rt, BOB, "cancel")).errors[0].what == "You have no queued or running job."


async def test_cancel_without_a_job_takes_my_newest(rt: Runtime) -> None:
    first = (await run(rt, ALICE, "imagine", prompt="first")).posted[0].job
    second = (await run(rt, ALICE, "imagine", prompt="second")).posted[0].job
    assert (await run(rt, ALICE, "cancel")).replies == [f"Cancelled job {second}."]
    assert await rt.queue.position(first, line="demo") == 1


async def test_status_reposts_and_the_new_message_is_kept_up_to_date(rt: Runtime) -> None:
    job = (await run(rt, ALICE, "imagine", prompt="fox")).posted[0].job
    assert (await run(rt, BOB, "status", job=str(job))).errors[0].code.value == "not_allowed"
    out = await run(rt, ALICE, "status", job=str(job))
    assert [v.job for v in out.posted] == [job]
    gen = await rt.store.get(job)
    assert gen is not None and gen.message["message_id"] == "m1"  # the Recorder's first post
    assert [v.job for v in (await run(rt, ADMIN, "status", job=str(job))).posted] == [job]
    assert (await run(rt, BOB, "status", job="999")).errors[0].code.value == "not_found"
    assert (await run(rt, BOB, "status")).errors[0].code.value == "invalid_option"


async def test_reconcile_re_enqueues_what_redis_lost_in_ticket_order(rt: Runtime, redis: Redis) -> None:
    jobs = [(await run(rt, ALICE, "imagine", prompt=f"p{i}")).posted[0].job for i in range(5)]
    await rt.core.cancel(ALICE, jobs[1])
    await redis.flushall()  # Redis lost everything
    assert await rt.queue.position(jobs[0], line="demo") is None
    assert await rt.core.reconcile() == 4
    assert await rt.queue.waiting() == [jobs[0], jobs[2], jobs[3], jobs[4]]
    assert await rt.core.reconcile() == 0, "idempotent"
    # New submissions get tickets after the old ones.
    new = (await run(rt, BOB, "imagine", prompt="new")).posted[0].job
    assert await rt.queue.position(new, line="demo") == 5
    arq_order = [m.decode() for m in await redis.zrange(rt.queue.line_queue("demo"), 0, -1)]
    assert arq_order == [f"gen:{j}" for j in [jobs[0], jobs[2], jobs[3], jobs[4], new]]


async def test_redis_down_at_submit_refuses_the_request_and_leaves_no_row(rt: Runtime) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    rt.queue._submit = dead.register_script(SUBMIT)
    out = await run(rt, ALICE, "imagine", prompt="fox")
    await dead.aclose()
    assert out.posted == []
    assert out.errors[0].code.value == "queue_unavailable"
    assert out.errors[0].todo == "Try again in a minute: this request was not queued."
    assert "Traceback" not in out.errors[0].what and "111" not in out.errors[0].what
    assert await rt.store.list_for_user("local", "local", "alice", list(State)) == []


async def _age(generation_id: int, minutes: float) -> None:
    """Make the row's heartbeat ``minutes`` old."""
    await GenerationRow.filter(id=generation_id).update(
        heartbeat_at=datetime.now(UTC) - timedelta(minutes=minutes)
    )


async def test_a_queued_job_a_worker_is_starting_is_left_alone(rt: Runtime, redis: Redis) -> None:
    job = (await run(rt, ALICE, "imagine", prompt="fox")).posted[0].job
    await rt.queue.mark_running(job, line="demo")  # the worker took it out of the waiting set...
    await redis.set(f"arq:in-progress:gen:{job}", b"1")  # ...and holds it; the row is still queued
    assert await rt.core.reconcile() == 0
    assert await rt.queue.position(job, line="demo") is None


async def test_reconcile_gives_a_waiting_entry_its_lost_arq_job_back(rt: Runtime, redis: Redis) -> None:
    job = (await run(rt, ALICE, "imagine", prompt="fox")).posted[0].job
    await redis.delete(f"arq:job:gen:{job}")
    await redis.zrem(rt.queue.line_queue("demo"), f"gen:{job}")
    assert await rt.core.reconcile() == 1
    assert await redis.exists(f"arq:job:gen:{job}")
    assert await rt.queue.position(job, line="demo") == 1


async def test_reroll_makes_a_new_job_with_the_same_prompt_and_a_new_seed(rt: Runtime) -> None:
    first = (await run(rt, ALICE, "imagine", prompt="a red fox", size="768x512", steps="7", seed="5")).posted[
        0
    ]
    refused = Recorder()
    await rt.core.handle_action(BOB, first.job, "reroll", refused)
    assert refused.errors[0].code.value == "not_allowed"
    assert refused.posted == []

    out = Recorder()
    await rt.core.handle_action(ALICE, first.job, "reroll", out)
    [view] = out.posted
    assert view.job != first.job
    old, new = await rt.store.get(first.job), await rt.store.get(view.job)
    assert old is not None and new is not None
    assert (new.prompt, new.options["width"], new.options["height"], new.options["steps"]) == (
        "a red fox",
        768,
        512,
        7,
    )
    assert old.options["seed"] == 5
    assert new.user_id == "alice" and new.state is State.QUEUED
    assert await rt.queue.position(view.job, line="demo") == 2

    by_admin = Recorder()
    await rt.core.handle_action(ADMIN, first.job, "reroll", by_admin)
    [admin_view] = by_admin.posted
    admin_job = await rt.store.get(admin_view.job)
    assert admin_job is not None and admin_job.user_id == "admin"


async def test_the_core_reads_member_text_cleaned_whatever_the_adapter_sent(rt: Runtime) -> None:
    who = Actor("local", "local", "carol", "Ca\x00rol\n\u200b" + "l" * 300)
    out = Recorder()
    request = CommandRequest(
        who, "general", "imagine", {"prompt": "a\x00 fox\x1b \ud800", "negative": "\tblur\x7f"}
    )
    await rt.core.handle(request, out)
    [view] = out.posted
    row = await GenerationRow.get(id=view.job)
    assert (row.prompt, row.options["negative"]) == ("a fox", "blur")
    assert row.user_name.startswith("Carol \u200bllll") and len(row.user_name) == NAME_MAX

    nameless = Actor("local", "local", "dave", "\u3164")
    await rt.core.handle(CommandRequest(nameless, "general", "imagine", {"prompt": "owl"}), out)
    assert (await GenerationRow.get(id=out.posted[-1].job)).user_name == "dave"


async def test_an_option_that_is_not_text_gets_a_sentence_naming_it(rt: Runtime) -> None:
    out = Recorder()
    request = CommandRequest(ALICE, "general", "imagine", {"prompt": None})  # type: ignore[dict-item]
    await rt.core.handle(request, out)
    assert out.errors[0].what == "The prompt option is not valid: give it as text."
    assert await GenerationRow.all().count() == 0


async def test_every_reply_is_bounded(rt: Runtime) -> None:
    out = await run(rt, ALICE, "x" * 50_000)
    assert out.errors[0].what == "There is no command /" + "x" * 31 + "…."
    long = Recorder()
    await BoundedResponder(long).reply("line\n" * 10_000)
    await BoundedResponder(long).reply_error(ErrorText(ErrorCode.INVALID_OPTION, "T", "w" * 5000, "t" * 5000))
    assert len(long.replies[0]) <= REPLY_MAX
    error = long.errors[0]
    assert len(error.title) + len(error.what) + len(error.todo) + 3 <= REPLY_MAX


async def test_a_button_for_a_job_number_past_any_row_is_not_found(rt: Runtime) -> None:
    for job in (0, -1, 2**63, 2**200):
        out = Recorder()
        await rt.core.handle_action(ALICE, job, "cancel", out)
        assert out.errors[0].code is ErrorCode.NOT_FOUND


async def _age_records(seconds: float) -> None:
    await InboxRow.all().update(created_at=datetime.now(UTC) - timedelta(seconds=seconds))


def _reviver(rt: Runtime, recorder: Recorder) -> Callable[[InboxEntry], Awaitable[None]]:
    """An adapter's revive: the command rebuilt from its record, answered through ``recorder``."""

    async def revive(entry: InboxEntry) -> None:
        await rt.core.handle(CommandRequest.from_json(entry.payload["request"]), recorder, receipt=entry.key)

    return revive


async def test_a_command_whose_bot_died_before_the_row_is_run_again_once(rt: Runtime) -> None:
    """The bot recorded the command, acknowledged it and died: nothing else happened. Another bot
    runs it again from the record (once it is older than adopt_after_s): one job, one message."""
    request = CommandRequest(ALICE, "general", "imagine", {"prompt": "a fox"})
    await rt.core.receive("local", {"request": request.to_json()})
    recorder = Recorder()
    assert await rt.core.revive_commands("local", _reviver(rt, recorder)) == 0, (
        "too young: maybe still running"
    )
    await _age_records(rt.settings.renderer.adopt_after_s + 1)
    assert await rt.core.revive_commands("local", _reviver(rt, recorder)) == 1
    [view] = recorder.posted
    assert view.prompt == "a fox" and view.headline.startswith("Queued · #1 in line")
    assert await InboxRow.all().count() == 0, "done: the record is gone"
    assert await rt.core.revive_commands("local", _reviver(rt, recorder)) == 0


@pytest.mark.parametrize("got_as_far_as", ["submit", "post"])
async def test_a_command_run_again_goes_on_from_where_its_bot_died(rt: Runtime, got_as_far_as: str) -> None:
    """The first run got as far as the queue (its row in line, no message), or as far as the
    message (the record just not forgotten): the second run makes no second row, enqueues nothing
    twice, and posts only what was not posted."""
    request = CommandRequest(ALICE, "general", "imagine", {"prompt": "a fox"})
    receipt = await rt.core.receive("local", {"request": request.to_json()})
    first = Recorder()
    if got_as_far_as == "submit":
        options = ImageRequest("a fox", "", 512, 512, 20, 1)
        await rt.core.submit(image_job(ALICE, "general", options, request_key=receipt))
    else:
        real_done = rt.core.inbox.done
        rt.core.inbox.done = _never  # type: ignore[method-assign]
        await rt.core.handle(request, first, receipt=receipt)
        rt.core.inbox.done = real_done  # type: ignore[method-assign]
    await _age_records(rt.settings.renderer.adopt_after_s + 1)
    # Its row is as old (no renderer has posted it yet): the run again still posts it.
    await GenerationRow.all().update(
        created_at=datetime.now(UTC) - timedelta(seconds=rt.settings.renderer.adopt_after_s)
    )
    second = SlowRecorder()
    assert await rt.core.revive_commands("local", _reviver(rt, second)) == 1
    [row] = await GenerationRow.all()
    assert await rt.queue.waiting() == [row.id]
    assert len(first.posted) + len(second.posted) == 1, "one status message in all"
    assert row.message["message_id"] and row.ticket == 1


class SlowRecorder(Recorder):
    """A platform whose post takes a moment, as every real one does."""

    def spends(self, view: StatusView) -> list[Spend]:

        return []

    async def post_status(self, view: StatusView) -> MessageRef:
        await asyncio.sleep(0.01)
        return await super().post_status(view)


async def _never(_key: str) -> None:
    raise ConnectionError("the bot died before it could forget the record")
