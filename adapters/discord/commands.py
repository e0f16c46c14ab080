"""Slash commands generated from :func:`bot.commands.command_specs`, and the translation of an
interaction into a :class:`~bot.models.CommandRequest`.

Options become typed parameters: choices for ``size``, integer ranges for ``steps``, ``seed`` and
``job``, every one described, so Discord's client validates most input before it is sent; the
core still validates everything (a member can call the API directly).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Optional

import discord
from discord import app_commands

from bot.commands import CommandSpec, OptionSpec
from bot.models import Actor, CommandRequest

PLATFORM = "discord"
#: Commands whose answer is the public status message; the others answer the member alone.
PUBLIC = frozenset({"imagine", "status"})

Runner = Callable[[discord.Interaction, CommandSpec, dict[str, str]], Awaitable[None]]


def _annotation(option: OptionSpec) -> Any:
    base: Any = str
    if option.type == "integer":
        base = (
            int
            if option.min is None and option.max is None
            else app_commands.Range[int, option.min, option.max]
        )
    return base if option.required else Optional[base]  # noqa: UP045 (discord.py inspects typing.Optional)


def make_command(spec: CommandSpec, run: Runner) -> app_commands.Command[Any, ..., None]:
    """An app command for ``spec`` whose callback hands the options, as strings, to ``run``."""

    async def callback(interaction: discord.Interaction, **options: Any) -> None:
        raw = {name: str(value) for name, value in options.items() if value is not None}
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
        name=spec.name, description=spec.description, callback=callback
    )
    command.guild_only = True
    return command


def actor_of(interaction: discord.Interaction, admin_role_ids: Collection[int]) -> Actor:
    """The member behind an interaction. Admins: Manage Server (or Administrator) in the channel,
    or one of ``admin_role_ids``."""
    user = interaction.user
    permissions = interaction.permissions
    roles = {role.id for role in getattr(user, "roles", ())}
    is_admin = permissions.manage_guild or permissions.administrator or bool(roles & set(admin_role_ids))
    return Actor(
        platform=PLATFORM,
        workspace=str(interaction.guild_id or f"dm:{user.id}"),
        user_id=str(user.id),
        display_name=user.display_name,
        is_admin=is_admin,
    )


def request_of(
    interaction: discord.Interaction, name: str, options: dict[str, str], admin_role_ids: Collection[int]
) -> CommandRequest:
    """An interaction as the core's platform-neutral request. Pure (reads the parsed payload)."""
    return CommandRequest(
        actor=actor_of(interaction, admin_role_ids),
        channel=str(interaction.channel_id),
        name=name,
        options=options,
    )
