"""The pure translations: a StatusView into Block Kit, and Slack payloads into requests."""

from __future__ import annotations

import pytest

from adapters.slack.blocks import error_text, escape, fallback_text, progress_bar, reply_text, status_blocks
from adapters.slack.payloads import action_target, command_request, help_text, plain_text, wants_help
from bot.commands import admin_specs
from bot.errors import ErrorCode, GenbotError, describe
from bot.models import Button, ErrorView, State, StatusView
from tests.image_jobs import every_spec

SPECS = every_spec()


def view(**changes: object) -> StatusView:
    base: dict[str, object] = {
        "job": 7,
        "state": State.RUNNING,
        "headline": "Generating · 60%",
        "prompt": "a <b>red</b> fox & <!channel>",
        "details": "512x512 · 20 steps · seed 1 · job 7",
        "requested_by": "alice",
        "progress": 0.6,
        "buttons": (Button("cancel", "Cancel", "danger"),),
    }
    base.update(changes)
    return StatusView(**base)  # type: ignore[arg-type]


def test_a_running_view_as_captured() -> None:
    assert status_blocks(view()) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Generating · 60%*", "verbatim": True}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "▰▰▰▰▰▰▱▱▱▱ 60%", "verbatim": True}]},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "> a &lt;b&gt;red&lt;/b&gt; fox &amp; &lt;!channel&gt;",
                "verbatim": True,
            },
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "512x512 · 20 steps · seed 1 · job 7 · asked by alice",
                    "verbatim": True,
                }
            ],
        },
        {
            "type": "actions",
            "block_id": "genbot-actions-7",
            "elements": [
                {
                    "type": "button",
                    "action_id": "genbot_cancel",
                    "text": {"type": "plain_text", "text": "Cancel"},
                    "value": "7",
                    "style": "danger",
                }
            ],
        },
    ]


def test_a_finished_view_shows_the_file_and_no_button() -> None:
    done = view(
        state=State.SUCCEEDED, headline="Done · took 4 s", progress=None, buttons=(), image_key="r/7.png"
    )
    blocks = status_blocks(done, image_file_id="F123", image_block_id="genbot-image-F123-1")
    assert blocks[-1] == {
        "type": "image",
        "block_id": "genbot-image-F123-1",
        "slack_file": {"id": "F123"},
        "alt_text": "a <b>red</b> fox & <!channel>",  # plain text: shown, never parsed
    }
    assert all(b["type"] != "actions" for b in blocks)
    fallback = status_blocks(done, image_elsewhere="The image is in the thread under this message.")
    assert fallback[-1]["elements"][0]["text"] == "The image is in the thread under this message."


def test_an_error_view_has_title_what_and_todo() -> None:
    failed = view(
        state=State.FAILED,
        headline="Took too long",
        progress=None,
        buttons=(),
        error=ErrorView("timed_out", "Took too long", "It was stopped.", "Try fewer steps."),
    )
    assert status_blocks(failed)[-1]["text"]["text"] == "*Took too long*\nIt was stopped.\nTry fewer steps."


@pytest.mark.parametrize(
    ("progress", "bar"),
    [(0.0, "▱▱▱▱▱▱▱▱▱▱ 0%"), (0.04, "▱▱▱▱▱▱▱▱▱▱ 4%"), (0.55, "▰▰▰▰▰▰▱▱▱▱ 55%"), (1.0, "▰▰▰▰▰▰▰▰▰▰ 100%")],
)
def test_progress_bar(progress: float, bar: str) -> None:
    assert progress_bar(progress) == bar


def test_every_mention_form_is_escaped() -> None:
    for mention in ("<!channel>", "<!here>", "<!everyone>", "<@U123>", "<#C1>", "<!subteam^S1>"):
        assert "<" not in escape(mention) and ">" not in escape(mention)
    assert fallback_text(view()) == "Generating · 60%: a &lt;b&gt;red&lt;/b&gt; fox &amp; &lt;!channel&gt;"


def form(command: str, text: str) -> dict[str, str]:
    return {
        "command": command,
        "text": text,
        "team_id": "T1",
        "user_id": "U1",
        "user_name": "alice",
        "channel_id": "C1",
    }


