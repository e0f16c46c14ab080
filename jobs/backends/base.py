"""The port of an image service, as the image plugin (:mod:`jobs.imagine`) calls it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bot.api import ImageResult


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What a backend is asked to draw: exactly the validated ``/imagine`` options."""

    prompt: str
    negative: str
    width: int
    height: int
    steps: int
    seed: int

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


#: ``progress(step, total, preview)``: ``preview`` is a small JPEG or None.
ProgressCallback = Callable[[int, int, bytes | None], Awaitable[None]]


class ImageBackend(Protocol):
    name: str

    async def generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        """Make one image. Cancellation (``asyncio.CancelledError``) must stop the work."""
        ...
