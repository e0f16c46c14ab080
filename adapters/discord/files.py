"""Files members attach to a command's file option (``attachment``, ``image``: Discord's option
type 11), fetched from Discord's CDN.

The option's value reaches the core as the attachment's ``url``
(:func:`~adapters.discord.commands.option_text`): Discord puts the attachment object in the
interaction's ``data.resolved.attachments``. Its link is signed (``ex``, ``is``, ``hm``) and good
for about a day, long enough for a command that a restarted bot answers from its inbox. The
download needs no token. It goes only to Discord's own hosts over HTTPS (``cdn.discordapp.com``,
``media.discordapp.net``) or to the configured REST API's own host (a local fake), reads at most
``max_bytes`` and follows no redirect. An expired or deleted attachment answers 403 or 404: the
member is asked to attach it again.

Discord's references: the attachment object
https://discord.com/developers/docs/resources/message#attachment-object ; the ATTACHMENT option
type (11) and ``resolved.attachments``, in "Application Command Option Type" of
https://discord.com/developers/docs/interactions/application-commands ;
signed CDN links https://discord.com/developers/docs/reference#signed-attachment-cdn-urls .
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import aiohttp

from adapters.download import on_platform, read_limited
from bot.errors import ErrorCode, GenbotError
from bot.ports import Upload

log = logging.getLogger(__name__)

#: Where Discord serves attachments (and the API itself).
DISCORD_DOMAINS = ("discordapp.com", "discordapp.net", "discord.com")
#: A bound for direct callers; the core bounds a whole fetch more tightly.
DOWNLOAD_TIMEOUT_S = 60.0

NOT_DISCORDS = "That file is not one attached in Discord: attach it to the command."
GONE = "Discord no longer has that file: attach it again."
UNREACHABLE = "genbot could not get the file from Discord: try again in a moment."


def _invalid(sentence: str) -> GenbotError:
    return GenbotError(ErrorCode.INVALID_OPTION, sentence)


def may_fetch(url: str, api_base_url: str) -> bool:
    """Whether genbot downloads ``url``: HTTPS on Discord's own hosts, or the configured REST
    API's own scheme, host and port (a local fake of Discord). Pure."""
    return on_platform(url, DISCORD_DOMAINS, api_base_url)


def attachment_name(url: str) -> str:
    """The name an attachment was sent under: the last segment of its link. Pure."""
    return unquote(PurePosixPath(urlsplit(url).path).name) or "file"


async def fetch_attachment(url: str, max_bytes: int, api_base_url: str) -> Upload:
    """The attachment at ``url`` (at most ``max_bytes``), named as it was sent and typed as the
    CDN serves it. Raises :class:`GenbotError` (invalid_option) with one sentence for a link that
    is not Discord's, an attachment gone, one too large, or the CDN failing. Reads only."""
    if not may_fetch(url, api_base_url):
        log.warning("an attachment option named %s, not a Discord host", urlsplit(url).hostname)
        raise _invalid(NOT_DISCORDS)
    name = attachment_name(url)
    timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            if response.status in (403, 404, 410):
                raise _invalid(GONE)
            if response.status != 200:
                log.warning("Discord's CDN answered an attachment download with HTTP %d", response.status)
                raise _invalid(UNREACHABLE)
            data = await read_limited(response, name, max_bytes)
            return Upload(name, data, response.headers.get("Content-Type", ""))
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("downloading an attachment from Discord failed: %s", type(exc).__name__)
        raise _invalid(UNREACHABLE) from None