def test_slash_commands_into_requests() -> None:
    request = command_request(form("/imagine", "a red fox size: 768x768"), SPECS)
    assert (request.name, request.options, request.channel) == (
        "imagine",
        {"prompt": "a red fox", "size": "768x768"},
        "C1",
    )
    assert (request.actor.platform, request.actor.workspace, request.actor.user_id) == ("slack", "T1", "U1")
    assert request.actor.display_name == "alice"
    assert not request.actor.is_admin, "decided by the app after the ack, never by the payload"
    assert command_request(form("/genbot", "cancel 12"), SPECS).options == {"job": "12"}
    assert command_request(form("/genbot", "cancel"), SPECS).name == "cancel"
    assert command_request(form("/genbot", "queue"), SPECS).name == "queue"
    with pytest.raises(GenbotError):
        command_request(form("/genbot", "imagine a fox"), SPECS)
    with pytest.raises(GenbotError):
        command_request(form("/genbot", "frobnicate"), SPECS)
    assert wants_help(form("/genbot", "")) and wants_help(form("/genbot", " Help "))
    assert wants_help(form("/genbot", "admin")) and wants_help(form("/genbot", "admin help"))
    assert not wants_help(form("/imagine", "")) and not wants_help(form("/genbot", "admin bans"))
    assert "/genbot status job" in help_text(SPECS)


def test_admin_commands_into_requests_named_by_their_key() -> None:
    """What Slack sends with should_escape: a picked member as <@U..|name>, & < > as entities."""
    text = "admin ban <@U2|bob> reason: spam &amp; &lt;scam&gt; links <https://x.test|x.test> duration: 2h jobs: keep"
    request = command_request(form("/genbot", text), SPECS)
    assert request.name == "admin ban"
    assert request.options == {
        "member": "<@U2|bob>",
        "reason": "spam & <scam> links x.test",
        "duration": "2h",
        "jobs": "keep",
    }
    block = command_request(form("/genbot", "Admin block rock &amp; roll match: substring"), SPECS)
    assert (block.name, block.options) == ("admin block", {"term": "rock & roll", "match": "substring"})
    assert command_request(form("/genbot", "admin cancel 12 reason: stuck"), SPECS).name == "admin cancel"
    assert command_request(form("/genbot", "cancel 12"), SPECS).name == "cancel"
    assert command_request(form("/genbot", "admin unban UB0B"), SPECS).options == {"member": "UB0B"}
    for spec in admin_specs():
        assert command_request(form("/genbot", f"admin {spec.name}"), SPECS).name == spec.key
    # a member typed as plain text (not picked, so no id) is refused before anything happens
    for member in ("@bob", "bob", "<#C1|general>"):
        with pytest.raises(GenbotError, match="Mention the member"):
            command_request(form("/genbot", f"admin ban {member}"), SPECS)
    with pytest.raises(GenbotError, match="has no command"):
        command_request(form("/genbot", "admin frobnicate"), SPECS)


def test_plain_text_undoes_slacks_escaping() -> None:
    assert plain_text("a &lt;b&gt; &amp;lt; c") == "a <b> &lt; c"
    assert plain_text("hi <@U1|ana> in <#C1|general>, <!here> <!subteam^S1|@team> <https://x.test>") == (
        "hi @ana in #general, @here @team https://x.test"
    )


def test_help_lists_the_admin_commands_in_a_block_of_their_own() -> None:
    text = help_text(SPECS)
    members, _, admins = text.partition("*Admins:*")
    assert "/genbot queue" in members and "/genbot admin" not in members
    for spec in admin_specs():
        assert f"`/genbot admin {spec.name}" in admins
    assert "`/genbot admin ban member [reason: ...] [duration: ...] [jobs: cancel|keep]`" in admins
    assert "`/genbot admin block term [match: word|substring]`" in admins


def test_the_cores_commands_are_named_as_typed_on_slack() -> None:
    assert reply_text("Run /admin clear confirm: 1234. /queue lists yours; /imagine a fox") == (
        "Run /genbot admin clear confirm: 1234. /genbot queue lists yours; /imagine a fox"
    )
    assert "/genbot queue to see your jobs" in error_text(describe(ErrorCode.NOT_FOUND))
    only = error_text(
        describe(ErrorCode.NOT_ALLOWED, "Only admins can use /admin ban; you are not an admin here.")
    )
    assert only == (
        "*Not allowed*: Only admins can use /genbot admin ban; you are not an admin here. "
        "Ask the member or an admin."
    )


def test_a_button_press_into_actor_and_job() -> None:
    body = {
        "team": {"id": "T1"},
        "user": {"id": "U2", "username": "bob"},
        "channel": {"id": "C1"},
        "actions": [{"action_id": "genbot_cancel", "value": "41"}],
    }
    actor, job, channel = action_target(body)
    assert (actor.workspace, actor.user_id, actor.display_name, actor.is_admin) == ("T1", "U2", "bob", False)
    assert (job, channel) == (41, "C1")
    body["actions"] = [{"value": "nope"}]
    assert action_target(body)[1] is None
