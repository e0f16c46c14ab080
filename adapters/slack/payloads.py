"""Slack payloads into genbot's requests: slash-command form fields and block actions. Pure.

- ``/imagine a red fox size: 768x768`` reads like the local chat's ``/imagine`` (``parse_text``).
- ``/genbot queue``, ``/genbot cancel [job]``, ``/genbot status job`` are the other commands, and
  ``/genbot admin <name> ...`` the admin commands (``/admin <name>`` elsewhere); ``/genbot`` alone,
  ``/genbot help`` or ``/genbot admin`` is answered by the adapter with :func:`help_text`.

``/genbot`` is registered with ``should_escape: true``, so Slack sends its text escaped (``&amp;``,
``&lt;``, ``&gt;``) and turns a picked member into ``<@U123|ana>``, a channel into ``<#C1|name>`` and
a link into ``<https://...|label>``. A member option keeps that form (the core reads the id from
it); every other option is turned back into the text as the member typed it (:func:`plain_text`).

A file option (``attachment``, ``image``: Slack's slash commands carry no files) is a file id,
the id in a file's link, or ``latest`` (the member's newest file in the channel); a required one
the member left out is ``latest`` (see :mod:`adapters.slack.files`). Anything else is refused
before the ack, naming the option.

Who is an admin is not decided here: the actors come out with ``is_admin=False``, and the app
resolves it (:class:`adapters.slack.admins.SlackAdmins`) after the ack.

Ids must have Slack's shape (a kind letter, then upper-case letters and digits: ``T0123``,
``U0123``, ``C0123``), or the request is refused as malformed; display names are cleaned
(:func:`bot.text.clean_name`). In HTTP mode, :func:`request_body` checks a whole request before
Bolt reads it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from adapters.slack.blocks import ACTION_IDS
from adapters.slack.files import LATEST, file_ref
from bot.attachments import ATTACHMENT_TYPES
from bot.commands import ADMIN, CommandSpec, parse_text
from bot.errors import ErrorCode, GenbotError
from bot.models import Actor, CommandRequest
from bot.text import clean_name, shown

PLATFORM = "slack"
#: genbot's two slash commands in its manifest (a plugin's command also works as ``/genbot <name>``).
IMAGINE = "/imagine"
GENBOT = "/genbot"
HELP = "help"

_MARKUP = re.compile(r"<([^<>]*)>")
#: A member option: Slack's escaped mention (``<@U123|ana>``, ``<@W123>``) or a bare user id.
_MEMBER = re.compile(r"^(?:<@[UW][A-Z0-9]+(?:\|[^<>]*)?>|[UW][A-Z0-9]{2,})$")
#: Slack's ids: workspaces (``T``; ``E`` for an organisation), members (``U``, ``W``), channels
#: (``C``, ``G``, ``D``). At most 32 characters (the database keeps 64).
TEAM_ID = re.compile(r"[TE][A-Z0-9]{1,31}")
USER_ID = re.compile(r"[UW][A-Z0-9]{1,31}")
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{1,31}")
#: A button's value: a job number, in ASCII digits.
_JOB = re.compile(r"[0-9]{1,16}")
#: What genbot answers a request it cannot read (an id of the wrong shape, a field of the wrong type).
MALFORMED = "Slack sent a request genbot cannot read."


class MalformedRequest(Exception):
    """A request to the Request URL that genbot does not take; ``sentence`` says so (HTTP 400)."""

    def __init__(self, sentence: str = MALFORMED) -> None:
        super().__init__(sentence)
        self.sentence = sentence


def malformed() -> GenbotError:
    return GenbotError(
        ErrorCode.INVALID_OPTION, MALFORMED, todo="Try again; if it keeps happening, tell an admin."
    )


def _id(value: object, shape: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not shape.fullmatch(value):
        raise malformed()
    return value


def actor(team_id: object, user_id: object, user_name: object) -> Actor:
    """A Slack member, not yet known to be an admin. Raises :class:`GenbotError` (malformed) for
    ids that are not Slack's; the name is cleaned, and is the id when nothing visible is left."""
    team, user = _id(team_id, TEAM_ID), _id(user_id, USER_ID)
    name = clean_name(user_name, user) if isinstance(user_name, str) else user
    return Actor(PLATFORM, team, user, name)


