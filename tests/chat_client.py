"""A client of the local chat's HTTP and WebSocket API (docs/local-chat.md), as the page uses it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp


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
        """The first message (as last seen) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                for message in self.messages.values():
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no such message; have {list(self.messages.values())}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)


def status_of(job: int) -> Callable[[dict[str, Any]], bool]:
    return lambda m: bool(m.get("status")) and m["status"]["job"] == job
