"""What every image backend does with the pictures a service sends: the final one as a PNG, a
live one as a small preview. Pure (Pillow only); call them in a thread."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

#: A preview's longest side.
PREVIEW_SIDE = 256
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class BadImage(Exception):
    """The service sent bytes that are no picture."""


def as_png(data: bytes) -> bytes:
    """``data`` as a PNG (services send JPEG or WebP when told to). Raises :class:`BadImage`."""
    if data.startswith(PNG_MAGIC):
        return data
    try:
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            image.save(out, "PNG")
    except (UnidentifiedImageError, OSError) as exc:
        raise BadImage(f"the service sent an image Pillow cannot read ({exc})") from None
    return out.getvalue()


def preview_of(data: bytes) -> bytes | None:
    """A live image as a small JPEG, or None if it is no picture (a preview is best effort)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        return None
    small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=70)
    return out.getvalue()
