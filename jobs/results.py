"""How a job's result is kept: an image, several images, a text or a file (see :mod:`bot.api`).

Images and files go to the blob store under ``results/``; what the status message needs to find
them goes on the row (``result_key`` for the image it shows, ``meta.files`` for the files it
carries, ``meta.text`` for a text). Several images are shown as one grid, a contact sheet like
the ones image bots post, and each is carried as a file of its own at full size.
"""

from __future__ import annotations

import io
import math
import re

from PIL import Image

from bot.attachments import content_type_of
from bot.models import ResultFile
from bot.ports import RESULT_FILE_MAX_BYTES, RESULT_FILES_MAX, FileResult, ImagesResult
from bot.text import clean_line

#: The longest side of a grid of several images.
GRID_SIDE_MAX = 2048
#: The gap between the images of a grid, and around them.
GRID_GAP = 8
NAME_MAX = 100
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,8})$")


def run_stem(generation_id: int, attempt: int = 0) -> str:
    """The name under which one run of a job keeps its blobs: ``12`` for its first, ``12a1``
    for the run after it was taken over once. Every run writes its own, so a worker that was cut
    off and comes back cannot overwrite the blobs of the run that replaced it."""
    return str(generation_id) if attempt == 0 else f"{generation_id}a{attempt}"


def result_key(generation_id: int, attempt: int = 0) -> str:
    """The blob of the image a finished job's status message shows."""
    return f"results/{run_stem(generation_id, attempt)}.png"


def image_keys(generation_id: int, count: int, attempt: int = 0) -> list[str]:
    """The blobs of the images of an :class:`ImagesResult`, one by one."""
    return [f"results/{run_stem(generation_id, attempt)}-{n}.png" for n in range(1, count + 1)]


def contact_sheet(pngs: tuple[bytes, ...]) -> bytes:
    """``pngs`` side by side in a grid as near square as they allow (2 in a row, 4 as 2x2, 5 as
    3+2), each in a cell of the largest one's size, the whole at most :data:`GRID_SIDE_MAX` a
    side; a PNG. Raises ``ValueError`` for no images, or one Pillow cannot read."""
    if not pngs:
        raise ValueError("an ImagesResult holds no image")
    images: list[Image.Image] = []
    for data in pngs:
        with Image.open(io.BytesIO(data)) as source:
            images.append(source.convert("RGB"))
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_w = max(i.width for i in images)
    cell_h = max(i.height for i in images)
    width = columns * cell_w + (columns + 1) * GRID_GAP
    height = rows * cell_h + (rows + 1) * GRID_GAP
    scale = min(1.0, GRID_SIDE_MAX / max(width, height))
    sheet = Image.new("RGB", (width, height), (32, 34, 37))
    for n, image in enumerate(images):
        row, column = divmod(n, columns)
        x = GRID_GAP + column * (cell_w + GRID_GAP) + (cell_w - image.width) // 2
        y = GRID_GAP + row * (cell_h + GRID_GAP) + (cell_h - image.height) // 2
        sheet.paste(image, (x, y))
    if scale < 1.0:
        sheet = sheet.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS
        )
    out = io.BytesIO()
    sheet.save(out, "PNG")
    return out.getvalue()


def images_files(generation_id: int, result: ImagesResult, attempt: int = 0) -> list[ResultFile]:
    """The files of several images (``image-1.png`` ...). Raises ``ValueError`` past
    :data:`RESULT_FILES_MAX`."""
    if not 1 <= len(result.pngs) <= RESULT_FILES_MAX:
        raise ValueError(f"an ImagesResult holds 1 to {RESULT_FILES_MAX} images, not {len(result.pngs)}")
    return [
        ResultFile(key, f"image-{n}.png", "image/png", len(data))
        for n, (key, data) in enumerate(
            zip(image_keys(generation_id, len(result.pngs), attempt), result.pngs, strict=True), 1
        )
    ]


def file_of(generation_id: int, result: FileResult, attempt: int = 0) -> ResultFile:
    """Where a file result is kept, and the clean name and type it is shown under. Raises
    ``ValueError`` for an empty file or one over :data:`RESULT_FILE_MAX_BYTES`."""
    if not 0 < len(result.data) <= RESULT_FILE_MAX_BYTES:
        raise ValueError(f"a FileResult holds 1 to {RESULT_FILE_MAX_BYTES} bytes, not {len(result.data)}")
    name = clean_line(result.name)[:NAME_MAX] or "result"
    found = _EXTENSION.search(name)
    key = f"results/{run_stem(generation_id, attempt)}-file.{found.group(1).lower() if found else 'bin'}"
    return ResultFile(key, name, content_type_of(result.content_type), len(result.data))
