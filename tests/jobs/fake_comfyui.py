"""A local fake of ComfyUI's API, speaking its wire format.

What it keeps of the real service (``server.py``, ``execution.py`` and ``main.py`` of
comfyanonymous/ComfyUI): ``POST /prompt`` checks the workflow (a checkpoint it lacks is a 400 with
``error`` and ``node_errors``), queues it by ``number`` under the body's ``prompt_id`` (or one of its
own) and answers ``{prompt_id, number, node_errors}``; one prompt runs at a time; ``/ws?clientId=``
sends ``status`` to every socket when the queue changes, and to the prompt's client only
``execution_start``, ``execution_cached``, ``executing`` per node, ``progress`` per sampler step
(with ``prompt_id`` and ``node``) each followed by a binary preview frame (``>I`` 1, ``>I`` 1 for
JPEG, the image) when previews are on, ``executed``, then ``execution_success``, and only after
the history holds the prompt ``executing`` with ``node`` None; a failing node sends
``execution_error``, an interrupt ``execution_interrupted``. ``GET /queue`` lists
``queue_running`` and ``queue_pending`` as ``[number, prompt_id, prompt, extra_data, outputs]``;
``POST /queue`` with ``delete`` takes pending prompts out; ``POST /interrupt`` with a
``prompt_id`` stops that prompt only if it runs (without one, whatever runs); ``GET
/history/{prompt_id}`` (``{}`` while unknown), ``GET /view`` and ``GET
/object_info/CheckpointLoaderSimple`` (its ``COMBO`` form).

It can hold a step (``hold_at``), hang (``hang``: the running prompt never gets on), fail the next
prompts in a node (``fail_next``), run without a websocket (``websocket=False``: a proxy that
offers none), close every socket at a step (``drop_sockets_at``), ask for HTTP basic
(``credentials``: a proxy's) and run prompts of other clients (``queue_other``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, hdrs, web
from PIL import Image

from tests.fake_server import serve

CHECKPOINTS = ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"]
SAMPLER_TYPES = ("KSampler", "KSamplerAdvanced")


def picture(width: int, height: int, shade: int, kind: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 128, 255 - shade)).save(out, kind)
    return out.getvalue()


@dataclass
class Item:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    client_id: str | None
    interrupted: bool = False
    step: int = 0

    def listed(self) -> list[Any]:
        outputs = [nid for nid, node in self.prompt.items() if node["class_type"] == "SaveImage"]
        return [self.number, self.prompt_id, self.prompt, {"client_id": self.client_id}, outputs]


@dataclass
class FakeComfyUI:
    step_delay_s: float = 0.02
    previews: bool = True
    websocket: bool = True
    credentials: tuple[str, str] | None = None
    hold_at: int | None = None
    hang: bool = False
    drop_sockets_at: int | None = None
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    #: ``prompt_id``s POST /interrupt named while they ran, and those taken out of the queue.
    interrupted: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._pending: list[Item] = []
        self._running: Item | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._files: dict[str, bytes] = {}
        self._failures: list[str] = []
        self._number = 0
        self._wake = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None

    def fail_next(self, message: str) -> None:
        """The next prompt fails in its sampler with ``message`` (a CUDA out-of-memory, say)."""
        self._failures.append(message)

    def prompts(self) -> list[dict[str, Any]]:
        """The bodies of every POST /prompt."""
        return [body for method, path, body in self.requests if (method, path) == ("POST", "/prompt")]

    def queue_other(self, client_id: str = "someone-else") -> str:
        """Queue a prompt of another client (it runs like any other); its id."""
        graph = {
            "3": {"class_type": "KSampler", "inputs": {"steps": 50, "seed": 1, "latent_image": ["5", 0]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0]}},
        }
        return self._queue(graph, str(uuid.uuid4()), client_id)

    async def wait_idle(self) -> None:
        async def idle() -> None:
            while self._running is not None or self._pending:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(idle(), 10)

    async def start(self) -> str:
        app = web.Application(middlewares=[self._auth])
        if self.websocket:
            app.router.add_get("/ws", self._ws)
        app.router.add_post("/prompt", self._prompt)
        app.router.add_get("/queue", self._queue_get)
        app.router.add_post("/queue", self._queue_post)
        app.router.add_post("/interrupt", self._interrupt)
        app.router.add_get("/history/{prompt_id}", self._history_get)
        app.router.add_get("/view", self._view)
        app.router.add_get("/object_info/CheckpointLoaderSimple", self._object_info)
        self._runner, port = await serve(app)
        self._worker = asyncio.create_task(self._work())
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        for socket in list(self._sockets.values()):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the routes ---------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        if self.credentials is not None:
            scheme, _, encoded = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
            given = base64.b64decode(encoded).decode().partition(":") if encoded else ("", "", "")
            if scheme != "Basic" or (given[0], given[2]) != self.credentials:
                return web.Response(status=401, text="401 Authorization Required")
        response: web.StreamResponse = await handler(request)
        return response

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self._sockets[sid] = socket
        try:
            await socket.send_json({"type": "status", "data": {"status": self._status(), "sid": sid}})
            async for message in socket:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            if self._sockets.get(sid) is socket:
                del self._sockets[sid]
        return socket

    async def _prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        graph = body.get("prompt")
        if not isinstance(graph, dict):
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "", "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        node_errors = {}
        for nid, node in graph.items():
            name = node["inputs"].get("ckpt_name")
            if node["class_type"] == "CheckpointLoaderSimple" and name not in CHECKPOINTS:
                node_errors[nid] = {
                    "errors": [
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"ckpt_name: '{name}' not in {CHECKPOINTS}",
                            "extra_info": {"input_name": "ckpt_name"},
                        }
                    ],
                    "dependent_outputs": ["9"],
                    "class_type": "CheckpointLoaderSimple",
                }
        if node_errors:
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        self._queue(graph, prompt_id, body.get("client_id"))
        await self._broadcast_status()
        return web.json_response({"prompt_id": prompt_id, "number": self._number - 1, "node_errors": {}})

    async def _queue_get(self, _request: web.Request) -> web.Response:
        running = [self._running.listed()] if self._running is not None else []
        return web.json_response(
            {"queue_running": running, "queue_pending": [item.listed() for item in self._pending]}
        )

    async def _queue_post(self, request: web.Request) -> web.Response:
        body = await request.json()
        for prompt_id in body.get("delete", []):
            before = len(self._pending)
            self._pending = [item for item in self._pending if item.prompt_id != prompt_id]
            if len(self._pending) < before:
                self.deleted.append(prompt_id)
        await self._broadcast_status()
        return web.Response(status=200)

    async def _interrupt(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        wanted = (body or {}).get("prompt_id")
        running = self._running
        if running is not None and wanted in (None, running.prompt_id):
            running.interrupted = True
            self.interrupted.append(running.prompt_id)
        return web.Response(status=200)

    async def _history_get(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self._history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def _view(self, request: web.Request) -> web.Response:
        data = self._files.get(f"{request.query.get('type')}/{request.query.get('filename')}")
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/png")

    async def _object_info(self, _request: web.Request) -> web.Response:
        spec = ["COMBO", {"options": CHECKPOINTS, "tooltip": "The name of the checkpoint (model) to load."}]
        return web.json_response(
            {
                "CheckpointLoaderSimple": {
                    "input": {"required": {"ckpt_name": spec}},
                    "name": "CheckpointLoaderSimple",
                }
            }
        )

    # -- the queue ----------------------------------------------------------------------------

    def _queue(self, graph: dict[str, Any], prompt_id: str, client_id: str | None) -> str:
        self._pending.append(Item(self._number, prompt_id, graph, client_id))
        self._number += 1
        self._wake.set()
        return prompt_id

    def _status(self) -> dict[str, Any]:
        remaining = len(self._pending) + (self._running is not None)
        return {"exec_info": {"queue_remaining": remaining}}

    async def _broadcast_status(self) -> None:
        for socket in list(self._sockets.values()):
            await socket.send_json({"type": "status", "data": {"status": self._status()}})

    async def _send(self, item: Item, kind: str, data: dict[str, Any]) -> None:
        socket = self._sockets.get(item.client_id or "")
        if socket is not None and not socket.closed:
            await socket.send_json({"type": kind, "data": data})

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                item = min(self._pending, key=lambda i: i.number)
                self._pending.remove(item)
                self._running = item
                await self._broadcast_status()
                try:
                    await self._run(item)
                finally:
                    self._running = None
                    self.finished.append(item.prompt_id)
                await self._broadcast_status()

    async def _run(self, item: Item) -> None:
        pid = item.prompt_id
        graph = item.prompt
        await self._send(item, "execution_start", {"prompt_id": pid, "timestamp": int(time.time() * 1000)})
        await self._send(item, "execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": 0})
        sampler = next(nid for nid, node in graph.items() if node["class_type"] in SAMPLER_TYPES)
        inputs = graph[sampler]["inputs"]
        steps = int(inputs["steps"])
        seed = int(inputs.get("seed", inputs.get("noise_seed", 0)))
        size_node = graph[str(inputs["latent_image"][0])]["inputs"]
        await self._send(item, "executing", {"node": sampler, "display_node": sampler, "prompt_id": pid})
        while self.hang and not item.interrupted:
            await asyncio.sleep(0.02)
        for step in range(1, steps + 1):
            if item.interrupted:
                break
            if self._failures:
                await self._fail(item, sampler, self._failures.pop(0))
                return
            await asyncio.sleep(self.step_delay_s)
            item.step = step
            progress = {"value": step, "max": steps, "prompt_id": pid, "node": sampler}
            await self._send(item, "progress", progress)
            if self.previews:
                frame = struct.pack(">II", 1, 1) + picture(64, 64, step * 10 % 256, "JPEG")
                socket = self._sockets.get(item.client_id or "")
                if socket is not None and not socket.closed:
                    await socket.send_bytes(frame)
            if self.drop_sockets_at == step:
                for socket in list(self._sockets.values()):
                    await socket.close()
            while self.hold_at == step and not item.interrupted:
                await asyncio.sleep(0.02)
        if item.interrupted:
            executed = [n for n in graph if n != sampler]
            interrupted = {
                "prompt_id": pid,
                "node_id": sampler,
                "node_type": "KSampler",
                "executed": executed,
            }
            await self._send(item, "execution_interrupted", interrupted)
            self._history[pid] = _entry(graph, {}, "error")
            await self._send(item, "executing", {"node": None, "prompt_id": pid})
            return
        save = next(nid for nid, node in graph.items() if node["class_type"] == "SaveImage")
        filename = f"ComfyUI_{len(self._files) + 1:05}_.png"
        self._files[f"output/{filename}"] = picture(
            int(size_node["width"]), int(size_node["height"]), seed % 256, "PNG"
        )
        images = {"images": [{"filename": filename, "subfolder": "", "type": "output"}]}
        await self._send(
            item, "executed", {"node": save, "display_node": save, "output": images, "prompt_id": pid}
        )
        await self._send(item, "execution_success", {"prompt_id": pid, "timestamp": int(time.time() * 1000)})
        await asyncio.sleep(self.step_delay_s)  # the history is written after execution_success
        self._history[pid] = _entry(graph, {save: images}, "success")
        await self._send(item, "executing", {"node": None, "prompt_id": pid})

    async def _fail(self, item: Item, node: str, message: str) -> None:
        error = {
            "prompt_id": item.prompt_id,
            "node_id": node,
            "node_type": "KSampler",
            "executed": [],
            "exception_message": message,
            "exception_type": "torch.OutOfMemoryError",
            "traceback": ["Traceback (most recent call last):\n", "  ...\n"],
            "current_inputs": {},
            "current_outputs": {},
        }
        await self._send(item, "execution_error", error)
        self._history[item.prompt_id] = _entry(item.prompt, {}, "error")
        await self._send(item, "executing", {"node": None, "prompt_id": item.prompt_id})


def _entry(graph: dict[str, Any], outputs: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "prompt": [0, "", graph, {}, []],
        "outputs": outputs,
        "status": {"status_str": status, "completed": status == "success", "messages": []},
        "meta": {},
    }
