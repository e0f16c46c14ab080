"""A :class:`~bot.models.StatusView` as Slack Block Kit, and the text of ephemeral replies. Pure.

Everything a member wrote (prompt, negative prompt, name) is escaped as Slack asks (``&``, ``<``,
``>``), so ``<!channel>``, ``<!here>``, ``<!everyone>`` or ``<@U123>`` in a prompt is shown as text and
pings no one; the mrkdwn objects are also ``verbatim`` (no automatic linking of names and channels).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from bot.errors import ErrorText
from bot.models import ResultFile, StatusView

CANCEL_ACTION = "genbot_cancel"
REROLL_ACTION = "genbot_reroll"
#: The core's button actions and their Slack ``action_id``.
ACTION_IDS = {"cancel": CANCEL_ACTION, "reroll": REROLL_ACTION}
BAR_CELLS = 10
SECTION_MAX = 3000  # Slack's limit for a section's text
ALT_MAX = 2000  # Slack's limit for an image's alt text
FALLBACK_MAX = 300

Block = dict[str, Any]


def escape(text: str) -> str:
    """Slack's control characters as entities: the text is shown as typed, links and mentions
    included, and nothing in it is interpreted."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def progress_bar(progress: float) -> str:
    """``▰▰▰▰▰▰▱▱▱▱ 60%``: ten cells, the percent rounded half up."""
    fraction = min(1.0, max(0.0, progress))
    percent = math.floor(fraction * 100 + 0.5)
    filled = math.floor(fraction * BAR_CELLS + 0.5)
    return "▰" * filled + "▱" * (BAR_CELLS - filled) + f" {percent}%"


def fallback_text(view: StatusView) -> str:
    """The message's top-level ``text``: what notifications and screen readers show. Escaped."""
    return escape(_clip(f"{view.title}: {view.prompt}", FALLBACK_MAX))


def status_blocks(
    view: StatusView,
    *,
    image_file_id: str | None = None,
    image_block_id: str | None = None,
    image_elsewhere: str | None = None,
    files_elsewhere: str | None = None,
) -> list[Block]:
    """The status message of ``view``.

    ``image_file_id`` (an uploaded Slack file, ``F...``) adds an image block showing it, with
    ``image_block_id`` as its block id (a new one per update, as Slack asks). ``image_elsewhere``
    is a sentence saying where the image is when it cannot be shown in the message itself, and
    ``files_elsewhere`` one saying where the result's files are (:func:`files_where`).
    The Cancel button (action ``genbot_cancel``, value = the job number) is there while the view
    offers it, that is while the job is not finished.
    """
    blocks: list[Block] = [
        {"type": "section", "text": _mrkdwn(f"*{escape(view.title)}*")},
    ]
    if view.progress is not None:
        blocks.append({"type": "context", "elements": [_mrkdwn(progress_bar(view.progress))]})
    blocks.append(
        {"type": "section", "text": _mrkdwn(_clip("> " + escape(view.prompt), SECTION_MAX))},
    )
    if view.text:
        blocks.append({"type": "section", "text": _mrkdwn(_clip(escape(view.text), SECTION_MAX))})
    blocks.append(
        {
            "type": "context",
            "elements": [
                _mrkdwn(_clip(f"{escape(view.details)} · asked by {escape(view.requested_by)}", SECTION_MAX))
            ],
        }
    )
    if view.note:
        blocks.append({"type": "context", "elements": [_mrkdwn(escape(view.note))]})
    if view.error is not None:
        error = view.error
        blocks.append(
            {
                "type": "section",
                "text": _mrkdwn(f"*{escape(error.title)}*\n{escape(error.what)}\n{escape(error.todo)}"),
            }
        )
    if image_file_id is not None:
        blocks.append(
            {
                "type": "image",
                "block_id": image_block_id or f"genbot-image-{image_file_id}",
                "slack_file": {"id": image_file_id},
                "alt_text": _clip(view.prompt, ALT_MAX),
            }
        )
    elif image_elsewhere:
        blocks.append({"type": "context", "elements": [_mrkdwn(escape(image_elsewhere))]})
    if files_elsewhere:
        blocks.append({"type": "context", "elements": [_mrkdwn(_clip(escape(files_elsewhere), SECTION_MAX))]})
    buttons = [
        {
            "type": "button",
            "action_id": ACTION_IDS[button.action],
            "text": {"type": "plain_text", "text": button.label},
            "value": str(view.job),
            **({"style": "danger"} if button.style == "danger" else {}),
        }
        for button in view.buttons
        if button.action in ACTION_IDS
    ]
    if buttons:
        blocks.append({"type": "actions", "block_id": f"genbot-actions-{view.job}", "elements": buttons})
    return blocks


def files_where(files: Sequence[ResultFile], *, threaded: bool) -> str:
    """Where a result's files are: ``The 4 files are in the thread under this message.``"""
    where = "in the thread under this message" if threaded else "posted in this channel"
    if len(files) == 1:
        return f"The file {files[0].name} is {where}."
    return f"The {len(files)} files are {where}."


#: The core names its commands as the local chat and Discord spell them (``/queue``, ``/admin
#: clear``); on Slack all but ``/imagine`` are subcommands of ``/genbot``.
_GENBOT_SUBCOMMAND = re.compile(r"(?<![\w/])/(admin|queue|cancel|status|help)\b")


def slack_commands(text: str) -> str:
    """The core's words with its commands as a Slack member types them: ``/queue`` ->
    ``/genbot queue``, ``/admin clear`` -> ``/genbot admin clear``; ``/imagine`` stays."""
    return _GENBOT_SUBCOMMAND.sub(r"/genbot \1", text)


def reply_text(text: str) -> str:
    """An ephemeral reply from the core (it may quote prompts): escaped, commands as typed on
    Slack."""
    return escape(slack_commands(text))


def error_text(error: ErrorText) -> str:
    what, todo = slack_commands(error.what), slack_commands(error.todo)
    return f"*{escape(error.title)}*: {escape(what)} {escape(todo)}"
