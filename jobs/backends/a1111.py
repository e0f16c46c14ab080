"""AUTOMATIC1111's Stable Diffusion web UI, and the services that keep its API (Forge, SD.Next),
as an image backend: ``GENBOT_BACKEND__NAME=a1111`` and ``GENBOT_BACKENDS__A1111__URL``.

One job is one ``POST /sdapi/v1/txt2img`` (the service answers when the image is done, with it in
base64). Meanwhile ``GET /sdapi/v1/progress`` is read every ``poll_interval_s``: its sampling
step and its ``current_image`` (the live preview, when the service's "show progress every N
steps" is on) become the job's progress. The request carries its own task id
(``force_task_id``), and the progress is taken as this job's only while the service says that task
is its ``current_task``: a service shared with other clients never shows their pictures here.

A job that stops before its image (cancelled, timed out, the worker stopping) asks the service to
stop too (``POST /sdapi/v1/interrupt``) if its task is the one running: the web UI then ends that
generation early. A service older than ``current_task`` (2023) cannot say whose task runs; genbot
then assumes the service is its own and interrupts.

``model`` and ``sampler`` are names as the service lists them (``GET /sdapi/v1/sd-models``: a
checkpoint's title or model name; ``GET /sdapi/v1/samplers``: a name or an alias), checked on the
first job of each worker: a name the service does not have fails that job with a log line listing
the ones it has. The model goes as ``override_settings.sd_model_checkpoint`` (restored afterwards).
With ``--api-auth user:password`` on the service, set ``username`` and ``password`` (HTTP basic).

Every failure is an exception (the job fails as a service error, and the breaker counts it); what
the service said goes to the log, never to the member. Nothing here retries.

The service's source: ``modules/api/api.py`` (routes, ``text2imgapi``, ``progressapi``,
``interruptapi``, basic auth, the error body) and ``modules/api/models.py`` (the request and response
models) of https://github.com/AUTOMATIC1111/stable-diffusion-webui.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bot.api import ImageResult
from jobs.backends.base import ImageRequest, ProgressCallback, ServiceUrl, error_words, service_session
from jobs.backends.images import as_png, preview_of

log = logging.getLogger(__name__)

NAME = "a1111"
SETTING = f"GENBOT_BACKENDS__{NAME.upper()}__"
#: How long asking the service to stop may take, once the job is over.
INTERRUPT_TIMEOUT_S = 5.0


class A1111Settings(BaseModel):
    """``GENBOT_BACKENDS__A1111__*``."""

    model_config = ConfigDict(extra="forbid")

    #: The web UI's address, as started with ``--api`` (``http://127.0.0.1:7860``).
    url: ServiceUrl
    #: ``--api-auth``'s user and password (HTTP basic), if the service asks for them.
    username: str | None = None
    password: SecretStr | None = None
    #: A checkpoint to draw with (its title or model name); the service's current one if unset.
    model: str | None = None
    #: A sampler by name or alias (``Euler a``, ``DPM++ 2M``); the service's default if unset.
    sampler: str | None = None
    #: Classifier-free guidance; the service's default (7) if unset.
    cfg_scale: float | None = Field(None, ge=1, le=30)
    #: Time to connect to the service (the job's own time is the worker's backend timeout).
    connect_timeout_s: float = Field(10.0, gt=0)
    #: How often the progress (and the preview) is read while the image is made.
    poll_interval_s: float = Field(1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _both_or_neither(self) -> A1111Settings:
        if (self.username is None) != (self.password is None):
            raise ValueError(
                f"{SETTING}USERNAME and {SETTING}PASSWORD go together (the service's --api-auth)"
            )
        return self


class A1111Error(Exception):
    """The service failed this job; the message says how, for the log."""


def txt2img_payload(request: ImageRequest, settings: A1111Settings, task_id: str) -> dict[str, Any]:
    """The body of ``POST /sdapi/v1/txt2img`` for ``request``. Pure."""
    payload: dict[str, Any] = {
        "prompt": request.prompt,
        "negative_prompt": request.negative,
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "seed": request.seed,
        "batch_size": 1,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
        "force_task_id": task_id,
    }
    if settings.sampler is not None:
        payload["sampler_name"] = settings.sampler
    if settings.cfg_scale is not None:
        payload["cfg_scale"] = settings.cfg_scale
    if settings.model is not None:
        payload["override_settings"] = {"sd_model_checkpoint": settings.model}
        payload["override_settings_restore_afterwards"] = True
    return payload


def decoded(b64: str) -> bytes:
    """An image the service sent in base64 (perhaps as a ``data:`` URL). Raises :class:`A1111Error`."""
    text = b64.split(",", 1)[1] if b64.startswith("data:") else b64
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise A1111Error("the service sent an image that is not base64") from None


def names_of(listed: Any, *keys: str) -> set[str]:
    """The names a listing (``sd-models``, ``samplers``) offers under ``keys`` (lists included)."""
    names: set[str] = set()
    for item in listed if isinstance(listed, list) else []:
        if not isinstance(item, dict):
            continue
        for key in keys:
            value = item.get(key)
            values = value if isinstance(value, list) else [value]
            names.update(v for v in values if isinstance(v, str) and v)
    return names


def step_of(answer: Mapping[str, Any], task_id: str) -> tuple[int, int, str | None] | None:
    """This job's ``(step, steps, current image)`` from a ``/sdapi/v1/progress`` answer, or None
    while the service runs another task (or none). Pure."""
    current = answer.get("current_task", task_id)  # older services do not say: assume ours
    state = answer.get("state")
    if current != task_id or not isinstance(state, dict):
        return None
    step, steps = state.get("sampling_step"), state.get("sampling_steps")
    if not isinstance(step, int) or not isinstance(steps, int) or steps <= 0:
        return None
    image = answer.get("current_image")
    return min(step, steps), steps, image if isinstance(image, str) and image else None


class A1111Backend:
    """Draws through an AUTOMATIC1111-compatible web API (see the module docstring)."""

    name = NAME

    def __init__(self, settings: A1111Settings) -> None:
        self.settings = settings
        self._checked = False

    def _service(self) -> Service:
        s = self.settings
        return Service(service_session(s.username, s.password, s.connect_timeout_s), s.url)

    async def generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        task_id = f"genbot-{uuid.uuid4().hex}"
        service = self._service()
        async with service.session:
            if not self._checked:
                await self._check_names(service)
                self._checked = True
            payload = txt2img_payload(request, self.settings, task_id)
            drawing = asyncio.create_task(service.call("POST", "/sdapi/v1/txt2img", payload))
            try:
                while not drawing.done():
                    await asyncio.wait({drawing}, timeout=self.settings.poll_interval_s)
                    if not drawing.done():
                        await self._report(service, task_id, progress)
                answer = drawing.result()
            finally:
                if not drawing.done():  # the job stopped first: so does the service
                    drawing.cancel()
                    await self._interrupt(service, task_id)
        images = answer.get("images") if isinstance(answer, dict) else None
        if not isinstance(images, list) or not images or not isinstance(images[0], str):
            raise A1111Error("the service answered txt2img without an image")
        png = await asyncio.to_thread(as_png, decoded(images[0]))
        await progress(request.steps, request.steps, None)
        return ImageResult(png)

    async def _report(self, service: Service, task_id: str, progress: ProgressCallback) -> None:
        """Read the service's progress and pass this job's on. A failed read is skipped: the
        image is what counts."""
        try:
            answer = await service.call("GET", "/sdapi/v1/progress")
        except (A1111Error, aiohttp.ClientError, TimeoutError) as exc:
            log.debug("reading the image service's progress failed: %s", exc)
            return
        mine = step_of(answer, task_id) if isinstance(answer, dict) else None
        if mine is None:
            return
        step, steps, image = mine
        preview = None
        if image is not None:
            with contextlib.suppress(A1111Error):
                preview = await asyncio.to_thread(preview_of, decoded(image))
        await progress(step, steps, preview)

    async def _interrupt(self, service: Service, task_id: str) -> None:
        """Ask the service to stop ``task_id`` if it is the one running; bounded, never raises."""
        try:
            async with asyncio.timeout(INTERRUPT_TIMEOUT_S):
                answer = await service.call("GET", "/sdapi/v1/progress?skip_current_image=true")
                if isinstance(answer, dict) and answer.get("current_task", task_id) == task_id:
                    await service.call("POST", "/sdapi/v1/interrupt")
                    log.info("asked the image service to stop task %s", task_id)
        except (A1111Error, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not ask the image service to stop task %s: %s", task_id, exc)

    async def _check_names(self, service: Service) -> None:
        """The configured model and sampler are ones the service has. Raises :class:`A1111Error`."""
        s = self.settings
        for name, setting, path, keys in (
            (s.model, "MODEL", "/sdapi/v1/sd-models", ("title", "model_name")),
            (s.sampler, "SAMPLER", "/sdapi/v1/samplers", ("name", "aliases")),
        ):
            if name is None:
                continue
            offered = names_of(await service.call("GET", path), *keys)
            if name not in offered:
                raise A1111Error(
                    f"{SETTING}{setting}: the service has no {setting.lower()} {name!r}; "
                    f"it has: {', '.join(sorted(offered))}"
                )


@dataclass(frozen=True, slots=True)
class Service:
    """The web API at ``url``, through ``session`` (its login and timeouts)."""

    session: aiohttp.ClientSession
    url: str

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; its JSON answer. Raises :class:`A1111Error` for an answer that is not
        200 (with what the service said), :class:`aiohttp.ClientError` when it cannot be reached."""
        async with self.session.request(method, self.url + path, json=body) as response:
            if response.status == 401:
                raise A1111Error(
                    f"the service refused genbot's login (HTTP 401): set {SETTING}USERNAME and "
                    f"{SETTING}PASSWORD to one of its --api-auth pairs"
                )
            if response.status == 404:
                raise A1111Error(f"the service has no {path} (HTTP 404): is it started with --api?")
            if response.status != 200:
                said = error_words(await response.text(errors="replace"), ("error", "detail", "errors"))
                raise A1111Error(f"the service answered {method} {path} with HTTP {response.status}: {said}")
            try:
                return await response.json(content_type=None)
            except ValueError:
                raise A1111Error(f"the service answered {method} {path} with what is not JSON") from None
