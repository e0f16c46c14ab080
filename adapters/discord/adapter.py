"""Status messages on Discord over REST: the :class:`~bot.ports.ChatAdapter` the renderer uses and
the :class:`~bot.ports.Responder` of one slash command or button click.

Where a status message lives (the row's ``message`` JSON, a :class:`~bot.models.MessageRef`):
``channel``, ``message_id`` and ``extra`` = ``guild``, ``application_id``, the interaction
``token`` and ``token_expires`` (epoch seconds; Discord kills the token 15 minutes after the
interaction) and ``attachment_limit`` (the interaction's ``attachment_size_limit``).

Edits go through the interaction webhook while the token has more than ``token_margin_s`` left
(that route is exempt from the global rate limit), then through the channel message with the bot
token; the reference returned then forgets the token, so the renderer stores that switch. A
message that is gone or cannot be edited raises :class:`~bot.ports.MessageGone` and the renderer
posts a new one with :meth:`DiscordChat.post_status`.

Rate limits: discord.py keeps Discord's per-route buckets from the ``X-RateLimit-*`` headers and
waits out short 429s itself (inside the one write, which holds back nothing else); a longer one
(over ``max_ratelimit_timeout``) raises :class:`~bot.ports.RateLimited` for the channel, which the
renderer's scheduler holds in every bot process. Before that, what a write costs
(:meth:`DiscordChat.spends`): the channel's budget (webhook and bot-token routes of one channel
share it: their buckets differ, the channel members read is one), and the global one for the
bot-token routes (interaction webhooks are exempt from Discord's global limit). Discord caps the
edits of messages older than an hour (error 30046): that holds back the one message only.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord

from adapters.discord.buttons import button_view
from adapters.discord.embeds import status_buttons, status_embed
from adapters.discord.files import fetch_attachment
from adapters.discord.images import DEFAULT_LIMIT, fit_image, fitting
from bot.errors import ErrorText
from bot.models import MessageRef, StatusView
from bot.ports import MessageGone, MessageUnreachable, Rate, RateLimited, Spend, Upload

log = logging.getLogger(__name__)

PLATFORM = "discord"
TOKEN_MARGIN_S = 60.0
#: Unknown Message, Missing Access, Missing Permissions, Invalid Webhook Token.
GONE_CODES = frozenset({10008, 50001, 50013, 50027})
#: The interaction token is no longer good (expired early, or revoked): use the bot token.
TOKEN_DEAD_CODES = frozenset({50027, 10015})
#: Missing Access, Missing Permissions.
NO_ACCESS_CODES = frozenset({50001, 50013})
NO_ACCESS_WORDS = (
    "genbot's bot may not post in this channel: give its role View Channel, Send Messages, "
    "Embed Links and Attach Files there."
)
NO_MENTIONS = discord.AllowedMentions.none()
POST_RETRY_DELAYS_S = (1.0, 2.0, 4.0)
#: The budgets of :meth:`DiscordChat.spends`.
CHANNEL = "discord:channel"
GLOBAL = "discord:global"
#: Too many edits of a message older than an hour: that message waits this long.
OLD_MESSAGE_EDITS = 30046
OLD_MESSAGE_RETRY_S = 60.0


def discord_rates(channel_per_s: float, channel_burst: int, global_per_s: float) -> dict[str, Rate]:
    return {
        CHANNEL: Rate(channel_per_s, channel_burst),
        GLOBAL: Rate(global_per_s, max(1, int(global_per_s))),
    }


#: The most characters a message's content may have.
CONTENT_MAX = 2000

BlobReader = Callable[[str], Awaitable[bytes | None]]


@dataclass
class Rendered:
    """A view ready to send: the embed, its files and its buttons."""

    embed: discord.Embed
    files: list[discord.File]
    view: discord.ui.View | None


def error_words(error: ErrorText) -> str:
    return f"**{error.title}**: {error.what} {error.todo}"


class DiscordChat:
    """The renderer's side of Discord: post and edit status messages through ``client``'s HTTP
    client (no gateway needed, so it works right after ``login``).

    ``clock`` (epoch seconds) is injectable so tests can age a token.
    """

    platform = PLATFORM

    def __init__(
        self,
        client: discord.Client,
        *,
        blobs: BlobReader,
        clock: Callable[[], float] = time.time,
        token_margin_s: float = TOKEN_MARGIN_S,
        rates: dict[str, Rate] | None = None,
    ) -> None:
        self.client = client
        self.blobs = blobs
        self.clock = clock
        self.token_margin_s = token_margin_s
        self.rates = rates if rates is not None else discord_rates(1.0, 4, 45.0)

    def spends(self, channel: str, ref: MessageRef | None, view: StatusView) -> list[Spend]:
        if ref is not None and self._token_usable(ref):
            return [Spend(CHANNEL, ref.channel)]
        return [Spend(CHANNEL, ref.channel if ref is not None else channel), Spend(GLOBAL, "")]

    async def render(self, view: StatusView, limit: int = DEFAULT_LIMIT) -> Rendered:
        """The embed, files and buttons of ``view``; the image is made to fit ``limit`` bytes, and
        the result's files go with it while the whole stays within ``limit`` (the rest are named in
        the embed as left out).

        A blob that is missing (a preview already replaced) is left out rather than failing."""
        files: list[discord.File] = []
        image = preview = None
        resized = False
        used = 0
        if view.image_key and (data := await self.blobs(view.image_key)) is not None:
            upload = await asyncio.to_thread(fit_image, data, f"genbot-{view.job}", limit)
            files.append(discord.File(io.BytesIO(upload.data), filename=upload.filename))
            image, resized, used = upload.filename, upload.resized, len(upload.data)
        elif view.preview_key and (data := await self.blobs(view.preview_key)) is not None:
            preview = f"preview-{view.job}.jpg"
            files.append(discord.File(io.BytesIO(data), filename=preview))
            used = len(data)
        kept, left = fitting(view.files, limit, used, len(files))
        for result_file in kept:
            if (data := await self.blobs(result_file.key)) is None:
                log.error("file %s of job %s is missing from the blob store", result_file.key, view.job)
                continue
            files.append(discord.File(io.BytesIO(data), filename=result_file.name))
        if left:
            log.info(
                "job %s: %d file(s) left out of the message (Discord's upload limit)", view.job, len(left)
            )
        embed = status_embed(
            view, image=image, preview=preview, resized=resized, left_out=[f.name for f in left], limit=limit
        )
        return Rendered(embed, files, button_view(status_buttons(view)))

    def interaction_ref(self, interaction: discord.Interaction, message_id: int) -> MessageRef:
        """The reference of a status message posted as (or after) ``interaction``'s response."""
        return MessageRef(
            platform=PLATFORM,
            channel=str(interaction.channel_id),
            message_id=str(message_id),
            extra={
                "guild": str(interaction.guild_id) if interaction.guild_id else None,
                "application_id": str(interaction.application_id),
                "token": interaction.token,
                "token_expires": interaction.expires_at.timestamp(),
                "attachment_limit": interaction.filesize_limit,
            },
        )

    # -- ChatAdapter --------------------------------------------------------------------------

    async def post_status(self, channel: str, view: StatusView) -> MessageRef:
        """Post a new status message in ``channel`` with the bot token. Its reference carries no
        interaction token (``None`` values clear an old one when merged into the row).

        Raises :class:`MessageUnreachable` when the bot may not post there (403, 50001, 50013):
        retrying would only count toward Discord's invalid-request limit."""
        rendered = await self.render(view)
        messageable = self.client.get_partial_messageable(int(channel))
        try:
            message = await messageable.send(
                embed=rendered.embed,
                files=rendered.files,
                view=rendered.view or discord.utils.MISSING,
                allowed_mentions=NO_MENTIONS,
            )
        except discord.RateLimited as exc:
            raise RateLimited(f"{CHANNEL}:{channel}", exc.retry_after) from None
        except discord.HTTPException as exc:
            if exc.status == 403 or exc.code in NO_ACCESS_CODES:
                raise MessageUnreachable(NO_ACCESS_WORDS) from exc
            raise
        return MessageRef(
            platform=PLATFORM,
            channel=channel,
            message_id=str(message.id),
            extra={"token": None, "token_expires": None, "application_id": None},
        )

    async def edit_status(self, ref: MessageRef, view: StatusView) -> MessageRef:
        """Edit the status message in place; see the module docstring for the route taken.

        Raises :class:`MessageGone` for 10008 / 50001 / 50013 / 50027 on the channel route (and
        for 10008 on the webhook route); other HTTP errors propagate (safe to retry)."""
        limit = int(ref.extra.get("attachment_limit") or DEFAULT_LIMIT)
        if self._token_usable(ref):
            rendered = await self.render(view, limit)
            webhook = discord.Webhook.partial(
                int(ref.extra["application_id"]), str(ref.extra["token"]), client=self.client
            )
            try:
                await webhook.edit_message(
                    int(ref.message_id),
                    embed=rendered.embed,
                    attachments=rendered.files,
                    view=rendered.view,
                    allowed_mentions=NO_MENTIONS,
                )
                return ref
            except discord.RateLimited as exc:
                raise RateLimited(f"{CHANNEL}:{ref.channel}", exc.retry_after) from None
            except discord.HTTPException as exc:
                if exc.code == OLD_MESSAGE_EDITS:
                    raise self._old_message(ref) from None
                if exc.code not in TOKEN_DEAD_CODES and exc.status != 401:
                    if exc.code in GONE_CODES:
                        raise MessageGone(ref.message_id) from exc
                    raise
                log.info(
                    "interaction token of message %s no longer works; editing with the bot token",
                    ref.message_id,
                )
        rendered = await self.render(view, limit)
        message = self.client.get_partial_messageable(int(ref.channel)).get_partial_message(
            int(ref.message_id)
        )
        try:
            await message.edit(
                embed=rendered.embed,
                attachments=rendered.files,
                view=rendered.view,
                allowed_mentions=NO_MENTIONS,
            )
        except discord.RateLimited as exc:
            raise RateLimited(f"{CHANNEL}:{ref.channel}", exc.retry_after) from None
        except discord.HTTPException as exc:
            if exc.code == OLD_MESSAGE_EDITS:
                raise self._old_message(ref) from None
            if exc.code in GONE_CODES:
                raise MessageGone(ref.message_id) from exc
            raise
        if ref.extra.get("token") is None:
            return ref
        return MessageRef(
            ref.platform, ref.channel, ref.message_id, {**ref.extra, "token": None, "token_expires": None}
        )

    @staticmethod
    def _old_message(ref: MessageRef) -> RateLimited:
        """Discord refuses more edits of this message (older than an hour) for now: it alone
        waits; the scheduler writes the others meanwhile."""
        log.info("Discord caps the edits of message %s (older than an hour) for now", ref.message_id)
        return RateLimited(f"discord:old-message:{ref.message_id}", OLD_MESSAGE_RETRY_S)

    def _token_usable(self, ref: MessageRef) -> bool:
        token, expires, app = (ref.extra.get(k) for k in ("token", "token_expires", "application_id"))
        return bool(token and app and expires) and float(expires) - self.clock() > self.token_margin_s  # type: ignore[arg-type]


