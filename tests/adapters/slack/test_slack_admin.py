"""The admin commands on Slack end to end: ``/genbot admin <name>`` and the buttons, as signed
requests through the real Bolt app, against the fake Web API (``users.info`` included), with real
Redis and SQLite. Who is an admin is decided on the server: the configured ids (``UADMIN``) or
Slack's workspace admins and owners."""

from __future__ import annotations

import re
from datetime import timedelta

import aiohttp

from bot.app import Runtime
from bot.commands import OptionSpec, admin_specs
from bot.models import State
from storage.models import AuditRow, BanRow, BlockedTermRow, GenerationRow, WorkspaceRow
from tests.adapters.slack.conftest import ADMIN, SlackClient, attached
from tests.adapters.slack.fake_slack import TEAM, FakeSlack
from tests.adapters.slack.test_slack_app import ACK_DEADLINE_S, headline
from tests.stack import bot_running

OWNER = "UOWNER"  # a workspace owner per users.info, not in GENBOT_SLACK__ADMIN_USER_IDS
BOB = "<@UBOB|bob>"  # a picked member, as Slack sends it with should_escape


class Member:
    """One Slack member sending commands; :meth:`run` returns genbot's ephemeral answer."""

    def __init__(self, client: SlackClient, fake: FakeSlack, user: str, name: str) -> None:
        self.client = client
        self.fake = fake
        self.user = user
        self.name = name

    async def run(self, command: str, text: str) -> str:
        """Send the command and wait for the reply through its ``response_url``."""
        status, body, took = await self.client.command(command, text, user=self.user, name=self.name)
        assert status == 200 and body == "", body
        assert took < ACK_DEADLINE_S
        to = f"{self.user}-{self.client.sent}"
        await self.fake.wait_until(lambda: any(r["_to"] == to for r in self.fake.responses))
        [reply] = [r for r in self.fake.responses if r["_to"] == to]
        assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
        return str(reply["text"])

    async def admin(self, text: str) -> str:
        return await self.run("/genbot", "admin " + text)

    async def imagine(self, prompt: str) -> GenerationRow:
        """An /imagine that is queued: returns its row once its status message is stored."""
        status, body, _took = await self.client.command("/imagine", prompt, user=self.user, name=self.name)
        assert status == 200 and body == ""
        return await attached(user_id=self.user, prompt=prompt)


def members(client: SlackClient, fake: FakeSlack) -> dict[str, Member]:
    people = {"admin": ADMIN, "owner": OWNER, "alice": "UALICE", "bob": "UBOB", "carol": "UCAROL"}
    return {name: Member(client, fake, user, name) for name, user in people.items()}


def sample(option: OptionSpec, job: int) -> str:
    """A well-formed value for an option, so that a refusal can only be about who asks."""
    if option.type == "member":
        return BOB
    if option.type == "integer":
        return str(job)
    return option.choices[0] if option.choices else "dragon"


def users_info_of(fake: FakeSlack, user: str) -> int:
    return sum(1 for c in fake.called("users.info") if c.args.get("user") == user)


async def audit_actions() -> list[tuple[str, str, str | None]]:
    return [(r.action, r.actor_id, r.target) for r in await AuditRow.all().order_by("id")]


