"""Files members share in Slack, fetched for a command's file options (``attachment``, ``image``).

Slack's slash commands carry no files: the member shares the file in the channel first, then runs
the command. A file option's value (:func:`file_ref`) is one of:

- ``latest``: the newest file the member shared in the command's channel, from ``files.list``
  (``channel``, ``user``, ``count=1``; files come newest first), only pictures
  (``types=images``) for a command whose file options are all pictures. The adapter gives it to a
  required file option the member left out (:mod:`adapters.slack.payloads`).
- a file id (``F0123ABCD``) or a link to the file (its permalink,
  ``https://<team>.slack.com/files/<member>/<F...>/<name>``, or its private URL): ``files.info``.
  The file must have been shared in the command's channel (its ``channels``, ``groups``, ``ims`` or
  ``shares``), so that nobody pulls a file from a channel they cannot see through genbot.

The bytes come from the file's ``url_private_download`` (else ``url_private``), with the bot
token as ``Authorization: Bearer``. The token goes to Slack's own hosts only (``slack.com``,
``*.slack.com``, ``*.slack-edge.com`` over HTTPS) and to the configured Web API's own host (and
its subdomains: GovSlack's files): a file whose link points elsewhere (an external file) is
refused, as is a redirect elsewhere. At most ``max_bytes`` are read: the file's ``size`` refuses a
larger one before anything is downloaded, and the download stops one byte past the limit. Slack
answers a request it does not authenticate with its sign-in page (HTML, 200): HTML where the
file is not HTML is refused.

Every refusal is one sentence for the member (:class:`~bot.errors.GenbotError`, invalid_option);
what Slack said goes to the log. Nothing here retries or sleeps: a 429 is a sentence.

Slack's references: files.list (Tier 3, "most recent first")
https://docs.slack.dev/reference/methods/files.list ; files.info (Tier 4; "bot user tokens may use
this method to access information about files appearing in the channels they belong to")
https://docs.slack.dev/reference/methods/files.info ; the file object
https://docs.slack.dev/reference/objects/file-object . Both methods need the ``files:read`` scope.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.download import on_platform, read_limited
from adapters.slack.session import session_of
from bot.attachments import ATTACHMENT_TYPES, content_type_of, too_large
from bot.commands import CommandSpec
from bot.errors import ErrorCode, GenbotError
from bot.ports import Upload
from bot.text import shown

log = logging.getLogger(__name__)

#: The value of a file option that takes the member's newest file in the channel.
LATEST = "latest"
#: Slack's file ids: ``F`` and upper-case letters and digits.
FILE_ID = re.compile(r"F[A-Z0-9]{8,31}")
#: A private URL's (or public permalink's) segment: ``<team>-<file>``, perhaps ``-<secret>``.
_TEAM_FILE = re.compile(r"[TE][A-Z0-9]{1,31}-(F[A-Z0-9]{8,31})(?:-[0-9a-f]+)?")
#: Where the bot token may go, besides the configured Web API's host.
SLACK_DOMAINS = ("slack.com", "slack-edge.com")
#: The links of a file object that give its bytes, best first.
DOWNLOAD_LINKS = ("url_private_download", "url_private")
#: Redirects followed on a download (each to a host the token may go to).
REDIRECTS_MAX = 3
#: A bound for direct callers; the core bounds a whole fetch more tightly.
DOWNLOAD_TIMEOUT_S = 60.0

NOT_A_FILE = (
    "That is not a Slack file: give the file's link or id (F...), or leave it out to take the newest "
    "file you shared in this channel."
)
NOT_HERE = "That file was not shared in this channel: share it here first, then run the command again."
GONE = (
    "genbot cannot find that file in Slack (it was deleted, or is in a channel genbot is not in): "
    "share it in this channel, then run the command again."
)
MISSING_SCOPE = (
    "genbot's Slack app may not read files: an admin needs to add the files:read scope to the app "
    "and reinstall it."
)
BUSY = "Slack asked genbot to slow down: try again in a minute."
NOT_AUTHED = "Slack refused genbot's token, so it cannot fetch the file: tell an admin."
NO_CHANNEL = "genbot cannot see this channel's files: invite it with /invite @genbot, then try again."
UNREACHABLE = "genbot could not get the file from Slack: try again in a moment."
#: Slack's errors that mean the token itself is refused.
_TOKEN_ERRORS = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "not_allowed_token_type",
    }
)


def _invalid(sentence: str) -> GenbotError:
    return GenbotError(ErrorCode.INVALID_OPTION, sentence)


def none_shared(pictures: bool) -> str:
    """The sentence for ``latest`` when the member shared nothing (no picture) in the channel."""
    what = "a picture" if pictures else "a file"
    return (
        f"You have not shared {what} in this channel yet: share it here first (drag it into the "
        "channel), then run the command again, or give the file's link."
    )


# -- pure --------------------------------------------------------------------------------------


def file_ref(value: str) -> str | None:
    """What a file option's value names: :data:`LATEST` (any case), a file id, or the file id of a
    link to a file (a permalink ``.../files/<member>/<F...>/...``, a private URL
    ``.../files-pri/<team>-<F...>/...``, a public permalink ``.../<team>-<F...>-<secret>``), as
    typed or as Slack escapes it (``<https://...|label>``). None for anything else. Pure."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].partition("|")[0].strip()
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    if text.lower() == LATEST:
        return LATEST
    if FILE_ID.fullmatch(text):
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) >= 3 and segments[0] == "files" and FILE_ID.fullmatch(segments[2]):
        return segments[2]
    for segment in segments[:2]:
        if found := _TEAM_FILE.fullmatch(segment):
            return found.group(1)
    return None


