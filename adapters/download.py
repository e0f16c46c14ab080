"""Reading a member's file from a platform's file host, bounded, and only from that platform's
hosts: what the Discord and Slack responders share when they fetch a command's file option."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

import aiohttp

from bot.attachments import too_large

CHUNK = 64 * 1024


async def read_limited(response: aiohttp.ClientResponse, name: str, max_bytes: int) -> bytes:
    """The body of ``response``, at most ``max_bytes``: a ``Content-Length`` over it refuses the
    file before anything is read, and reading stops one chunk past it (a host that sends no length,
    or lies about it). Raises the member's refusal (:func:`bot.attachments.too_large`) naming
    ``name``."""
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_large(name, response.content_length, max_bytes)
    data = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        data += chunk
        if len(data) > max_bytes:
            raise too_large(name, None, max_bytes)
    return bytes(data)


def on_platform(url: str, domains: Iterable[str], api_base_url: str, *, api_subdomains: bool = False) -> bool:
    """Whether ``url`` is the platform's: HTTPS on one of ``domains`` (or below one), or the
    configured API's own scheme, host and port (a local fake, a regional deployment), or with
    ``api_subdomains`` an HTTPS host below the API's (GovSlack's ``files.slack-gov.com`` beside
    ``slack-gov.com``). A link with credentials or a port that is not a number is not. Pure."""
    target, api = urlsplit(url), urlsplit(api_base_url)
    try:
        host, port, api_port = (target.hostname or "").lower(), target.port, api.port
    except ValueError:  # a port that is not a number
        return False
    if not host or target.username is not None or target.password is not None:
        return False
    if target.scheme == "https" and any(host == d or host.endswith("." + d) for d in domains):
        return True
    api_host = (api.hostname or "").lower()
    if not api_host:
        return False
    if (target.scheme, host, port) == (api.scheme, api_host, api_port):
        return True
    return (
        api_subdomains
        and target.scheme == "https"
        and not _is_address(api_host)
        and host.endswith("." + api_host)
    )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
