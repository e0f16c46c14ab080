"""A plugin's result of several images or of a file, on Discord: the grid shown in the embed and
each image attached beside it, a file attached under its clean name, and what does not fit in one
message (the interaction's upload limit) named in the embed instead of failing the edit."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from PIL import Image
from redis.asyncio import Redis

from adapters.discord.images import REQUEST_OVERHEAD
from bot.embedded_redis import EmbeddedRedis
from jobs.results import contact_sheet
from storage.models import GenerationRow
from tests.adapters.discord.conftest import DiscordStack, discord_stack
from tests.adapters.discord.fake import APP_ID, FakeDiscord, Recorded, interaction_payload

WEBHOOK = rf"^/webhooks/{APP_ID}/"


@pytest_asyncio.fixture
async def results_stack(
    results_module: None,
    fake: FakeDiscord,
    redis_server: EmbeddedRedis,
    redis: Redis,
    sqlite_url: str,
    tmp_path: Path,
) -> AsyncIterator[DiscordStack]:
    plugins = {"modules": ["plugin_results:plugin"]}
    async with discord_stack(fake, redis_server, sqlite_url, tmp_path, plugins=plugins) as stack:
        yield stack


async def finished(stack: DiscordStack, payload: dict[str, object]) -> Recorded:
    """The edit that finished ``payload``'s status message."""
    stack.deliver(payload)

    def done() -> Recorded | None:
        edits = stack.fake.of("PATCH", WEBHOOK + str(payload["token"]))
        last = edits[-1] if edits else None
        return last if last is not None and last.json["embeds"][0]["title"].startswith("Done") else None

    result: Recorded = await stack.until(done)
    return result


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def test_several_images_show_as_a_grid_with_each_image_attached(results_stack: DiscordStack) -> None:
    payload = interaction_payload(name="grid", options={"count": 5})
    last = await finished(results_stack, payload)

    attached = {name: data for name, data in last.files.values()}
    grid = f"genbot-{await _job()}.png"
    assert list(attached) == [grid] + [f"image-{n}.png" for n in range(1, 6)]
    assert last.json["embeds"][0]["image"]["url"] == f"attachment://{grid}"
    assert [size_of(attached[f"image-{n}.png"]) for n in range(1, 6)] == [(30 + n, 20) for n in range(5)]
    names = [a["filename"] for a in last.json["attachments"]]
    assert names == list(attached), "each file declared in payload_json as Discord asks"
    assert not any(f["name"] == "Not attached" for f in last.json["embeds"][0].get("fields", []))


async def test_a_file_result_is_attached_under_its_clean_name(results_stack: DiscordStack) -> None:
    payload = interaction_payload(name="document", options={"name": "@everyone notes"})
    last = await finished(results_stack, payload)

    ((name, data),) = last.files.values()
    assert (name, data) == ("@everyone notes.html", b"<script>alert(1)</script>")
    embed = last.json["embeds"][0]
    assert "image" not in embed
    assert last.json["allowed_mentions"]["parse"] == []


async def test_files_past_the_upload_limit_are_named_not_sent(results_stack: DiscordStack) -> None:
    """With a small limit (a server's ``attachment_size_limit``), the grid goes and the images
    that fit with it, in order; the rest are named in the embed, and the message still finishes."""
    images = [_png(30 + n, 20, (n * 20, 0, 0)) for n in range(9)]  # as the plugin draws them
    limit = REQUEST_OVERHEAD + len(contact_sheet(tuple(images))) + sum(map(len, images[:3]))
    payload = interaction_payload(name="grid", options={"count": 9})
    payload["attachment_size_limit"] = limit
    last = await finished(results_stack, payload)

    sent = [name for name, _ in last.files.values()]
    assert sent == [f"genbot-{await _job()}.png", "image-1.png", "image-2.png", "image-3.png"]
    (left,) = [f for f in last.json["embeds"][0]["fields"] if f["name"] == "Not attached"]
    assert left["value"].startswith(", ".join(f"image-{n}.png" for n in range(4, 10)) + ": over what")


def _png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


async def _job() -> int:
    """The job of the test's one request."""
    (row,) = await GenerationRow.all()
    return int(row.id)