def pictures_only(spec: CommandSpec) -> bool:
    """Whether every file option of ``spec`` is an ``image`` (``latest`` then lists pictures only)."""
    kinds = {o.type for o in spec.options if o.type in ATTACHMENT_TYPES}
    return kinds == {"image"}


def shared_in(file: Mapping[str, Any], channel: str) -> bool:
    """Whether the file object ``file`` was shared in ``channel``: a public or private channel,
    or a direct message (``channels``, ``groups``, ``ims``, or the ids under ``shares``). Pure."""
    for key in ("channels", "groups", "ims"):
        ids = file.get(key)
        if isinstance(ids, list) and channel in ids:
            return True
    shares = file.get("shares")
    if isinstance(shares, dict):
        return any(isinstance(kind, dict) and channel in kind for kind in shares.values())
    return False


def may_carry_token(url: str, api_base_url: str) -> bool:
    """Whether genbot may send its bot token to ``url``: HTTPS to ``slack.com``, ``*.slack.com`` or
    ``*.slack-edge.com``, or the configured Web API's own scheme and host (and port), or an HTTPS
    subdomain of that host (GovSlack: ``files.slack-gov.com`` beside ``slack-gov.com/api/``). Pure."""
    return on_platform(url, SLACK_DOMAINS, api_base_url, api_subdomains=True)


def file_name(file: Mapping[str, Any]) -> str:
    """The name a file was shared under (Slack's ``name`` may be null): else its title, its id."""
    for key in ("name", "title", "id"):
        value = file.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return "file"


def refusal(method: str, exc: SlackApiError) -> GenbotError:
    """A Slack error answer to ``method`` as the member's sentence (logged with Slack's words)."""
    response = exc.response
    error = str(response.get("error", "")) if response is not None else ""
    status = response.status_code if response is not None else 0
    if status == 429 or error == "ratelimited":
        log.warning("Slack rate-limited %s while fetching a file", method)
        return _invalid(BUSY)
    if error in ("file_not_found", "file_deleted"):
        return _invalid(GONE)
    if error == "missing_scope":
        needed = response.get("needed", "files:read") if response is not None else "files:read"
        log.error(
            "Slack refused %s: the app lacks the %s scope (add it and reinstall the app)", method, needed
        )
        return _invalid(MISSING_SCOPE)
    if error in _TOKEN_ERRORS:
        log.error("Slack refused the bot token on %s: %s", method, error)
        return _invalid(NOT_AUTHED)
    if error in ("channel_not_found", "not_in_channel"):
        return _invalid(NO_CHANNEL)
    log.warning(
        "Slack answered %s with %s (HTTP %s) while fetching a file", method, error or "an error", status
    )
    return _invalid(UNREACHABLE)


# -- I/O ---------------------------------------------------------------------------------------


