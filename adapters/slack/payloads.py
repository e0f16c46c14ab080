"""Slack payloads into genbot's requests: slash-command form fields and block actions. Pure.

- ``/imagine a red fox size: 768x768`` reads like the local chat's ``/imagine`` (``parse_text``).
- ``/genbot queue``, ``/genbot cancel [job]``, ``/genbot status job`` are the other commands;
  ``/genbot`` alone or ``/genbot help`` is answered by the adapter with :func:`help_text`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from bot.commands import CommandSpec, parse_text
from bot.errors import ErrorCode, GenbotError
from bot.models import Actor, CommandRequest

PLATFORM = "slack"
IMAGINE = "/imagine"
GENBOT = "/genbot"
HELP = "help"


def actor(team_id: str, user_id: str, user_name: str, admins: Collection[str]) -> Actor:
    """A Slack member; an admin when their user id is in ``admins``."""
    return Actor(PLATFORM, team_id, user_id, user_name or user_id, is_admin=user_id in admins)


def wants_help(command: Mapping[str, Any]) -> bool:
    """``/genbot`` with no text, or ``/genbot help``."""
    if command.get("command") != GENBOT:
        return False
    return str(command.get("text") or "").strip().lower() in ("", HELP)


def command_request(
    command: Mapping[str, Any], specs: tuple[CommandSpec, ...], admins: Collection[str]
) -> CommandRequest:
    """Translate a slash command's form fields. Raises :class:`GenbotError` (invalid_option)
    when the text does not parse; nothing has happened then."""
    text = str(command.get("text") or "").strip()
    name = command.get("command")
    if name == IMAGINE:
        spec, options = parse_text(f"/imagine {text}", specs)
    elif name == GENBOT:
        spec, options = parse_text("/" + text, tuple(s for s in specs if s.name != "imagine"))
    else:
        raise GenbotError(ErrorCode.INVALID_OPTION, f"genbot does not know the command {name}.")
    who = actor(
        str(command.get("team_id") or ""),
        str(command.get("user_id") or ""),
        str(command.get("user_name") or ""),
        admins,
    )
    return CommandRequest(
        actor=who, channel=str(command.get("channel_id") or ""), name=spec.name, options=options
    )


def action_target(body: Mapping[str, Any], admins: Collection[str]) -> tuple[Actor, int | None, str]:
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
        admins,
    )
    return who, int(value) if value.isdigit() else None, str(channel.get("id") or "")


def help_text(specs: tuple[CommandSpec, ...]) -> str:
    """What ``/genbot help`` answers."""
    lines = ["*genbot* makes images. The commands:"]
    for spec in specs:
        usage = " ".join(f"[{o.name}]" if not o.required else o.name for o in spec.options)
        if spec.name == "imagine":
            lines.append(
                "• `/imagine prompt [negative: text] [size: WxH] [steps: N] [seed: N]`: " + spec.description
            )
        else:
            lines.append(f"• `/genbot {spec.name}{' ' + usage if usage else ''}`: {spec.description}")
    lines.append("• `/genbot help`: this list")
    return "\n".join(lines)
