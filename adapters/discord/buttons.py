"""The persistent Cancel button.

A :class:`discord.ui.DynamicItem`: discord.py matches the ``custom_id`` of any clicked button
against the template, so a button posted before a restart still works after it; nothing is kept
in memory per message. The click goes to whatever client received it, if it is a
:class:`ButtonHost` (the genbot client).
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import discord

from adapters.discord.embeds import CUSTOM_ID, ButtonSpec

CANCEL_TEMPLATE = r"genbot:cancel:(?P<job>[0-9]+)"


@runtime_checkable
class ButtonHost(Protocol):
    async def on_genbot_button(self, interaction: discord.Interaction, job: int, action: str) -> None: ...


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CANCEL_TEMPLATE):
    """Cancel the job named in the ``custom_id``; the core decides who may."""

    def __init__(
        self, job: int, label: str = "Cancel", style: discord.ButtonStyle = discord.ButtonStyle.danger
    ):
        super().__init__(
            discord.ui.Button(label=label, style=style, custom_id=CUSTOM_ID.format(action="cancel", job=job))
        )
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        host = interaction.client
        if isinstance(host, ButtonHost):
            await host.on_genbot_button(interaction, self.job, "cancel")


def button_view(specs: list[ButtonSpec]) -> discord.ui.View | None:
    """A view (no timeout) holding the buttons genbot knows, or None when there are none: an edit
    with ``view=None`` removes the buttons of a finished job."""
    items = [
        CancelButton(int(s.custom_id.rsplit(":", 1)[1]), s.label, s.style)
        for s in specs
        if s.action == "cancel"
    ]
    if not items:
        return None
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return view
