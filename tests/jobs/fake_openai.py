"""A local fake of the OpenAI Images API (``POST /v1/images/generations``), speaking its wire format.

What it keeps of the real service (the API reference for image creation and image streaming):
``Authorization: Bearer <key>``, refused with 401 and ``{"error": {"message", "type", "param",
"code": "invalid_api_key"}}``; a prompt its moderation refuses (here: any with "forbidden" in it)
answered 400 with ``code: "moderation_blocked"``; ``stream: true`` answered as Server-Sent Events,
``event: image_generation.partial_image`` with ``b64_json`` and ``partial_image_index`` for each of
``partial_images``, then ``event: image_generation.completed`` with the image and its ``usage``;
without ``stream``, ``{"created", "data": [{"b64_json"}], "usage"}``. Sizes are the model's
(``1024x1024``, ``1536x1024``, ``1024x1536``); the images it draws are small stand-ins of that shape.

It can fail the next request (``fail_next``), hold a stream open after its first preview
(``hang``), and counts the streams a client closed early (``closed_early``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fake_server import serve

KEY = "sk-test-genbot"
SIZES = {"1024x1024", "1536x1024", "1024x1536"}


def picture(size: str, shade: int, fmt: str = "PNG") -> bytes:
    """A stand-in of ``size``'s shape, a tenth of its sides."""
    width, height = (int(side) // 10 for side in size.split("x"))
    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 128, 255 - shade)).save(out, fmt)
    return out.getvalue()


def _error(status: int, message: str, kind: str, code: str | None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


class FakeOpenAI:
    def __init__(self, *, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.hang = False
        self.closed_early = 0
        self._failures: list[int] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def fail_next(self, status: int) -> None:
        self._failures.append(status)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/images/generations", self._generate)
        self._runner, port = await serve(app)
        self.url = f"http://127.0.0.1:{port}/v1"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        body = await request.json()
        self.requests.append(body)
        if self._failures:
            status = self._failures.pop(0)
            return _error(
                status, "The server had an error while processing your request.", "server_error", None
            )
        size = body.get("size", "1024x1024")
        if size not in SIZES:
            return _error(400, f"Invalid value: '{size}'.", "invalid_request_error", "invalid_value")
        if "forbidden" in str(body.get("prompt", "")):
            message = "Your request was rejected as a result of our safety system."
            return _error(400, message, "image_generation_user_error", "moderation_blocked")
        final = picture(size, len(self.requests) * 40 % 256)
        common = {
            "size": size,
            "quality": body.get("quality", "auto"),
            "background": "opaque",
            "output_format": "png",
        }
        if not body.get("stream"):
            return web.json_response(
                {
                    "created": int(time.time()),
                    "data": [{"b64_json": base64.b64encode(final).decode()}],
                    "usage": {},
                }
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            for index in range(int(body.get("partial_images", 0))):
                await asyncio.sleep(self.delay_s)
                partial = picture(size, index * 60, "PNG")
                await _event(
                    response,
                    "image_generation.partial_image",
                    {
                        "type": "image_generation.partial_image",
                        "b64_json": base64.b64encode(partial).decode(),
                        "created_at": int(time.time()),
                        "partial_image_index": index,
                        **common,
                    },
                )
                while self.hang:
                    if request.transport is None or request.transport.is_closing():
                        raise ConnectionResetError  # the client went away
                    await asyncio.sleep(0.02)
            await asyncio.sleep(self.delay_s)
            usage = {
                "total_tokens": 100,
                "input_tokens": 50,
                "output_tokens": 50,
                "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
            }
            await _event(
                response,
                "image_generation.completed",
                {
                    "type": "image_generation.completed",
                    "b64_json": base64.b64encode(final).decode(),
                    "created_at": int(time.time()),
                    "usage": usage,
                    **common,
                },
            )
        except (ConnectionResetError, asyncio.CancelledError):
            self.closed_early += 1
            raise
        await response.write_eof()
        return response


async def _event(response: web.StreamResponse, name: str, data: dict[str, Any]) -> None:
    await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
