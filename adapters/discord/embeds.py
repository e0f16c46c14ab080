"""A :class:`~bot.models.StatusView` as Discord shows it: one embed and its buttons. Pure.

Member text (prompt, negative prompt, display name) is escaped: markdown is shown as typed and
``@everyone`` or ``<@id>`` are defused in the text itself (the footer's negative prompt too), on top
of ``AllowedMentions.none()`` on every message (embeds never ping, but the text should not even look
like a mention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import discord

from bot.models import State, StatusView

#: Embed colours per state (Discord's palette: blurple, green, red, greys).
COLOURS: dict[State, int] = {
    State.QUEUED: 0x99AAB5,
    State.RUNNING: 0x5865F2,
    State.SUCCEEDED: 0x57F287,
    State.FAILED: 0xED4245,
    State.TIMED_OUT: 0xED4245,
    State.CANCELLED: 0x4F545C,
}
DESCRIPTION_MAX = 4096
FIELD_MAX = 1024
FOOTER_MAX = 2048
#: The most text one embed may hold, all its parts together (Discord refuses the message past it).
EMBED_MAX = 6000
BUTTON_STYLES = {
    "danger": discord.ButtonStyle.danger,
    "primary": discord.ButtonStyle.primary,
    "success": discord.ButtonStyle.success,
}
#: ``genbot:<action>:<job>``; :mod:`adapters.discord.buttons` matches it after a restart too.
CUSTOM_ID = "genbot:{action}:{job}"


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    action: str
    label: str
    style: discord.ButtonStyle
    custom_id: str


def escape(text: str) -> str:
    """Member text, shown literally: no markdown, no mentions."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_embed(
    view: StatusView,
    *,
    image: str | None = None,
    preview: str | None = None,
    resized: bool = False,
    left_out: Sequence[str] = (),
    limit: int = 0,
) -> discord.Embed:
    """The embed of a status message.

    ``image`` and ``preview`` are the file names of the attachments sent with the message (shown
    as ``attachment://name``); ``resized`` says the image was re-encoded to fit the upload limit;
    ``left_out`` names the result's files that did not fit in the message's ``limit`` bytes.
    """
    embed = discord.Embed(
        title=_cut(view.title, 256),
        # The job's text (an answer) under its prompt: both member or model text, escaped alike.
        description=_cut(
            escape(view.prompt) + (f"\n\n{escape(view.text)}" if view.text else ""), DESCRIPTION_MAX
        ),
        colour=COLOURS[view.state],
    )
    embed.add_field(name="Requested by", value=_cut(escape(view.requested_by), FIELD_MAX), inline=True)
    if view.error is not None:
        embed.add_field(name=view.error.title, value=f"{view.error.what} {view.error.todo}", inline=False)
    if view.note:
        embed.add_field(name="Note", value=view.note, inline=False)
    if resized:
        embed.add_field(
            name="Note",
            value="The image was too large to upload, so it is shown as a smaller JPEG.",
            inline=False,
        )
    if left_out:
        names = ", ".join(escape(name) for name in left_out)
        embed.add_field(
            name="Not attached",
            value=_cut(
                f"{names}: over what Discord takes in one message ({limit / 2**20:.0f} MB, 10 files).",
                FIELD_MAX,
            ),
            inline=False,
        )
    # The footer is plain text on Discord (markdown is not rendered there), but it quotes the
    # negative prompt: its mentions are defused all the same.
    embed.set_footer(text=_cut(discord.utils.escape_mentions(view.details), FOOTER_MAX))
    if image:
        embed.set_image(url=f"attachment://{image}")
    elif preview:
        embed.set_thumbnail(url=f"attachment://{preview}")
    over = len(embed) - EMBED_MAX
    if over > 0 and embed.description:  # a long answer: it gives way to the rest
        embed.description = _cut(embed.description, len(embed.description) - over)
    return embed


def status_buttons(view: StatusView) -> list[ButtonSpec]:
    """The buttons of a status message; their custom ids carry the job."""
    return [
        ButtonSpec(
            action=b.action,
            label=b.label,
            style=BUTTON_STYLES.get(b.style, discord.ButtonStyle.secondary),
            custom_id=CUSTOM_ID.format(action=b.action, job=view.job),
        )
        for b in view.buttons
    ]