class SlackFiles:
    """Fetches the file a command's option names, for :meth:`SlackResponder.fetch
    <adapters.slack.app.SlackResponder.fetch>`. Safe to share between concurrent commands."""

    def __init__(self, client: AsyncWebClient, token: str, api_base_url: str) -> None:
        self.client = client
        self.token = token
        self.api_base_url = api_base_url

    async def fetch(
        self, ref: str, *, channel: str, member: str, max_bytes: int, pictures: bool = False
    ) -> Upload:
        """The file ``ref`` names (see :func:`file_ref`) for ``member``'s command in ``channel``,
        at most ``max_bytes``; ``pictures``: ``latest`` looks at pictures only. Raises
        :class:`GenbotError` (invalid_option) with one sentence for a reference that names no
        file, no file shared (``latest``), a file not shared in ``channel``, gone, not hosted by
        Slack, too large (:func:`bot.attachments.too_large`), or Slack refusing or failing.
        Reads only; safe to retry."""
        target = file_ref(ref)
        if target is None:
            raise _invalid(NOT_A_FILE)
        if target == LATEST:
            file = await self._latest(channel, member, pictures)
        else:
            file = await self._info(target)
            if not shared_in(file, channel):
                raise _invalid(NOT_HERE)
        return await self._download(file, max_bytes)

    async def _ask(self, method: str, call: Awaitable[AsyncSlackResponse]) -> dict[str, Any]:
        try:
            response = await call
        except SlackApiError as exc:
            raise refusal(method, exc) from None
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s failed while fetching a file: %s", method, type(exc).__name__)
            raise _invalid(UNREACHABLE) from None
        return response.data if isinstance(response.data, dict) else {}

    async def _latest(self, channel: str, member: str, pictures: bool) -> dict[str, Any]:
        types = "images" if pictures else None
        answer = await self._ask(
            "files.list", self.client.files_list(channel=channel, user=member, count=1, types=types)
        )
        files = answer.get("files")
        if not isinstance(files, list) or not files or not isinstance(files[0], dict):
            raise _invalid(none_shared(pictures))
        newest: dict[str, Any] = files[0]
        return newest

    async def _info(self, file_id: str) -> dict[str, Any]:
        answer = await self._ask("files.info", self.client.files_info(file=file_id))
        file = answer.get("file")
        if not isinstance(file, dict):
            raise _invalid(GONE)
        return file

    async def _download(self, file: Mapping[str, Any], max_bytes: int) -> Upload:
        name = file_name(file)
        if file.get("mode") == "tombstone":
            raise _invalid(GONE)
        if file.get("mode") == "hidden_by_limit":  # a free workspace's file past its history
            raise _invalid(f"Slack no longer shows {shown(name)} on this workspace's plan: share it again.")
        size = file.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size > max_bytes:
            raise too_large(name, size, max_bytes)
        url = next((file[k] for k in DOWNLOAD_LINKS if isinstance(file.get(k), str) and file[k]), None)
        if url is None or not may_carry_token(url, self.api_base_url):
            log.warning(
                "file %s is not hosted by Slack (%s): not fetched with the token",
                file.get("id"),
                urlsplit(url).hostname if url else "no link",
            )
            raise _invalid(
                f"{shown(name)} is not stored in Slack (a linked file?), so genbot cannot fetch it: "
                "upload the file itself to this channel."
            )
        mimetype = file.get("mimetype") if isinstance(file.get("mimetype"), str) else ""
        data, answered = await self._get(url, name, max_bytes)
        if content_type_of(answered) == "text/html" and content_type_of(str(mimetype)) != "text/html":
            log.warning(
                "Slack answered the download of file %s with a web page, not the file", file.get("id")
            )
            raise _invalid(
                f"Slack did not hand over {shown(name)} (it answered with its sign-in page): an admin "
                "should check that the app has the files:read scope."
            )
        return Upload(name, data, str(mimetype) or answered)

    async def _get(self, url: str, name: str, max_bytes: int) -> tuple[bytes, str]:
        """The bytes at ``url`` (at most ``max_bytes``) and the type they were served as. Follows
        redirects only to hosts the token may go to."""
        headers = {"Authorization": f"Bearer {self.token}"}
        each = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)  # not the session's (Web API calls')
        try:
            # the whole download, redirects included, on the bot's session (see session_of)
            async with asyncio.timeout(DOWNLOAD_TIMEOUT_S), session_of(self.client) as session:
                for _ in range(REDIRECTS_MAX + 1):
                    async with session.get(
                        url, headers=headers, allow_redirects=False, timeout=each
                    ) as response:
                        if response.status in (301, 302, 303, 307, 308):
                            url = urljoin(url, response.headers.get("Location", ""))
                            if not may_carry_token(url, self.api_base_url):
                                log.warning(
                                    "a file download redirected away from Slack, to %s",
                                    urlsplit(url).hostname,
                                )
                                break
                            continue
                        return await _body(response, name, max_bytes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("downloading a file from Slack failed: %s", type(exc).__name__)
            raise _invalid(UNREACHABLE) from None
        raise _invalid(
            f"Slack did not hand over {shown(name)} (it sent genbot elsewhere): an admin should check "
            "that the app has the files:read scope."
        )


async def _body(response: aiohttp.ClientResponse, name: str, max_bytes: int) -> tuple[bytes, str]:
    if response.status in (404, 410):
        raise _invalid(GONE)
    if response.status != 200:
        log.warning("Slack answered a file download with HTTP %d", response.status)
        raise _invalid(UNREACHABLE)
    return await read_limited(response, name, max_bytes), response.headers.get("Content-Type", "")
