"""A client of the local chat's HTTP and WebSocket API (docs/local-chat.md), as the page uses it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from storage.models import InboxRow


class ChatClient:
    """One member's view of the chat: posts commands and keeps every message it is sent."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, user_id: str) -> None:
        self.session = session
        self.base_url = base_url
        self.user_id = user_id
        self.messages: dict[int, dict[str, Any]] = {}
        self.updates: list[dict[str, Any]] = []  # every pushed message, in arrival order
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    async def connect(self) -> None:
        self._ws = await self.session.ws_connect(f"{self.base_url}/ws?user_id={self.user_id}")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            message = data["message"]
            async with self._changed:
                self.messages[message["id"]] = message
                self.updates.append(message)
                self._changed.notify_all()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader

    async def command(self, text: str, files: list[str] | None = None) -> dict[str, Any]:
        """Send a command; the answer (``{"ok": true}`` or a refusal) comes before the command
        runs: its outcome arrives as messages (see :meth:`wait_for`)."""
        body: dict[str, Any] = {"user_id": self.user_id, "text": text}
        if files is not None:
            body["files"] = files
        async with self.session.post(f"{self.base_url}/api/command", json=body) as resp:
            return dict(await resp.json())

    async def upload(self, name: str, data: bytes) -> tuple[int, dict[str, Any]]:
        """Upload a file as the page does (its bytes as the body); the status and the answer."""
        async with self.session.post(
            f"{self.base_url}/api/uploads",
            params={"user_id": self.user_id, "name": name},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        ) as resp:
            return resp.status, dict(await resp.json())

    async def structured(self, command: str, options: dict[str, str]) -> dict[str, Any]:
        async with self.session.post(
            f"{self.base_url}/api/command",
            json={"user_id": self.user_id, "command": command, "options": options},
        ) as resp:
            return dict(await resp.json())

    async def action(self, message_id: int, action: str) -> dict[str, Any]:
        async with self.session.post(
            f"{self.base_url}/api/action",
            json={"user_id": self.user_id, "message_id": message_id, "action": action},
        ) as resp:
            return dict(await resp.json())

    async def history(self) -> list[dict[str, Any]]:
        async with self.session.get(
            f"{self.base_url}/api/messages", params={"user_id": self.user_id}
        ) as resp:
            return list((await resp.json())["messages"])

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """The first message (as last seen) that satisfies ``predicate``. The chat answers a
        command before it runs it: what the command did arrives later, so wait for it here."""
        found = await self.wait_for_all(predicate, 1, timeout)
        return found[0]

    async def wait_for_all(
        self, predicate: Callable[[dict[str, Any]], bool], count: int, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """The messages (as last seen, oldest first) that satisfy ``predicate``, once there are
        at least ``count`` of them; TimeoutError (a deadline, not a measure) if they never come."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                found = [m for _, m in sorted(self.messages.items()) if predicate(m)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no such message; have {list(self.messages.values())}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)


async def all_handled(timeout: float = 20.0) -> None:
    """Wait until every command the chat has answered has also run. The chat records a command,
    answers, then runs it; the core forgets the record once the command is done. For a test of a
    chat in this process (its database); TimeoutError past ``timeout``: a deadline, not a measure."""
    deadline = time.monotonic() + timeout
    while await InboxRow.filter(platform="local").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("a command the chat answered has not run")
        await asyncio.sleep(0.01)


def status_of(job: int) -> Callable[[dict[str, Any]], bool]:
    return lambda m: bool(m.get("status")) and m["status"]["job"] == job
