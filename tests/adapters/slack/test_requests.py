"""What reaches genbot's Request URL in HTTP mode: the signature checked before Bolt (and logged
without the body), the shape of every request checked before Bolt reads it, and the payload
translation with hostile ids and numbers. Pure functions with captured payloads, then the real Bolt
app behind its HTTP server against the fake Web API."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from slack_bolt.request.async_request import AsyncBoltRequest

from adapters.slack.app import SlackBot
from adapters.slack.payloads import (
    COMMAND_FIELDS,
    MalformedRequest,
    action_target,
    command_request,
    request_body,
)
from bot.app import Runtime
from bot.commands import CommandSpec, OptionSpec
from bot.errors import GenbotError
from storage.models import GenerationRow
from tests.adapters.slack.conftest import CHANNEL, SECRET, SlackClient, attached
from tests.adapters.slack.fake_slack import TEAM, FakeSlack
from tests.image_jobs import every_spec
from tests.stack import bot_running

SPECS = every_spec()

#: A slash command as Slack sends it (captured shape, ids changed).
COMMAND = {
    "token": "legacy",
    "team_id": "T0001",
    "team_domain": "test",
    "channel_id": "C0001",
    "channel_name": "general",
    "user_id": "UALICE",
    "user_name": "alice",
    "command": "/imagine",
    "text": "a red fox",
    "api_app_id": "A0001",
    "is_enterprise_install": "false",
    "response_url": "https://hooks.slack.com/commands/T0001/1/abc",
    "trigger_id": "1.2.abc",
}
#: A Cancel press as Slack sends it.
PRESS: dict[str, Any] = {
    "type": "block_actions",
    "user": {"id": "UBOB", "username": "bob", "name": "bob", "team_id": "T0001"},
    "api_app_id": "A0001",
    "token": "legacy",
    "container": {"type": "message", "message_ts": "1700000001.000100", "channel_id": "C0001"},
    "trigger_id": "1.2.abc",
    "team": {"id": "T0001", "domain": "test"},
    "enterprise": None,
    "is_enterprise_install": False,
    "channel": {"id": "C0001", "name": "general"},
    "message": {"type": "message", "ts": "1700000001.000100", "text": ""},
    "state": {"values": {}},
    "response_url": "https://hooks.slack.com/actions/T0001/1/abc",
    "actions": [
        {
            "type": "button",
            "action_id": "genbot_cancel",
            "block_id": "genbot-actions-12",
            "value": "12",
            "action_ts": "1700000002.000200",
        }
    ],
}


def form(**changes: str) -> str:
    return urlencode({**COMMAND, **changes})


def press(**changes: Any) -> str:
    return urlencode({"payload": json.dumps({**PRESS, **changes})})


def test_captured_requests_pass_with_only_slacks_fields() -> None:
    body = request_body(form(extra="x", authorizations="[1]"), "application/x-www-form-urlencoded")
    assert set(body) == set(COMMAND) and set(body) <= COMMAND_FIELDS
    payload = request_body(press(view="x", event="not an event", authorizations=3), None)
    assert payload["actions"][0]["value"] == "12"
    assert "event" not in payload and "authorizations" not in payload and "view" not in payload
    assert request_body("ssl_check=1&token=x", None) == {"ssl_check": "1"}


def test_a_prompt_with_the_word_payload_is_a_command() -> None:
    """Bolt's own parser reads any form containing "payload" as a button press, and this one as
    empty; genbot's parse is the one Bolt is given."""
    text = form(text="a payload of apples")
    assert AsyncBoltRequest(body=text).body == {}  # Bolt alone
    assert request_body(text, None)["text"] == "a payload of apples"


@pytest.mark.parametrize(
    "body",
    [
        '{"type": "url_verification", "challenge": "x"}',
        "payload=" + "[" * 5000,
        "payload=not+json",
        "payload=" + json.dumps({"type": "view_submission"}),
        "payload=" + json.dumps([1, 2]),
        press(user="UBOB"),
        press(user={"id": 5}),
        press(team=7),
        press(team={"id": "t0001"}),
        press(channel={"id": "C1\x00"}),
        press(actions=[]),
        press(actions="genbot_cancel"),
        press(actions=[{"value": "12"}]),
        press(actions=[["x"]]),
        press(enterprise=5),
        press(response_url=["x"]),
        press(is_enterprise_install="yes"),
        form(team_id="T\u0661"),
        form(user_id="ualice"),
        form(user_id="U" + "A" * 40),
        form(channel_id="#general"),
        "token=x&text=no+command",
        form(command="/other"),
        press(actions=[{"action_id": "someone_elses", "value": "1"}]),
        "",
    ],
)
def test_what_slack_does_not_send_is_malformed(body: str) -> None:
    with pytest.raises(MalformedRequest) as caught:
        request_body(body, None)
    assert caught.value.sentence.endswith(".") and "\n" not in caught.value.sentence


def test_ids_must_have_slacks_shape() -> None:
    for bad in ({"user_id": ""}, {"user_id": "U1 U2"}, {"team_id": None}, {"channel_id": "C1\n"}):
        with pytest.raises(GenbotError) as caught:
            command_request({**COMMAND, **bad}, SPECS)
        assert caught.value.text.what == "Slack sent a request genbot cannot read."
    request = command_request({**COMMAND, "user_name": "al\x00ice\u200b\n" + "e" * 200}, SPECS)
    assert request.actor.display_name.startswith("alice\u200b eee") and len(request.actor.display_name) == 80
    assert command_request({**COMMAND, "user_name": "\u3164"}, SPECS).actor.display_name == "UALICE"


