"""A local fake of AUTOMATIC1111's web API (``--api``), speaking its wire format.

What it keeps of the real service (``modules/api/api.py`` and ``models.py`` of
stable-diffusion-webui): one generation at a time (its ``queue_lock``); ``POST /sdapi/v1/txt2img``
answers when the image is done, with ``images`` (base64 PNG), ``parameters`` and ``info`` (a JSON
string), and an image even when interrupted (what was drawn so far); ``GET /sdapi/v1/progress``
with ``progress``, ``eta_relative``, ``state`` (``sampling_step``, ``sampling_steps``, ``job_count``,
``interrupted`` ...), ``current_image`` (base64, while drawing) and ``current_task`` (the
``force_task_id`` of the generation running); ``POST /sdapi/v1/interrupt``; ``GET
/sdapi/v1/sd-models`` and ``/sdapi/v1/samplers``; an unknown sampler is 400 "Sampler not found";
``--api-auth``: HTTP basic on every route, 401 ``{"detail": "Not authenticated"}`` without it and
``{"error": "HTTPException", "detail": "Incorrect username or password", ...}`` for a wrong pair;
errors as its exception handler shapes them (``error``, ``detail``, ``body``, ``errors``).

It can be told to fail (``fail_next``: status and message, as a CUDA out-of-memory would read), to
hang (``hang``: txt2img never answers), to stay at a step (``hold_at``) and to draw slowly
(``step_delay_s``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import hdrs, web
from PIL import Image

from tests.fake_server import serve

SAMPLERS = [
    {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {}},
    {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {}},
    {"name": "Euler", "aliases": ["k_euler"], "options": {}},
]
MODELS = [
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": "/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        "config": None,
    }
]


def png(width: int, height: int, shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 64, 255 - shade)).save(out, "PNG")
    return out.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Running:
    task: str
    steps: int
    step: int = 0
    started: float = field(default_factory=time.time)


class FakeA1111:
    def __init__(self, *, step_delay_s: float = 0.02, credentials: tuple[str, str] | None = None) -> None:
        self.step_delay_s = step_delay_s
        self.credentials = credentials
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, JSON body)
        self.interrupts = 0
        self.hang = False
        #: A step the drawing stays at while this is set (a test sees that moment, then lets go).
        self.hold_at: int | None = None
        self.finished: list[str] = []  # the tasks that ended, in order
        self.stopped_at = 0  # the step the last generation ended at
        self._idle = asyncio.Event()
        self._idle.set()
        self._failures: list[tuple[int, str]] = []
        self._lock = asyncio.Lock()
        self._running: Running | None = None
        self._interrupted = False
        self._runner: web.AppRunner | None = None
        self.url = ""

    def fail_next(self, status: int, message: str) -> None:
        """The next txt2img fails with ``status`` (its exception text ``message``)."""
        self._failures.append((status, message))

    async def wait_idle(self) -> None:
        """Until no generation runs (one the job left behind ends once interrupted)."""
        await asyncio.wait_for(self._idle.wait(), 10)

    def called(self, path: str) -> list[Any]:
        return [body for _method, p, body in self.requests if p == path]

    async def start(self) -> str:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/sdapi/v1/txt2img", self._txt2img)
        app.router.add_get("/sdapi/v1/progress", self._progress)
        app.router.add_post("/sdapi/v1/interrupt", self._interrupt)
        app.router.add_get("/sdapi/v1/sd-models", self._listing(MODELS))
        app.router.add_get("/sdapi/v1/samplers", self._listing(SAMPLERS))
        self._runner, port = await serve(app)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    @staticmethod
    def _listing(items: list[dict[str, Any]]) -> Any:
        async def handler(_request: web.Request) -> web.Response:
            return web.json_response(items)

        return handler

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        if self.credentials is not None:
            header = request.headers.get(hdrs.AUTHORIZATION)
            if header is None:
                return _error(401, {"detail": "Not authenticated"}, {"WWW-Authenticate": "Basic"})
            scheme, _, encoded = header.partition(" ")
            given = base64.b64decode(encoded).decode().partition(":")
            if scheme != "Basic" or (given[0], given[2]) != self.credentials:
                detail = "Incorrect username or password"
                return _exception(401, detail, detail, {"WWW-Authenticate": "Basic"})
        response: web.StreamResponse = await handler(request)
        return response

    async def _txt2img(self, request: web.Request) -> web.Response:
        body = await request.json()
        sampler = body.get("sampler_name")
        if sampler is not None and not any(sampler == s["name"] or sampler in s["aliases"] for s in SAMPLERS):
            return _exception(400, "Sampler not found", "400: Sampler not found")
        task = body.get("force_task_id") or "task(fake)"
        async with self._lock:  # one generation at a time, as the web UI's queue lock
            if self._failures:
                status, message = self._failures.pop(0)
                return _exception(status, "", message, error="OutOfMemoryError")
            self._running = Running(task, int(body.get("steps", 20)))
            self._interrupted = False
            self._idle.clear()
            try:
                while self.hang:
                    await asyncio.sleep(0.05)
                for step in range(1, self._running.steps + 1):
                    if self._interrupted:
                        break
                    await asyncio.sleep(self.step_delay_s)
                    self._running.step = step
                    while self.hold_at == step and not self._interrupted:
                        await asyncio.sleep(0.02)
            finally:
                self.finished.append(task)
                self.stopped_at = self._running.step
                self._running = None
                self._idle.set()
        image = png(int(body.get("width", 512)), int(body.get("height", 512)), int(body.get("seed", 0)) % 256)
        info = {"prompt": body.get("prompt"), "seed": body.get("seed"), "sampler_name": sampler}
        return web.json_response({"images": [_b64(image)], "parameters": body, "info": json.dumps(info)})

    async def _progress(self, request: web.Request) -> web.Response:
        running = self._running
        skip = request.query.get("skip_current_image", "false") == "true"
        state: dict[str, Any] = {
            "skipped": False,
            "interrupted": self._interrupted,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }
        if running is None:
            return web.json_response(
                {
                    "progress": 0,
                    "eta_relative": 0,
                    "state": state,
                    "current_image": None,
                    "textinfo": None,
                    "current_task": None,
                }
            )
        state.update(
            job="scripts_txt2img", job_count=1, sampling_step=running.step, sampling_steps=running.steps
        )
        progress = min(1.0, 0.01 + running.step / running.steps)
        took = time.time() - running.started
        current = None if skip or running.step == 0 else _b64(png(64, 64, running.step * 10 % 256))
        return web.json_response(
            {
                "progress": progress,
                "eta_relative": took / progress - took,
                "state": state,
                "current_image": current,
                "textinfo": None,
                "current_task": running.task,
            }
        )

    async def _interrupt(self, _request: web.Request) -> web.Response:
        self.interrupts += 1
        self._interrupted = True
        return web.json_response({})


def _exception(
    status: int, detail: str, errors: str, headers: dict[str, str] | None = None, error: str = "HTTPException"
) -> web.Response:
    """An error as the web UI's exception handler shapes it."""
    return _error(status, {"error": error, "detail": detail, "body": "", "errors": errors}, headers)


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)
