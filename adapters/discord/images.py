"""The final image within Discord's upload limit. Pure (Pillow only)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

#: Discord's default per-file upload limit; an interaction says its own (attachment_size_limit).
DEFAULT_LIMIT = 10 * 1024 * 1024
JPEG_QUALITY = 90
SHRINK = 0.75
MIN_SIDE = 64


@dataclass(frozen=True, slots=True)
class Upload:
    data: bytes
    filename: str
    resized: bool


def fit_image(data: bytes, stem: str, limit: int = DEFAULT_LIMIT) -> Upload:
    """``data`` (a PNG) as ``{stem}.png`` when it fits in ``limit`` bytes; otherwise re-encoded as
    ``{stem}.jpg``, scaled down by a quarter at a time until it fits (``resized`` is then True).

    Raises ``ValueError`` if even a tiny JPEG does not fit (a limit of a few bytes)."""
    if len(data) <= limit:
        return Upload(data, f"{stem}.png", resized=False)
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("RGB")
    while True:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        if out.tell() <= limit:
            return Upload(out.getvalue(), f"{stem}.jpg", resized=True)
        if min(image.size) <= MIN_SIDE:
            raise ValueError(f"cannot fit the image into {limit} bytes")
        width, height = image.size
        image = image.resize((max(1, int(width * SHRINK)), max(1, int(height * SHRINK))))
