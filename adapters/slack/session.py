"""One HTTP session for all of a Slack bot's calls to Slack.

slack_sdk's ``AsyncWebClient`` (and ``AsyncWebhookClient``) without a ``session`` opens an
``aiohttp.ClientSession`` for every call and closes it after: a new TCP connection (on Slack, a new
TLS handshake) per call. :class:`SlackSession` opens one session, inside the running loop, when the
bot starts, and hands it to every client genbot built (through the SDK's ``session`` attribute,
which it reads at each call, and which Bolt copies into its per-request clients); the uploads,
the file downloads and the ``response_url`` replies use it too (:func:`session_of`). Its pool keeps
connections to Slack open and reuses them.

A session given to slack_sdk makes it drop its own per-call timeout (30 s), so the session carries
it (:data:`TIMEOUT_S`). Retries and 429s are the clients' retry handlers' business, unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp

#: slack_sdk's own timeout of a call, in seconds, which it applies only to a session it opens.
TIMEOUT_S = 30.0


class HasSession(Protocol):
    """A slack_sdk client: ``AsyncWebClient``, ``AsyncWebhookClient``."""

    session: aiohttp.ClientSession | None


class SlackSession:
    """One session that clients share from :meth:`open` to :meth:`close`.

    Before :meth:`open` and after :meth:`close` the clients work as slack_sdk's do without one
    (a session per call), so a call that races the stop still goes out."""

    def __init__(self) -> None:
        self.clients: list[HasSession] = []
        self.session: aiohttp.ClientSession | None = None

    async def open(self, *clients: HasSession) -> aiohttp.ClientSession:
        """Open the session (in the running loop: aiohttp's rule) and give it to ``clients``.
        Opening again gives the same session to more clients."""
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        for client in clients:
            client.session = self.session
            self.clients.append(client)
        return self.session

    async def close(self) -> None:
        """Take the session back from the clients and close it (its connections with it). Safe to
        call more than once, and without :meth:`open`."""
        for client in self.clients:
            if client.session is self.session:
                client.session = None
        self.clients.clear()
        session, self.session = self.session, None
        if session is not None and not session.closed:
            await session.close()


@contextlib.asynccontextmanager
async def session_of(client: HasSession) -> AsyncIterator[aiohttp.ClientSession]:
    """``client``'s open session, or (a client without one: before the bot starts, in a test) a
    session for this block only. Requests in it pass their own timeout."""
    if client.session is not None and not client.session.closed:
        yield client.session
        return
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        yield session