def plain_text(text: str) -> str:
    """Slack's escaped text as the member typed it: ``<@U1|ana>`` -> ``@ana``, ``<#C1|general>`` ->
    ``#general``, ``<https://x.test|x.test>`` -> ``x.test``, ``<!here>`` -> ``@here``, and the
    entities ``&lt;``, ``&gt;``, ``&amp;`` -> ``<``, ``>``, ``&``."""

    def unwrap(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith(("@", "#")):
            return target[0] + label if label else target
        if target.startswith("!"):
            return label or "@" + target[1:].split("^")[0]
        return label or target

    unwrapped = _MARKUP.sub(unwrap, text)
    return unwrapped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def wants_help(command: Mapping[str, Any]) -> bool:
    """``/genbot`` with no text, ``/genbot help``, ``/genbot admin`` or ``/genbot admin help``."""
    if command.get("command") != GENBOT:
        return False
    words = str(command.get("text") or "").lower().split()
    return words in ([], [HELP], [ADMIN], [ADMIN, HELP])


def _genbot_options(spec: CommandSpec, options: dict[str, str]) -> dict[str, str]:
    """``/genbot``'s escaped option values: members checked and kept as mentions, the rest
    unescaped. Raises :class:`GenbotError` for a member that is not a mention or an id."""
    result: dict[str, str] = {}
    for name, value in options.items():
        option = spec.option(name)
        if option is not None and option.type == "member":
            if not _MEMBER.match(value.strip()):
                raise GenbotError(
                    ErrorCode.INVALID_OPTION,
                    f"Mention the member for {name}: type @ and pick them from Slack's list "
                    "(or give their member id, U...).",
                )
            result[name] = value.strip()
        elif option is not None and option.type in ATTACHMENT_TYPES:
            result[name] = value  # a link as Slack escapes it: read by file_options
        else:
            result[name] = plain_text(value)
    return result


def file_options(spec: CommandSpec, options: dict[str, str]) -> dict[str, str]:
    """``options`` with each file option as the reference the responder fetches: a file id, or
    ``latest`` (a required file option left out is ``latest``; an optional one stays out).
    Raises :class:`GenbotError` for a value that names no Slack file."""
    result = dict(options)
    for option in spec.options:
        if option.type not in ATTACHMENT_TYPES:
            continue
        value = result.get(option.name, "")
        if not value.strip():
            if option.required:
                result[option.name] = LATEST
            else:
                result.pop(option.name, None)
            continue
        ref = file_ref(value)
        if ref is None:
            raise GenbotError(
                ErrorCode.INVALID_OPTION,
                f"{option.name.capitalize()} takes a Slack file: its link or id (F...), or nothing for "
                "the newest file you shared in this channel.",
            )
        result[option.name] = ref
    return result


def command_request(command: Mapping[str, Any], specs: tuple[CommandSpec, ...]) -> CommandRequest:
    """Translate a slash command's form fields; the request's name is the command's key
    (``imagine``, ``queue``, ``admin ban``). Raises :class:`GenbotError` (invalid_option) when the
    text does not parse or an id is not Slack's; nothing has happened then."""
    text = command.get("text") or ""
    if not isinstance(text, str):
        raise malformed()
    name = command.get("command")
    if name == IMAGINE:  # its manifest entry has should_escape: false: the prompt as typed
        spec, options = parse_text(f"{name} {text}", specs)
    elif name != GENBOT and any(not spec.group and f"/{spec.name}" == name for spec in specs):
        # A plugin's command of its own (see adapters.slack.manifest): escaped, like /genbot.
        spec, options = parse_text(f"{name} {text}", specs)
        options = _genbot_options(spec, options)
    elif name == GENBOT:
        spec, options = parse_text("/" + text, tuple(s for s in specs if s.key != "imagine"))
        options = _genbot_options(spec, options)
    else:
        raise GenbotError(ErrorCode.INVALID_OPTION, f"genbot does not know the command {shown(str(name))}.")
    options = file_options(spec, options)
    who = actor(command.get("team_id"), command.get("user_id"), command.get("user_name") or "")
    channel = _id(command.get("channel_id"), CHANNEL_ID)
    return CommandRequest(actor=who, channel=channel, name=spec.key, options=options)


def _object(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed()
    return value


def action_target(body: Mapping[str, Any]) -> tuple[Actor, int | None, str]:
    """From a block-action payload: who pressed, the job number (None if the value is not one, in
    ASCII digits), and the channel of the message. Raises :class:`GenbotError` (malformed) for a
    payload of the wrong shape or with ids that are not Slack's."""
    user, team, channel = _object(body.get("user")), _object(body.get("team")), _object(body.get("channel"))
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise malformed()
    value = actions[0].get("value")
    who = actor(
        team.get("id") or user.get("team_id"), user.get("id"), user.get("username") or user.get("name")
    )
    job = int(value) if isinstance(value, str) and _JOB.fullmatch(value) else None
    return who, job, _id(channel.get("id"), CHANNEL_ID)


#: A slash command's form fields as Slack documents them: genbot hands Bolt these and no others.
COMMAND_FIELDS = frozenset(
    {
        "token",
        "team_id",
        "team_domain",
        "enterprise_id",
        "enterprise_name",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "response_url",
        "trigger_id",
        "api_app_id",
        "is_enterprise_install",
    }
)
#: A button press's fields that genbot or Bolt read, with the types Slack sends them in.
ACTION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "type": str,
    "team": (dict, type(None)),
    "user": dict,
    "channel": dict,
    "actions": list,
    "response_url": str,
    "api_app_id": str,
    "token": str,
    "trigger_id": str,
    "container": dict,
    "enterprise": (str, dict, type(None)),
    "is_enterprise_install": bool,
}
_ONLY_OURS = "genbot takes its own slash commands and button presses only."
#: The ``action_id`` of genbot's buttons.
BUTTON_ACTION_IDS = frozenset(ACTION_IDS.values())


def slash_commands(specs: tuple[CommandSpec, ...]) -> frozenset[str]:
    """The slash commands genbot answers: ``/genbot``, and each top-level command as its own
    (``/imagine``; a plugin's ``/ask``, once the app's manifest has it too)."""
    return frozenset({GENBOT, *(f"/{spec.name}" for spec in specs if not spec.group)})


def request_body(
    text: str, content_type: str | None, commands: frozenset[str] = frozenset({IMAGINE, GENBOT})
) -> dict[str, Any]:
    """The body of a (correctly signed) request to genbot's Request URL, checked before Bolt reads
    it, with only the fields Slack sends: one of genbot's slash commands (its form fields,
    :data:`COMMAND_FIELDS`), a press of one of its buttons (the ``payload``'s
    :data:`ACTION_FIELDS`, each of its type), or Slack's ``ssl_check``. Ids must have Slack's
    shape. Raises :class:`MalformedRequest` for anything else (a JSON body too: genbot subscribes
    to no events), so that Bolt, which assumes Slack's shapes, never fails on a request.

    The app hands Bolt this body in place of Bolt's own parse, which takes any form whose text
    contains the word "payload" for a button press and reads it as empty (``/imagine a payload of
    apples`` never reached genbot)."""
    if content_type == "application/json" or text.startswith("{"):
        raise MalformedRequest(_ONLY_OURS)
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in form:
        try:
            payload = json.loads(form["payload"])
        except (ValueError, RecursionError):
            raise MalformedRequest() from None
        if not isinstance(payload, dict) or payload.get("type") != "block_actions":
            raise MalformedRequest(_ONLY_OURS)
        return _block_actions(payload)
    if form.get("ssl_check") == "1":
        return {"ssl_check": "1"}
    if form.get("command") not in commands:
        raise MalformedRequest(_ONLY_OURS)
    try:
        actor(form.get("team_id"), form.get("user_id"), form.get("user_name") or "")
        _id(form.get("channel_id"), CHANNEL_ID)
    except GenbotError:
        raise MalformedRequest() from None
    return {name: value for name, value in form.items() if name in COMMAND_FIELDS}


def _block_actions(payload: dict[str, Any]) -> dict[str, Any]:
    kept = {name: payload[name] for name in ACTION_FIELDS if name in payload}
    for name, value in kept.items():
        if not isinstance(value, ACTION_FIELDS[name]):
            raise MalformedRequest()
    try:
        action_target(kept)
    except GenbotError:
        raise MalformedRequest() from None
    if not all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in kept["actions"]):
        raise MalformedRequest()
    if kept["actions"][0]["action_id"] not in BUTTON_ACTION_IDS:
        raise MalformedRequest(_ONLY_OURS)
    return kept


