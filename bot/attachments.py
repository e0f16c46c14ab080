"""Files members attach to commands: an ``attachment`` option (any file) or an ``image`` option
(a PNG, JPEG, WebP or GIF picture).

Each platform gives a file its own way: Discord resolves an attachment option into a CDN link,
Slack's slash commands carry no files (the member shares one first, and the command names it or
takes their newest), the local chat uploads it. The adapter turns the option's value into an
:class:`~bot.ports.Upload` (``Responder.fetch``, bounded by ``limits.attachment_max_bytes``);
the core checks it here and keeps it in the blob store under ``inputs/``, named by its content
(so a command run again keeps the same file once), before any row is written. The job reads it
back from there, on whichever worker runs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from bot.errors import ErrorCode, GenbotError
from bot.ports import BlobStore, Upload
from bot.text import clean_line, shown

#: The option types that take a file.
ATTACHMENT_TYPES = frozenset({"attachment", "image"})
#: The picture formats an ``image`` option takes (Pillow's names).
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
#: The longest file name kept (it is the status message's text for many jobs).
NAME_MAX = 100
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,8})$")


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file a member attached, as a job command's ``prepare`` and its job see it: its
    ``name`` (clean, at most :data:`NAME_MAX` characters), ``content_type``, ``size`` in bytes,
    the ``blob`` that holds it and, for an image, its ``width`` and ``height`` in pixels (0
    otherwise). Kept in a job's options as JSON; :meth:`of` reads it back."""

    name: str
    content_type: str
    size: int
    blob: str
    width: int = 0
    height: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, value: Attachment | Mapping[str, Any]) -> Attachment:
        """``value`` as stored in a job's options (or already an :class:`Attachment`)."""
        if isinstance(value, Attachment):
            return value
        return cls(
            name=str(value["name"]),
            content_type=str(value["content_type"]),
            size=int(value["size"]),
            blob=str(value["blob"]),
            width=int(value.get("width", 0)),
            height=int(value.get("height", 0)),
        )


def _invalid(sentence: str) -> GenbotError:
    return GenbotError(ErrorCode.INVALID_OPTION, sentence)


def too_large(name: str, size: int | None, max_bytes: int) -> GenbotError:
    """The refusal of a file over ``max_bytes`` (``size``: its size, if known)."""
    of = f" ({_megabytes(size)})" if size is not None else ""
    named = shown(name) or "That file"
    return _invalid(f"{named}{of} is too large: the limit is {_megabytes(max_bytes)}.")


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size / 1000:.0f} kB"


def content_type_of(given: str) -> str:
    """A media type as given (``text/plain; charset=utf-8``) as genbot keeps it (``text/plain``):
    ``application/octet-stream`` for anything that is not one."""
    kept = given.split(";")[0].strip().lower()
    return kept if _MIME.match(kept) else "application/octet-stream"


def _image_facts(data: bytes) -> tuple[str | None, int, int]:
    """The picture's format (None if Pillow reads none it knows) and size, from its header; the
    whole file is checked as far as Pillow can without decoding it (PNG's checksums)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            facts = image.format, image.width, image.height
            image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        return None, 0, 0
    return facts


async def keep(
    upload: Upload, *, image: bool, max_bytes: int, pixels_max: int, blobs: BlobStore
) -> Attachment:
    """Check ``upload`` (for an image option when ``image``), keep it in
    ``blobs`` and return what a job needs of it. Raises :class:`GenbotError` (invalid_option)
    with one sentence for a file that is empty, too large, or not a picture where one is asked."""
    name = clean_line(upload.name)[:NAME_MAX] or "file"
    size = len(upload.data)
    if size == 0:
        raise _invalid(f"{shown(name)} is empty: attach the file again.")
    if size > max_bytes:
        raise too_large(name, size, max_bytes)
    digest = hashlib.sha256(upload.data).hexdigest()
    if image:
        fmt, width, height = await asyncio.to_thread(_image_facts, upload.data)
        if fmt not in IMAGE_FORMATS:
            raise _invalid(
                f"{shown(name)} is not a picture genbot can read: attach a PNG, JPEG, WebP or GIF."
            )
        if width * height > pixels_max:
            raise _invalid(
                f"{shown(name)} is {width}x{height} pixels; the limit is {pixels_max:,} pixels. "
                "Attach a smaller picture."
            )
        content_type = Image.MIME[fmt]
        extension = fmt.lower()
    else:
        width = height = 0
        content_type = content_type_of(upload.content_type)
        found = _EXTENSION.search(name)
        extension = found.group(1).lower() if found else "bin"
    blob = f"inputs/{digest}.{extension}"
    await blobs.put(blob, upload.data)  # the same content, the same key: a second put rewrites it
    return Attachment(name, content_type, size, blob, width, height)
