"""``/upscale image: <picture> factor: 2|4``: a picture a member attaches, made larger.

A genbot plugin written against :mod:`bot.api` only. The ``image`` option is a file the member
attaches, however their platform carries it (a Discord attachment, a file shared in Slack, an
upload in the local chat): genbot fetches it, checks that it is a picture within its limits and
keeps it for the job, which reads it back on whichever worker runs it. Pillow's Lanczos filter
stands in for an upscaling model; a real plugin would call its model where :func:`enlarge` is.

Settings (``GENBOT_PLUGINS__UPSCALE__*``): ``max_side``, the longest side of a result in pixels.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from bot.api import Attachment, Call, Command, ImageResult, Invalid, Job, JobKind, JobRequest, Option, Plugin

FACTORS = ("2", "4")
#: The preview's longest side: the picture as given, small, while it is enlarged.
PREVIEW_SIDE = 256


class UpscaleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_side: int = Field(2048, ge=64, le=8192)


def prepare(call: Call) -> JobRequest:
    """The job for a picture and a factor (2 unless given); a result larger than ``max_side`` is
    refused before anything is queued."""
    image: Attachment = call.options["image"]
    factor = int(call.options.get("factor", FACTORS[0]))
    max_side: int = call.settings.max_side
    longest = max(image.width, image.height)
    if longest * factor > max_side:
        largest = max_side // factor
        raise Invalid(
            f"{image.name} is {image.width}x{image.height}; {factor} times that passes the {max_side} px "
            f"limit. Attach a picture of at most {largest} px a side, or use a smaller factor."
        )
    return JobRequest(image.name, {"image": image, "factor": factor})


def details(options: Mapping[str, Any]) -> str:
    """``2x · 320x200 → 640x400``."""
    image = Attachment.of(options["image"])
    factor = int(options["factor"])
    return f"{factor}x · {image.width}x{image.height} → {image.width * factor}x{image.height * factor}"


def preview_of(data: bytes) -> bytes:
    """The picture as given, at most :data:`PREVIEW_SIDE` a side, as a JPEG."""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB")
        small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return out.getvalue()


def enlarge(data: bytes, factor: int) -> bytes:
    """The picture ``factor`` times larger (Lanczos), as a PNG."""
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)  # an animated GIF: its first frame
        mode = "RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"
        source = image.convert(mode)
    larger = source.resize((source.width * factor, source.height * factor), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    larger.save(out, "PNG")
    return out.getvalue()


async def upscale(job: Job) -> ImageResult:
    """Read the picture, show it small as the preview, then enlarge it (in a thread: Pillow
    holds the CPU, the worker's other jobs must not wait on it)."""
    image = job.attachment("image")
    data = await job.read(image)
    await job.progress(1, 2, preview=await asyncio.to_thread(preview_of, data))
    png = await asyncio.to_thread(enlarge, data, int(job.options["factor"]))
    await job.progress(2, 2)
    return ImageResult(png)


plugin = Plugin(
    name="upscale",
    commands=(
        Command(
            "upscale",
            "Make a picture 2 or 4 times larger",
            (
                Option("image", "image", "The picture (PNG, JPEG, WebP or GIF)", required=True),
                Option("factor", "string", "How many times larger (default 2)", choices=FACTORS),
            ),
            job="upscale",
            prepare=prepare,
        ),
    ),
    jobs=(JobKind("upscale", upscale, verb="Upscaling", backend="upscale-pillow", details=details),),
    settings=UpscaleSettings,
)
