"""Pure translation: a StatusView as an embed and buttons; the image within the upload limit."""

from __future__ import annotations

import io
import random
from dataclasses import replace

from PIL import Image

from adapters.discord.embeds import status_buttons, status_embed
from adapters.discord.images import fit_image
from bot.models import Button, ErrorView, State, StatusView

QUEUED = StatusView(
    job=7,
    state=State.QUEUED,
    headline="Queued · #3 in line · about 40 s",
    prompt="a *red* fox @everyone",
    details="512x512 · 20 steps · seed 42 · job 7",
    requested_by="Al_ice",
    buttons=(Button("cancel", "Cancel", "danger"),),
)


def test_queued_view_as_embed_and_buttons() -> None:
    assert status_embed(QUEUED).to_dict() == {
        "type": "rich",
        "flags": 0,
        "title": "Queued · #3 in line · about 40 s",
        "description": "a \\*red\\* fox @\u200beveryone",
        "color": 0x99AAB5,
        "fields": [{"name": "Requested by", "value": "Al\\_ice", "inline": True}],
        "footer": {"text": "512x512 · 20 steps · seed 42 · job 7"},
    }
    (button,) = status_buttons(QUEUED)
    assert (button.custom_id, button.label, button.style.name) == ("genbot:cancel:7", "Cancel", "danger")


def test_failed_view_shows_the_error_and_no_buttons() -> None:
    view = StatusView(
        job=8,
        state=State.FAILED,
        headline="Took too long",
        prompt="p",
        details="d",
        requested_by="Bob",
        error=ErrorView("timed_out", "Took too long", "It was stopped.", "Try fewer steps."),
    )
    embed = status_embed(view).to_dict()
    assert embed["color"] == 0xED4245
    assert embed["fields"][1] == {
        "name": "Took too long",
        "value": "It was stopped. Try fewer steps.",
        "inline": False,
    }
    assert status_buttons(view) == []


def test_done_view_points_at_the_attachment_and_says_when_resized() -> None:
    view = StatusView(
        job=9, state=State.SUCCEEDED, headline="Done", prompt="p", details="d", requested_by="B"
    )
    embed = status_embed(view, image="genbot-9.jpg", resized=True).to_dict()
    assert embed["image"] == {"url": "attachment://genbot-9.jpg"}
    assert "smaller JPEG" in embed["fields"][-1]["value"]
    preview = status_embed(view, preview="preview-9.jpg").to_dict()
    assert preview["thumbnail"] == {"url": "attachment://preview-9.jpg"}


def noise_png(size: int) -> bytes:
    rng = random.Random(1)
    image = Image.frombytes("RGB", (size, size), bytes(rng.getrandbits(8) for _ in range(size * size * 3)))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_an_image_within_the_limit_is_sent_as_is() -> None:
    png = noise_png(32)
    upload = fit_image(png, "genbot-1", limit=len(png))
    assert (upload.data, upload.filename, upload.resized) == (png, "genbot-1.png", False)


def test_an_oversized_image_becomes_a_smaller_jpeg() -> None:
    png = noise_png(256)
    limit = len(png) // 8
    upload = fit_image(png, "genbot-1", limit=limit)
    assert upload.filename == "genbot-1.jpg" and upload.resized
    assert len(upload.data) <= limit
    assert Image.open(io.BytesIO(upload.data)).format == "JPEG"


def test_the_negative_prompt_in_the_footer_pings_no_one() -> None:
    view = replace(QUEUED, details="512x512 · without: @everyone @here <@300000000000000001>")
    footer = status_embed(view).to_dict()["footer"]["text"]
    assert footer == "512x512 · without: @\u200beveryone @\u200bhere <@\u200b300000000000000001>"


def test_a_long_answer_and_long_details_fit_one_embed() -> None:
    """A job's text fills the description; with a long footer the whole passes Discord's 6,000:
    the answer gives way, and mentions in it ping no one."""
    view = replace(
        QUEUED,
        state=State.SUCCEEDED,
        text="@everyone " + "word " * 1200,
        details="d" * 2048,
        note="n" * 1000,
    )
    embed = status_embed(view)
    assert len(embed) <= 6000 and len(embed.description or "") <= 4096
    assert (embed.description or "").startswith("a \\*red\\* fox @\u200beveryone\n\n@\u200beveryone word")
    assert (embed.description or "").endswith("…")
