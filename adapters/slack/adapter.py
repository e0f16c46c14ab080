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
- 429 is retried by the client itself, honouring ``Retry-After``
  (``AsyncRateLimitErrorRetryHandler``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.blocks import fallback_text, status_blocks
from bot.models import MessageRef, StatusView
from bot.ports import PARTIAL, MessageGone, MessageUnreachable

log = logging.getLogger(__name__)

PLATFORM = "slack"
RATE_LIMIT_RETRIES = 5
#: Right after an upload Slack often refuses a ``slack_file`` block (``invalid_blocks``) until the
#: file is visible; waits between the tries, in seconds.
IMAGE_RETRY_DELAYS = (1.0, 2.0, 4.0)

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


def make_client(token: str, base_url: str) -> AsyncWebClient:
    """A Web API client that waits out 429s (``Retry-After``) and retries dropped connections."""
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )


def slack_error(exc: SlackApiError) -> str:
    return str(exc.response.get("error", "")) if exc.response is not None else ""


class SlackChat:
    """Posts and edits status messages in Slack channels.

    ``blobs`` reads an image by its blob key. Each finished image is uploaded once per message:
    the file id is remembered in the message reference's ``extra`` (``image_key``, ``file_id``),
    which the renderer stores in the row, and in memory for an edit that failed after the upload.
    """

    platform = PLATFORM

    def __init__(
        self,
        client: AsyncWebClient,
        blobs: BlobReader,
        *,
        thread_images: bool = True,
        image_retry_delays: tuple[float, ...] = IMAGE_RETRY_DELAYS,
    ) -> None:
        self.client = client
        self.blobs = blobs
        self.thread_images = thread_images
        self.image_retry_delays = image_retry_delays
        self._uploaded: dict[tuple[str, str, str], str] = {}  # (channel, ts, key) -> file id

    async def post_status(self, channel: str, view: StatusView) -> MessageRef:
        """Post a new status message. Raises :class:`MessageUnreachable` when Slack will not let
        genbot post in ``channel``; other Slack errors propagate."""
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
            words = UNAVAILABLE.get(slack_error(exc))
            if words is None:
                raise
            log.error("cannot post the status message of job %s in %s: %s", view.job, channel, words)
            raise MessageUnreachable(words) from None
        # With a finished image, the message is posted without it and marked partial: the
        # renderer stores the reference first, then edits the image in (uploading it once).
        extra = {PARTIAL: True} if view.image_key else {}
        return MessageRef(
            platform=PLATFORM, channel=str(resp["channel"]), message_id=str(resp["ts"]), extra=extra
        )

    async def edit_status(self, ref: MessageRef, view: StatusView) -> MessageRef:
        """Edit the message in place (``chat.update``). With a finished image: upload it first
        (once), then show it; returns the reference with the file id in ``extra``.

        Raises :class:`MessageGone` when the message was deleted or cannot be edited.
        """
        if not view.image_key:
            await self._update(ref, view, status_blocks(view))
            return ref
        try:
            file_id = await self._upload_once(ref, view)
        except UploadRefused as refused:  # the message can be edited, but no file posted here
            await self._update(ref, view, status_blocks(view, image_elsewhere=str(refused)))
            return ref
        if file_id is None:  # the blob is gone: show the rest
            await self._update(ref, view, status_blocks(view))
            return ref
        new_ref = replace(ref, extra={**ref.extra, "image_key": view.image_key, "file_id": file_id})
        delays = (0.0, *self.image_retry_delays)
        for attempt, delay in enumerate(delays):
            await asyncio.sleep(delay)
            blocks = status_blocks(
                view, image_file_id=file_id, image_block_id=f"genbot-image-{file_id}-{attempt}"
            )
            try:
                await self._update(ref, view, blocks, raise_invalid_blocks=True)
                return new_ref
            except SlackApiError as exc:
                if slack_error(exc) != "invalid_blocks":
                    raise
                log.info("Slack does not show file %s yet (try %d)", file_id, attempt + 1)
        where = (
            "The image is in the thread under this message."
            if self.thread_images
            else "The image is posted in this channel."
        )
        await self._update(ref, view, status_blocks(view, image_elsewhere=where))
        return new_ref

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
            error = slack_error(exc)
            if error in GONE:
                raise MessageGone(ref.message_id) from None
            words = UNAVAILABLE.get(error)
            if words is None or (raise_invalid_blocks and error == "invalid_blocks"):
                raise
            log.error("cannot update the status message of job %s in %s: %s", view.job, ref.channel, words)

    async def _upload_once(self, ref: MessageRef, view: StatusView) -> str | None:
        assert view.image_key is not None
        if ref.extra.get("image_key") == view.image_key and ref.extra.get("file_id"):
            return str(ref.extra["file_id"])
        key = (ref.channel, ref.message_id, view.image_key)
        if key in self._uploaded:
            return self._uploaded[key]
        data = await self.blobs(view.image_key)
        if data is None:
            log.error("the image %s of job %s is missing from the blob store", view.image_key, view.job)
            return None
        try:
            resp = await self.client.files_upload_v2(
                channel=ref.channel,
                thread_ts=ref.message_id if self.thread_images else None,
                content=data,
                filename=f"genbot-{view.job}.png",
                title=f"genbot job {view.job}",
                alt_txt=view.prompt[:1000],
            )
        except SlackApiError as exc:
            # chat:write.public lets genbot post in a public channel it has not joined; files do
            # not: the upload answers not_in_channel there.
            words = UNAVAILABLE.get(slack_error(exc))
            if words is None:
                raise
            log.error("cannot upload the image of job %s in %s: %s", view.job, ref.channel, words)
            raise UploadRefused(f"genbot could not post the image here. {words}") from None
        file_id = str(resp["file"]["id"]) if resp.get("file") else str(resp["files"][0]["id"])
        self._uploaded[key] = file_id
        return file_id
