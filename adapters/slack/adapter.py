"""The Slack :class:`~bot.ports.ChatAdapter`: status messages posted with ``chat.postMessage`` and
edited with ``chat.update``; finished images uploaded with ``files_upload_v2`` and shown in the
message.

Slack's answers become genbot's words here:

- ``message_not_found`` / ``cant_update_message`` raise :class:`~bot.ports.MessageGone` (the
  renderer posts a new message);
- ``not_in_channel``, ``channel_not_found``, ``is_archived``, ``msg_too_long`` are logged in plain
  words. An edit then leaves the message as it is (the renderer carries on; the next change tries
  again); a post raises :class:`~bot.ports.MessageUnreachable` with a sentence the member can act
  on (and the renderer stops trying); an image upload refused so says so in the message;
- 429 raises :class:`~bot.ports.RateLimited` for the channel, with Slack's ``Retry-After``: the
  renderer's scheduler holds the channel (in every bot process) and writes again then. Nothing
  here sleeps on a 429 or retries it.

What each write costs (:meth:`SlackChat.spends`): every write to a channel spends the channel's
budget (Slack: about one message a second per channel, short bursts), ``chat.update`` also the
workspace's (Tier 3, about 50 a minute); an image costs its upload too. An image is uploaded in
Slack's three steps (``files.getUploadURLExternal``, the upload, ``files.completeUploadExternal``);
the file id is kept in the message reference after the upload, so a completion refused (a 429)
is resumed, never uploaded again into an orphan file.

A finished job's files (each image of several, a file result: ``StatusView.files``) are shared
once, together, under the message (in its thread unless ``thread_images`` is off): each uploaded
under its own name, then one ``files.completeUploadExternal`` with them all. The ids uploaded so far
(``result_files``) and the share (``files_shared``) are kept in the reference as they happen, so a
429 anywhere resumes where it stopped and no file is uploaded twice. The message then says where
they are.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.blocks import fallback_text, files_where, status_blocks
from adapters.slack.session import session_of
from bot.models import MessageRef, StatusView
from bot.ports import PARTIAL, MessageGone, MessageUnreachable, NotYet, Rate, RateLimited, Spend

log = logging.getLogger(__name__)

PLATFORM = "slack"
#: Right after an upload Slack often refuses a ``slack_file`` block (``invalid_blocks``) until the
#: file is visible; waits between the tries, in seconds (scheduled by the renderer, not slept).
IMAGE_RETRY_DELAYS = (1.0, 2.0, 4.0)
#: The budgets of :meth:`SlackChat.spends`.
CHANNEL = "slack:channel"
UPDATE = "slack:update"
#: Tries of a call that is no message write, on 429s (``make_client(wait_out_429=True)``).
RATE_LIMIT_RETRIES = 3
#: A 429 without ``Retry-After`` (Slack always sends it) is held this long.
DEFAULT_RETRY_AFTER_S = 1.0

GONE = frozenset({"message_not_found", "cant_update_message"})
#: Slack's errors that no retry fixes, in plain words for the log and the member.
UNAVAILABLE = {
    "not_in_channel": "genbot is not a member of this channel: invite it with /invite @genbot.",
    "channel_not_found": "genbot cannot see this channel (a private channel it was not invited to?).",
    "is_archived": "This channel is archived, so genbot cannot post in it.",
    "msg_too_long": "The status message is longer than Slack allows.",
}

BlobReader = Callable[[str], Awaitable[bytes | None]]


class UploadRefused(Exception):
    """Slack refused the image upload for good; the message says so instead of showing it."""


def upload_failure(exc: SlackApiError, ref: MessageRef, what: str, job: int) -> Exception:
    """What an upload's refusal means for the renderer: a 429 is :class:`RateLimited` carrying
    ``ref`` (with what is uploaded so far: the next try goes on from there); an error no retry fixes
    is :class:`UploadRefused` with the member's words; anything else is ``exc`` itself."""
    if (limited := rate_limited(exc, ref.channel)) is not None:
        limited.ref = ref
        return limited
    # chat:write.public lets genbot post in a public channel it has not joined; files do not: the
    # upload answers not_in_channel there.
    words = UNAVAILABLE.get(slack_error(exc))
    if words is None:
        return exc
    log.error("cannot upload %s of job %s in %s: %s", what, job, ref.channel, words)
    return UploadRefused(f"genbot could not post {what} here. {words}")


