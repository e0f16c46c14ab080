"""The local chat's guard and its strictly typed API: pure functions with captured inputs, then
the same rules over real HTTP (DNS rebinding, the headers, the typing of every field)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from adapters.local import api
from adapters.local.guard import allowed_hosts, content_security_policy, host_name, origin_allowed
from bot.app import Runtime, runtime
from bot.config import Settings
from storage.models import ChatMessageRow, GenerationRow, WorkspaceRow
from tests.chat_client import all_handled
from tests.image_jobs import every_spec
from tests.stack import bot_running

SPECS = {s.key: s for s in every_spec()}


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost:8000", "localhost"),
        ("LOCALHOST.:8000", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[0:0:0:0:0:0:0:1]:80", "::1"),
        ("chat.lan:8000", "chat.lan"),
        ("attacker.example:8000", "attacker.example"),
        ("::1", None),  # an IPv6 address without brackets is no Host header
        ("[::1", None),
        ("[::1]x", None),
        ("localhost:80a", None),
        ("localhost:123456", None),
        ("", None),
        ("local host", None),
        ("lоcalhost", None),  # noqa: RUF001 (a Cyrillic o)
        ("localhost\x00:8000", None),
    ],
)
def test_host_headers_are_read_strictly(header: str, host: str | None) -> None:
    assert host_name(header) == host


def test_the_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("0.0.0.0") == allowed_hosts("::") == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("192.0.2.7", ["Chat.Lan."]) == {
        "localhost",
        "127.0.0.1",
        "::1",
        "192.0.2.7",
        "chat.lan",
    }
    assert "::1" in allowed_hosts("[::1]")


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        ("http://localhost:8000", "localhost:8000", True),
        ("https://localhost:8000", "localhost:8000", True),
        ("http://localhost:8001", "localhost:8000", False),
        ("http://evil.example", "localhost:8000", False),
        ("null", "localhost:8000", False),
        ("file://localhost:8000", "localhost:8000", False),
        ("localhost:8000", "localhost:8000", False),
    ],
)
def test_the_origin_must_be_the_host(origin: str, host: str, ok: bool) -> None:
    assert origin_allowed(origin, host) is ok


def test_the_policy_allows_the_page_and_nothing_else() -> None:
    policy = content_security_policy("localhost:8000")
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert "connect-src 'self' ws://localhost:8000 wss://localhost:8000" in policy
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert "ws://" not in content_security_policy(None)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b'"x"',
        b"1",
        b"{",
        b"\xff\xfe{}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"[" * 100_000,
    ],
)
def test_a_body_is_a_json_object_in_utf8(raw: bytes) -> None:
    with pytest.raises(api.BadRequest, match=re.escape("Send a JSON object.")):
        api.json_object(raw)


@pytest.mark.parametrize("value", [None, 1, 1.5, True, [], {}, ["x"]])
def test_string_fields_are_json_strings(value: Any) -> None:
    with pytest.raises(api.BadRequest, match=re.escape("text must be a JSON string.")):
        api.string_field({"text": value}, "text")


def test_options_are_typed_by_their_spec() -> None:
    imagine = SPECS["imagine"]
    body = {"options": {"prompt": "fox", "steps": 20, "seed": "42"}}
    assert api.command_options(body, imagine) == {"prompt": "fox", "steps": "20", "seed": "42"}
    for bad in ({"prompt": None}, {"prompt": 5}, {"prompt": ["a"]}, {"negative": True}):
        with pytest.raises(api.BadRequest, match=re.escape("Option values must be JSON strings.")):
            api.command_options({"options": bad}, imagine)
    for bad_int in (True, 20.0, 1e400, None, [20]):
        with pytest.raises(api.BadRequest, match=re.escape("The option steps must be a whole number")):
            api.command_options({"options": {"steps": bad_int}}, imagine)
    for bad_options in (None, [], "x"):
        with pytest.raises(api.BadRequest, match=re.escape("options must be a JSON object.")):
            api.command_options({"options": bad_options}, imagine)
    assert api.command_options({}, imagine) == {}
    # an option the command does not have: a string reaches the core, which names it
    assert api.command_options({"options": {"sampler": "euler"}}, imagine) == {"sampler": "euler"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1), ("12", 12), (2**63 - 1, 2**63 - 1), (str(2**63 - 1), 2**63 - 1)],
)
def test_message_ids_in_range(value: Any, expected: int) -> None:
    assert api.message_id({"message_id": value}) == expected


@pytest.mark.parametrize(
    "value", [0, -1, 2**63, str(2**63), True, 1.0, float("inf"), "1e3", "\u0663", " 1", "1_0", None, [1]]
)
def test_message_ids_out_of_range_or_type(value: Any) -> None:
    with pytest.raises(api.BadRequest, match=re.escape("message_id must be a message number.")):
        api.message_id({"message_id": value})


# -- over HTTP ----------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def base(rt: Runtime) -> AsyncIterator[str]:
    async with bot_running(rt) as (url, _stop):
        yield url


async def test_a_rebinding_page_can_neither_act_nor_listen(base: str, redis: Redis) -> None:
    """A page on attacker.example, its name re-pointed at 127.0.0.1, reaches the port with its
    own name in Host (and Origin): refused before anything else, WebSocket included."""
    port = base.rsplit(":", 1)[1]
    evil = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
    body = {"user_id": "admin", "command": "admin pause", "options": {}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/command", json=body, headers=evil) as resp:
            assert resp.status == 403
            assert await resp.json() == {"ok": False, "error": "This chat does not answer to that host name."}
        for path in ("/", "/api/session", "/api/messages?user_id=admin", "/static/app.js"):
            async with http.get(base + path, headers={"Host": evil["Host"]}) as resp:
                assert resp.status == 403, path
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{base}/ws?user_id=admin", headers=evil)
        assert refused.value.status == 403
        assert not await WorkspaceRow.filter(paused=True).exists()

        # the same requests under the chat's own names work
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST.:{port}"):
            own = {"Host": host, "Origin": f"http://{host}"}
            async with http.get(f"{base}/api/session", headers=own) as resp:
                assert resp.status == 200, host
        ws = await http.ws_connect(f"{base}/ws?user_id=admin", headers={"Origin": base})
        await ws.close()


async def test_every_answer_carries_the_security_headers(rt: Runtime, base: str) -> None:
    await rt.blobs.put("results/1.png", b"png")  # so that /blobs/results is a folder
    async with aiohttp.ClientSession() as http:
        answers = []
        for method, path in [
            ("GET", "/"),
            ("GET", "/static/app.js"),
            ("GET", "/api/session"),
            ("GET", "/api/messages?user_id=nobody"),
            ("GET", "/nowhere"),
            ("PUT", "/api/command"),
            ("GET", "/blobs/results"),
        ]:
            async with http.request(method, base + path) as resp:
                answers.append((path, resp.status, resp.headers))
        async with http.get(base + "/", headers={"Host": "attacker.example"}) as resp:
            answers.append(("rebound", resp.status, resp.headers))
        async with http.ws_connect(f"{base}/ws?user_id=alice") as ws:
            answers.append(("ws", 101, ws._response.headers))
    for path, status, headers in answers:
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
        assert status < 500, path
    host = base.removeprefix("http://")
    assert f"ws://{host}" in answers[0][2]["Content-Security-Policy"]
    assert "attacker" not in answers[-2][2]["Content-Security-Policy"]
    errors = {path: status for path, status, _ in answers if status >= 400}
    assert errors == {
        "/api/messages?user_id=nobody": 400,
        "/nowhere": 404,
        "/api/command": 405,
        "/blobs/results": 404,  # a folder of the blob store, not an image
        "rebound": 403,
    }


async def post(http: aiohttp.ClientSession, base: str, path: str, body: Any) -> tuple[int, Any]:
    async with http.post(base + path, json=body) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/api/command", {"user_id": "alice", "text": None}, "text must be a JSON string."),
        ("/api/command", {"user_id": "alice", "text": 42}, "text must be a JSON string."),
        ("/api/command", {"user_id": "alice", "command": None}, "command must be a JSON string."),
        ("/api/command", {"user_id": "alice", "command": "x" * 65}, "There is no such command."),
        ("/api/command", {"user_id": "alice", "command": "imagine", "options": {"prompt": None}}, None),
        ("/api/command", {"user_id": "alice", "command": "imagine", "options": None}, None),
        ("/api/command", {"user_id": "alice", "text": "\u200b\x00 \u3164"}, "Type a message."),
        ("/api/command", {"user_id": ["alice"], "text": "hi"}, "Unknown member."),
        ("/api/action", {"user_id": "alice", "message_id": 1e400, "action": "cancel"}, None),
        ("/api/action", {"user_id": "alice", "message_id": 2**63, "action": "cancel"}, None),
        (
            "/api/action",
            {"user_id": "alice", "message_id": 1, "action": None},
            "action must be a JSON string.",
        ),
    ],
)
async def test_typing_rules_over_http(
    rt: Runtime, base: str, path: str, body: Any, error: str | None
) -> None:
    async with aiohttp.ClientSession() as http:
        status, answer = await post(http, base, path, body)
    assert status == 400
    assert answer["ok"] is False and isinstance(answer["error"], str)
    assert error is None or answer["error"] == error
    assert await GenerationRow.all().count() == 0
    assert await ChatMessageRow.all().count() == 0


async def test_a_plain_message_keeps_its_lines_and_loses_its_controls(rt: Runtime, base: str) -> None:
    async with aiohttp.ClientSession() as http:
        status, _ = await post(
            http, base, "/api/command", {"user_id": "alice", "text": "hi\x00 there\r\nsecond\x1b line"}
        )
    assert status == 200
    [row] = await ChatMessageRow.all()
    assert row.text == "hi there\nsecond line"


async def test_a_configured_name_in_front_of_the_chat_is_answered(settings: Settings, redis: Redis) -> None:
    named = settings.model_copy(
        update={"local": settings.local.model_copy(update={"allowed_hosts": ["chat.lan"]})}
    )
    async with runtime(named) as rt, bot_running(rt) as (url, _stop), aiohttp.ClientSession() as http:
        port = url.rsplit(":", 1)[1]
        async with http.get(url + "/api/session", headers={"Host": f"chat.lan:{port}"}) as resp:
            assert resp.status == 200
        async with http.get(url + "/api/session", headers={"Host": f"other.lan:{port}"}) as resp:
            assert resp.status == 403


async def test_a_member_option_is_read_cleaned_in_the_structured_form(rt: Runtime, base: str) -> None:
    body = {"user_id": "admin", "command": "admin ban", "options": {"member": "@Bo\x00b\n", "jobs": "keep"}}
    async with aiohttp.ClientSession() as http:
        assert (await post(http, base, "/api/command", body))[0] == 200
    await all_handled()
    reply = await ChatMessageRow.filter(ephemeral_to="admin").order_by("-id").first()
    assert reply is not None and reply.text.startswith("Banned member bob until unbanned.")
