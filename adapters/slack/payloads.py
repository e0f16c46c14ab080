"""Slack payloads into genbot's requests: slash-command form fields and block actions. Pure.

- ``/imagine a red fox size: 768x768`` reads like the local chat's ``/imagine`` (``parse_text``).
- ``/genbot queue``, ``/genbot cancel [job]``, ``/genbot status job`` are the other commands, and
  ``/genbot admin <name> ...`` the admin commands (``/admin <name>`` elsewhere); ``/genbot`` alone,
  ``/genbot help`` or ``/genbot admin`` is answered by the adapter with :func:`help_text`.

``/genbot`` is registered with ``should_escape: true``, so Slack sends its text escaped (``&amp;``,
``&lt;``, ``&gt;``) and turns a picked member into ``<@U123|ana>``, a channel into ``<#C1|name>`` and
a link into ``<https://...|label>``. A member option keeps that form (the core reads the id from
it); every other option is turned back into the text as the member typed it (:func:`plain_text`).

Who is an admin is not decided here: the actors come out with ``is_admin=False``, and the app
resolves it (:class:`adapters.slack.admins.SlackAdmins`) after the ack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.commands import ADMIN, CommandSpec, parse_text
from bot.errors import ErrorCode, GenbotError
from bot.models import Actor, CommandRequest

PLATFORM = "slack"
IMAGINE = "/imagine"
GENBOT = "/genbot"
HELP = "help"

_MARKUP = re.compile(r"<([^<>]*)>")
#: A member option: Slack's escaped mention (``<@U123|ana>``, ``<@W123>``) or a bare user id.
_MEMBER = re.compile(r"^(?:<@[UW][A-Z0-9]+(?:\|[^<>]*)?>|[UW][A-Z0-9]{2,})$")


def actor(team_id: str, user_id: str, user_name: str) -> Actor:
    """A Slack member, not yet known to be an admin."""
    return Actor(PLATFORM, team_id, user_id, user_name or user_id)


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
        if option is not None and option.type == "user":
            if not _MEMBER.match(value.strip()):
                raise GenbotError(
                    ErrorCode.INVALID_OPTION,
                    f"Mention the member for {name}: type @ and pick them from Slack's list "
                    "(or give their member id, U...).",
                )
            result[name] = value.strip()
        else:
            result[name] = plain_text(value)
    return result


def command_request(command: Mapping[str, Any], specs: tuple[CommandSpec, ...]) -> CommandRequest:
    """Translate a slash command's form fields; the request's name is the command's key
    (``imagine``, ``queue``, ``admin ban``). Raises :class:`GenbotError` (invalid_option) when the
    text does not parse; nothing has happened then."""
    text = str(command.get("text") or "").strip()
    name = command.get("command")
    if name == IMAGINE:
        spec, options = parse_text(f"/imagine {text}", specs)
    elif name == GENBOT:
        spec, options = parse_text("/" + text, tuple(s for s in specs if s.key != "imagine"))
        options = _genbot_options(spec, options)
    else:
        raise GenbotError(ErrorCode.INVALID_OPTION, f"genbot does not know the command {name}.")
    who = actor(
        str(command.get("team_id") or ""),
        str(command.get("user_id") or ""),
        str(command.get("user_name") or ""),
    )
    return CommandRequest(
        actor=who, channel=str(command.get("channel_id") or ""), name=spec.key, options=options
    )


def action_target(body: Mapping[str, Any]) -> tuple[Actor, int | None, str]:
    """From a block-action payload: who pressed, the job number (None if the value is not one),
    and the channel of the message."""
    user = body.get("user") or {}
    team = body.get("team") or {}
    channel = body.get("channel") or {}
    actions = body.get("actions") or [{}]
    value = str(actions[0].get("value") or "")
    who = actor(
        str(team.get("id") or user.get("team_id") or ""),
        str(user.get("id") or ""),
        str(user.get("username") or user.get("name") or ""),
    )
    return who, int(value) if value.isdigit() else None, str(channel.get("id") or "")


def _usage(spec: CommandSpec) -> str:
    """``/genbot admin ban member [reason: ...] [duration: ...] [jobs: cancel|keep]``: the first
    required option (or the only one) is typed bare, the others after their ``name:``."""
    bare = next((o for o in spec.options if o.required), None) or (
        spec.options[0] if len(spec.options) == 1 else None
    )
    parts = [f"/genbot {spec.key}"]
    for option in spec.options:
        shown = "|".join(option.choices) if option.choices else "..."
        if option is bare:
            parts.append(option.name if option.required else f"[{option.name}]")
        else:
            parts.append(f"[{option.name}: {shown}]")
    return " ".join(parts)


def help_text(specs: tuple[CommandSpec, ...]) -> str:
    """What ``/genbot help`` answers: the member commands, then the admin commands in a block of
    their own (listed for everyone; only admins may run them, as the server checks)."""
    lines = ["*genbot* makes images. The commands:"]
    for spec in specs:
        if spec.admin:
            continue
        if spec.name == "imagine":
            lines.append(
                "• `/imagine prompt [negative: text] [size: WxH] [steps: N] [seed: N]`: " + spec.description
            )
        else:
            lines.append(f"• `{_usage(spec)}`: {spec.description}")
    lines.append("• `/genbot help`: this list")
    admin = [spec for spec in specs if spec.admin]
    if admin:
        lines.append("")
        lines.append("*Admins:* (workspace admins and owners, and the members genbot is configured with)")
        lines += [f"• `{_usage(spec)}`: {spec.description}" for spec in admin]
    return "\n".join(lines)
