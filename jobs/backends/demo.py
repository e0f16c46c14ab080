"""The demo backend: a deterministic picture drawn with Pillow, no model and no GPU.

It exists so that genbot runs end to end on a laptop: it takes one step per requested step, sleeps
``step_delay_s`` per step (as a real backend would take time) and reports a preview each step that
sharpens like a diffusion model's. The same prompt, negative prompt, size and seed give the same
image, byte for byte. Every image says "genbot demo" on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bot.api import ImageResult
from jobs.backends.base import ImageRequest, ProgressCallback

PREVIEW_SIZE = 256


def _rng(request: ImageRequest) -> random.Random:
    digest = hashlib.sha256(
        f"{request.prompt}\0{request.negative}\0{request.width}x{request.height}\0{request.seed}".encode()
    ).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def draw(request: ImageRequest) -> Image.Image:
    """The final picture: a gradient sky, soft shapes, a caption. Pure and deterministic."""
    rng = _rng(request)
    w, h = request.width, request.height
    top, bottom = _colour(rng), _colour(rng)
    image = Image.new("RGB", (w, h))
    pixels = ImageDraw.Draw(image)
    for y in range(h):
        t = y / max(1, h - 1)
        pixels.line(
            [(0, y), (w, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    shapes = ImageDraw.Draw(layer)
    for _ in range(12 + rng.randrange(12)):
        cx, cy = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(min(w, h) // 16, min(w, h) // 3)
        fill = (*_colour(rng), rng.randrange(60, 200))
        if rng.random() < 0.5:
            shapes.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            shapes.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=fill)
    image = Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
    caption = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, w // 28))
    text = request.prompt if len(request.prompt) <= 40 else request.prompt[:39] + "…"
    caption.rectangle([0, h - h // 9, w, h], fill=(0, 0, 0))
    caption.text((w // 40, h - h // 10), text, fill=(255, 255, 255), font=font)
    caption.text((w - w // 4, h // 40), "genbot demo", fill=(255, 255, 255), font=font)
    return image


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _preview(image: Image.Image, done: float) -> bytes:
    small = image.copy()
    small.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    small = small.filter(ImageFilter.GaussianBlur(radius=(1.0 - done) * 12))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=70)
    return out.getvalue()


class DemoBackend:
    """A real :class:`~bot.ports.ImageBackend`, labelled a demo everywhere it shows."""

    name = "demo"

    def __init__(self, step_delay_s: float = 0.4) -> None:
        self.step_delay_s = step_delay_s

    async def generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        final = await asyncio.to_thread(draw, request)
        steps = max(1, request.steps)
        for step in range(1, steps + 1):
            await asyncio.sleep(self.step_delay_s)
            preview = await asyncio.to_thread(_preview, final, step / steps)
            await progress(step, steps, preview)
        return ImageResult(png=await asyncio.to_thread(_png, final))