async def test_a_member_cannot_run_any_admin_command_and_is_told_why(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    fake.roles = {OWNER: {"is_owner": True}}
    fake.user_errors = {OWNER: "user_not_found"}  # Slack cannot say: not an admin
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        people = members(client, fake)
        job = await people["bob"].imagine("bob's owl")
        for spec in admin_specs():
            text = " ".join(f"{o.name}: {sample(o, job.id)}" for o in spec.options)
            for who in ("alice", "owner"):
                reply = await people[who].admin(f"{spec.name} {text}")
                assert reply.startswith(
                    f"*Not allowed*: Only admins can use /genbot admin {spec.name}; you are not an admin here."
                ), (spec.name, reply)

    assert users_info_of(fake, "UALICE") == 1, "asked once, then kept"
    assert users_info_of(fake, OWNER) == len(admin_specs()), "a failed lookup is not kept"
    assert await AuditRow.all().count() == 0
    assert await BanRow.all().count() == 0
    assert await BlockedTermRow.all().count() == 0
    assert not await WorkspaceRow.filter(paused=True).exists()
    assert (await GenerationRow.get(id=job.id)).state == State.QUEUED.value
    assert await slack_rt.queue.position(job.id, line="demo") == 1
    assert len(fake.called("chat.postMessage")) == 1  # bob's status message, nothing else public


async def test_a_workspace_owner_per_users_info_runs_every_admin_command(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    fake.roles = {OWNER: {"is_owner": True}}
    ran: set[str] = set()
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        people = members(client, fake)
        owner, bob = people["owner"], people["bob"]

        async def admin(text: str) -> str:
            ran.add(text.split()[0])
            reply = await owner.admin(text)
            assert not reply.startswith("*"), (text, reply)  # an answer, not an error
            return reply

        first = await bob.imagine("bob's owl")
        assert "dragon" in await admin("block dragon")
        assert "dragon (whole word)" in await admin("terms")
        assert "allowed again" in await admin("unblock dragon")
        banned = await admin(f"ban {BOB} reason: spam duration: 30m jobs: keep")
        assert banned.startswith("Banned member UBOB for 30 min") and "stay in the queue" in banned
        assert "• UBOB · until " in await admin("bans")
        assert "may make images again" in await admin(f"unban {BOB}")
        assert "Paused the queue" in await admin("pause reason: maintenance")
        assert "Resumed the queue" in await admin("resume")
        assert f"job {first.id} · bob" in await admin("queue")
        assert await admin(f"cancel {first.id} reason: test") == f"Cancelled job {first.id} of bob."
        second = await bob.imagine("bob's second owl")
        asked = await admin("clear")
        code = re.search(r"confirm: (\d{4})", asked)
        assert code is not None and "/genbot admin clear confirm:" in asked, asked
        assert await admin(f"clear confirm: {code.group(1)}") == "Cleared the queue: cancelled 1 job(s)."
        assert "requests: 2" in await admin("stats")
        assert "admin action(s)" in await admin("audit limit: 50")
        assert "waiting jobs per member: 2 (set here)" in await admin("limits queued: 2")
        assert "one backend: there is nothing to choose" in await admin("backend")

    assert ran == {spec.name for spec in admin_specs()}
    assert users_info_of(fake, OWNER) == 1
    assert await audit_actions() == [
        ("block", OWNER, "dragon"),
        ("unblock", OWNER, "dragon"),
        ("ban", OWNER, "UBOB"),
        ("unban", OWNER, "UBOB"),
        ("pause", OWNER, None),
        ("resume", OWNER, None),
        ("cancel", OWNER, f"job {first.id}"),
        ("clear", OWNER, None),
        ("limits", OWNER, None),
    ]
    assert all(r.platform == "slack" and r.workspace == TEAM for r in await AuditRow.all())
    rows = {r.id: r for r in await GenerationRow.all()}
    assert rows[first.id].error_code == rows[second.id].error_code == "cancelled_by_admin"


async def test_a_ban_cancels_the_members_queued_jobs_and_refuses_their_next_imagine(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(slack_rt) as (base, _stop):  # no worker: the jobs stay queued
        client = SlackClient(http, f"{base}/slack/events", fake)
        people = members(client, fake)
        bob_jobs = [await people["bob"].imagine("bob's owl"), await people["bob"].imagine("bob's cat")]
        alice_job = await people["alice"].imagine("alice's fox")

        reply = await people["admin"].admin(f"ban {BOB} reason: spam duration: 2h jobs: cancel")
        assert (
            reply.startswith("Banned member UBOB for 2 h (until ") and "Cancelled 2 queued job(s)." in reply
        )

        messages = [fake.messages[job.message["message_id"]] for job in bob_jobs]
        await fake.wait_until(lambda: all(headline(m) == "Cancelled by an admin" for m in messages))
        for job in bob_jobs:
            updates = [c for c in fake.called("chat.update") if c.args["ts"] == job.message["message_id"]]
            assert updates and headline(updates[-1].args) == "Cancelled by an admin"

        posted = len(fake.called("chat.postMessage"))
        refused = await people["bob"].run("/imagine", "bob's third owl")
        assert refused.startswith(
            "*Not allowed to generate*: An admin has stopped you from making images here until "
        )
        assert len(fake.called("chat.postMessage")) == posted, "nothing public"

    rows = {r.id: r for r in await GenerationRow.all()}
    assert len(rows) == 3, "the refused /imagine wrote no row"
    for job in bob_jobs:
        assert (rows[job.id].state, rows[job.id].error_code) == (State.CANCELLED.value, "cancelled_by_admin")
    assert rows[alice_job.id].state == State.QUEUED.value
    assert await slack_rt.queue.position(alice_job.id, line="demo") == 1, "the jobs behind moved up"
    [ban] = await BanRow.all()
    assert (ban.platform, ban.workspace, ban.user_id, ban.reason, ban.created_by) == (
        "slack",
        TEAM,
        "UBOB",
        "spam",
        ADMIN,
    )
    assert ban.expires_at is not None and ban.expires_at - ban.created_at == timedelta(hours=2)
    [audit] = await AuditRow.all()
    assert (audit.action, audit.actor_id, audit.actor_name, audit.target, audit.reason) == (
        "ban",
        ADMIN,
        "admin",
        "UBOB",
        "spam",
    )
    assert audit.details == {"duration_s": 7200, "jobs": "cancel", "cancelled": [j.id for j in bob_jobs]}


async def test_a_blocked_term_refuses_a_look_alike_prompt_to_the_member_alone(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        people = members(client, fake)
        admin, alice = people["admin"], people["alice"]
        assert (await admin.admin("block dragon")).startswith("Blocked “dragon” as a whole word")
        # /genbot is escaped: "rock & roll" arrives as "rock &amp; roll" and is stored as typed
        reply = await admin.admin("block rock &amp; roll match: substring")
        assert reply.startswith("Blocked “rock &amp; roll” anywhere"), "escaped again for Slack to show"

        tries = {"alice": "a DRАGON in the snow", "bob": "a Dr4g0n at dawn", "carol": "ROCK & ROLL forever"}  # noqa: RUF001
        for who, prompt in tries.items():  # one each: three from one member would earn a timeout
            reply = await people[who].run("/imagine", prompt)
            assert reply.startswith(
                "*Prompt not allowed*: Your prompt contains a term this server does not"
            ), reply
        assert not fake.called("chat.postMessage"), "a refusal is said to the member alone"
        assert await GenerationRow.all().count() == 0

        fly = await alice.imagine("a dragonfly over a pond")  # a whole-word term spares other words
        assert fly.state == State.QUEUED.value
        stats = await admin.admin("stats")
        assert "refused: content_blocked 3" in stats

    public = " ".join(str(c.args) for c in fake.calls if c.method in ("chat.postMessage", "chat.update"))
    assert "dragonfly" in public
    assert "dragon " not in public.lower().replace("dragonfly", "") and "rock" not in public.lower()
    replies = " ".join(str(r["text"]) for r in fake.responses if not r["_to"].startswith(ADMIN))
    assert "dragon" not in replies.lower() and "rock" not in replies.lower(), "the term is not echoed"
    terms = {(t.term, t.whole_word) for t in await BlockedTermRow.all()}
    assert terms == {("dragon", True), ("rock & roll", False)}
    assert await audit_actions() == [("block", ADMIN, "dragon"), ("block", ADMIN, "rock & roll")]


async def test_a_paused_queue_refuses_imagine_until_it_is_resumed(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        people = members(client, fake)
        waiting = await people["bob"].imagine("bob's owl")
        assert (await people["admin"].admin("pause reason: maintenance")).startswith(
            "Paused the queue. 1 queued"
        )
        reply = await people["alice"].run("/imagine", "a fox")
        assert reply.startswith("*Queue paused*: An admin has paused the queue.")
        assert await GenerationRow.all().count() == 1
        assert (await people["admin"].admin("resume")).startswith("Resumed the queue: 1 queued")
        await people["alice"].imagine("a fox")

    assert (await GenerationRow.get(id=waiting.id)).state == State.QUEUED.value
    assert await slack_rt.queue.position(waiting.id, line="demo") == 1, "the held job kept its place"
    assert await audit_actions() == [("pause", ADMIN, None), ("resume", ADMIN, None)]
    assert [r.reason for r in await AuditRow.all().order_by("id")] == ["maintenance", None]


async def test_a_workspace_admin_pressing_cancel_on_a_members_job_is_audited(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    fake.roles = {OWNER: {"is_admin": True}}
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        people = members(client, fake)
        job = await people["bob"].imagine("bob's owl")
        ts = job.message["message_id"]

        await client.press_cancel(job.id, ts, user="UCAROL", name="carol")  # another plain member
        await fake.wait_until(lambda: len(fake.responses) == 1)
        assert fake.responses[0]["text"].startswith("*Not allowed*")
        assert await AuditRow.all().count() == 0

        status, _body, took = await client.press_cancel(job.id, ts, user=OWNER, name="owner")
        assert status == 200 and took < ACK_DEADLINE_S
        await fake.wait_until(lambda: len(fake.responses) == 2)
        assert fake.responses[1]["text"] == f"Cancelled job {job.id}."
        await fake.wait_until(lambda: headline(fake.messages[ts]) == "Cancelled by an admin")

    row = await GenerationRow.get(id=job.id)
    assert (row.state, row.error_code) == (State.CANCELLED.value, "cancelled_by_admin")
    [audit] = await AuditRow.all()
    assert (audit.action, audit.actor_id, audit.target, audit.details) == (
        "cancel",
        OWNER,
        f"job {job.id}",
        {"member": "UBOB"},
    )


async def test_users_info_is_asked_after_the_ack(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    """Slack's Web API answers slowly: the ack still comes at once, and the command follows."""
    fake.roles = {OWNER: {"is_owner": True}}
    fake.delay_s["users.info"] = 3.5
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        reply = await members(client, fake)["owner"].admin("pause")  # asserts the ack's deadline
    assert reply.startswith("Paused the queue")
    assert await audit_actions() == [("pause", OWNER, None)]
