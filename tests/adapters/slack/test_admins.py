"""Who is an admin on Slack, against the fake Web API: configured ids without a call, workspace
admins and owners per ``users.info``, answers kept per (team, user) for the TTL, and a failed
lookup is "not an admin"."""

from __future__ import annotations

import asyncio
import logging

import pytest

from adapters.slack.adapter import make_client
from adapters.slack.admins import SlackAdmins
from tests.adapters.slack.fake_slack import TEAM, TOKEN, FakeSlack


class Clock:
    """A clock the test moves by hand: the TTL is tested without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admins(
    fake: FakeSlack, *, configured: tuple[str, ...] = (), ttl_s: float = 300, clock: Clock
) -> SlackAdmins:
    return SlackAdmins(make_client(TOKEN, fake.api_url), configured, ttl_s=ttl_s, clock=clock)


async def test_workspace_admins_and_owners_are_admins_and_members_are_not(fake: FakeSlack) -> None:
    fake.roles = {"UADM": {"is_admin": True}, "UOWN": {"is_owner": True}, "UPRI": {"is_primary_owner": True}}
    directory = admins(fake, configured=("UCONF",), clock=Clock())
    assert await directory.is_admin(TEAM, "UCONF")
    assert not fake.called("users.info"), "a configured id needs no lookup"
    for user in ("UADM", "UOWN", "UPRI"):
        assert await directory.is_admin(TEAM, user), user
    assert not await directory.is_admin(TEAM, "UMEMBER")
    asked = [c.args["user"] for c in fake.called("users.info")]
    assert asked == ["UADM", "UOWN", "UPRI", "UMEMBER"]


async def test_answers_are_kept_per_team_and_user_for_the_ttl(fake: FakeSlack) -> None:
    fake.roles = {"UOWN": {"is_owner": True}}
    clock = Clock()
    directory = admins(fake, ttl_s=300, clock=clock)
    for _ in range(5):
        assert await directory.is_admin(TEAM, "UOWN")
        assert not await directory.is_admin(TEAM, "UMEMBER")
    assert len(fake.called("users.info")) == 2
    assert await directory.is_admin("T0002", "UOWN")  # another workspace: its own entry
    assert len(fake.called("users.info")) == 3

    clock.now += 299
    fake.roles = {}  # demoted in Slack: seen once the kept answer expires, not before
    assert await directory.is_admin(TEAM, "UOWN")
    assert len(fake.called("users.info")) == 3
    clock.now += 2
    assert not await directory.is_admin(TEAM, "UOWN")
    assert len(fake.called("users.info")) == 4


async def test_simultaneous_lookups_of_one_member_share_one_call(fake: FakeSlack) -> None:
    fake.roles = {"UOWN": {"is_owner": True}}
    directory = admins(fake, clock=Clock())
    # the first lookup waits for Slack's answer while the other nine start
    answers = await asyncio.gather(*(directory.is_admin(TEAM, "UOWN") for _ in range(10)))
    assert answers == [True] * 10
    assert len(fake.called("users.info")) == 1


async def test_a_failed_lookup_is_not_an_admin_logged_and_not_kept(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake.roles = {"UOWN": {"is_owner": True}}
    fake.user_errors = {"UOWN": "user_not_found"}
    directory = admins(fake, clock=Clock())
    with caplog.at_level(logging.WARNING, "adapters.slack.admins"):
        assert not await directory.is_admin(TEAM, "UOWN")
    assert "users.info for UOWN" in caplog.text and "user_not_found" in caplog.text
    fake.user_errors = {}
    assert await directory.is_admin(TEAM, "UOWN"), "a failure is not kept: the next command asks again"
    assert len(fake.called("users.info")) == 2

    # an unreachable Slack is a failure too
    broken = SlackAdmins(make_client(TOKEN, "http://127.0.0.1:9/api/"), (), ttl_s=300, clock=Clock())
    with caplog.at_level(logging.WARNING, "adapters.slack.admins"):
        assert not await broken.is_admin(TEAM, "UOWN")


async def test_deactivated_and_external_accounts_are_not_admins(fake: FakeSlack) -> None:
    fake.roles = {
        "UGONE": {"is_admin": True, "deleted": True},
        "UEXT": {"is_owner": True, "is_stranger": True},
    }
    directory = admins(fake, clock=Clock())
    assert not await directory.is_admin(TEAM, "UGONE")
    assert not await directory.is_admin(TEAM, "UEXT")


async def test_ttl_zero_asks_every_time(fake: FakeSlack) -> None:
    directory = admins(fake, ttl_s=0, clock=Clock())
    for _ in range(3):
        assert not await directory.is_admin(TEAM, "UMEMBER")
    assert len(fake.called("users.info")) == 3
