"""Who is a genbot admin on Slack: a configured user id, or a workspace admin or owner as Slack's
``users.info`` reports it (``is_admin``, ``is_owner``, ``is_primary_owner``).

The answer is looked up on the server for every command and button press, after the ack (a Web API
call must never delay it), and kept per (team, user) for ``ttl_s`` seconds, so a busy member costs
one ``users.info`` call per TTL, not one per command. A lookup that fails means "not an admin"; it
is logged and not kept, so the next command asks again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

#: Workspace roles that make a member a genbot admin.
ADMIN_FLAGS = ("is_admin", "is_owner", "is_primary_owner")
#: Past this many cached answers, the expired ones are dropped.
PRUNE_AT = 1000


def is_workspace_admin(user: dict[str, Any]) -> bool:
    """A ``users.info`` user object: an admin, owner or primary owner of this workspace. Not a
    deactivated account, nor a member of another organisation seen through a shared channel
    (``is_stranger``: their flags describe their own workspace, not this one)."""
    if user.get("deleted") or user.get("is_stranger"):
        return False
    return any(user.get(flag) is True for flag in ADMIN_FLAGS)


class SlackAdmins:
    """Decides whether a Slack member is a genbot admin. Safe to call concurrently: simultaneous
    lookups of one member share a single ``users.info`` call."""

    def __init__(
        self,
        client: AsyncWebClient,
        configured: Collection[str],
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.configured = frozenset(configured)
        self.ttl_s = ttl_s
        self.clock = clock
        self._known: dict[tuple[str, str], tuple[bool, float]] = {}  # key -> (admin, expires at)
        self._pending: dict[tuple[str, str], asyncio.Future[bool | None]] = {}

    async def is_admin(self, team: str, user: str) -> bool:
        """True for a configured id (no call) or a workspace admin or owner. Never raises: a
        failed lookup is False."""
        if user in self.configured:
            return True
        if not user:
            return False
        if self.ttl_s <= 0:
            return await self._lookup(team, user) is True
        key = (team, user)
        now = self.clock()
        known = self._known.get(key)
        if known is not None and known[1] > now:
            return known[0]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._pending[key] = pending
            try:
                answer = await self._lookup(team, user)
                if answer is not None:
                    self._remember(key, answer, self.clock())
                pending.set_result(answer)
            finally:
                del self._pending[key]
                if not pending.done():  # cancelled mid-call: the waiters ask again next time
                    pending.set_result(None)
            return answer is True
        return await asyncio.shield(pending) is True

    def _remember(self, key: tuple[str, str], admin: bool, now: float) -> None:
        if len(self._known) >= PRUNE_AT:
            self._known = {k: v for k, v in self._known.items() if v[1] > now}
        self._known[key] = (admin, now + self.ttl_s)

    async def _lookup(self, team: str, user: str) -> bool | None:
        """``users.info``: True or False, or None when Slack could not say (logged)."""
        try:
            resp = await self.client.users_info(user=user)
        except SlackApiError as exc:
            error = exc.response.get("error", "") if exc.response is not None else ""
            log.warning("users.info for %s in %s failed (%s): treated as not an admin", user, team, error)
            return None
        except Exception:
            log.exception("users.info for %s in %s failed: treated as not an admin", user, team)
            return None
        found = resp.get("user")
        if not isinstance(found, dict):
            log.warning("users.info for %s in %s gave no user: treated as not an admin", user, team)
            return None
        return is_workspace_admin(found)
