"""The whole path through the local chat's own HTTP and WebSocket API, with a real worker,
renderer, Redis and database."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from PIL import Image

from bot.app import Runtime
from bot.models import State
from tests.chat_client import ChatClient
from tests.stack import bot_running, stack_running, worker_running


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_imagine_shows_position_progress_and_image(
    rt: Runtime, http: aiohttp.ClientSession
) -> None:
    async with stack_running(rt) as base:
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        for prompt in ("a red fox in snow", "a blue whale", "a green owl"):
            assert (await alice.command(f"/imagine {prompt} steps: 8")) == {"ok": True}

        last = await alice.wait_for(lambda m: bool(m.get("status")) and m["status"]["prompt"] == "a green owl" and m["status"]["state"] == "succeeded", timeout=30)
        job = last["status"]["job"]
        seen = [u["status"]["headline"] for u in alice.updates if u.get("status") and u["status"]["job"] == job]
        assert seen[0].startswith("Queued · #3 in line")
        assert any(h.startswith("Queued · #2 in line") for h in seen), seen
        assert any(h.startswith("Queued · #1 in line") for h in seen), seen
        assert any(h.startswith("Generating · ") and h.endswith("%") for h in seen), seen
        statuses = [u["status"] for u in alice.updates if u.get("status") and u["status"]["job"] == job]
        assert any(s["preview_url"] for s in statuses if s["state"] == "running")
        assert last["status"]["image_url"]
        async with http.get(base + last["status"]["image_url"]) as resp:
            assert resp.status == 200
            image = Image.open(io.BytesIO(await resp.read()))
            assert image.size == (512, 512)
        gen = await rt.store.get(job)
        assert gen is not None and gen.state is State.SUCCEEDED
        await alice.close()
