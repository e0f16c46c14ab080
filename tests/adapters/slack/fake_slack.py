"""A local fake of Slack's Web API (and of response_url), on a free loopback port.

It implements what genbot calls, with Slack's response shapes: ``auth.test``, ``chat.postMessage``,
``chat.update``, ``files.getUploadURLExternal``, the upload URL, ``files.completeUploadExternal``,
``users.info``, ``files.list``, ``files.info``, the files' private download URLs, and
``/respond/<id>`` standing in for a command's ``response_url``. It records every request and keeps
the channel's messages, so tests assert on what a member would see.

Files: :meth:`FakeSlack.share_file` is a member sharing a file in a channel (a file object as
Slack's, its ``url_private``/``url_private_download`` on this server); the files genbot uploads are
files too, the bot's. ``files.list`` filters by ``channel``, ``user``, ``types``, ``ts_from``/``ts_to``,
newest first, with ``paging``; ``files.info`` answers ``file_not_found`` for a file the bot cannot
see (shared only where it is not) and ``file_deleted`` after :meth:`FakeSlack.delete_file`. A
download without the bot token is redirected to an HTML sign-in page (answered 200), as Slack does;
every download is recorded as ``download``. ``without_scopes`` removes scopes from the app
(``missing_scope``); ``stream_downloads`` sends files chunked, with no ``Content-Length``.

Rate limits: ``FakeSlack(limits=SlackLimits())`` enforces Slack's (see :mod:`tests.rate_limits`): a
write to a channel (``chat.postMessage``, ``chat.update``, ``files.completeUploadExternal``) over the
channel's budget, or a ``chat.update`` over the workspace's, answers 429 with ``Retry-After`` and
changes nothing; ``files.list`` (Tier 3, like ``chat.update``) and ``files.info`` (Tier 4, twice
that) have a budget per workspace each; :attr:`FakeSlack.rate_limited` counts them by method, and
:meth:`FakeSlack.storm_in` answers every write to one channel with 429 for a while. Every call and every version of a message
carries its wall-clock time (``at``), so tests (and benchmarks in other processes) can tell when a
member saw what.

Connections: :attr:`FakeSlack.connections` holds the client address (host, port) of every TCP
connection a request came on, so its size is the number of connections clients opened (a client
port stays taken while its connection lives, and for a while after the client closes it).

Faults: :meth:`FakeSlack.outage` answers every call of some methods with 500 or 429 until
:meth:`FakeSlack.heal`; :meth:`FakeSlack.storm` answers the next N calls of some methods with 429 and
``Retry-After``; ``not_in_channel`` lists channels the bot is not in; ``invalid_blocks_times``
makes ``chat.update`` refuse a just-uploaded file that many times (as Slack does while the file is
not visible yet).
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler
from PIL import Image, UnidentifiedImageError

from tests.rate_limits import SlackLimits, TokenBucket, retry_after

TEAM = "T0001"
BOT_USER = "UBOT"
TOKEN = "xoxb-test"
APP_TOKEN = "xapp-test"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    status: int
    at: float = field(default_factory=time.time)


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # every version, oldest first


#: The methods that write to a channel, each with the argument that names it.
CHANNEL_WRITES = {
    "chat.postMessage": "channel",
    "chat.update": "channel",
    "files.completeUploadExternal": "channel_id",
}
#: Methods with a budget per workspace: their Tier's calls a minute, in life (chat.update is Tier 3
#: too; https://docs.slack.dev/apis/web-api/rate-limits, and each method's page for its Tier).
TIER_PER_MIN = {"files.list": 50.0, "files.info": 100.0}
#: The scope each read method needs; ``FakeSlack.without_scopes`` takes some away.
SCOPES = {"files.list": "files:read", "files.info": "files:read", "users.info": "users:read"}
#: The app's scopes as its manifest asks for them (``provided`` in a ``missing_scope`` answer).
APP_SCOPES = ("commands", "chat:write", "chat:write.public", "files:write", "files:read", "users:read")
#: ``files.list``'s ``types``, as the files they keep.
FILE_TYPES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "images": lambda f: str(f.get("mimetype", "")).startswith("image/"),
    "pdfs": lambda f: f.get("mimetype") == "application/pdf",
    "zips": lambda f: f.get("mimetype") == "application/zip",
    "snippets": lambda f: f.get("mode") == "snippet",
    "spaces": lambda f: f.get("mode") == "post",
    "gdocs": lambda f: f.get("filetype") == "gdoc",
}


class FakeSlack:
    def __init__(self, limits: SlackLimits | None = None) -> None:
        self.limits = limits
        self.rate_limited: Counter[str] = Counter()
        self._channel_buckets: dict[str, TokenBucket] = {}
        self._update_bucket = (
            TokenBucket(limits.update_per_min / 60, limits.update_burst) if limits is not None else None
        )
        # Tier 3 is chat.update's: the other tiers keep their ratio to it (and its burst).
        self._tier_buckets = (
            {
                method: TokenBucket(per_min / 50.0 * limits.update_per_min / 60, limits.update_burst)
                for method, per_min in TIER_PER_MIN.items()
            }
            if limits is not None
            else {}
        )
        self._storms_in: dict[str, float] = {}  # channel -> monotonic time its storm ends
        self.calls: list[Call] = []
        self.connections: set[tuple[str, int]] = set()  # the client address of each connection
        self.messages: dict[str, Message] = {}  # ts -> message
        self.uploads: dict[str, bytes] = {}  # file id -> bytes
        self.shares: list[dict[str, Any]] = []  # completeUploadExternal calls
        self.responses: list[dict[str, Any]] = []  # what response_url received
        self.not_in_channel: set[str] = set()
        #: Public channels genbot has not joined: chat:write.public lets it post, but files not.
        self.files_not_in_channel: set[str] = set()
        self.invalid_blocks_times = 0
        #: users.info: the workspace role flags of some members (``{"is_owner": True}``); every
        #: other member is a plain member. ``user_errors`` answers a member's lookup with an error.
        self.roles: dict[str, dict[str, bool]] = {}
        self.user_errors: dict[str, str] = {}
        self.delay_s: dict[str, float] = {}  # method -> seconds to wait before answering
        #: Files: id -> file object (members' shares and genbot's uploads), and their bytes.
        self.files: dict[str, dict[str, Any]] = {}
        self.file_data: dict[str, bytes] = {}
        self.deleted_files: set[str] = set()
        self.without_scopes: set[str] = set()
        self.stream_downloads = False
        self._storm: dict[str, int] = {}
        self._outage: dict[str, int] = {}  # method -> HTTP status it answers with until heal()
        self._retry_after = 1
        self._ts = 1_700_000_000
        self._files = 0
        self._upload_names: dict[str, str] = {}  # upload file id -> its filename
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.sockets: list[web.WebSocketResponse] = []  # Socket Mode connections
        self.socket_replies: list[dict[str, Any]] = []  # what the app sent back over them

    # -- control ------------------------------------------------------------------------------

    def storm(self, methods: list[str], count: int, retry_after: int = 1) -> None:
        """The next ``count`` calls of each of ``methods`` get 429 with ``Retry-After``."""
        for method in methods:
            self._storm[method] = count
        self._retry_after = retry_after

    def outage(self, methods: list[str], status: int) -> None:
        """Every call of ``methods`` gets ``status`` (500: ``internal_error``; 429: ``ratelimited``
        with ``Retry-After``) until :meth:`heal`."""
        for method in methods:
            self._outage[method] = status

    def heal(self) -> None:
        self._outage.clear()

    def storm_in(self, channel: str, seconds: float) -> None:
        """Every write to ``channel`` gets 429 for ``seconds``; other channels are not affected."""
        self._storms_in[channel] = time.monotonic() + seconds

    def _over_budget(self, method: str, args: dict[str, Any]) -> float:
        """Seconds to wait if this call is over a budget (taking nothing), else 0 (taken)."""
        if method in self._tier_buckets:
            tier = self._tier_buckets[method]
            wait = tier.wait()
            if wait == 0:
                tier.take()
            return wait
        if method not in CHANNEL_WRITES:
            return 0.0
        channel = str(args.get(CHANNEL_WRITES[method]) or "")
        storm = self._storms_in.get(channel, 0.0) - time.monotonic()
        if storm > 0:
            return storm
        if self.limits is None:
            return 0.0
        bucket = self._channel_buckets.get(channel)
        if bucket is None:
            bucket = self._channel_buckets[channel] = TokenBucket(
                self.limits.channel_per_s, self.limits.channel_burst
            )
        buckets = [bucket]
        if method == "chat.update" and self._update_bucket is not None:
            buckets.append(self._update_bucket)
        wait = max(b.wait() for b in buckets)
        if wait == 0:
            for b in buckets:
                b.take()
        return wait

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def in_channel(self, channel: str) -> list[Message]:
        return [m for m in self.messages.values() if m.channel == channel and m.thread_ts is None]

    async def wait_until(self, predicate: Any, timeout: float = 30.0) -> None:
        """Wait until ``predicate()`` holds (checked after every request)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def response_url(self, name: str) -> str:
        return f"{self.base_url}/respond/{name}"

    # -- server -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024, middlewares=[self._count_connection])
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # read methods (users.info) take query params
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._download)
        app.router.add_get("/files-pri/{team_file}/{name}", self._download)
        app.router.add_get("/signin", self._signin)
        app.router.add_post("/respond/{name}", self._respond)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    @web.middleware
    async def _count_connection(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        if peer is not None:
            self.connections.add((str(peer[0]), int(peer[1])))
        return await handler(request)

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, method: str, args: dict[str, Any], status: int) -> None:
        async with self._changed:
            self.calls.append(Call(method, args, status))
            self._changed.notify_all()

    @staticmethod
    async def _args(request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)  # the SDK sends some methods' arguments as params
        if request.content_type == "application/json":
            args.update(await request.json())
        else:
            form = await request.post()
            args.update({k: v for k, v in form.items() if isinstance(v, str)})
        for key in ("blocks", "files"):  # form-encoded JSON arrays
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        token = APP_TOKEN if method == "apps.connections.open" else TOKEN
        if request.headers.get("Authorization") != f"Bearer {token}":
            await self._record(method, args, 200)
            return web.json_response({"ok": False, "error": "not_authed"})
        if method in self._outage:
            status = self._outage[method]
            await self._record(method, args, status)
            return web.json_response(
                {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"},
                status=status,
                headers={"Retry-After": str(self._retry_after)} if status == 429 else None,
            )
        if (scope := SCOPES.get(method)) in self.without_scopes:
            await self._record(method, args, 200)
            provided = ",".join(s for s in APP_SCOPES if s not in self.without_scopes)
            return web.json_response(
                {"ok": False, "error": "missing_scope", "needed": scope, "provided": provided}
            )
        if (wait := self._over_budget(method, args)) > 0:
            self.rate_limited[method] += 1
            await self._record(method, args, 429)
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": retry_after(wait)}
            )
        if self._storm.get(method, 0) > 0:
            self._storm[method] -= 1
            await self._record(method, args, 429)
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(self._retry_after)},
            )
        if method in self.delay_s:
            await asyncio.sleep(self.delay_s[method])
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        body = handler(args) if handler else {"ok": False, "error": "unknown_method"}
        await self._record(method, args, 200)
        return web.json_response(body)

    def _next_ts(self) -> str:
        self._ts += 1
        return f"{self._ts}.000100"

    # -- methods ------------------------------------------------------------------------------

    def _apps_connections_open(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.base_url.replace("http://", "ws://") + "/socket"}

    async def send_envelope(self, kind: str, payload: dict[str, Any], envelope_id: str) -> None:
        """Deliver a Socket Mode envelope (``slash_commands``, ``interactive``) to the app."""
        message = {"envelope_id": envelope_id, "type": kind, "payload": payload}
        await self.sockets[-1].send_json({**message, "accepts_response_payload": True})

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {}})
        async with self._changed:
            self.sockets.append(ws)
            self._changed.notify_all()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                async with self._changed:
                    self.socket_replies.append(json.loads(msg.data))
                    self._changed.notify_all()
        return ws

    def _auth_test(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://test.slack.com/",
            "team": "Test",
            "user": "genbot",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": "BBOT",
        }

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel"))
        if channel in self.not_in_channel:
            return {"ok": False, "error": "not_in_channel"}
        ts = self._next_ts()
        message = Message(channel, ts, str(args.get("text", "")), list(args.get("blocks") or []))
        message.thread_ts = args.get("thread_ts")
        message.history.append({"text": message.text, "blocks": message.blocks, "at": time.time()})
        self.messages[ts] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": message.text, "ts": ts}}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel")), str(args.get("ts"))
        message = self.messages.get(ts)
        if message is None or message.channel != channel:
            return {"ok": False, "error": "message_not_found"}
        if channel in self.not_in_channel:
            return {"ok": False, "error": "not_in_channel"}
        blocks = list(args.get("blocks") or [])
        files = [b["slack_file"]["id"] for b in blocks if b.get("type") == "image"]
        if any(f not in self.uploads for f in files):
            return {"ok": False, "error": "invalid_blocks"}
        if files and self.invalid_blocks_times > 0:
            self.invalid_blocks_times -= 1
            return {"ok": False, "error": "invalid_blocks"}
        message.text, message.blocks = str(args.get("text", "")), blocks
        message.history.append({"text": message.text, "blocks": blocks, "at": time.time()})
        return {"ok": True, "channel": channel, "ts": ts, "text": message.text}

    def _files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = self._new_file_id()
        self._upload_names[file_id] = str(args.get("filename") or file_id)
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _new_file_id(self) -> str:
        self._files += 1
        return f"F{self._files:08d}"

    # -- files members share ------------------------------------------------------------------

    def share_file(
        self, user: str, channel: str, name: str, data: bytes, mimetype: str = "image/png"
    ) -> dict[str, Any]:
        """``user`` shares a file in ``channel`` (``C...`` public, ``G...`` private, ``D...`` a
        direct message): returns its file object as ``files.info`` shows it."""
        file_id = self._new_file_id()
        ts = self._next_ts()
        self.messages[ts] = Message(channel, ts, "", [{"type": "file", "file_id": file_id}])
        self.files[file_id] = self._file_object(file_id, user, channel, name, data, mimetype, ts)
        self.file_data[file_id] = data
        return copy.deepcopy(self.files[file_id])

    def delete_file(self, file_id: str) -> None:
        self.deleted_files.add(file_id)

    def _file_object(
        self,
        file_id: str,
        user: str,
        channel: str,
        name: str,
        data: bytes,
        mimetype: str,
        ts: str,
        *,
        title: str | None = None,
    ) -> dict[str, Any]:
        """A file object with the fields of Slack's (https://docs.slack.dev/reference/objects/file-object)."""
        created = int(float(ts)) if ts else self._ts
        extension = name.rsplit(".", 1)[1].lower() if "." in name else "binary"
        kind = {"C": "channels", "G": "groups", "D": "ims"}.get(channel[:1], "channels")
        share = {
            "reply_users": [],
            "reply_users_count": 0,
            "reply_count": 0,
            "ts": ts,
            "channel_name": "general",
            "team_id": TEAM,
            "share_user_id": user,
        }
        private = f"{self.base_url}/files-pri/{TEAM}-{file_id}"
        file: dict[str, Any] = {
            "id": file_id,
            "created": created,
            "timestamp": created,
            "name": name,
            "title": title or name,
            "mimetype": mimetype,
            "filetype": extension,
            "pretty_type": extension.upper(),
            "user": user,
            "user_team": TEAM,
            "editable": False,
            "size": len(data),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": channel.startswith("C"),
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{private}/{name}",
            "url_private_download": f"{private}/download/{name}",
            "permalink": f"https://test.slack.com/files/{user}/{file_id}/{name}",
            "permalink_public": f"https://slack-files.com/{TEAM}-{file_id}-0123abcd",
            "comments_count": 0,
            "is_starred": False,
            "shares": {"public" if channel.startswith("C") else "private": {channel: [share]}}
            if channel
            else {},
            "channels": [channel] if kind == "channels" and channel else [],
            "groups": [channel] if kind == "groups" else [],
            "ims": [channel] if kind == "ims" else [],
            "has_rich_preview": False,
        }
        if mimetype.startswith("image/"):
            try:
                with Image.open(io.BytesIO(data)) as image:
                    file["original_w"], file["original_h"] = image.size
            except (UnidentifiedImageError, OSError):
                pass
        return file

    def _visible(self, file: dict[str, Any]) -> bool:
        """Whether the bot sees ``file``: shared in a channel it is in, and not deleted."""
        where = [*file["channels"], *file["groups"], *file["ims"]]
        return file["id"] not in self.deleted_files and any(c not in self.not_in_channel for c in where)

    def _files_list(self, args: dict[str, Any]) -> dict[str, Any]:
        types = [t for t in str(args.get("types") or "all").split(",") if t and t != "all"]
        if any(t not in FILE_TYPES for t in types):
            return {"ok": False, "error": "unknown_type"}
        try:
            count = int(args.get("count") or 100)
            page = int(args.get("page") or 1)
            ts_from = int(args.get("ts_from") or 0)
            ts_to = int(args.get("ts_to") or 2**53)
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        channel, user = args.get("channel"), args.get("user")
        found = [
            f
            for f in self.files.values()
            if self._visible(f)
            and (not channel or channel in [*f["channels"], *f["groups"], *f["ims"]])
            and (not user or f["user"] == user)
            and (not types or any(FILE_TYPES[t](f) for t in types))
            and ts_from <= f["created"] <= ts_to
        ]
        found.sort(key=lambda f: (f["created"], f["id"]), reverse=True)  # the most recent first
        count, page = max(1, min(count, 1000)), max(1, page)
        shown = found[(page - 1) * count : page * count]
        pages = max(1, math.ceil(len(found) / count))
        return {
            "ok": True,
            "files": shown,
            "paging": {"count": count, "total": len(found), "page": page, "pages": pages},
        }

    def _files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = str(args.get("file") or "")
        if not file_id:
            return {"ok": False, "error": "invalid_arguments"}
        if file_id in self.deleted_files:
            return {"ok": False, "error": "file_deleted"}
        file = self.files.get(file_id)
        if file is None or not self._visible(file):
            return {"ok": False, "error": "file_not_found"}
        return {
            "ok": True,
            "file": file,
            "comments": [],
            "response_metadata": {"next_cursor": ""},
        }

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """A file's private URL: its bytes with the bot token; without it, Slack's answer to a
        browser that is not signed in (a redirect to the sign-in page)."""
        file_id = request.match_info["team_file"].partition("-")[2]
        authorized = request.headers.get("Authorization") == f"Bearer {TOKEN}"
        file = self.files.get(file_id)
        if not authorized:
            await self._record("download", {"file_id": file_id, "authorized": False}, 302)
            raise web.HTTPFound(f"/signin?redir={request.path}")
        if file is None or file_id in self.deleted_files:
            await self._record("download", {"file_id": file_id, "authorized": True}, 404)
            return web.Response(status=404, text="Not Found")
        data = self.file_data[file_id]
        await self._record("download", {"file_id": file_id, "authorized": True}, 200)
        if not self.stream_downloads:
            return web.Response(body=data, content_type=file["mimetype"])
        response = web.StreamResponse(headers={"Content-Type": file["mimetype"]})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 16 * 1024):
            await response.write(data[start : start + 16 * 1024])
        await response.write_eof()
        return response

    async def _signin(self, request: web.Request) -> web.Response:
        page = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Test</body></html>"
        return web.Response(text=page, content_type="text/html")

    def _files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = list(args.get("files") or [])
        if any(f["id"] not in self.uploads for f in files):
            return {"ok": False, "error": "file_not_found"}
        if args.get("channel_id") in self.files_not_in_channel:
            return {"ok": False, "error": "not_in_channel"}
        self.shares.append(args)
        channel = str(args.get("channel_id") or "")
        ts = str(args.get("thread_ts") or "")
        if channel and not ts:  # a file shared in the channel
            ts = self._next_ts()
            self.messages[ts] = Message(channel, ts, "", [{"type": "file"}])
        for f in files:  # genbot's uploads are files like any other, its bot user's
            file_id = str(f["id"])
            name = self._upload_names.get(file_id, file_id)
            self.files[file_id] = self._file_object(
                file_id, BOT_USER, channel, name, self.uploads[file_id], "image/png", ts, title=f.get("title")
            )
            self.file_data[file_id] = self.uploads[file_id]
        return {"ok": True, "files": [{"id": f["id"], "title": f.get("title", "")} for f in files]}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user") or "")
        if not user:
            return {"ok": False, "error": "invalid_arguments"}
        if user in self.user_errors:
            return {"ok": False, "error": self.user_errors[user]}
        roles = {"is_admin": False, "is_owner": False, "is_primary_owner": False, **self.roles.get(user, {})}
        return {
            "ok": True,
            "user": {
                "id": user,
                "team_id": TEAM,
                "name": user.lower(),
                "deleted": False,
                "real_name": user.title(),
                "tz": "Europe/Berlin",
                "tz_offset": 3600,
                "profile": {"real_name": user.title(), "display_name": user.lower(), "team": TEAM},
                **roles,
                "is_restricted": False,
                "is_ultra_restricted": False,
                "is_bot": False,
                "is_app_user": False,
                "updated": 1_700_000_000,
                "has_2fa": False,
            },
        }

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        self.uploads[file_id] = await request.read()
        await self._record("upload", {"file_id": file_id, "length": len(self.uploads[file_id])}, 200)
        return web.Response(text=f"OK - {len(self.uploads[file_id])}")

    async def _respond(self, request: web.Request) -> web.Response:
        body = dict(await request.json())
        body["_to"] = request.match_info["name"]
        self.responses.append(body)
        await self._record("respond", body, 200)
        return web.Response(text="ok")
