"""The port of an image service, as the image plugin (:mod:`jobs.imagine`) calls it."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Protocol

import aiohttp
from pydantic import AfterValidator, SecretStr

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


def _service_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return url.rstrip("/")


#: A service's address in a backend's settings: http(s), kept without a trailing slash.
ServiceUrl = Annotated[str, AfterValidator(_service_url)]


class ProgressCallback(Protocol):
    """``progress(step, total, preview)``: ``preview`` is a small JPEG or None; ``waiting`` says
    where the job waits in the service's own line (``"waiting on the Horde, about 40 s"``)."""

    def __call__(
        self, step: int, total: int, preview: bytes | None, *, waiting: str | None = None
    ) -> Awaitable[None]: ...


class ImageBackend(Protocol):
    name: str

    async def generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        """Make one image. Cancellation (``asyncio.CancelledError``) must stop the work."""
        ...


def error_words(text: str, keys: tuple[str, ...]) -> str:
    """What a service's error answer says, briefly (at most 500 characters): the values of
    ``keys`` in its JSON object, else the text itself. Pure."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(body, dict):
        parts = [str(body[k]) for k in keys if body.get(k)]
        return " ".join(parts)[:500] or text[:500]
    return text[:500]


def service_session(
    username: str | None, password: SecretStr | None, connect_timeout_s: float
) -> aiohttp.ClientSession:
    """A session for a service's HTTP API: HTTP basic when both ``username`` and ``password`` are
    given, a connect timeout, and no total timeout (the worker's backend timeout bounds a job)."""
    headers = {}
    if username is not None and password is not None:
        headers["Authorization"] = aiohttp.encode_basic_auth(username, password.get_secret_value())
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
    return aiohttp.ClientSession(headers=headers, timeout=timeout)
