"""The persistent buttons of a status message (Cancel while the job runs, Reroll once it ended).

A :class:`discord.ui.DynamicItem`: discord.py matches the ``custom_id`` of any clicked button
against the template, so a button posted before a restart still works after it; nothing is kept
in memory per message. The click goes to whatever client received it, if it is a
:class:`ButtonHost` (the genbot client); the core decides who may press it.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import discord

from adapters.discord.embeds import CUSTOM_ID, ButtonSpec

#: The core's button actions (bot.views); anything else is not a genbot button.
ACTIONS = ("cancel", "reroll")
#: The job number in ASCII digits, bounded (the core refuses numbers beyond any row).
BUTTON_TEMPLATE = rf"genbot:(?P<action>{'|'.join(ACTIONS)}):(?P<job>[0-9]{{1,20}})"


@runtime_checkable
class ButtonHost(Protocol):
    async def on_genbot_button(self, interaction: discord.Interaction, job: int, action: str) -> None: ...


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=BUTTON_TEMPLATE):
    """One of the core's actions (``cancel``, ``reroll``) on the job named in the ``custom_id``."""

    def __init__(
        self,
        action: str,
        job: int,
        label: str = "",
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ):
        super().__init__(
            discord.ui.Button(
                label=label or action.capitalize(),
                style=style,
                custom_id=CUSTOM_ID.format(action=action, job=job),
            )
        )
        self.action = action
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        host = interaction.client
        if isinstance(host, ButtonHost):
            await host.on_genbot_button(interaction, self.job, self.action)


def button_view(specs: list[ButtonSpec]) -> discord.ui.View | None:
    """A view (no timeout) holding the buttons genbot knows, or None when there are none: an edit
    with ``view=None`` removes the buttons."""
    items = [
        JobButton(s.action, int(s.custom_id.rsplit(":", 1)[1]), s.label, s.style)
        for s in specs
        if s.action in ACTIONS
    ]
    if not items:
        return None
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return view
