"""OpenAI Images (``gpt-image-1``), and services that keep its API, as an image backend:
``GENBOT_BACKEND__NAME=openai`` and ``GENBOT_BACKENDS__OPENAI__API_KEY`` (the ``openai`` extra).

One job is one ``POST /v1/images/generations`` through the official ``openai`` SDK, streamed
(``stream=true``, ``partial_images``): each ``image_generation.partial_image`` event is the job's
next step and its preview, ``image_generation.completed`` its image. ``base_url`` points it at a
compatible service. The API has no steps, seed or negative prompt: ``/imagine``'s size picks the
shape (square, landscape or portrait, the model's sizes for them) and the rest is not sent.

A job that stops before its image closes the stream (the API has no cancel; OpenAI may still bill
the image). The SDK does not retry (``max_retries=0``): the breaker and the queue decide. A prompt
the service's moderation refuses raises :class:`~bot.api.Refused` (the member reads "Refused by
the service"; the service is not counted as failing); any other error fails the job as a service
error, with what the service said in the log.

The API's reference: https://platform.openai.com/docs/api-reference/images/create and
https://platform.openai.com/docs/api-reference/images-streaming ; the SDK's
``openai/resources/images.py`` and ``openai/types/image_gen_*_event.py``
(https://github.com/openai/openai-python).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Literal

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bot.api import ImageResult, Refused
from jobs.backends.base import ImageRequest, ProgressCallback, ServiceUrl
from jobs.backends.images import as_png, preview_of

log = logging.getLogger(__name__)

NAME = "openai"
SETTING = f"GENBOT_BACKENDS__{NAME.upper()}__"
OPENAI_URL = "https://api.openai.com/v1"
#: The service's error codes for a prompt its moderation refuses.
REFUSALS = frozenset({"moderation_blocked", "content_policy_violation"})
#: gpt-image-1's sizes for a square, a landscape and a portrait picture.
SHAPES = {"square": "1024x1024", "landscape": "1536x1024", "portrait": "1024x1536"}


class OpenAISettings(BaseModel):
    """``GENBOT_BACKENDS__OPENAI__*``."""

    model_config = ConfigDict(extra="forbid")

    #: The API key (required for OpenAI itself; a compatible service may take none).
    api_key: SecretStr | None = None
    base_url: ServiceUrl = OPENAI_URL
    model: str = "gpt-image-1"
    quality: Literal["auto", "low", "medium", "high"] = "auto"
    #: Previews streamed before the image (0 to 3); each is one step of the status message.
    partial_images: int = Field(2, ge=0, le=3)
    #: Time for one request (the job's own time is the worker's backend timeout).
    timeout_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _key_for_openai(self) -> OpenAISettings:
        if self.api_key is None and self.base_url == OPENAI_URL:
            raise ValueError(
                f"{SETTING}API_KEY is required for OpenAI (https://platform.openai.com/api-keys)"
            )
        return self


def size_for(width: int, height: int) -> str:
    """The model's size of the same shape as ``width`` x ``height``. Pure."""
    if width == height:
        return SHAPES["square"]
    return SHAPES["landscape"] if width > height else SHAPES["portrait"]


def _decoded(b64: str) -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise OpenAIImagesError("the service sent an image that is not base64") from None


class OpenAIImagesError(Exception):
    """The service failed this job; the message says how, for the log."""


class OpenAIImagesBackend:
    """Draws through the OpenAI Images API (see the module docstring)."""

    name = NAME

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings

    def _client(self) -> openai.AsyncOpenAI:
        s = self.settings
        key = s.api_key.get_secret_value() if s.api_key is not None else "none"
        return openai.AsyncOpenAI(api_key=key, base_url=s.base_url, max_retries=0, timeout=s.timeout_s)

    async def generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        s = self.settings
        total = s.partial_images + 1
        image: bytes | None = None
        try:
            async with self._client() as client:
                stream = await client.images.generate(
                    model=s.model,
                    prompt=request.prompt,
                    n=1,
                    size=size_for(request.width, request.height),
                    quality=s.quality,
                    output_format="png",
                    stream=True,
                    partial_images=s.partial_images,
                )
                async with stream:  # leaving it (a cancel, a timeout) closes the connection
                    async for event in stream:
                        if event.type == "image_generation.partial_image":
                            preview = await asyncio.to_thread(preview_of, _decoded(event.b64_json))
                            await progress(min(event.partial_image_index + 1, total - 1), total, preview)
                        elif event.type == "image_generation.completed":
                            image = _decoded(event.b64_json)
        except openai.BadRequestError as exc:
            if _code(exc) in REFUSALS:
                raise Refused(f"the service refused the prompt: {_said(exc)}") from None
            raise OpenAIImagesError(f"the service refused the request (HTTP 400): {_said(exc)}") from None
        except openai.AuthenticationError as exc:
            raise OpenAIImagesError(
                f"the service refused genbot's key (HTTP 401): check {SETTING}API_KEY ({_said(exc)})"
            ) from None
        except openai.APIStatusError as exc:
            raise OpenAIImagesError(f"the service answered HTTP {exc.status_code}: {_said(exc)}") from None
        except openai.APITimeoutError:
            raise TimeoutError(f"the service took longer than {SETTING}TIMEOUT_S") from None
        except openai.APIConnectionError as exc:
            raise OpenAIImagesError(f"the service cannot be reached: {exc}") from None
        if image is None:
            raise OpenAIImagesError("the service's stream ended without an image")
        png = await asyncio.to_thread(as_png, image)
        await progress(total, total, None)
        return ImageResult(png)


def _code(exc: openai.APIStatusError) -> str | None:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _said(exc: openai.APIStatusError) -> str:
    """What the service said (``error.message``), briefly."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or exc.message)[:500]
