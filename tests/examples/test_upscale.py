"""examples/upscale: a plugin from outside genbot, written against bot.api only, taking a picture
a member attaches (``image`` option) and answering with it enlarged, through the real worker,
renderer, Redis and database: in the local chat (an upload), on Discord (an attachment option,
fetched from the CDN) and on Slack (a file shared first; slash commands carry none), each against
its platform's fake speaking the wire format."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from PIL import Image
from playwright.async_api import Browser, expect
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from storage.models import GenerationRow
from tests.adapters.test_local_page import card_for, open_chat, send
from tests.chat_client import ChatClient
from tests.conftest import make_settings
from tests.stack import stack_running


def picture(width: int = 40, height: int = 30, fmt: str = "PNG") -> bytes:
    """A small picture with something in it (a gradient), as ``fmt``."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 6 % 256, y * 8 % 256, 128) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def size_of(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return image.size


def upscale(max_side: int = 2048) -> dict[str, Any]:
    return {"modules": ["genbot_upscale:plugin"], "upscale": {"max_side": max_side}}


@contextlib.asynccontextmanager
async def upscale_runtime(
    redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Runtime]:
    overrides.setdefault("plugins", upscale())
    async with runtime(make_settings(redis_server.url, sqlite_url, tmp_path, **overrides)) as rt:
        yield rt


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def done(message: dict[str, Any]) -> bool:
    return bool(message.get("status")) and message["status"]["state"] == "succeeded"


async def test_upscale_in_the_local_chat_enlarges_the_uploaded_picture(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with upscale_runtime(redis_server, sqlite_url, tmp_path) as rt, stack_running(rt) as base:
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        status, uploaded = await alice.upload("fox in snow.jpg", picture(fmt="JPEG"))
        assert status == 200 and uploaded["name"] == "fox in snow.jpg"
        assert await alice.command("/upscale factor: 4", files=[uploaded["file"]]) == {"ok": True}
        finished = await alice.wait_for(done, timeout=30)
        await alice.close()
        async with http.get(base + finished["status"]["image_url"]) as resp:
            result = await resp.read()
        row = await GenerationRow.get(id=finished["status"]["job"])
        preview = await rt.blobs.get(f"previews/{row.id}.jpg")
    assert size_of(result) == (160, 120)
    assert (row.kind, row.prompt, row.options["factor"]) == ("upscale", "fox in snow.jpg", 4)
    image = row.options["image"]
    assert (image["content_type"], image["width"], image["height"]) == ("image/jpeg", 40, 30)
    assert finished["status"]["prompt"] == "fox in snow.jpg"
    assert "4x · 40x30 → 160x120" in finished["status"]["details"]
    # The job reported the picture as given as its preview. (Whether the message showed it depends
    # on the renderer seeing that state before the end: it renders the newest state only.)
    assert preview is not None, "the picture as given was the preview"
    with Image.open(io.BytesIO(preview)) as shown:
        assert (shown.format, shown.size) == ("JPEG", (40, 30))


async def test_what_is_not_a_fitting_picture_is_refused_and_queues_nothing(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    overrides = {"plugins": upscale(max_side=100), "limits": {"attachment_max_bytes": 5000}}
    async with (
        upscale_runtime(redis_server, sqlite_url, tmp_path, **overrides) as rt,
        stack_running(rt) as base,
    ):
        alice = ChatClient(http, base, "alice")
        bob = ChatClient(http, base, "bob")
        await alice.connect()
        await bob.connect()
        text = (await alice.upload("notes.png", b"these are not pixels"))[1]["file"]
        large = (await alice.upload("big.png", picture(60, 40)))[1]["file"]
        status, answer = await alice.upload("huge.bmp", b"x" * 6000)
        assert status == 413 and "too large" in answer["error"]
        cases = [
            (alice, "/upscale", [text], "not a picture genbot can read"),
            (alice, "/upscale factor: 2", [large], "passes the 100 px limit"),
            (alice, "/upscale", [], "image is missing"),
            (alice, "/upscale", ["0" * 32], "not here any more"),
            (bob, "/upscale", [large], "not here any more"),  # alice's upload is hers
        ]
        for client, command, files, _said in cases:
            assert await client.command(command, files=files) == {"ok": True}
        await alice.command("/queue", files=[large])
        # The chat answers before it runs a command: wait for every reply (four, the /queue one, Bob's).
        await alice.wait_for_all(lambda m: m.get("ephemeral_to") == "alice", 5)
        await bob.wait_for_all(lambda m: m.get("ephemeral_to") == "bob", 1)
        said = [m["text"] for m in (await alice.history()) + (await bob.history()) if m.get("text")]
        await alice.close()
        await bob.close()
        assert await GenerationRow.all().count() == 0, "nothing queued"
    for *_, sentence in cases:
        assert any(sentence in text for text in said), (sentence, said)
    assert any("/queue takes no file" in text for text in said)


@pytest.mark.browser
async def test_the_chat_page_attaches_a_picture_to_the_next_command(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path, browser: Browser
) -> None:
    async with (
        upscale_runtime(redis_server, sqlite_url, tmp_path) as rt,
        stack_running(rt) as base,
        open_chat(browser, base) as page,
    ):
        async with page.expect_response(lambda r: r.url.split("?")[0].endswith("/api/uploads")) as answer:
            await page.locator("#file-input").set_input_files(
                files=[{"name": "fox.png", "mimeType": "image/png", "buffer": picture(40, 30)}]
            )
        assert (await answer.value).ok
        await expect(page.locator("#attachments .attachment")).to_contain_text("fox.png")
        await send(page, "/upscale factor: 2")
        await expect(page.locator("#attachments")).to_be_hidden()
        card = card_for(page, "fox.png")
        await expect(card).to_have_attribute("data-state", "succeeded")
        result = card.locator("img.result")
        await expect(result).to_have_js_property("complete", True)
        await expect(result).to_have_js_property("naturalWidth", 80)
