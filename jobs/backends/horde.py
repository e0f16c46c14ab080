"""AI Horde, the crowdsourced cluster of Stable Diffusion workers, as an image backend:
``GENBOT_BACKEND__NAME=horde`` (anonymous by default; ``GENBOT_BACKENDS__HORDE__API_KEY`` for a
registered key's kudos).

One job is one request: ``POST /v2/generate/async`` (the prompt, ``negative`` after ``###`` as the
Horde reads it, size, steps, seed), then ``GET /v2/generate/check/{id}`` every ``poll_interval_s``:
its ``queue_position`` and ``wait_time`` are shown in the status message while the request waits
("waiting on the Horde, #12 in its line, about 40 s"), then "drawing on the Horde". Once ``done``,
``GET /v2/generate/status/{id}`` gives the image (base64 WebP, or a link to it). A job that stops
first (cancel, timeout, the worker stopping) takes its request off the Horde: ``DELETE
/v2/generate/status/{id}``.

A request no worker on the Horde can take (``is_possible`` false: a model, size or step count
nobody serves now) and an image a worker censored raise :class:`~bot.api.Refused`: the member reads
"Refused by the service" and what to change, and the Horde is not counted as failing. Any other
failure (a refused key, a faulted request, an error answer) fails the job as a service error, with
what the Horde said in the log.

The Horde's source, https://github.com/Haidra-Org/AI-Horde: ``horde/apis/v2/stable.py`` (the routes
``/generate/async``, ``/generate/check/<id>``, ``/generate/status/<id>`` and its DELETE) and
``horde/apis/models/stable_v2.py`` and ``v2.py`` (the request's ``params``, ``RequestStatusCheck``
with ``queue_position``, ``wait_time``, ``is_possible``, ``faulted``, and the generations with
``img`` and ``censored``); its API reference is https://aihorde.net/api/ .
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bot.api import ImageResult, ListSetting, Refused
from jobs.backends.base import ImageRequest, ProgressCallback, ServiceUrl, error_words
from jobs.backends.images import as_png

log = logging.getLogger(__name__)

NAME = "horde"
SETTING = f"GENBOT_BACKENDS__{NAME.upper()}__"
#: The Horde's anonymous key: it works, with the lowest priority.
ANONYMOUS = "0000000000"
#: How long taking a request off the Horde may take, once the job is over.
CANCEL_TIMEOUT_S = 5.0
#: The most an image the Horde links to may weigh.
IMAGE_MAX_BYTES = 50 * 2**20


class HordeSettings(BaseModel):
    """``GENBOT_BACKENDS__HORDE__*``."""

    model_config = ConfigDict(extra="forbid")

    url: ServiceUrl = "https://aihorde.net/api"
    api_key: SecretStr = SecretStr(ANONYMOUS)
    #: Models the request may be drawn with (any the Horde's workers serve if empty).
    models: ListSetting = Field(default_factory=list)
    sampler: str | None = None
    cfg_scale: float | None = Field(None, ge=0, le=100)
    #: Whether a worker may return an image it flags as NSFW (else it censors it).
    nsfw: bool = False
    #: How genbot names itself to the Horde (``name:version:contact``), as the Horde asks.
    client_agent: str = "genbot:1:unknown"
    #: How often the request's place is read (the Horde limits how often a client may ask).
    poll_interval_s: float = Field(2.0, ge=0.01, le=60)


class HordeError(Exception):
    """The Horde failed this job; the message says how, for the log."""


def generate_payload(request: ImageRequest, settings: HordeSettings) -> dict[str, Any]:
    """The body of ``POST /v2/generate/async`` for ``request``. Pure."""
    params: dict[str, Any] = {
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "seed": str(request.seed),
        "n": 1,
    }
    if settings.sampler is not None:
        params["sampler_name"] = settings.sampler
    if settings.cfg_scale is not None:
        params["cfg_scale"] = settings.cfg_scale
    prompt = f"{request.prompt} ### {request.negative}" if request.negative else request.prompt
    payload: dict[str, Any] = {
        "prompt": prompt,
        "params": params,
        "nsfw": settings.nsfw,
        "censor_nsfw": not settings.nsfw,
        "r2": True,
        "shared": False,
    }
    if settings.models:
        payload["models"] = list(settings.models)
    return payload


def waiting_words(check: dict[str, Any]) -> str:
    """Where a request is on the Horde, from its ``check``: ``waiting on the Horde, #12 in its
    line, about 40 s`` or ``drawing on the Horde, about 8 s``. Pure."""
    wait = check.get("wait_time")
    about = f", about {int(wait)} s" if isinstance(wait, int | float) and wait > 0 else ""
    if check.get("processing"):
        return f"drawing on the Horde{about}"
    place = check.get("queue_position")
    line = f", #{int(place)} in its line" if isinstance(place, int | float) and place > 0 else ""
    return f"waiting on the Horde{line}{about}"


class HordeBackend:
    """Draws through AI Horde (see the module docstring)."""

    name = NAME

    def __init__(self, settings: HordeSettings) -> None:
        self.settings = settings

    async def generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        s = self.settings
        headers = {"apikey": s.api_key.get_secret_value(), "Client-Agent": s.client_agent}
        async with aiohttp.ClientSession(headers=headers) as session:
            horde = Horde(session, s.url)
            sent = await horde.call("POST", "/v2/generate/async", generate_payload(request, s))
            request_id = sent.get("id") if isinstance(sent, dict) else None
            if not isinstance(request_id, str) or not request_id:
                raise HordeError(f"the Horde took the request but gave no id: {sent!r:.200}")
            done = False
            try:
                await self._wait(horde, request_id, progress)
                status = await horde.call("GET", f"/v2/generate/status/{request_id}")
                done = True
            finally:
                if not done:  # the job stopped first (or failed): the Horde drops the request
                    await horde.cancel(request_id)
            image = await self._image(horde, status)
        png = await asyncio.to_thread(as_png, image)
        await progress(1, 1, None)
        return ImageResult(png)

    async def _wait(self, horde: Horde, request_id: str, progress: ProgressCallback) -> None:
        """Until the Horde says the request is done; each look is shown. Raises :class:`Refused`
        for a request no worker can take, :class:`HordeError` for one that faulted."""
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            check = await horde.call("GET", f"/v2/generate/check/{request_id}")
            if not isinstance(check, dict):
                raise HordeError("the Horde answered a check with something that is not an object")
            if check.get("faulted"):
                raise HordeError(f"the Horde could not finish request {request_id} (faulted)")
            if check.get("is_possible") is False:
                raise Refused("no worker on the Horde can take this request now (its model, size or steps)")
            if check.get("done"):
                return
            await progress(0, 1, None, waiting=waiting_words(check))

    async def _image(self, horde: Horde, status: Any) -> bytes:
        generations = status.get("generations") if isinstance(status, dict) else None
        if not isinstance(generations, list) or not generations or not isinstance(generations[0], dict):
            raise HordeError("the Horde finished the request without an image")
        generation = generations[0]
        if generation.get("censored"):
            raise Refused("a worker on the Horde censored the image")
        img = generation.get("img")
        if not isinstance(img, str) or not img:
            raise HordeError("the Horde finished the request without an image")
        if img.startswith(("https://", "http://")):
            return await horde.download(img)
        try:
            return base64.b64decode(img, validate=True)
        except (binascii.Error, ValueError):
            raise HordeError("the Horde sent an image that is not base64") from None


@dataclass(frozen=True, slots=True)
class Horde:
    """The Horde's API at ``url``, through ``session`` (its key and client agent)."""

    session: aiohttp.ClientSession
    url: str

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; its JSON answer. Raises :class:`HordeError` for an error answer (with
        the Horde's ``message`` and ``rc``), :class:`aiohttp.ClientError` when it cannot be reached."""
        async with self.session.request(method, self.url + path, json=body) as response:
            if response.status == 401:
                raise HordeError(f"the Horde refused the API key (HTTP 401): check {SETTING}API_KEY")
            if response.status not in (200, 202):
                said = error_words(await response.text(errors="replace"), ("message", "rc"))
                raise HordeError(f"the Horde answered {method} {path} with HTTP {response.status}: {said}")
            try:
                return await response.json(content_type=None)
            except ValueError:
                raise HordeError(f"the Horde answered {method} {path} with what is not JSON") from None

    async def download(self, link: str) -> bytes:
        """The image a finished request links to (its R2 download), bounded."""
        async with self.session.get(link, headers={"apikey": ""}) as response:
            if response.status != 200:
                raise HordeError(f"the Horde's image link answered HTTP {response.status}")
            data = await response.content.read(IMAGE_MAX_BYTES + 1)
            if len(data) > IMAGE_MAX_BYTES:
                raise HordeError("the Horde's image is larger than genbot takes")
            return data

    async def cancel(self, request_id: str) -> None:
        """Take ``request_id`` off the Horde; bounded, never raises."""
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                await self.call("DELETE", f"/v2/generate/status/{request_id}")
            log.info("took request %s off the Horde", request_id)
        except (HordeError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not take request %s off the Horde: %s", request_id, exc)