def make_client(
    token: str,
    base_url: str,
    *,
    wait_out_429: bool = False,
    session: aiohttp.ClientSession | None = None,
) -> AsyncWebClient:
    """A Web API client that retries dropped connections. For message writes a 429 is not retried
    here: it raises (see :func:`rate_limited`) and the renderer's scheduler holds the channel.
    ``wait_out_429``: the client waits out ``Retry-After`` itself (for the calls that are no
    message write, such as ``users.info``). ``session``: the bot's shared session (see
    :mod:`adapters.slack.session`; :meth:`SlackBot.start <adapters.slack.app.SlackBot.start>`
    gives it to the clients it holds); without one, slack_sdk opens a session per call."""
    handlers: list[AsyncRetryHandler] = [AsyncConnectionErrorRetryHandler()]
    if wait_out_429:
        handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES))
    return AsyncWebClient(token=token, base_url=base_url, retry_handlers=handlers, session=session)


def slack_error(exc: SlackApiError) -> str:
    return str(exc.response.get("error", "")) if exc.response is not None else ""


def rate_limited(exc: SlackApiError, channel: str) -> RateLimited | None:
    """The :class:`RateLimited` of a 429 (``ratelimited``) in ``channel``, else None. Slack's
    limits on message writes are per channel; a Tier limit of the workspace is kept by the
    budgets before it is met."""
    response = exc.response
    if response is None or (response.status_code != 429 and slack_error(exc) != "ratelimited"):
        return None
    headers = {str(k).lower(): v for k, v in (response.headers or {}).items()}
    raw = headers.get("retry-after")
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    try:
        retry_after = float(raw) if raw is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:
        retry_after = DEFAULT_RETRY_AFTER_S
    return RateLimited(f"{CHANNEL}:{channel}", max(retry_after, 0.1))


def slack_rates(
    channel_per_s: float, channel_burst: int, updates_per_min: float, updates_burst: int
) -> dict[str, Rate]:
    return {
        CHANNEL: Rate(channel_per_s, channel_burst),
        UPDATE: Rate(updates_per_min / 60, updates_burst),
    }