class DiscordResponder:
    """The answers to one interaction, after it was deferred.

    ``public``: the interaction was deferred visibly (``/imagine``, ``/status``), so its original
    response becomes the status message. A reply to the member alone first deletes that
    placeholder, then follows up ephemerally (the first follow-up of a deferred interaction would
    otherwise replace the placeholder and inherit its visibility).
    """

    def __init__(self, interaction: discord.Interaction, chat: DiscordChat, *, public: bool) -> None:
        self.interaction = interaction
        self.chat = chat
        self._placeholder = public

    async def reply(self, text: str) -> None:
        if self._placeholder:
            self._placeholder = False
            try:
                await self.interaction.delete_original_response()
            except discord.HTTPException:
                log.debug("could not delete the deferred response", exc_info=True)
        content = discord.utils.escape_mentions(text)  # escaping lengthens it: cut to Discord's limit
        await self.interaction.followup.send(
            content if len(content) <= CONTENT_MAX else content[: CONTENT_MAX - 1] + "…",
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )

    async def reply_error(self, error: ErrorText) -> None:
        await self.reply(error_words(error))

    async def say(self, text: str) -> None:
        """In the channel: the visible deferral becomes the answer (a command deferred privately
        can only follow up privately, so it answers the member alone)."""
        content = discord.utils.escape_mentions(text)
        content = content if len(content) <= CONTENT_MAX else content[: CONTENT_MAX - 1] + "…"
        if not self._placeholder:
            await self.reply(text)
            return
        self._placeholder = False
        await self.interaction.edit_original_response(content=content, allowed_mentions=NO_MENTIONS)

    async def fetch(self, ref: str, max_bytes: int) -> Upload:
        """The file attached to this command's option ``ref`` (its CDN link; see
        :mod:`adapters.discord.files`)."""
        return await fetch_attachment(ref, max_bytes, discord.http.Route.BASE)

    def spends(self, view: StatusView) -> list[Spend]:
        """The answer to an interaction goes through its own webhook (its own bucket, outside the
        global limit): discord.py keeps that bucket."""
        return []

    async def post_status(self, view: StatusView) -> MessageRef:
        """Post the status message. A 429 or 5xx that outlasts discord.py's own five tries is
        tried again a few times: the interaction token lives 15 minutes, and if this fails the
        core cancels the job (no message, no job)."""
        for delay in POST_RETRY_DELAYS_S:
            try:
                return await self._post_status(view)
            except discord.HTTPException as exc:
                if exc.status != 429 and exc.status < 500:
                    raise
                log.warning("posting a status message failed (%s); retrying in %s s", exc.status, delay)
                await asyncio.sleep(delay)
        return await self._post_status(view)

    async def _post_status(self, view: StatusView) -> MessageRef:
        rendered = await self.chat.render(view, self.interaction.filesize_limit)
        message: Any
        if self._placeholder:
            self._placeholder = False
            message = await self.interaction.edit_original_response(
                embed=rendered.embed,
                attachments=rendered.files,
                view=rendered.view,
                allowed_mentions=NO_MENTIONS,
            )
        else:
            message = await self.interaction.followup.send(
                embed=rendered.embed,
                files=rendered.files,
                view=rendered.view or discord.utils.MISSING,
                allowed_mentions=NO_MENTIONS,
                wait=True,
            )
        return self.chat.interaction_ref(self.interaction, message.id)
