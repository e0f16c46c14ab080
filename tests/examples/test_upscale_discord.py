"""examples/upscale on Discord: ``/upscale`` registered with an attachment option (type 11), the
member's picture delivered as Discord sends it (the option's value an id, the attachment object in
``data.resolved.attachments``), fetched from the fake's CDN route, and the enlarged picture edited
into the status message. The whole stack runs: the real client, worker, renderer, Redis, SQLite."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from adapters.discord.files import GONE
from bot.app import runtime, sync_discord_commands
from bot.embedded_redis import EmbeddedRedis
from storage.models import GenerationRow
from tests.adapters.discord.conftest import DiscordStack, discord_stack
from tests.adapters.discord.fake import APP_ID, FakeDiscord, Recorded, interaction_payload
from tests.conftest import make_settings
from tests.examples.test_upscale import picture, size_of, upscale

WEBHOOK = rf"^/webhooks/{APP_ID}/"


@contextlib.asynccontextmanager
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def upscale_on_discord(
    redis_server: EmbeddedRedis, sqlite_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[FakeDiscord, DiscordStack]]:
    """genbot on Discord with the upscale plugin, a worker and the renderer, against a fake."""
    overrides.setdefault("plugins", upscale())
    async with (
        fake_discord() as fake,
        discord_stack(fake, redis_server, sqlite_url, tmp_path, **overrides) as stack,
    ):
        yield fake, stack


def final_png(fake: FakeDiscord, token: str) -> bytes | None:
    """The picture of the last edit of ``token``'s status message that carried one."""
    edits: list[Recorded] = [r for r in fake.of("PATCH", WEBHOOK + token) if r.files]
    for rec in reversed(edits):
        for name, data in rec.files.values():
            if name.startswith("genbot-"):
                return data
    return None


def answers(fake: FakeDiscord, token: str) -> list[str]:
    """What the member alone was told (ephemeral follow-ups) after ``token``'s command."""
    return [r.json["content"] for r in fake.of("POST", WEBHOOK + token + "$") if r.json.get("content")]


async def test_sync_registers_the_image_option_as_an_attachment(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    async with fake_discord() as fake:
        settings = make_settings(
            redis_server.url,
            sqlite_url,
            tmp_path,
            discord={"token": "bot-token", "api_base_url": fake.base_url},
            plugins=upscale(),
        )
        async with runtime(settings) as rt:
            await sync_discord_commands(rt, guild=42)
    (put,) = fake.of("PUT", rf"^/applications/{APP_ID}/guilds/42/commands$")
    command = next(c for c in put.json if c["name"] == "upscale")
    options = {o["name"]: o for o in command["options"]}
    assert (options["image"]["type"], options["image"]["required"]) == (11, True)
    assert options["image"]["description"] == "The picture (PNG, JPEG, WebP or GIF)"
    assert (options["factor"]["type"], options["factor"]["required"]) == (3, False)
    assert [c["value"] for c in options["factor"]["choices"]] == ["2", "4"]


async def test_upscale_enlarges_the_attached_picture(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    async with upscale_on_discord(redis_server, sqlite_url, tmp_path) as (fake, stack):
        fox = fake.attach("fox in snow.jpg", picture(fmt="JPEG"), "image/jpeg")
        payload = interaction_payload(name="upscale", options={"image": fox, "factor": "4"})
        stack.deliver(payload)
        token = payload["token"]
        png = await stack.until(lambda: final_png(fake, token))
        (row,) = await GenerationRow.all()

    assert size_of(png) == (160, 120)
    assert (row.kind, row.prompt, row.options["factor"]) == ("upscale", "fox in snow.jpg", 4)
    image = row.options["image"]
    assert (image["content_type"], image["width"], image["height"]) == ("image/jpeg", 40, 30)
    (download,) = [r for r in fake.requests if r.path.startswith("/attachments/")]
    assert download.method == "GET" and download.query["hm"], "the signed link, as Discord gave it"
    assert "Authorization" not in download.headers, "the bot token never goes to the CDN"
    edits = fake.of("PATCH", WEBHOOK + token)
    last = edits[-1].json["embeds"][0]
    assert last["title"].startswith("Done") and "4x · 40x30 → 160x120" in str(last)
    assert answers(fake, token) == []


async def test_what_cannot_be_upscaled_is_refused_and_nothing_is_queued(
    redis_server: EmbeddedRedis, redis: Redis, sqlite_url: str, tmp_path: Path
) -> None:
    limits = {"attachment_max_bytes": 5000}
    async with upscale_on_discord(redis_server, sqlite_url, tmp_path, limits=limits) as (fake, stack):
        gone = fake.attach("gone.png", picture())
        fake.expire(gone)
        cases = [
            (fake.attach("notes.png", b"these are not pixels"), "notes.png is not a picture genbot can read"),
            (gone, GONE),
            (fake.attach("huge.png", b"x" * 6000), "huge.png (6 kB) is too large: the limit is 5 kB."),
            (fake.attach("big.png", picture(520, 2), None), "passes the 2048 px limit"),
        ]
        tokens = []
        for attached, _said in cases:
            payload = interaction_payload(name="upscale", options={"image": attached, "factor": "4"})
            stack.deliver(payload)
            tokens.append(payload["token"])
        await stack.until(lambda: all(answers(fake, token) for token in tokens))
        assert await GenerationRow.all().count() == 0, "nothing queued"

    for token, (_attached, said) in zip(tokens, cases, strict=True):
        (answer,) = answers(fake, token)
        assert said in answer, (said, answer)
        (sent,) = fake.of("POST", WEBHOOK + token + "$")
        assert sent.json["flags"] & 64, "to the member alone"
        assert "Traceback" not in answer
