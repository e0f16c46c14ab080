"""Results of several images or of a file, from a plugin's job to the local chat: the images
kept one by one and shown as one grid, a file kept under a clean name and carried as a download
(never a page of the chat's origin), and results a platform could not carry failing plainly."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from PIL import Image
from redis.asyncio import Redis

from bot.app import Runtime, runtime
from bot.embedded_redis import EmbeddedRedis
from bot.errors import ErrorCode
from jobs.results import GRID_GAP, contact_sheet
from storage.models import GenerationRow
from tests.chat_client import ChatClient
from tests.conftest import make_settings
from tests.stack import stack_running


@pytest_asyncio.fixture
async def chat(
    results_module: None, redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, str, ChatClient, aiohttp.ClientSession]]:
    settings = make_settings(
        redis_server.url, sqlite_url, tmp_path, plugins={"modules": ["plugin_results:plugin"]}
    )
    async with (
        runtime(settings) as rt,
        stack_running(rt) as base,
        aiohttp.ClientSession() as http,
    ):
        alice = ChatClient(http, base, "alice")
        await alice.connect()
        yield rt, base, alice, http
        await alice.close()


def ended(message: dict[str, Any]) -> bool:
    return bool(message.get("status")) and message["status"]["state"] in ("succeeded", "failed")


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def test_several_images_are_kept_one_by_one_and_shown_as_one_grid(
    chat: tuple[Runtime, str, ChatClient, aiohttp.ClientSession],
) -> None:
    _rt, base, alice, http = chat
    assert await alice.command("/grid count: 5") == {"ok": True}
    status = (await alice.wait_for(ended, timeout=30))["status"]
    assert status["state"] == "succeeded"
    files = status["files"]
    assert [f["name"] for f in files] == [f"image-{n}.png" for n in range(1, 6)]
    sizes = []
    for f in files:
        async with http.get(base + f["url"]) as resp:
            assert resp.content_type == "image/png"
            sizes.append(size_of(await resp.read()))
    assert sizes == [(30 + n, 20) for n in range(5)], "each image at its own size"
    async with http.get(base + status["image_url"]) as resp:
        grid = size_of(await resp.read())
    # 5 images: 3 in a row, 2 rows, each cell as large as the largest image (34x20)
    assert grid == (3 * 34 + 4 * GRID_GAP, 2 * 20 + 3 * GRID_GAP)
    row = await GenerationRow.get(id=status["job"])
    assert row.result_key == f"results/{row.id}.png" and len(row.meta["files"]) == 5


async def test_a_file_is_a_download_under_a_clean_name_never_a_page(
    chat: tuple[Runtime, str, ChatClient, aiohttp.ClientSession],
) -> None:
    _rt, base, alice, http = chat
    assert await alice.command("/document notes") == {"ok": True}
    status = (await alice.wait_for(ended, timeout=30))["status"]
    assert status["state"] == "succeeded" and status["image_url"] is None
    [file] = status["files"]
    assert (file["name"], file["content_type"], file["size"]) == ("notes.html", "text/html", 25)
    async with http.get(base + file["url"]) as resp:
        assert resp.content_type == "application/octet-stream"
        assert resp.headers["Content-Disposition"] == "attachment"
        assert await resp.read() == b"<script>alert(1)</script>"


@pytest.mark.parametrize("command", ["/grid count: 10", "/document empty"])
async def test_a_result_no_platform_could_carry_fails_as_our_error(
    chat: tuple[Runtime, str, ChatClient, aiohttp.ClientSession], command: str
) -> None:
    _rt, _base, alice, _http = chat
    assert await alice.command(command) == {"ok": True}
    status = (await alice.wait_for(ended, timeout=30))["status"]
    assert status["state"] == "failed" and status["error"]["code"] == ErrorCode.INTERNAL.value
    assert status["files"] == []


def test_a_grid_is_bounded_and_keeps_the_order() -> None:
    def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (width, height), colour).save(out, "PNG")
        return out.getvalue()

    red, blue = (255, 0, 0), (0, 0, 255)
    sheet = contact_sheet((png(1500, 1000, red), png(1500, 1000, blue)))
    with Image.open(io.BytesIO(sheet)) as image:
        assert max(image.size) == 2048
        left = image.getpixel((image.width // 4, image.height // 2))
        right = image.getpixel((3 * image.width // 4, image.height // 2))
    assert left == red and right == blue
