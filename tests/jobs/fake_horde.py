"""A local fake of AI Horde's image API (``/api/v2/generate/...``), speaking its wire format.

What it keeps of the real service (``horde/apis/v2/stable.py`` and ``horde/apis/models`` of
Haidra-Org/AI-Horde): ``POST /v2/generate/async`` answers 202 with the request's ``id``; ``GET
/v2/generate/check/{id}`` answers ``finished``, ``processing``, ``restarted``, ``waiting``,
``done``, ``faulted``, ``wait_time``, ``queue_position``, ``kudos`` and ``is_possible``; ``GET
/v2/generate/status/{id}`` adds ``generations`` (``img``: a link to the WebP with ``r2``, else the
WebP in base64; ``seed``, ``id``, ``censored``, ``model``, ``worker_name``); ``DELETE`` of it takes
the request off; an unknown id is 404 ``{"message", "rc": "RequestNotFound"}``; a key it does not
know is 401 ``{"message": "Invalid API Key", "rc": "InvalidAPIKey"}``.

Each request waits ``ahead`` checks in line (its place going down), is drawn for ``drawing`` checks,
then is done (``hold`` keeps them in a phase); ``impossible``, ``faulted`` and ``censor`` make every
new request so.
"""

from __future__ import annotations

import base64
import io
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fake_server import serve

KEYS = {"0000000000", "registered-key"}


@dataclass
class Request:
    body: dict[str, Any]
    ahead: int
    drawing: int
    impossible: bool = False
    faulted: bool = False
    censor: bool = False
    checks: int = 0
    cancelled: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def webp(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 160, 90)).save(out, "WEBP")
    return out.getvalue()


class FakeHorde:
    def __init__(self, *, ahead: int = 2, drawing: int = 1) -> None:
        self.ahead = ahead
        self.drawing = drawing
        self.impossible = False
        self.faulted = False
        self.censor = False
        #: A phase (``"waiting"``, ``"drawing"``) requests stay in while this is set.
        self.hold: str | None = None
        self.requests: dict[str, Request] = {}
        self.deleted: list[str] = []
        self.downloads = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/v2/generate/async", self._generate)
        app.router.add_get("/api/v2/generate/check/{id}", self._check)
        app.router.add_get("/api/v2/generate/status/{id}", self._status)
        app.router.add_delete("/api/v2/generate/status/{id}", self._delete)
        app.router.add_get("/r2/{id}.webp", self._r2)
        self._runner, port = await serve(app)
        self.url = f"http://127.0.0.1:{port}/api"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _generate(self, request: web.Request) -> web.Response:
        if request.headers.get("apikey") not in KEYS:
            return web.json_response({"message": "Invalid API Key", "rc": "InvalidAPIKey"}, status=401)
        body = await request.json()
        request_id = str(uuid.uuid4())
        self.requests[request_id] = Request(
            body,
            self.ahead,
            self.drawing,
            impossible=self.impossible,
            faulted=self.faulted,
            censor=self.censor,
            headers=dict(request.headers),
        )
        return web.json_response({"id": request_id, "kudos": 10.0}, status=202)

    def _found(self, request: web.Request) -> Request | None:
        return self.requests.get(request.match_info["id"])

    def _state(self, req: Request) -> dict[str, Any]:
        waiting = req.checks <= req.ahead and not req.cancelled
        drawing = not waiting and req.checks <= req.ahead + req.drawing and not req.cancelled
        done = not waiting and not drawing
        place = max(0, req.ahead - req.checks + 1) if waiting else 0
        return {
            "finished": 1 if done and not req.cancelled else 0,
            "processing": 1 if drawing else 0,
            "restarted": 0,
            "waiting": 1 if waiting else 0,
            "done": done,
            "faulted": req.faulted,
            "wait_time": place * 10 + (5 if drawing else 0),
            "queue_position": place,
            "kudos": 10.0,
            "is_possible": not req.impossible,
        }

    async def _check(self, request: web.Request) -> web.Response:
        req = self._found(request)
        if req is None:
            return web.json_response({"message": "Request Not found", "rc": "RequestNotFound"}, status=404)
        state = self._state(req)
        phase = "waiting" if state["waiting"] else "drawing" if state["processing"] else "done"
        if phase != self.hold:
            req.checks += 1
        return web.json_response(self._state(req))

    async def _status(self, request: web.Request) -> web.Response:
        req = self._found(request)
        if req is None:
            return web.json_response({"message": "Request Not found", "rc": "RequestNotFound"}, status=404)
        state = self._state(req)
        generations = []
        if state["done"] and not req.cancelled:
            params = req.body["params"]
            request_id = request.match_info["id"]
            img = (
                f"{self.url.removesuffix('/api')}/r2/{request_id}.webp"
                if req.body.get("r2")
                else base64.b64encode(webp(params["width"] // 8, params["height"] // 8)).decode()
            )
            generations.append(
                {
                    "img": img,
                    "seed": params["seed"],
                    "id": str(uuid.uuid4()),
                    "censored": req.censor,
                    "model": (req.body.get("models") or ["stable_diffusion"])[0],
                    "worker_id": "w-1",
                    "worker_name": "fake worker",
                    "state": "censored" if req.censor else "ok",
                    "gen_metadata": [],
                }
            )
        return web.json_response({**state, "generations": generations, "shared": False})

    async def _delete(self, request: web.Request) -> web.Response:
        req = self._found(request)
        if req is None:
            return web.json_response({"message": "Request Not found", "rc": "RequestNotFound"}, status=404)
        req.cancelled = True
        self.deleted.append(request.match_info["id"])
        return web.json_response({**self._state(req), "generations": [], "shared": False})

    async def _r2(self, request: web.Request) -> web.Response:
        req = self.requests.get(request.match_info["id"])
        if req is None:
            return web.Response(status=404)
        self.downloads += 1
        params = req.body["params"]
        return web.Response(body=webp(params["width"] // 8, params["height"] // 8), content_type="image/webp")
