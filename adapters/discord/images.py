"""The final image, and the files a result carries, within Discord's upload limit. Pure (Pillow
only).

Discord applies its upload limit (the interaction's ``attachment_size_limit``) to a message's whole
request in practice, not to each file alone, and takes at most ten attachments a message."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from bot.models import ResultFile

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


#: The most attachments a message takes.
ATTACHMENTS_MAX = 10
#: What a message's request carries besides its files (the embed, the multipart framing).
REQUEST_OVERHEAD = 64 * 1024


def fitting(
    files: Sequence[ResultFile], limit: int, used: int = 0, taken: int = 0
) -> tuple[list[ResultFile], list[ResultFile]]:
    """``files`` split into those that go with the message, in order, while their sizes with
    ``used`` bytes (and ``taken`` attachments) already in it stay within ``limit`` and
    :data:`ATTACHMENTS_MAX`, and those left out."""
    kept: list[ResultFile] = []
    left: list[ResultFile] = []
    total = used + REQUEST_OVERHEAD
    for file in files:
        if taken + len(kept) < ATTACHMENTS_MAX and total + file.size <= limit:
            kept.append(file)
            total += file.size
        else:
            left.append(file)
    return kept, left