@pytest.mark.parametrize("value", ["\u0663", "\u00b2", "1_2", "+12", "12.0", "9" * 40, "", None, 12])
def test_a_button_value_is_a_job_only_in_ascii_digits(value: Any) -> None:
    actions = [{**PRESS["actions"][0], "value": value}]
    assert action_target({**PRESS, "actions": actions})[1] is None


# -- over HTTP, through the real Bolt app --------------------------------------------------------


async def test_a_bad_signature_is_one_log_line_without_the_body(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        body = client.command_body("/imagine", "a forged fox with a secret")
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            assert (await client.post(body, secret="not-the-secret"))[0] == 401
            assert (await client.post(body, timestamp=int(time.time()) - 6 * 60))[0] == 401
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.name for r in lines] == ["adapters.slack.app", "adapters.slack.app"]
    for record in caplog.records:  # DEBUG included: Bolt never saw these requests
        text = record.getMessage()
        assert "forged" not in text and "/respond/" not in text and "v0=" not in text
    assert await GenerationRow.all().count() == 0


async def test_bolts_own_refusal_logs_no_body(caplog: pytest.LogCaptureFixture, fake: FakeSlack) -> None:
    """Bolt's verification stays on behind genbot's: its refusal line keeps no body either."""
    bot = SlackBot(
        handler=None,  # type: ignore[arg-type]  # the request never reaches a listener
        chat=None,  # type: ignore[arg-type]
        specs=SPECS,
        bot_token="xoxb-test",
        signing_secret=SECRET,
        api_base_url=fake.api_url,
        admins=None,  # type: ignore[arg-type]
    )
    body = form(text="secret prompt")
    headers = {"x-slack-request-timestamp": str(int(time.time())), "x-slack-signature": "v0=" + "0" * 64}
    with caplog.at_level(logging.INFO):
        response = await bot.app.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
    assert response.status == 401
    refused = [r.getMessage() for r in caplog.records if "signature" in r.getMessage()]
    assert refused == ["Invalid request signature detected (request withheld)"]
    assert not any(
        "secret prompt" in r.getMessage() or "hooks.slack.com" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": "\u0661\u0667\u0660\u0660", "X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": "1" * 40, "X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": "1700000000", "X-Slack-Signature": "v0=é"},
        {"X-Slack-Request-Timestamp": "1700000000"},
        {},
    ],
)
async def test_hostile_signature_headers_are_401_not_500(
    slack_rt: Runtime, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with bot_running(slack_rt) as (base, _stop):
        headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        async with http.post(f"{base}/slack/events", data=form().encode(), headers=headers) as resp:
            assert resp.status == 401
            assert await resp.json() == {"ok": False, "error": "The request's signature is not valid."}


async def test_signed_requests_of_the_wrong_shape_get_400_and_change_nothing(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        for body in (press(team=7), form(user_id="nobody"), '{"type": "event_callback"}', "payload=[[["):
            status, text, _took = await client.post(body)
            assert status == 400, body
            assert json.loads(text)["ok"] is False
    assert await GenerationRow.all().count() == 0
    assert not fake.called("chat.postMessage") and not fake.responses


async def test_invalid_utf8_with_a_good_signature_is_400(
    slack_rt: Runtime, http: aiohttp.ClientSession
) -> None:
    raw = form().encode() + b"%20\xff\xfe"
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        # what Slack's signature would be (the SDK signs text only)
        "X-Slack-Signature": "v0="
        + hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + raw, hashlib.sha256).hexdigest(),
    }
    async with (
        bot_running(slack_rt) as (base, _stop),
        http.post(f"{base}/slack/events", data=raw, headers=headers) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"] == "The request is not UTF-8."


async def test_a_prompt_about_a_payload_is_queued(
    slack_rt: Runtime, fake: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with bot_running(slack_rt) as (base, _stop):
        client = SlackClient(http, f"{base}/slack/events", fake)
        assert (await client.command("/imagine", "a payload of apples"))[0] == 200
        row = await attached(prompt="a payload of apples")
    assert row.channel == CHANNEL and row.workspace == TEAM


def test_a_plugin_command_of_its_own_is_read_escaped_like_genbot() -> None:
    """``/hug`` (from ``genbot slack manifest``, ``should_escape: true``): a picked member arrives
    as ``<@U…|name>`` and reaches the core as it is (the core reads the id); text is unescaped."""
    specs = (
        *every_spec(),
        CommandSpec(
            "hug",
            "Hug",
            (OptionSpec("who", "member", "Who", required=True), OptionSpec("note", "string", "N")),
        ),
    )
    body = {"command": "/hug", "text": "<@U0123ABC|bob> note: fish &amp; chips", "team_id": TEAM}
    request = command_request(
        {**body, "user_id": "UALICE", "user_name": "alice", "channel_id": CHANNEL}, specs
    )
    assert (request.name, request.options) == ("hug", {"who": "<@U0123ABC|bob>", "note": "fish & chips"})
    with pytest.raises(GenbotError):
        command_request({**body, "text": "bob", "user_id": "UALICE", "channel_id": CHANNEL}, specs)