class SlackChat:
    """Posts and edits status messages in Slack channels.

    ``blobs`` reads an image by its blob key. Each finished image is uploaded once per message:
    the file id is remembered in the message reference's ``extra`` (``upload_file_id`` once the
    bytes are up, ``file_id`` once shared in the channel, with its ``image_key``), which the
    renderer stores in the row.
    """

    platform = PLATFORM

    def __init__(
        self,
        client: AsyncWebClient,
        blobs: BlobReader,
        *,
        thread_images: bool = True,
        image_retry_delays: tuple[float, ...] = IMAGE_RETRY_DELAYS,
        rates: dict[str, Rate] | None = None,
    ) -> None:
        self.client = client
        self.blobs = blobs
        self.thread_images = thread_images
        self.image_retry_delays = image_retry_delays
        self.rates = rates if rates is not None else slack_rates(1.0, 2, 50.0, 8)

    def spends(self, channel: str, ref: MessageRef | None, view: StatusView) -> list[Spend]:
        if ref is None:
            return [Spend(CHANNEL, channel)]
        writes = 1
        if view.image_key and not (ref.extra.get("image_key") == view.image_key and ref.extra.get("file_id")):
            writes += 1  # the file shared in the channel, then the message edited to show it
        if view.files and not ref.extra.get("files_shared"):
            writes += 1  # the result's files shared under the message
        return [Spend(CHANNEL, ref.channel, writes), Spend(UPDATE, "")]

    async def post_status(self, channel: str, view: StatusView) -> MessageRef:
        """Post a new status message. Raises :class:`MessageUnreachable` when Slack will not let
        genbot post in ``channel``, :class:`RateLimited` on a 429; other Slack errors propagate."""
        first = replace(view, image_key=None) if view.image_key else view
        try:
            resp = await self.client.chat_postMessage(
                channel=channel,
                text=fallback_text(first),
                blocks=status_blocks(first),
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            if (limited := rate_limited(exc, channel)) is not None:
                raise limited from None
            words = UNAVAILABLE.get(slack_error(exc))
            if words is None:
                raise
            log.error("cannot post the status message of job %s in %s: %s", view.job, channel, words)
            raise MessageUnreachable(words) from None
        # With a finished image or files, the message is posted without them and marked partial:
        # the renderer stores the reference first, then edits them in (uploading each once).
        extra = {PARTIAL: True} if view.image_key or view.files else {}
        return MessageRef(
            platform=PLATFORM, channel=str(resp["channel"]), message_id=str(resp["ts"]), extra=extra
        )

    async def edit_status(self, ref: MessageRef, view: StatusView) -> MessageRef:
        """Edit the message in place (``chat.update``). With a finished image: upload it first
        (once), then show it; returns the reference with the file id in ``extra``.

        Raises :class:`MessageGone` when the message was deleted or cannot be edited,
        :class:`RateLimited` on a 429 (with what was done so far in its reference), and
        :class:`NotYet` while Slack does not show the new file yet.
        """
        files_note = None
        if view.files:
            try:
                ref = await self._share_files_once(ref, view)
            except UploadRefused as refused:
                files_note = str(refused)
            else:
                files_note = files_where(view.files, threaded=self.thread_images)
        if not view.image_key:
            await self._update(ref, view, status_blocks(view, files_elsewhere=files_note))
            return ref
        try:
            ref = await self._upload_once(ref, view)
        except UploadRefused as refused:  # the message can be edited, but no file posted here
            blocks = status_blocks(view, image_elsewhere=str(refused), files_elsewhere=files_note)
            await self._update(ref, view, blocks)
            return ref
        file_id = ref.extra.get("file_id") if ref.extra.get("image_key") == view.image_key else None
        if file_id is None:  # the blob is gone: show the rest
            await self._update(ref, view, status_blocks(view, files_elsewhere=files_note))
            return ref
        tries = int(ref.extra.get("image_tries") or 0)
        if tries > len(self.image_retry_delays):
            where = (
                "The image is in the thread under this message."
                if self.thread_images
                else "The image is posted in this channel."
            )
            await self._update(
                ref, view, status_blocks(view, image_elsewhere=where, files_elsewhere=files_note)
            )
            return ref
        blocks = status_blocks(
            view,
            image_file_id=str(file_id),
            image_block_id=f"genbot-image-{file_id}-{tries}",
            files_elsewhere=files_note,
        )
        try:
            await self._update(ref, view, blocks, raise_invalid_blocks=True)
        except SlackApiError as exc:
            if slack_error(exc) != "invalid_blocks":
                raise
            log.info("Slack does not show file %s yet (try %d)", file_id, tries + 1)
            later = replace(ref, extra={**ref.extra, "image_tries": tries + 1})
            delay = self.image_retry_delays[min(tries, len(self.image_retry_delays) - 1)]
            raise NotYet(later, delay) from None
        return ref

    async def _update(
        self,
        ref: MessageRef,
        view: StatusView,
        blocks: list[dict[str, Any]],
        *,
        raise_invalid_blocks: bool = False,
    ) -> None:
        try:
            await self.client.chat_update(
                channel=ref.channel, ts=ref.message_id, text=fallback_text(view), blocks=blocks
            )
        except SlackApiError as exc:
            if (limited := rate_limited(exc, ref.channel)) is not None:
                limited.ref = ref
                raise limited from None
            error = slack_error(exc)
            if error in GONE:
                raise MessageGone(ref.message_id) from None
            words = UNAVAILABLE.get(error)
            if words is None or (raise_invalid_blocks and error == "invalid_blocks"):
                raise
            log.error("cannot update the status message of job %s in %s: %s", view.job, ref.channel, words)

    async def _upload_once(self, ref: MessageRef, view: StatusView) -> MessageRef:
        """Share ``view``'s image in the message's channel (thread), once: returns the reference
        with ``file_id`` set, or unchanged if the blob is gone. Resumes an upload whose bytes are
        up (``upload_file_id``) at its completion."""
        assert view.image_key is not None
        if ref.extra.get("image_key") == view.image_key and ref.extra.get("file_id"):
            return ref
        uploaded = ref.extra.get("upload_file_id") if ref.extra.get("image_key") == view.image_key else None
        try:
            if uploaded is None:
                data = await self.blobs(view.image_key)
                if data is None:
                    log.error(
                        "the image %s of job %s is missing from the blob store", view.image_key, view.job
                    )
                    return ref
                uploaded = await self._upload_bytes(f"genbot-{view.job}.png", data, view.prompt)
                ref = replace(
                    ref,
                    extra={
                        **ref.extra,
                        "image_key": view.image_key,
                        "upload_file_id": uploaded,
                        "file_id": None,
                    },
                )
            await self.client.files_completeUploadExternal(
                files=[{"id": str(uploaded), "title": f"genbot job {view.job}"}],
                channel_id=ref.channel,
                thread_ts=ref.message_id if self.thread_images else None,
            )
        except SlackApiError as exc:
            raise upload_failure(exc, ref, "the image", view.job) from None  # the bytes are up
        return replace(
            ref,
            extra={
                **ref.extra,
                "image_key": view.image_key,
                "file_id": str(uploaded),
                "upload_file_id": None,
                "image_tries": None,
            },
        )

    async def _share_files_once(self, ref: MessageRef, view: StatusView) -> MessageRef:
        """Share ``view``'s files under the message, once: each uploaded (resuming after the ones
        ``result_files`` holds), then one completion for them all. Returns the reference with
        ``files_shared``. Raises :class:`RateLimited` (with the progress in its reference) and
        :class:`UploadRefused` as :meth:`_upload_once` does."""
        if ref.extra.get("files_shared"):
            return ref
        uploaded = [str(i) for i in ref.extra.get("result_files") or []]
        try:
            for file in view.files[len(uploaded) :]:
                data = await self.blobs(file.key)
                if data is None:
                    log.error("file %s of job %s is missing from the blob store", file.key, view.job)
                    uploaded.append("")  # keeps the places of the others
                else:
                    uploaded.append(await self._upload_bytes(file.name, data, file.name))
                ref = replace(ref, extra={**ref.extra, "result_files": list(uploaded)})
            shared: list[dict[str, str | None]] = [
                {"id": i, "title": f.name} for i, f in zip(uploaded, view.files, strict=True) if i
            ]
            if shared:
                await self.client.files_completeUploadExternal(
                    files=shared,
                    channel_id=ref.channel,
                    thread_ts=ref.message_id if self.thread_images else None,
                )
        except SlackApiError as exc:
            raise upload_failure(exc, ref, "the files", view.job) from None  # what is up stays up
        return replace(ref, extra={**ref.extra, "result_files": None, "files_shared": True})

    async def _upload_bytes(self, filename: str, data: bytes, alt: str) -> str:
        """Steps one and two of Slack's upload: an upload URL, then the bytes. Returns the file id."""
        resp = await self.client.files_getUploadURLExternal(
            filename=filename, length=len(data), alt_txt=alt[:1000]
        )
        async with (
            session_of(self.client) as session,
            session.post(
                str(resp["upload_url"]), data=data, timeout=aiohttp.ClientTimeout(total=60)
            ) as answer,
        ):
            if answer.status != 200:
                raise RuntimeError(f"Slack's upload URL answered {answer.status}")
        return str(resp["file_id"])