def _usage(spec: CommandSpec) -> str:
    """``/genbot admin ban member [reason: ...] [duration: ...] [jobs: cancel|keep]``."""
    return f"/genbot {spec.key} {options_usage(spec)}".rstrip()


def options_usage(spec: CommandSpec) -> str:
    """``member [reason: ...] [duration: ...] [jobs: cancel|keep]``: the first required option (or
    the only one) is typed bare, the others after their ``name:``. A file option is shown as one
    to leave out (``[image: file id or link]``: left out, the newest file shared is taken)."""
    bare = next((o for o in spec.options if o.required), None) or (
        spec.options[0] if len(spec.options) == 1 else None
    )
    parts = []
    for option in spec.options:
        shown = "|".join(option.choices) if option.choices else "..."
        if option.type in ATTACHMENT_TYPES:
            parts.append(f"[{option.name}: file id or link]")
        elif option is bare:
            parts.append(option.name if option.required else f"[{option.name}]")
        else:
            parts.append(f"[{option.name}: {shown}]")
    return " ".join(parts)


def help_text(specs: tuple[CommandSpec, ...]) -> str:
    """What ``/genbot help`` answers: the member commands, then the admin commands in a block of
    their own (listed for everyone; only admins may run them, as the server checks)."""
    lines = ["*genbot* runs jobs: images and whatever its plugins do. The commands:"]
    for spec in specs:
        if spec.admin:
            continue
        if spec.name == "imagine":
            lines.append(
                "• `/imagine prompt [negative: text] [size: WxH] [steps: N] [seed: N]`: " + spec.description
            )
        else:  # a plugin's command is reachable as /genbot <name> without a manifest entry of its own
            lines.append(f"• `{_usage(spec)}`: {spec.description}")
    lines.append("• `/genbot help`: this list")
    admin = [spec for spec in specs if spec.admin]
    if admin:
        lines.append("")
        lines.append("*Admins:* (workspace admins and owners, and the members genbot is configured with)")
        lines += [f"• `{_usage(spec)}`: {spec.description}" for spec in admin]
    return "\n".join(lines)
