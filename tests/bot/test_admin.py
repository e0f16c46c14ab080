"""The admin commands and member moderation through the core, against real Redis and a real
database (SQLite, then PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.commands import admin_specs
from bot.embedded_redis import EmbeddedRedis
from bot.models import Actor, State
from bot.text import REPLY_MAX
from storage.models import AuditRow, BanRow, BlockedTermRow, WorkspaceRow
from tests.bot.test_service import Recorder, run
from tests.conftest import make_settings

ALICE = Actor("local", "local", "alice", "Alice")
BOB = Actor("local", "local", "bob", "Bob")
ADMIN = Actor("local", "local", "admin", "Admin", is_admin=True)
ELSEWHERE_ADMIN = Actor("local", "elsewhere", "root", "Root", is_admin=True)


@pytest_asyncio.fixture
async def mrt(
    redis_server: EmbeddedRedis, redis: Redis, db_url: str, tmp_path: Path
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        redis_server.url,
        db_url,
        tmp_path,
        moderation={"strikes": 3, "strike_window_min": 10, "timeout_min": 30},
    )
    async with runtime(settings) as rt:
        yield rt


async def admin(rt: Runtime, name: str, actor: Actor = ADMIN, **options: str) -> Recorder:
    return await run(rt, actor, f"admin {name}", **options)


async def imagine(rt: Runtime, actor: Actor, prompt: str = "a red fox") -> Recorder:
    return await run(rt, actor, "imagine", prompt=prompt)


async def audit_actions() -> list[str]:
    return [row.action for row in await AuditRow.all().order_by("id")]


# -- who may ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", admin_specs(), ids=lambda s: s.key)
async def test_a_member_cannot_run_any_admin_command_and_is_told_why(mrt: Runtime, spec: object) -> None:
    job = (await imagine(mrt, BOB)).posted[0].job
    options = {
        "member": "bob",
        "term": "fox",
        "job": str(job),
        "confirm": "0000",
        "reason": "because",
    }
    name = spec.name  # type: ignore[attr-defined]
    given = {k: v for k, v in options.items() if spec.option(k)}  # type: ignore[attr-defined]
    out = await admin(mrt, name, ALICE, **given)
    assert out.replies == []
    [error] = out.errors
    assert error.code.value == "not_allowed"
    assert error.what == f"Only admins can use /admin {name}; you are not an admin here."
    assert await AuditRow.all().count() == 0
    assert await BanRow.all().count() == 0
    assert await BlockedTermRow.all().count() == 0
    assert await WorkspaceRow.filter(paused=True).count() == 0
    gen = await mrt.store.get(job)
    assert gen is not None and gen.state is State.QUEUED


async def test_a_member_cannot_cancel_another_members_job_with_the_button(mrt: Runtime) -> None:
    job = (await imagine(mrt, BOB)).posted[0].job
    recorder = Recorder()
    await mrt.core.handle_action(ALICE, job, "cancel", recorder)
    assert recorder.errors[0].code.value == "not_allowed"
    recorder = Recorder()
    await mrt.core.handle_action(ADMIN, job, "cancel", recorder)
    assert recorder.replies == [f"Cancelled job {job}."]
    [row] = await AuditRow.all()
    assert (row.action, row.actor_id, row.target) == ("cancel", "admin", f"job {job}")
    assert row.details == {"member": "bob"}


# -- bans ---------------------------------------------------------------------------------------


async def test_a_ban_cancels_the_members_queued_jobs_when_asked(mrt: Runtime) -> None:
    jobs = [(await imagine(mrt, BOB, f"p{i}")).posted[0].job for i in range(2)]
    alice_job = (await imagine(mrt, ALICE)).posted[0].job
    out = await admin(mrt, "ban", member="<@bob>", reason="spam", duration="2h")
    assert out.errors == []
    assert out.replies[0].startswith("Banned member bob for 2 h (until ")
    assert "Cancelled 2 queued job(s)." in out.replies[0]
    for job in jobs:
        gen = await mrt.store.get(job)
        assert gen is not None and gen.state is State.CANCELLED and gen.error_code == "cancelled_by_admin"
        assert await mrt.queue.position(job, line="demo") is None
    assert await mrt.queue.position(alice_job, line="demo") == 1  # moved up
    [row] = await AuditRow.all()
    assert (row.action, row.target, row.reason) == ("ban", "bob", "spam")
    assert row.details == {"duration_s": 7200, "jobs": "cancel", "cancelled": jobs}

    refused = await imagine(mrt, BOB)
    assert refused.posted == []
    assert refused.errors[0].code.value == "banned"
    assert "until" in refused.errors[0].what
    assert await mrt.store.list_for_user("local", "local", "bob", [State.QUEUED]) == []


async def test_a_ban_keeps_the_queued_jobs_when_asked_and_unban_lifts_it(mrt: Runtime) -> None:
    job = (await imagine(mrt, BOB)).posted[0].job
    out = await admin(mrt, "ban", member="bob", jobs="keep")
    assert "until unbanned" in out.replies[0] and "stay in the queue" in out.replies[0]
    gen = await mrt.store.get(job)
    assert gen is not None and gen.state is State.QUEUED
    assert await mrt.queue.position(job, line="demo") == 1
    assert (await imagine(mrt, BOB)).errors[0].code.value == "banned"

    listed = (await admin(mrt, "bans")).replies[0]
    assert "bob · until unbanned" in listed
    assert (await admin(mrt, "unban", member="bob", reason="appeal")).replies == [
        "Member bob may make images again."
    ]
    assert (await imagine(mrt, BOB)).posted  # allowed again
    assert (await admin(mrt, "unban", member="bob")).errors[0].what == "Member bob is not banned here."
    assert await audit_actions() == ["ban", "unban"]


async def test_an_expired_ban_no_longer_applies(mrt: Runtime) -> None:
    await admin(mrt, "ban", member="bob", duration="1h")
    await BanRow.filter(user_id="bob").update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await mrt.core.reconcile()  # the sweep mirrors the database's bans into Redis
    assert (await imagine(mrt, BOB)).posted
    assert (await admin(mrt, "bans")).replies == ["Nobody is banned here."]


async def test_ban_input_errors_change_nothing(mrt: Runtime) -> None:
    assert (await admin(mrt, "ban", member="bob", duration="soon")).errors[0].code.value == "invalid_option"
    assert (await admin(mrt, "ban", member="admin")).errors[0].what == "You can't ban yourself."
    assert (await admin(mrt, "ban", member="bob", jobs="delete")).errors[0].code.value == "invalid_option"
    assert (await admin(mrt, "ban", member=" ")).errors[0].code.value == "invalid_option"
    assert await BanRow.all().count() == 0
    assert await AuditRow.all().count() == 0


async def test_bans_and_terms_are_scoped_to_their_workspace(mrt: Runtime) -> None:
    await admin(mrt, "ban", member="bob")
    await admin(mrt, "block", term="fox")
    elsewhere_bob = Actor("local", "elsewhere", "bob", "Bob")
    assert (await imagine(mrt, elsewhere_bob, "a red fox")).posted  # neither applies there
    assert (await admin(mrt, "bans", ELSEWHERE_ADMIN)).replies == ["Nobody is banned here."]
    assert "No terms" in (await admin(mrt, "terms", ELSEWHERE_ADMIN)).replies[0]
    assert "Nothing" not in (await admin(mrt, "audit")).replies[0]
    assert (await admin(mrt, "audit", ELSEWHERE_ADMIN)).replies == ["The audit log is empty."]


# -- blocked terms ------------------------------------------------------------------------------


async def test_blocked_terms_refuse_prompts_only_to_the_member(mrt: Runtime) -> None:
    assert (await admin(mrt, "block", term="Spam")).errors == []
    assert (await admin(mrt, "block", term="kill", match="substring")).errors == []
    for who, prompt in (
        (ALICE, "SPAM fritters"),
        (ALICE, "\uff53\uff50\u00e0m"),
        (BOB, "5p4m!"),
        (BOB, "a skilled baker"),
    ):
        out = await imagine(mrt, who, prompt)
        assert out.posted == [], prompt
        [error] = out.errors
        assert error.code.value == "content_blocked"
        assert "spam" not in error.what.lower() and "kill" not in error.what.lower()  # not echoed
    assert (await imagine(mrt, BOB, "spammer's lunch")).posted  # whole word: no match inside a word
    assert await mrt.store.list_for_user("local", "local", "alice", [State.QUEUED]) == []
    listed = (await admin(mrt, "terms")).replies[0]
    assert "Spam (whole word)" in listed and "kill (substring)" in listed
    assert (await admin(mrt, "block", term="SPAM")).errors[0].what == "“SPAM” is already blocked here."
    assert (await admin(mrt, "block", term="!")).errors[0].code.value == "invalid_option"
    assert (await admin(mrt, "unblock", term="spam")).replies == ["“spam” is allowed again."]
    assert (await imagine(mrt, BOB, "spam")).posted
    assert (await admin(mrt, "unblock", term="spam")).errors[0].code.value == "not_found"
    assert await audit_actions() == ["block", "block", "unblock"]
    stats = (await admin(mrt, "stats")).replies[0]
    assert "content_blocked 4" in stats


async def test_repeated_blocked_prompts_give_a_timeout(mrt: Runtime) -> None:
    await admin(mrt, "block", term="spam")
    first = await imagine(mrt, ALICE, "spam")
    second = await imagine(mrt, ALICE, "spam")
    assert "One more" in second.errors[0].what and "One more" not in first.errors[0].what
    third = await imagine(mrt, ALICE, "spam")
    assert "you can't make images for 30 min" in third.errors[0].what
    ban = await mrt.moderation.get_ban("local", "local", "alice")
    assert ban is not None and ban.created_by == "genbot" and ban.expires_at is not None
    assert timedelta(minutes=29) < ban.expires_at - datetime.now(UTC) <= timedelta(minutes=30)
    assert (await imagine(mrt, ALICE, "a harmless fox")).errors[0].code.value == "banned"
    timeout = await AuditRow.filter(action="timeout").first()
    assert timeout is not None and timeout.target == "alice" and timeout.actor_id == "genbot"


# -- the queue ----------------------------------------------------------------------------------


async def test_pause_holds_queued_jobs_in_place_and_resume_restores_their_order(mrt: Runtime) -> None:
    elsewhere = Actor("local", "elsewhere", "eve", "Eve")
    a = (await imagine(mrt, ALICE, "first")).posted[0].job
    other = (await imagine(mrt, elsewhere, "other server")).posted[0].job
    b = (await imagine(mrt, BOB, "second")).posted[0].job

    out = await admin(mrt, "pause", reason="maintenance")
    assert out.replies[0].startswith("Paused the queue. 2 queued job(s) keep their place")
    assert (
        await mrt.queue.position(a, line="demo") is None and await mrt.queue.position(b, line="demo") is None
    )
    assert await mrt.queue.position(other, line="demo") == 1  # another workspace is not paused
    gen = await mrt.store.get(a)
    assert gen is not None and gen.state is State.QUEUED
    view = await mrt.core.view(gen)
    assert view.headline == "Queued · paused by an admin"
    assert view.note is not None and "keeps its place" in view.note

    refused = await imagine(mrt, ALICE, "third")
    assert refused.errors[0].code.value == "queue_paused" and refused.posted == []
    assert (await imagine(mrt, ADMIN, "admins too")).errors[0].code.value == "queue_paused"
    assert (await admin(mrt, "pause")).errors[0].code.value == "invalid_option"
    assert "(paused)" in (await admin(mrt, "queue")).replies[0]
    await mrt.core.reconcile()  # the sweep must not put paused jobs back
    assert await mrt.queue.position(a, line="demo") is None

    late = (await imagine(mrt, elsewhere, "later, other server")).posted[0].job
    assert (await admin(mrt, "resume")).replies == [
        "Resumed the queue: 2 queued job(s) go on in their order."
    ]
    assert await mrt.queue.waiting() == [a, other, b, late]  # tickets: their old places
    assert await audit_actions() == ["pause", "resume"]


async def test_clear_asks_to_confirm_then_cancels_every_queued_job(mrt: Runtime) -> None:
    jobs = [(await imagine(mrt, who)).posted[0].job for who in (ALICE, BOB, ALICE)]
    ask = (await admin(mrt, "clear")).replies[0]
    assert ask.startswith("This cancels all 3 queued job(s) here")
    code = ask.split("confirm: ")[1].split(" ")[0]
    wrong = "0000" if code != "0000" else "1111"
    assert "wrong or has expired" in (await admin(mrt, "clear", confirm=wrong)).errors[0].what
    assert await mrt.queue.waiting() == jobs  # nothing happened, and the code is spent
    assert (await admin(mrt, "clear", confirm=code)).errors[0].code.value == "invalid_option"
    code = (await admin(mrt, "clear")).replies[0].split("confirm: ")[1].split(" ")[0]
    assert (await admin(mrt, "clear", confirm=code)).replies == ["Cleared the queue: cancelled 3 job(s)."]
    assert await mrt.queue.waiting() == []
    for job in jobs:
        gen = await mrt.store.get(job)
        assert gen is not None and gen.error_code == "cancelled_by_admin"
    assert await audit_actions() == ["clear"]
    assert (await admin(mrt, "clear")).replies == ["The queue is empty: nothing to clear."]


async def test_admin_cancel_queue_stats_and_audit(mrt: Runtime) -> None:
    a = (await imagine(mrt, ALICE, "a fox")).posted[0].job
    b = (await imagine(mrt, BOB, "a dog")).posted[0].job
    queue = (await admin(mrt, "queue")).replies[0]
    assert queue.splitlines()[0] == "The queue: 0 running, 2 queued."
    assert f"#1 · job {a} · Alice" in queue and f"#2 · job {b} · Bob" in queue

    assert (await admin(mrt, "cancel", job=str(a), reason="off topic")).replies == [
        f"Cancelled job {a} of Alice."
    ]
    assert await mrt.queue.position(b, line="demo") == 1
    assert (await admin(mrt, "cancel", job=str(a))).errors[0].code.value == "not_found"
    assert (await admin(mrt, "cancel", job="x")).errors[0].code.value == "invalid_option"

    stats = (await admin(mrt, "stats")).replies[0]
    assert "requests: 2 (0 succeeded, 1 still queued or running)" in stats
    assert "cancelled_by_admin 1" in stats

    log = (await admin(mrt, "audit")).replies[0].splitlines()
    assert log[0] == "The latest 1 admin action(s):"
    assert log[1].endswith(f"Admin: cancel job {a} · off topic")
    [row] = await AuditRow.all()
    assert row.details == {"member": "alice"}


async def test_a_banned_members_blocked_prompt_reads_banned_and_never_shortens_the_ban(mrt: Runtime) -> None:
    await admin(mrt, "block", term="spam")
    await admin(mrt, "ban", member="bob")  # until unbanned
    for _ in range(4):
        out = await imagine(mrt, BOB, "spam")
        assert out.errors[0].code.value == "banned"
    ban = await mrt.moderation.get_ban("local", "local", "bob")
    assert ban is not None and ban.expires_at is None and ban.created_by == "admin"
    assert await AuditRow.filter(action="timeout").count() == 0


async def test_absurd_durations_and_job_numbers_get_a_sentence(mrt: Runtime) -> None:
    assert "at most ten years" in (await admin(mrt, "ban", member="bob", duration="99999999w")).errors[0].what
    out = await admin(mrt, "cancel", job=str(2**70))
    assert out.errors[0].code.value == "invalid_option"
    assert await BanRow.all().count() == 0


async def test_the_sweep_never_undoes_a_pause_that_lands_while_it_reads(mrt: Runtime) -> None:
    """The mirror sync reads Redis before the database; an admin's pause (database, then Redis)
    that lands between the two reads survives."""

    async def read_then_pause() -> list[tuple[str, str]]:
        before = await mrt.moderation.paused_workspaces()
        await mrt.core.pause(ADMIN, paused=True)  # lands in the middle of the sync
        return before

    await mrt.queue.sync_paused(read_then_pause)
    assert await mrt.queue.is_paused("local", "local")
    await mrt.core.reconcile()
    assert await mrt.queue.is_paused("local", "local")
    await mrt.core.pause(ADMIN, paused=False)
    await mrt.core.reconcile()
    assert not await mrt.queue.is_paused("local", "local")


async def test_the_sweep_restores_lost_pauses_and_bans(mrt: Runtime, redis: Redis) -> None:
    await admin(mrt, "pause")
    await admin(mrt, "ban", member="bob")
    await redis.flushall()  # Redis lost everything
    await mrt.core.reconcile()
    assert await mrt.queue.is_paused("local", "local")
    await admin(mrt, "resume")
    assert (await imagine(mrt, BOB)).errors[0].code.value == "banned"


async def test_a_workspace_sets_its_own_member_limits(mrt: Runtime) -> None:
    shown = (await admin(mrt, "limits")).replies[0]
    assert "waiting jobs per member: 1000 (default)" in shown  # the tests' deployment default
    out = await admin(mrt, "limits", queued="1", rate="5", window="30", reason="busy weekend")
    assert "waiting jobs per member: 1 (set here)" in out.replies[0]
    assert "requests per member: 5 per 30 min (set here; window set here)" in out.replies[0]
    [row] = await AuditRow.filter(action="limits")
    assert row.details["now"] == {"max_queued": 1, "rate_count": 5, "rate_window_s": 1800}
    assert row.reason == "busy weekend"

    assert (await imagine(mrt, ALICE, "one")).posted
    refused = await imagine(mrt, ALICE, "two")
    assert refused.errors[0].what == "You already have 1 requests waiting, the most one member may have."
    elsewhere = Actor("local", "elsewhere", "alice", "Alice")
    assert all([(await imagine(mrt, elsewhere, f"p{i}")).posted for i in range(3)])  # not there

    back = await admin(mrt, "limits", queued="0")
    assert "waiting jobs per member: 1000 (default)" in back.replies[0]
    assert (await imagine(mrt, ALICE, "two")).posted
    assert (await admin(mrt, "limits", queued="101")).errors[0].code.value == "invalid_option"


async def test_a_cancel_racing_with_a_resume_leaves_no_place_behind(mrt: Runtime, redis: Redis) -> None:
    job = (await imagine(mrt, ALICE, "paused then cancelled")).posted[0].job
    await admin(mrt, "pause")
    snapshot = await mrt.store.get(job)  # what the resume listed, just before...
    assert snapshot is not None
    await run(mrt, ALICE, "cancel", job=str(job))  # ...the member cancelled
    assert await mrt.core._put_back(snapshot) is None  # the resume's restore undoes itself
    assert await mrt.queue.position(job, line="demo") is None
    assert await redis.zscore("arq:abort", f"gen:{job}") is None  # nothing to abort: it was not running


async def test_hostile_admin_options_get_a_sentence_and_store_nothing_unclean(mrt: Runtime) -> None:
    """On PostgreSQL too: nothing that the database refuses (NUL, a term whose normal form is
    longer than its column, a member id longer than its column) gets as far as a statement."""
    assert "at most ten years" in (await admin(mrt, "ban", member="bob", duration="٣d")).errors[0].what
    assert (await admin(mrt, "ban", member="b" * 65)).errors[0].what == "Say which member, for example @ana."
    assert (await admin(mrt, "ban", member="\u200b")).errors[0].what == "Say which member, for example @ana."
    out = await admin(mrt, "ban", member="bob", reason="r" * 501)
    assert out.errors[0].what == "A reason is at most 500 characters long."
    assert (await admin(mrt, "block", term="\ufdfa" * 10)).errors[
        0
    ].what == "A term is at most 100 characters long."
    assert (
        (await admin(mrt, "unblock", term="spam" + "!" * 200)).errors[0].what.startswith("A term is at most")
    )
    assert await BanRow.all().count() == await BlockedTermRow.all().count() == 0

    await admin(mrt, "ban", member="bob\x00", reason="spam\x00 \u200b and\x1b more")
    ban = await BanRow.get(user_id="bob")
    assert ban.reason == "spam \u200b and more"
    await admin(mrt, "block", term="dr\x00agon\x07")
    assert [t.term for t in await BlockedTermRow.all()] == ["dragon"]
    await admin(mrt, "unban", member="bob", reason="\u200b\u200b")  # an invisible reason is none
    assert (await AuditRow.get(action="unban")).reason is None


async def test_a_confirmation_code_in_any_script_is_just_wrong(mrt: Runtime) -> None:
    await imagine(mrt, ALICE)
    assert "confirm:" in (await admin(mrt, "clear")).replies[0]
    out = await admin(mrt, "clear", confirm="٣٣٣٣")  # compare_digest refuses non-ASCII str
    assert out.errors[0].what.startswith("That confirmation code is wrong")


async def test_long_listings_are_cut_to_the_reply_limit(mrt: Runtime) -> None:
    for i in range(40):
        await admin(mrt, "block", term=f"{'t' * 90}{i:03d}")
    [terms] = (await admin(mrt, "terms")).replies
    assert len(terms) <= REPLY_MAX
    assert terms.endswith(("more", "…"))
