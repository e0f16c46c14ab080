"""Slash commands generated from :func:`bot.commands.all_specs`, and the translation of an
interaction into a :class:`~bot.models.CommandRequest`.

Options become typed parameters: choices for ``size``, integer ranges for ``steps``, ``seed`` and
``job``, a member picker for a ``user`` option, a file picker for an ``attachment`` or ``image``
option, every one described, so Discord's client validates
most input before it is sent; the core still validates everything (a member can call the API
directly).

The admin commands (``spec.group == "admin"``) are the subcommands of one ``/admin`` command,
shown by default only to members with Manage Server (``default_member_permissions``). That only
hides them: a member can still call them (a server may grant the command to anyone, a client can
send any interaction), so the core checks :attr:`~bot.models.Actor.is_admin`, which
:func:`actor_of` takes from the interaction's own permissions, on every call.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Optional

import discord
from discord import app_commands

from bot.attachments import ATTACHMENT_TYPES
from bot.commands import ADMIN, CommandSpec, OptionSpec
from bot.errors import ErrorCode, GenbotError
from bot.models import Actor, CommandRequest
from bot.text import clean_name

PLATFORM = "discord"

#: Who sees a group's commands by default (server settings can change it; the core checks anyway).
GROUP_PERMISSIONS = {ADMIN: discord.Permissions(manage_guild=True)}
GROUP_DESCRIPTIONS = {ADMIN: "Run the queue: bans, blocked terms, pause, cancel, stats, audit log"}
#: Discord's ids are snowflakes: positive 64-bit integers.
SNOWFLAKE_MAX = 2**64 - 1
MALFORMED = "Discord sent an interaction genbot cannot read."

Runner = Callable[[discord.Interaction, CommandSpec, dict[str, str]], Awaitable[None]]
AppCommand = app_commands.Command[Any, ..., None] | app_commands.Group


def _annotation(option: OptionSpec) -> Any:
    base: Any = str
    if option.type == "member":
        base = discord.User  # a member picker; the value may be a Member, a User or an Object
    elif option.type in ATTACHMENT_TYPES:
        base = discord.Attachment  # a file the member attaches (option type 11)
    elif option.type == "integer":
        base = (
            int
            if option.min is None and option.max is None
            else app_commands.Range[int, option.min, option.max]
        )
    elif option.type == "number":
        base = (
            float
            if option.min is None and option.max is None
            else app_commands.Range[float, option.min, option.max]
        )
    elif option.type == "boolean":
        base = bool
    return base if option.required else Optional[base]  # noqa: UP045 (discord.py inspects typing.Optional)


def option_text(value: Any) -> str:
    """An option's value as the core reads it: an attached file as its CDN link (what
    :meth:`DiscordResponder.fetch <adapters.discord.adapter.DiscordResponder.fetch>` downloads), a
    picked member as its user id (the core's ``member_of`` takes a bare id), anything else as its
    text."""
    if isinstance(value, discord.Attachment):  # before Snowflake: an attachment has an id too
        return value.url
    if isinstance(value, discord.abc.Snowflake):
        return str(value.id)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def make_command(
    spec: CommandSpec, run: Runner, parent: app_commands.Group | None = None
) -> app_commands.Command[Any, ..., None]:
    """An app command for ``spec`` (a subcommand of ``parent`` if given) whose callback hands the
    options, as strings, to ``run``."""

    async def callback(interaction: discord.Interaction, **options: Any) -> None:
        raw = {name: option_text(value) for name, value in options.items() if value is not None}
        await run(interaction, spec, raw)

    parameters = [
        inspect.Parameter(
            "interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction
        )
    ]
    for option in spec.options:
        parameters.append(
            inspect.Parameter(
                option.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=_annotation(option),
                default=inspect.Parameter.empty if option.required else None,
            )
        )
    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    callback.__discord_app_commands_param_description__ = {  # type: ignore[attr-defined]
        o.name: o.description for o in spec.options
    }
    choices = {
        o.name: [app_commands.Choice(name=c, value=c) for c in o.choices] for o in spec.options if o.choices
    }
    if choices:
        callback.__discord_app_commands_param_choices__ = choices  # type: ignore[attr-defined]
    command: app_commands.Command[Any, ..., None] = app_commands.Command(
        name=spec.name, description=spec.description, callback=callback, parent=parent
    )
    command.guild_only = True
    return command


def make_group(name: str, specs: list[CommandSpec], run: Runner) -> app_commands.Group:
    """One command (``/admin``) whose subcommands are ``specs``: guild only, and shown by default
    to the members with the group's permissions (:data:`GROUP_PERMISSIONS`)."""
    group = app_commands.Group(
        name=name,
        description=GROUP_DESCRIPTIONS.get(name, f"/{name} commands"),
        guild_only=True,
        allowed_contexts=app_commands.AppCommandContext(guild=True),
        default_permissions=GROUP_PERMISSIONS.get(name),
    )
    for spec in specs:
        group.add_command(make_command(spec, run, parent=group))
    return group


def app_commands_of(specs: tuple[CommandSpec, ...], run: Runner) -> list[AppCommand]:
    """The top-level commands to register for ``specs``: one command per member command, one
    group per ``spec.group`` holding its subcommands, in the order of ``specs``."""
    out: list[AppCommand] = []
    groups: dict[str, list[CommandSpec]] = {}
    for spec in specs:
        if spec.group is None:
            out.append(make_command(spec, run))
        elif spec.group not in groups:
            groups[spec.group] = [spec]
        else:
            groups[spec.group].append(spec)
    out += [make_group(name, members, run) for name, members in groups.items()]
    return out


def role_ids(user: discord.Member | discord.User) -> set[int]:
    """The ids of the roles the interaction says the member has.

    ``Member.roles`` looks each id up in the guild cache and drops the ones it does not find (a
    guild the gateway has not sent yet, or one that is unavailable), which would silently demote
    an admin; the ids discord.py parsed from the payload (``Member._roles``) do not depend on it."""
    parsed = getattr(user, "_roles", None)
    ids = {int(role_id) for role_id in parsed} if parsed is not None else set()
    return ids | {role.id for role in getattr(user, "roles", ())}


def snowflake(value: object) -> str:
    """A Discord id as the core keeps it (decimal text). Raises :class:`GenbotError` (malformed)
    for anything that is not a snowflake."""
    if type(value) is not int or not 0 < value <= SNOWFLAKE_MAX:
        raise GenbotError(
            ErrorCode.INVALID_OPTION, MALFORMED, todo="Try again; if it keeps happening, tell an admin."
        )
    return str(value)


def actor_of(interaction: discord.Interaction, admin_role_ids: Collection[int]) -> Actor:
    """The member behind an interaction, read from the interaction itself on every command and
    click (never cached). Admins: Manage Server or Administrator in the channel (the permissions
    Discord computed for this interaction), or one of ``admin_role_ids``. The display name is
    cleaned (:func:`bot.text.clean_name`); ids must be snowflakes (else :class:`GenbotError`)."""
    user = interaction.user
    user_id = snowflake(user.id)
    guild = snowflake(interaction.guild_id) if interaction.guild_id is not None else f"dm:{user_id}"
    permissions = interaction.permissions
    is_admin = (
        permissions.manage_guild or permissions.administrator or bool(role_ids(user) & set(admin_role_ids))
    )
    return Actor(
        platform=PLATFORM,
        workspace=guild,
        user_id=user_id,
        display_name=clean_name(user.display_name, user_id),
        is_admin=is_admin,
    )


def request_of(
    interaction: discord.Interaction, name: str, options: dict[str, str], admin_role_ids: Collection[int]
) -> CommandRequest:
    """An interaction as the core's platform-neutral request (``name`` is the spec's ``key``:
    ``imagine``, ``admin ban``). Pure (reads the parsed payload). Raises :class:`GenbotError`
    (malformed) for ids that are not snowflakes; the core cleans the option values."""
    return CommandRequest(
        actor=actor_of(interaction, admin_role_ids),
        channel=snowflake(interaction.channel_id),
        name=name,
        options=options,
    )
