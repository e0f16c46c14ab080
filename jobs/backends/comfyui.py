"""ComfyUI as an image backend: ``GENBOT_BACKEND__NAME=comfyui`` and
``GENBOT_BACKENDS__COMFYUI__URL``.

A job runs a **workflow in ComfyUI's API format** (the web UI's "Export (API)"): genbot's own
text-to-image graph (``workflows/txt2img.json``: checkpoint, prompt, negative, empty latent,
KSampler, decode, save) unless ``WORKFLOW`` names a file of one's own. The job's options go into
named nodes: the prompt and the negative into the ``text`` of the nodes the sampler's ``positive``
and ``negative`` inputs come from, the size into the ``width`` and ``height`` of its
``latent_image`` node, the steps and seed into the sampler (``seed``, or ``noise_seed`` for
``KSamplerAdvanced``). A workflow where that tracing does not work names its nodes (``*_NODE``: a
node id, or its title). The workflow is read and its nodes found at start-up: a wrong one stops
genbot with the setting at fault.

One job is one prompt, queued with ``POST /prompt`` under a client id of its own and a prompt id
genbot makes (so a job cancelled before the service answered can still be taken back). Its
events come over the websocket ``/ws?clientId=...``, opened first: ``progress`` (the sampler's
step) and binary preview frames (with the service started with ``--preview-method auto``) are the
job's progress and preview; while the prompt waits behind others in ComfyUI's own queue the status
message says so ("waiting in ComfyUI's queue, 2 ahead"); ``executing`` with no node ends it (sent
once the history holds it: ``execution_success`` comes earlier), ``execution_error`` and
``execution_interrupted`` fail it. The image is then read from ``GET /history/{prompt_id}`` (the
first ``output`` image, or ``OUTPUT_NODE``'s) through ``GET /view``. If the websocket cannot be
opened or drops (a proxy without websockets, a restart), the job goes on by reading the history
and the queue every ``POLL_INTERVAL_S``.

A job that stops first (cancelled, timed out, the worker stopping) takes its prompt back: out of
ComfyUI's queue (``POST /queue`` with ``delete``) while it waits, interrupted (``POST /interrupt``
with its ``prompt_id``) while it runs, and only then: another client's prompt is never touched.

ComfyUI has no login of its own; behind a proxy that asks for HTTP basic, set ``USERNAME`` and
``PASSWORD``. Every failure is an exception (the job fails as a service error, the breaker counts
it); what the service said goes to the log, never to the member. Nothing here retries.

The service's source, https://github.com/comfyanonymous/ComfyUI: ``server.py`` (the routes
``/prompt``, ``/queue``, ``/interrupt``, ``/history/{prompt_id}``, ``/view``, ``/object_info``, the
websocket and its binary frames, ``BinaryEventTypes``), ``execution.py`` (the ``execution_*`` and
``executing`` events, the error body of an invalid prompt) and ``main.py`` (``hijack_progress``:
the ``progress`` event and the preview frames, sent to the prompt's client id only).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, FilePath, PrivateAttr, SecretStr, model_validator

from bot.api import ImageResult
from jobs.backends.base import ImageRequest, ProgressCallback, ServiceUrl, error_words, service_session
from jobs.backends.images import as_png, preview_of

log = logging.getLogger(__name__)

NAME = "comfyui"
SETTING = f"GENBOT_BACKENDS__{NAME.upper()}__"
#: How long taking a prompt back may take, once the job is over.
CANCEL_TIMEOUT_S = 5.0
#: The most a result image may weigh.
IMAGE_MAX_BYTES = 50 * 2**20
#: The sampler nodes genbot finds by itself (a workflow with another names its ``SAMPLER_NODE``).
SAMPLERS = ("KSampler", "KSamplerAdvanced")
#: ComfyUI's binary websocket frame of a preview: ``>I`` event 1, ``>I`` image type, the image.
PREVIEW_IMAGE = 1


class ComfyUIError(Exception):
    """The service failed this job; the message says how, for the log."""


@dataclass(frozen=True, slots=True)
class Nodes:
    """Where a job's options go: the ids of the workflow's nodes."""

    sampler: str
    prompt: str
    negative: str | None
    size: str
    #: The node with the checkpoint's ``ckpt_name``, if the sampler's model comes from one.
    model: str | None
    #: The sampler's seed input: ``seed`` (KSampler) or ``noise_seed`` (KSamplerAdvanced).
    seed_input: str


class ComfyUISettings(BaseModel):
    """``GENBOT_BACKENDS__COMFYUI__*``."""

    model_config = ConfigDict(extra="forbid")

    #: The service's address (``http://127.0.0.1:8188``).
    url: ServiceUrl
    #: A workflow in API format ("Export (API)"); genbot's text-to-image graph if unset.
    workflow: FilePath | None = None
    #: A checkpoint (``ckpt_name``) to draw with. Unset: the workflow's own, or with genbot's
    #: graph the first checkpoint the service lists.
    model: str | None = None
    #: The sampler and scheduler names (``euler``, ``dpmpp_2m``; ``karras``), and the guidance:
    #: the workflow's own if unset.
    sampler: str | None = None
    scheduler: str | None = None
    cfg: float | None = Field(None, ge=0, le=100)
    #: Nodes by id or title, where tracing from the sampler does not find them.
    prompt_node: str | None = None
    negative_node: str | None = None
    size_node: str | None = None
    sampler_node: str | None = None
    #: The node whose image is the result; the first ``output`` image if unset.
    output_node: str | None = None
    #: HTTP basic for a proxy in front of the service.
    username: str | None = None
    password: SecretStr | None = None
    connect_timeout_s: float = Field(10.0, gt=0)
    #: How often the history is read when the websocket is not there.
    poll_interval_s: float = Field(1.0, gt=0, le=60)

    _graph: dict[str, Any] = PrivateAttr(default_factory=dict)
    _nodes: Nodes | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _workflow_maps(self) -> ComfyUISettings:
        if (self.username is None) != (self.password is None):
            raise ValueError(f"{SETTING}USERNAME and {SETTING}PASSWORD go together")
        self._graph = read_workflow(self.workflow)
        self._nodes = find_nodes(self._graph, self)
        return self

    @property
    def graph(self) -> dict[str, Any]:
        return self._graph

    @property
    def nodes(self) -> Nodes:
        assert self._nodes is not None  # set by the validator
        return self._nodes


def read_workflow(path: Path | None) -> dict[str, Any]:
    """The workflow at ``path`` (genbot's own if None), checked to be in API format. Raises
    ``ValueError`` naming the setting."""
    if path is None:
        text = resources.files("jobs.backends").joinpath("workflows/txt2img.json").read_text()
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{SETTING}WORKFLOW: cannot read {path} ({exc})") from None
    try:
        graph = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{SETTING}WORKFLOW: {path} is not JSON ({exc})") from None
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise ValueError(
            f"{SETTING}WORKFLOW: {path} is the web UI's format; save it with Workflow > Export (API)"
        )
    if (
        not isinstance(graph, dict)
        or not graph
        or not all(
            isinstance(node, dict)
            and isinstance(node.get("class_type"), str)
            and isinstance(node.get("inputs"), dict)
            for node in graph.values()
        )
    ):
        raise ValueError(f"{SETTING}WORKFLOW: {path} is not a workflow in API format (nodes with class_type)")
    return graph


def _node(graph: Mapping[str, Any], wanted: str, setting: str) -> str:
    """The id of the node ``wanted`` names: its id, or its title. Raises ``ValueError``."""
    if wanted in graph:
        return wanted
    titled = [nid for nid, node in graph.items() if node.get("_meta", {}).get("title") == wanted]
    if len(titled) != 1:
        found = "several nodes" if titled else "no node"
        raise ValueError(f"{SETTING}{setting}: the workflow has {found} with the id or title {wanted!r}")
    return titled[0]


def _linked(graph: Mapping[str, Any], node: str, name: str) -> str | None:
    """The id of the node input ``name`` of ``node`` comes from, if it is a link."""
    link = graph[node]["inputs"].get(name)
    if isinstance(link, list) and len(link) == 2 and str(link[0]) in graph:
        return str(link[0])
    return None


def find_nodes(graph: Mapping[str, Any], settings: ComfyUISettings) -> Nodes:
    """Where the options go in ``graph`` (see the module docstring). Raises ``ValueError``
    naming the setting to give. Pure."""

    def chosen(explicit: str | None, setting: str, traced: str | None, must_have: tuple[str, ...]) -> str:
        found = _node(graph, explicit, setting) if explicit is not None else traced
        if found is None:
            raise ValueError(
                f"{SETTING}{setting}: genbot cannot tell which node it is; name it (id or title)"
            )
        missing = [name for name in must_have if name not in graph[found]["inputs"]]
        if missing:
            kind = graph[found]["class_type"]
            raise ValueError(f"{SETTING}{setting}: node {found} ({kind}) has no input {', '.join(missing)}")
        return found

    samplers = [nid for nid, node in graph.items() if node["class_type"] in SAMPLERS]
    sampler = chosen(
        settings.sampler_node, "SAMPLER_NODE", samplers[0] if len(samplers) == 1 else None, ("steps",)
    )
    inputs = graph[sampler]["inputs"]
    seed_input = "noise_seed" if "noise_seed" in inputs else "seed"
    if seed_input not in inputs:
        raise ValueError(f"{SETTING}SAMPLER_NODE: node {sampler} has no seed or noise_seed input")
    prompt = chosen(settings.prompt_node, "PROMPT_NODE", _linked(graph, sampler, "positive"), ("text",))
    negative: str | None = None
    if settings.negative_node is not None:
        negative = chosen(settings.negative_node, "NEGATIVE_NODE", None, ("text",))
    else:
        traced = _linked(graph, sampler, "negative")
        negative = traced if traced is not None and "text" in graph[traced]["inputs"] else None
    size = chosen(
        settings.size_node, "SIZE_NODE", _linked(graph, sampler, "latent_image"), ("width", "height")
    )
    loader = _linked(graph, sampler, "model")
    model = loader if loader is not None and "ckpt_name" in graph[loader]["inputs"] else None
    if settings.model is not None and model is None:
        raise ValueError(
            f"{SETTING}MODEL: the sampler's model does not come from a checkpoint loader (ckpt_name) "
            "in this workflow; choose the model in the workflow itself"
        )
    if settings.output_node is not None:
        _node(graph, settings.output_node, "OUTPUT_NODE")
    return Nodes(sampler, prompt, negative, size, model, seed_input)


def prompt_graph(request: ImageRequest, settings: ComfyUISettings, model: str | None) -> dict[str, Any]:
    """The workflow with ``request`` in its nodes. Pure."""
    graph = copy.deepcopy(settings.graph)
    nodes = settings.nodes
    graph[nodes.prompt]["inputs"]["text"] = request.prompt
    if nodes.negative is not None:
        graph[nodes.negative]["inputs"]["text"] = request.negative
    graph[nodes.size]["inputs"].update(width=request.width, height=request.height)
    sampler = graph[nodes.sampler]["inputs"]
    sampler["steps"] = request.steps
    sampler[nodes.seed_input] = request.seed
    for key, value in (
        ("sampler_name", settings.sampler),
        ("scheduler", settings.scheduler),
        ("cfg", settings.cfg),
    ):
        if value is not None:
            sampler[key] = value
    if model is not None and nodes.model is not None:
        graph[nodes.model]["inputs"]["ckpt_name"] = model
    return graph


def checkpoints(info: Any) -> list[str]:
    """The checkpoint names of a ``GET /object_info/CheckpointLoaderSimple`` answer: its
    ``ckpt_name`` is ``[[names...]]``, or ``["COMBO", {"options": [names...]}]`` since 2025."""
    try:
        spec = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    except (KeyError, TypeError):
        return []
    if isinstance(spec, list) and spec and isinstance(spec[0], list):
        return [n for n in spec[0] if isinstance(n, str)]
    if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict):
        return [n for n in spec[1].get("options", []) if isinstance(n, str)]
    return []


def preview_image(frame: bytes) -> bytes | None:
    """The image of a binary websocket frame if it is a preview. Pure."""
    if len(frame) < 8 or struct.unpack(">I", frame[:4])[0] != PREVIEW_IMAGE:
        return None
    return frame[8:]


def result_image(history: Any, prompt_id: str, output_node: str | None) -> dict[str, Any] | None:
    """The result's ``{filename, subfolder, type}`` in a ``/history/{prompt_id}`` answer: the first
    ``output`` image (or any, if none is saved), or ``output_node``'s. Pure."""
    entry = history.get(prompt_id) if isinstance(history, dict) else None
    outputs = entry.get("outputs") if isinstance(entry, dict) else None
    if not isinstance(outputs, dict):
        return None
    images = [
        image
        for node, output in outputs.items()
        if output_node is None or node == output_node
        for image in (output.get("images") or [] if isinstance(output, dict) else [])
        if isinstance(image, dict) and isinstance(image.get("filename"), str)
    ]
    saved = [image for image in images if image.get("type") == "output"]
    return (saved or images)[0] if images else None


def history_status(history: Any, prompt_id: str) -> str | None:
    """``success``, ``error`` or None (not finished, or unknown) from a history answer. Pure."""
    entry = history.get(prompt_id) if isinstance(history, dict) else None
    status = entry.get("status") if isinstance(entry, dict) else None
    if isinstance(status, dict) and status.get("completed"):
        return "success"
    if isinstance(status, dict) and status.get("status_str") == "error":
        return "error"
    if isinstance(entry, dict) and status is None and entry.get("outputs"):
        return "success"  # services older than the status field
    return None


def place_in_queue(queue: Any, prompt_id: str) -> int | None:
    """How many prompts are ahead of ``prompt_id`` in a ``GET /queue`` answer (0: it runs), or
    None if it is not there. Items are ``[number, prompt_id, ...]``. Pure."""
    if not isinstance(queue, dict):
        return None
    running = [item for item in queue.get("queue_running") or [] if isinstance(item, list) and len(item) > 1]
    if any(item[1] == prompt_id for item in running):
        return 0
    pending = sorted(
        (item for item in queue.get("queue_pending") or [] if isinstance(item, list) and len(item) > 1),
        key=lambda item: item[0],
    )
    for index, item in enumerate(pending):
        if item[1] == prompt_id:
            return len(running) + index
    return None


class ComfyUIBackend:
    """Draws through ComfyUI's API (see the module docstring)."""

    name = NAME

    def __init__(self, settings: ComfyUISettings) -> None:
        self.settings = settings
        #: The checkpoint to set, once checked against the service (first job of the worker).
        self._model: str | None = None
        self._checked = False

    def _service(self) -> Service:
        s = self.settings
        return Service(service_session(s.username, s.password, s.connect_timeout_s), s.url)

    async def generate(self, request: ImageRequest, progress: ProgressCallback) -> ImageResult:
        client_id = uuid.uuid4().hex
        prompt_id = str(uuid.uuid4())
        service = self._service()
        async with service.session:
            if not self._checked:
                self._model = await self._check_model(service)
                self._checked = True
            graph = prompt_graph(request, self.settings, self._model)
            socket = await self._open_socket(service, client_id)
            finished = False
            try:
                body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
                answer = await service.call("POST", "/prompt", body)
                if isinstance(answer, dict) and isinstance(answer.get("prompt_id"), str):
                    prompt_id = answer["prompt_id"]
                follow = Follow(service, prompt_id, progress)
                if socket is not None:
                    await follow.over(socket)
                if not follow.ended:
                    await follow.by_polling(self.settings.poll_interval_s)
                finished = True
            finally:
                if socket is not None:
                    await socket.close()
                if not finished:
                    await self._take_back(service, prompt_id)
            history = await service.call("GET", f"/history/{prompt_id}")
            image = result_image(history, prompt_id, self.settings.output_node)
            if image is None:
                raise ComfyUIError(f"prompt {prompt_id} ended without an image (does the workflow save one?)")
            data = await service.read(
                "/view",
                {
                    "filename": image["filename"],
                    "subfolder": image.get("subfolder", ""),
                    "type": image.get("type", "output"),
                },
            )
        png = await asyncio.to_thread(as_png, data)
        await progress(request.steps, request.steps, None)
        return ImageResult(png)

    async def _open_socket(self, service: Service, client_id: str) -> aiohttp.ClientWebSocketResponse | None:
        """The websocket of ``client_id``, or None if the service (or a proxy) offers none."""
        try:
            return await service.session.ws_connect(
                service.url + "/ws",
                params={"clientId": client_id},
                heartbeat=30,
                max_msg_size=IMAGE_MAX_BYTES,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise ComfyUIError(_LOGIN_REFUSED) from None
            log.warning(
                "the image service offers no websocket (HTTP %s): following the job by polling", exc.status
            )
            return None

    async def _check_model(self, service: Service) -> str | None:
        """The checkpoint to draw with, checked against the ones the service has (with genbot's own
        workflow and no ``MODEL``: the first of them). Raises :class:`ComfyUIError`."""
        s = self.settings
        if s.nodes.model is None or (s.model is None and s.workflow is not None):
            return None
        names = checkpoints(await service.call("GET", "/object_info/CheckpointLoaderSimple"))
        if s.model is None:
            if not names:
                raise ComfyUIError("the service lists no checkpoint: put one in its models/checkpoints")
            log.info("drawing with the service's checkpoint %r (set %sMODEL to choose)", names[0], SETTING)
            return names[0]
        if s.model not in names:
            raise ComfyUIError(
                f"{SETTING}MODEL: the service has no checkpoint {s.model!r}; it has: {', '.join(names)}"
            )
        return s.model

    async def _take_back(self, service: Service, prompt_id: str) -> None:
        """Take ``prompt_id`` out of the service's queue, or interrupt it if it runs; bounded,
        never raises."""
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                place = place_in_queue(await service.call("GET", "/queue"), prompt_id)
                if place == 0:
                    await service.call("POST", "/interrupt", {"prompt_id": prompt_id})
                    log.info("asked the image service to stop prompt %s", prompt_id)
                elif place is not None:
                    await service.call("POST", "/queue", {"delete": [prompt_id]})
                    log.info("took prompt %s out of the image service's queue", prompt_id)
        except (ComfyUIError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not take prompt %s back from the image service: %s", prompt_id, exc)


class Follow:
    """One prompt followed to its end: over the websocket, else by polling."""

    def __init__(self, service: Service, prompt_id: str, progress: ProgressCallback) -> None:
        self.service = service
        self.prompt_id = prompt_id
        self.progress = progress
        self.ended = False
        self.started = False
        self.step: tuple[int, int] | None = None
        self.previews = False

    async def over(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        """Read events until the prompt ends (``ended``) or the socket closes (not ``ended``).
        Raises :class:`ComfyUIError` if the prompt failed."""
        async for message in socket:
            if message.type is aiohttp.WSMsgType.BINARY:
                await self._frame(message.data)
            elif message.type is aiohttp.WSMsgType.TEXT:
                try:
                    event = json.loads(message.data)
                except ValueError:
                    continue
                if isinstance(event, dict) and isinstance(event.get("data"), dict):
                    await self._event(str(event.get("type")), event["data"])
            if self.ended:
                return
        log.warning(
            "the image service's websocket closed during prompt %s: following it by polling", self.prompt_id
        )

    async def _frame(self, frame: bytes) -> None:
        image = preview_image(frame)
        if image is None or self.step is None:
            return
        preview = await asyncio.to_thread(preview_of, image)
        if preview is not None:
            self.previews = True
            await self.progress(*self.step, preview)

    async def _event(self, kind: str, data: dict[str, Any]) -> None:
        if data.get("prompt_id", self.prompt_id) != self.prompt_id:
            return  # another prompt of this client id (there are none) or a broadcast
        if kind == "status" and not self.started:
            await self._say_place()
        elif kind == "execution_start":
            self.started = True
        elif kind == "progress":
            value, most = data.get("value"), data.get("max")
            if isinstance(value, int) and isinstance(most, int) and most > 0:
                self.started = True
                self.step = (min(value, most), most)
                if not self.previews:  # else the preview frame that follows reports it
                    await self.progress(*self.step, None)
        elif kind == "executing" and data.get("node") is None and "prompt_id" in data:
            # Sent once the history holds the prompt (``execution_success`` comes before that).
            self.ended = True
        elif kind == "execution_error":
            said = " ".join(
                str(data.get(k) or "") for k in ("node_type", "exception_type", "exception_message")
            )
            raise ComfyUIError(f"prompt {self.prompt_id} failed on the service: {said.strip()[:500]}")
        elif kind == "execution_interrupted":
            raise ComfyUIError(f"prompt {self.prompt_id} was interrupted on the service")

    async def _say_place(self) -> None:
        """Tell the member where the prompt waits in ComfyUI's queue (best effort)."""
        try:
            place = place_in_queue(await self.service.call("GET", "/queue"), self.prompt_id)
        except (ComfyUIError, aiohttp.ClientError, TimeoutError):
            return
        if place:
            await self.progress(0, 0, None, waiting=f"waiting in ComfyUI's queue, {place} ahead")

    async def by_polling(self, interval_s: float) -> None:
        """Read the history (and the queue) until the prompt ends. Raises :class:`ComfyUIError`
        if it failed or the service no longer knows it."""
        while True:
            history = await self.service.call("GET", f"/history/{self.prompt_id}")
            status = history_status(history, self.prompt_id)
            if status == "success":
                self.ended = True
                return
            if status == "error":
                raise ComfyUIError(f"prompt {self.prompt_id} failed on the service (see its history)")
            if place_in_queue(await self.service.call("GET", "/queue"), self.prompt_id) is None:
                # Not queued, not running, not in the history: the service restarted and lost it.
                again = await self.service.call("GET", f"/history/{self.prompt_id}")
                if history_status(again, self.prompt_id) is None:
                    raise ComfyUIError(
                        f"the service no longer knows prompt {self.prompt_id} (did it restart?)"
                    )
                continue
            await asyncio.sleep(interval_s)


_LOGIN_REFUSED = (
    f"the service refused genbot's login (HTTP 401): set {SETTING}USERNAME and {SETTING}PASSWORD "
    "to what its proxy asks"
)


@dataclass(frozen=True, slots=True)
class Service:
    """ComfyUI at ``url``, through ``session`` (its login and timeouts)."""

    session: aiohttp.ClientSession
    url: str

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; its JSON answer (None for an empty one). Raises :class:`ComfyUIError` for
        an answer that is not 200 (with what the service said), :class:`aiohttp.ClientError` when
        it cannot be reached."""
        async with self.session.request(method, self.url + path, json=body) as response:
            await self._check(response, method, path)
            text = await response.text()
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise ComfyUIError(f"the service answered {method} {path} with what is not JSON") from None

    async def read(self, path: str, query: Mapping[str, str]) -> bytes:
        """A file the service serves, bounded by :data:`IMAGE_MAX_BYTES`."""
        async with self.session.get(self.url + path, params=query) as response:
            await self._check(response, "GET", path)
            data = await response.content.read(IMAGE_MAX_BYTES + 1)
        if len(data) > IMAGE_MAX_BYTES:
            raise ComfyUIError(f"the service's image is larger than {IMAGE_MAX_BYTES} bytes")
        return data

    @staticmethod
    async def _check(response: aiohttp.ClientResponse, method: str, path: str) -> None:
        if response.status == 200:
            return
        if response.status == 401:
            raise ComfyUIError(_LOGIN_REFUSED)
        said = await response.text(errors="replace")
        with contextlib.suppress(ValueError):
            body = json.loads(said)
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                # An invalid prompt: {"error": {"type", "message", "details"}, "node_errors": {...}}
                error = body["error"]
                said = f"{error.get('message')}: {error.get('details')} {json.dumps(body.get('node_errors'))}"
        said = error_words(said, ("error",))
        raise ComfyUIError(f"the service answered {method} {path} with HTTP {response.status}: {said}")
