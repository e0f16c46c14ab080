"""A local fake of Discord's REST API on loopback, speaking the real wire format.

discord.py is pointed at it through ``Route.BASE`` (the ``api_base_url`` setting). It records every
request (JSON bodies and multipart ``payload_json`` + ``files[n]``), keeps the messages it created,
and can be told to fail: 429 with ``retry_after`` (and the headers discord.py needs to treat it as
Discord's, not a Cloudflare ban), 401/50027 for an expired interaction token, 404/10008 for a deleted
message. With :attr:`FakeDiscord.bot_token` set, a request with another bot token gets Discord's
``401: Unauthorized``.

Rate limits: ``FakeDiscord(limits=DiscordLimits())`` keeps Discord's buckets (see
:mod:`tests.rate_limits`): every answer carries ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset``,
``-Reset-After`` and ``-Bucket`` for its route, and a request over its bucket (or over the global
limit) answers 429 with ``retry_after``, ``global``, ``Retry-After`` and ``X-RateLimit-Scope``, as
discord.py expects; :attr:`FakeDiscord.rate_limited` counts them by bucket kind. Every request
carries its wall-clock time (``at``).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from aiohttp import web

from tests.rate_limits import DiscordLimits, TokenBucket

API = "/api/v10"
BOT_ID = "900000000000000001"
APP_ID = "900000000000000002"
BOT_USER = {
    "id": BOT_ID,
    "username": "genbot",
    "discriminator": "0",
    "avatar": None,
    "bot": True,
    "global_name": None,
}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # form name -> (filename, bytes)
    status: int = 0
    at: float = field(default_factory=time.time)

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Failure:
    match: Callable[[Recorded], bool]
    status: int
    body: dict[str, Any]
    times: int
    headers: dict[str, str] = field(default_factory=dict)


class FakeDiscord:
    def __init__(self, limits: DiscordLimits | None = None) -> None:
        self.limits = limits
        self.rate_limited: Counter[str] = Counter()  # bucket kind ("channel", "webhook", "global") -> 429s
        self._buckets: dict[str, TokenBucket] = {}
        self._global = TokenBucket(limits.global_per_s, limits.global_per_s) if limits is not None else None
        self.requests: list[Recorded] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.originals: dict[str, str] = {}  # interaction token -> message id of @original
        self.deleted: set[str] = set()
        self.expired_tokens: set[str] = set()
        self.failures: list[Failure] = []
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.changed = asyncio.Event()
        self.token_channels: dict[str, str] = {}  # interaction token -> its channel
        #: The one bot token accepted, as Discord would; None accepts any.
        self.bot_token: str | None = None
        #: Files members attached, as the CDN serves them: path -> (bytes, content type).
        self.cdn: dict[str, tuple[bytes, str]] = {}

    # -- control ------------------------------------------------------------------------------

    def fail(self, match: Callable[[Recorded], bool], status: int, code: int, times: int = 1) -> None:
        self.failures.append(Failure(match, status, {"message": "fake failure", "code": code}, times))

    def rate_limit(self, match: Callable[[Recorded], bool], times: int, retry_after: float = 0.05) -> None:
        headers = {
            "Via": "1.1 google",
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(retry_after),
            "X-RateLimit-Bucket": "fakebucket",
            "X-RateLimit-Scope": "user",
        }
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
            "code": 0,
        }
        self.failures.append(Failure(match, 429, body, times, headers))

    def of(self, method: str, pattern: str) -> list[Recorded]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.search(r.path) and r.status < 300]

    def new_id(self) -> str:
        return str(next(self._ids))

    def attach(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = "image/png",
        channel_id: str = "500000000000000001",
    ) -> Attached:
        """A file a member attaches to a command: served by the fake's CDN route
        (``/attachments/<channel>/<id>/<filename>``, a signed link as Discord gives), to put in
        :func:`interaction_payload`'s options."""
        aid = self.new_id()
        path = f"/attachments/{channel_id}/{aid}/{filename}"  # as aiohttp gives it: unquoted
        self.cdn[path] = (data, content_type or "application/octet-stream")
        origin = self.base_url.removesuffix(API)
        expires = format(int(time.time()) + 86400, "x")
        obj: dict[str, Any] = {
            "id": aid,
            "filename": filename,
            "size": len(data),
            "url": f"{origin}{quote(path)}?ex={expires}&is={expires}&hm={hashlib.sha256(data).hexdigest()}&",
            "proxy_url": f"{origin}{quote(path)}",
            "ephemeral": True,  # an attachment option's file is sent nowhere else
        }
        if content_type is not None:
            obj["content_type"] = content_type
        return Attached(obj)

    def expire(self, attached: Attached) -> None:
        """The CDN no longer serves ``attached`` (its link expired, or it was deleted)."""
        self.cdn.pop(unquote(urlsplit(attached.object["url"]).path), None)

    # -- server -------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}{API}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _parse(self, request: web.Request) -> Recorded:
        path = request.path.removeprefix(API)
        rec = Recorded(request.method, path, dict(request.query), dict(request.headers))
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    rec.json = json.loads(data)
                else:
                    rec.files[part.name or ""] = (part.filename or "", bytes(data))  # type: ignore[union-attr]
        elif request.can_read_body:
            raw = await request.read()
            rec.json = json.loads(raw) if raw else None
        return rec

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = await self._parse(request)
        self.requests.append(rec)
        limited, headers = self._limit(rec)
        response = limited or self._respond(rec)
        if limited is None and response.status < 400:
            response.headers.update(headers)
        rec.status = response.status
        self.changed.set()
        return response

    def _bucket(self, rec: Recorded) -> tuple[str, str] | None:
        """The bucket of ``rec``'s route: ``(kind, key)``; None for routes not limited here."""
        assert self.limits is not None
        if hit := re.fullmatch(r"/channels/(\d+)/messages(?:/\d+)?", rec.path):
            return "channel", hit[1]
        if hit := re.fullmatch(r"/webhooks/\d+/([^/]+)(?:/messages/[^/]+)?", rec.path):
            return "webhook", hit[1]
        return None

    def _limit(self, rec: Recorded) -> tuple[web.Response | None, dict[str, str]]:
        """A 429 if ``rec`` is over its bucket or the global limit (taking nothing), else None and
        the ``X-RateLimit-*`` headers of its bucket (taken)."""
        if self.limits is None:
            return None, {}
        speed = self.limits.speed
        bucket_of = self._bucket(rec)
        bucket = None
        if bucket_of is not None:
            kind, key = bucket_of
            size = self.limits.channel_per_5s if kind == "channel" else self.limits.webhook_per_5s
            bucket = self._buckets.get(f"{kind}:{key}")
            if bucket is None:
                bucket = self._buckets[f"{kind}:{key}"] = TokenBucket(size / 5 * speed, size)
        # The global limit counts bot-token requests; interaction webhooks are outside it.
        is_bot = rec.headers.get("Authorization", "").startswith("Bot ")
        global_bucket = self._global if is_bot and (bucket_of is None or bucket_of[0] != "webhook") else None
        if global_bucket is not None and (wait := global_bucket.wait()) > 0:
            self.rate_limited["global"] += 1
            body = {"message": "You are being rate limited.", "retry_after": round(wait, 3), "global": True}
            return reply(body, status=429, headers=_limited_headers(wait, "global")), {}
        if bucket is not None and bucket_of is not None and (wait := bucket.wait()) > 0:
            self.rate_limited[bucket_of[0]] += 1
            body = {"message": "You are being rate limited.", "retry_after": round(wait, 3), "global": False}
            headers = {
                **_limited_headers(wait, "user"),
                **_bucket_headers(bucket, f"{bucket_of[0]}:{bucket_of[1]}"),
            }
            return reply(body, status=429, headers=headers), {}
        if global_bucket is not None:
            global_bucket.take()
        if bucket is None or bucket_of is None:
            return None, {}
        bucket.take()
        return None, _bucket_headers(bucket, f"{bucket_of[0]}:{bucket_of[1]}")

    def _respond(self, rec: Recorded) -> web.Response:
        auth = rec.headers.get("Authorization", "")
        if self.bot_token is not None and auth.startswith("Bot ") and auth != f"Bot {self.bot_token}":
            return reply({"message": "401: Unauthorized", "code": 0}, status=401)
        for failure in self.failures:
            if failure.times > 0 and failure.match(rec):
                failure.times -= 1
                return reply(failure.body, status=failure.status, headers=failure.headers)
        p, m = rec.path, rec.method
        if p.startswith("/attachments/"):  # the CDN: no token, not JSON
            if m != "GET" or p not in self.cdn:
                return web.Response(status=404, text="This content is no longer available.")
            data, content_type = self.cdn[p]
            return web.Response(body=data, headers={"Content-Type": content_type})
        if m == "GET" and p == "/users/@me":
            return reply(BOT_USER)
        if m == "GET" and p == "/oauth2/applications/@me":
            return reply(
                {
                    "id": APP_ID,
                    "name": "genbot",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": BOT_USER,
                    "verify_key": "00",
                    "flags": 0,
                }
            )
        if m == "GET" and p == "/gateway/bot":
            return reply(
                {
                    "url": "ws://127.0.0.1:1",
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 1000,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if m == "PUT" and (hit := re.fullmatch(r"/applications/(\d+)(?:/guilds/(\d+))?/commands", p)):
            out = []
            for cmd in rec.json:
                out.append(
                    {
                        **cmd,
                        "id": self.new_id(),
                        "application_id": hit[1],
                        "version": "1",
                        # Discord answers with the permission bits as a string (or null).
                        "default_member_permissions": _bits(cmd.get("default_member_permissions")),
                        "type": cmd.get("type", 1),
                    }
                )
            return reply(out)
        if m == "POST" and (hit := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p)):
            if rec.json.get("type") == 5:  # deferred: Discord shows a "thinking" placeholder message
                flags = (rec.json.get("data") or {}).get("flags", 0)
                placeholder = Recorded(m, p, {}, {}, json={"flags": flags | 128})
                created = self._create(placeholder, channel=self.token_channels.get(hit[2], "0"))
                self.originals[hit[2]] = json.loads(created.text or "{}")["id"]
            return reply(
                {
                    "interaction": {
                        "id": hit[1],
                        "type": 2,
                        "response_message_loading": rec.json.get("type") == 5,
                    }
                }
            )
        if hit := re.fullmatch(r"/webhooks/(\d+)/([^/]+)(?:/messages/([^/]+))?", p):
            token, mid = hit[2], hit[3]
            if token in self.expired_tokens:
                return reply({"message": "Invalid Webhook Token", "code": 50027}, status=401)
            if m == "POST" and mid is None:
                return self._create(rec, channel="0", token=token)
            if mid == "@original":
                mid = self.originals.get(token)
                if mid is None and m == "PATCH":  # the deferred placeholder becomes the message
                    created = self._create(rec, channel="0", token=token)
                    self.originals[token] = json.loads(created.text or "{}")["id"]
                    return created
            return self._edit_or_delete(rec, mid)
        if hit := re.fullmatch(r"/channels/(\d+)/messages(?:/(\d+))?", p):
            if m == "POST" and hit[2] is None:
                return self._create(rec, channel=hit[1])
            return self._edit_or_delete(rec, hit[2])
        return reply({"message": "404: Not Found", "code": 0}, status=404)

    def _message(self, mid: str, channel: str, payload: dict[str, Any], rec: Recorded) -> dict[str, Any]:
        attachments = [
            {
                "id": self.new_id(),
                "filename": name,
                "size": len(data),
                "url": f"https://cdn.fake/{name}",
                "proxy_url": f"https://media.fake/{name}",
            }
            for name, data in rec.files.values()
        ]
        return {
            "id": mid,
            "channel_id": channel,
            "author": BOT_USER,
            "content": payload.get("content") or "",
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": payload.get("embeds") or [],
            "pinned": False,
            "type": 0,
            "flags": payload.get("flags") or 0,
            "components": payload.get("components") or [],
        }

    def _create(self, rec: Recorded, *, channel: str, token: str | None = None) -> web.Response:
        mid = self.new_id()
        if token is not None and channel == "0":
            channel = self.token_channels.get(token, "0")
        message = self._message(mid, channel, rec.json or {}, rec)
        self.messages[mid] = message
        return reply(message)

    def _edit_or_delete(self, rec: Recorded, mid: str | None) -> web.Response:
        if mid is None or mid in self.deleted or mid not in self.messages:
            return reply({"message": "Unknown Message", "code": 10008}, status=404)
        if rec.method == "DELETE":
            self.deleted.add(mid)
            return web.Response(status=204)
        old = self.messages[mid]
        message = self._message(mid, old["channel_id"], {**old, **(rec.json or {})}, rec)
        if not rec.files and "attachments" in (rec.json or {}):
            keep = {a.get("id") for a in rec.json["attachments"]}
            message["attachments"] = [a for a in old["attachments"] if a["id"] in keep]
        self.messages[mid] = message
        return reply(message)


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON as Discord sends it: discord.py parses a body only when the content type is exactly
    ``application/json`` (aiohttp's ``json_response`` adds a charset)."""
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _limited_headers(wait: float, scope: str) -> dict[str, str]:
    headers = {"Retry-After": str(max(1, math.ceil(wait))), "X-RateLimit-Scope": scope, "Via": "1.1 google"}
    if scope == "global":
        headers["X-RateLimit-Global"] = "true"
    return headers


def _bucket_headers(bucket: TokenBucket, key: str) -> dict[str, str]:
    """What Discord says of a bucket after a request: its size, what is left, when it is full."""
    remaining = max(0, math.floor(bucket.tokens))
    reset_after = max(0.0, (1 - bucket.tokens) / bucket.per_s) if remaining == 0 else 0.0
    return {
        "X-RateLimit-Limit": str(bucket.burst),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Bucket": hashlib.sha1(key.encode()).hexdigest()[:16],
    }


def _bits(value: Any) -> str | None:
    return None if value is None else str(int(value))


def snowflake_now() -> str:
    ms = int(datetime.now(UTC).timestamp() * 1000) - 1420070400000
    return str((ms << 22) + next(_seq))


_seq = itertools.count(1)


def text_channel(channel_id: str, guild_id: str) -> dict[str, Any]:
    """A guild text channel as Discord sends it in interactions and GUILD_CREATE."""
    return {
        "id": channel_id,
        "type": 0,
        "guild_id": guild_id,
        "name": "gen",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
    }


@dataclass(frozen=True)
class Picked:
    """A member picked in a ``user`` option: sent as its id, the member itself in ``resolved``."""

    user_id: str
    username: str


@dataclass(frozen=True)
class Attached:
    """A file attached to an ``attachment`` option: sent as its id, the attachment object in
    ``resolved.attachments``."""

    object: dict[str, Any]


def _user(user_id: str, username: str) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": username,
        "discriminator": "0",
        "avatar": None,
        "global_name": username.capitalize(),
    }


def _options(options: dict[str, Any], resolved: dict[str, Any]) -> list[dict[str, Any]]:
    types = {str: 3, int: 4, Picked: 6}
    out = []
    for key, value in options.items():
        if isinstance(value, Picked):
            resolved.setdefault("users", {})[value.user_id] = _user(value.user_id, value.username)
            resolved.setdefault("members", {})[value.user_id] = {  # no "user" key in resolved members
                "roles": [],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "nick": None,
                "flags": 0,
                "permissions": "2048",
            }
            out.append({"name": key, "type": 6, "value": value.user_id})
        elif isinstance(value, Attached):
            resolved.setdefault("attachments", {})[value.object["id"]] = value.object
            out.append({"name": key, "type": 11, "value": value.object["id"]})
        else:
            out.append({"name": key, "type": types[type(value)], "value": value})
    return out


def interaction_payload(
    *,
    name: str,
    options: dict[str, Any],
    user_id: str = "300000000000000001",
    username: str = "alice",
    guild_id: str = "400000000000000001",
    channel_id: str = "500000000000000001",
    permissions: str = "2048",  # Send Messages only
    roles: tuple[str, ...] = (),
    token: str | None = None,
) -> dict[str, Any]:
    """A real-shaped INTERACTION_CREATE for a slash command (type 2). ``name`` may name a
    subcommand (``"admin ban"``): the options then nest in a type 1 option, as Discord sends them.
    A :class:`Picked` value is a ``user`` option (type 6) with the member in ``data.resolved``, an
    :class:`Attached` one an ``attachment`` option (type 11) with the file there."""
    iid = snowflake_now()
    resolved: dict[str, Any] = {}
    top, _, sub = name.partition(" ")
    given = _options(options, resolved)
    data: dict[str, Any] = {
        "id": "600000000000000001",
        "name": top,
        "type": 1,
        "options": [{"name": sub, "type": 1, "options": given}] if sub else given,
    }
    if resolved:
        data["resolved"] = resolved
    return {
        "id": iid,
        "application_id": APP_ID,
        "type": 2,
        "token": token or f"tok-{iid}",
        "version": 1,
        "guild_id": guild_id,
        "channel_id": channel_id,
        "channel": text_channel(channel_id, guild_id),
        "member": {
            "user": _user(user_id, username),
            "roles": list(roles),
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": permissions,
            "nick": None,
        },
        "data": data,
        "app_permissions": "442368",
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": guild_id},
        "context": 0,
        "attachment_size_limit": 10485760,
    }


def button_payload(custom_id: str, message: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """A real-shaped INTERACTION_CREATE for a button click (type 3) on ``message``."""
    payload = interaction_payload(name="x", options={}, **kw)
    payload["type"] = 3
    payload["message"] = message
    payload["data"] = {"custom_id": custom_id, "component_type": 2}
    return payload
