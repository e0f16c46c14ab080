"""Reading a member's file from a platform's file host, bounded: what the Discord and Slack
responders share when they fetch a command's file option."""

from __future__ import annotations

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
