"""The local web chat: one channel in a browser, with live status messages.

A real chat adapter (the same :class:`~bot.ports.ChatAdapter` as Discord and Slack), served by
aiohttp: the page, a JSON API, a WebSocket that pushes every new or edited message, and the images.
The API is documented in ``docs/local-chat.md``. There is no login: whoever reaches the port can act
as any member, so it listens on loopback unless told otherwise, answers only to its own host names
and origin (:mod:`adapters.local.guard`) and reads request bodies strictly typed
(:mod:`adapters.local.api`).

A command is acknowledged at once, like Slack's ``ack()`` and Discord's defer: ``POST /api/command``
(and ``/api/action``) parses and checks the request, says a refusal of its own (400, or a typo's
reply), records the command (:meth:`~bot.ports.CommandHandler.receive`: one INSERT, so that a bot
killed after the answer loses nothing: another bot, or this one restarted, runs it again from the
record, see :meth:`LocalChat.revive`), answers ``{"ok": true}``, and only then runs the core, in a
task the chat's :class:`~bot.inflight.InFlight` counts (a stop waits for it). The outcome (the status
message, or a refusal as an ephemeral reply) arrives over the WebSocket. One member's commands run
in the order they were answered, one at a time; different members' run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import mimetypes
import re
import secrets
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from adapters.local import api
from adapters.local.guard import HOSTS_KEY, guard, json_errors, refusal, secure_headers
from adapters.local.guard import allowed_hosts as hosts_for
from bot.attachments import ATTACHMENT_TYPES, NAME_MAX, too_large
from bot.commands import CommandSpec, parse_text
from bot.errors import ErrorCode, ErrorText, GenbotError, describe
from bot.inflight import DRAIN_TIMEOUT_S, InFlight
from bot.models import Actor, CommandRequest, MessageRef, StatusView
from bot.ports import (
    BlobStore,
    ChatLog,
    ChatRecord,
    CommandHandler,
    InboxEntry,
    MessageGone,
    Rate,
    Spend,
    Upload,
)
from bot.text import clean_block, clean_line, is_visible, shown

log = logging.getLogger(__name__)

PLATFORM = "local"
WORKSPACE = "local"
CHANNEL = "general"
#: The local chat's budget: generous, since nothing limits it but the browser.
LOCAL_CHANNEL = "local:channel"
LOCAL_WRITES_PER_S = 200.0
BOT_ID = "genbot"
BOT_NAME = "genbot"
STATIC = Path(__file__).parent / "static"
HISTORY_LIMIT = 200
TEXT_MAX = 4000
#: Blob keys are short relative paths (``results/12.png``); anything else is not one.
BLOB_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}(?:/[A-Za-z0-9_.-]{1,128}){0,4}")

BlobReader = Callable[[str], Awaitable[bytes | None]]
#: An upload's key: 128 random bits, in hex. A command names it in ``files`` (or as an
#: attachment option's value); its bytes and facts are blobs under ``uploads/<member>/``.
UPLOAD_KEY = re.compile(r"[0-9a-f]{32}")
#: What ``/blobs/`` serves as itself (pictures that run nothing); any other blob (a plugin's
#: file result, an upload) is a download, so that none is ever a page or script of this origin.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
#: Files one command may carry.
FILES_MAX = 10
#: The answer (503) to a command that could not be recorded (the database is away).
UNRECORDED = "genbot can't take requests right now; try again in a moment."


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str
    admin: bool


def member_of(actor: Actor) -> Member:
    """The member an :class:`~bot.models.Actor` of this chat names (a recorded command's)."""
    return Member(actor.user_id, actor.display_name, actor.is_admin)


def member_id(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "member"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def status_json(view: StatusView) -> dict[str, Any]:
    """A view as the page's ``StatusView`` JSON (docs/local-chat.md)."""
    version = round((view.progress or 0) * 1000)
    return {
        "job": view.job,
        "kind": view.kind,
        "state": view.state.value,
        "headline": view.title,
        "prompt": view.prompt,
        "details": view.details,
        "requested_by": view.requested_by,
        "progress": view.progress,
        "preview_url": f"/blobs/{view.preview_key}?v={version}" if view.preview_key else None,
        "image_url": f"/blobs/{view.image_key}" if view.image_key else None,
        "files": [
            {"url": f"/blobs/{f.key}", "name": f.name, "content_type": f.content_type, "size": f.size}
            for f in view.files
        ],
        "text": view.text,
        "note": view.note,
        "error": (
            {
                "code": view.error.code,
                "title": view.error.title,
                "what": view.error.what,
                "todo": view.error.todo,
            }
            if view.error
            else None
        ),
        "buttons": [{"action": b.action, "label": b.label, "style": b.style} for b in view.buttons],
    }


def message_json(record: ChatRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "author": {"id": record.author_id, "name": record.author_name, "bot": record.bot},
        "created_at": record.created_at,
        "edited_at": record.edited_at,
        "ephemeral_to": record.ephemeral_to,
        "text": record.text,
        "status": record.status,
    }


def too_large_http(name: str, size: int | None, max_bytes: int) -> web.HTTPException:
    sentence = too_large(name, size, max_bytes).text.what
    return web.HTTPRequestEntityTooLarge(
        max_size=max_bytes,
        actual_size=size if size is not None else max_bytes + 1,
        text=json.dumps({"ok": False, "error": sentence}),
        content_type="application/json",
    )


def error_words(error: ErrorText) -> str:
    return f"{error.title}: {error.what} {error.todo}"


class LocalResponder:
    """Replies to one member's command in the local chat."""

    def __init__(self, chat: LocalChat, member: Member) -> None:
        self.chat = chat
        self.member = member

    async def reply(self, text: str) -> None:
        await self.chat.post(text=text, ephemeral_to=self.member.id)

    async def say(self, text: str) -> None:
        await self.chat.post(text=text)

    async def reply_error(self, error: ErrorText) -> None:
        await self.reply(error_words(error))

    async def fetch(self, ref: str, max_bytes: int) -> Upload:
        """The member's own upload ``ref`` (another member's is not there for them)."""
        return await self.chat.upload_of(self.member, ref, max_bytes)

    async def post_status(self, view: StatusView) -> MessageRef:
        return await self.chat.post_status(CHANNEL, view)

    def spends(self, view: StatusView) -> list[Spend]:
        return self.chat.spends(CHANNEL, None, view)


class LocalChat:
    """The local chat adapter and its web server."""

    platform = PLATFORM

    def spends(self, channel: str, ref: MessageRef | None, view: StatusView) -> list[Spend]:
        return [Spend(LOCAL_CHANNEL, ref.channel if ref is not None else channel)]

    def __init__(
        self,
        *,
        log_store: ChatLog,
        handler: CommandHandler,
        blobs: BlobReader,
        specs: tuple[CommandSpec, ...],
        members: list[str],
        admins: list[str],
        allowed_hosts: Sequence[str] = (),
        uploads: BlobStore | None = None,
        upload_max_bytes: int = 10 * 2**20,
    ) -> None:
        """``allowed_hosts``: host names the chat answers to besides loopback and the address it
        listens on (``GENBOT_LOCAL__ALLOWED_HOSTS``: a name in front of it). ``uploads``: where
        files members upload are kept (None: the chat takes none), each at most
        ``upload_max_bytes`` (``GENBOT_LIMITS__ATTACHMENT_MAX_BYTES``)."""
        self.log = log_store
        self.handler = handler
        self.uploads = uploads
        self.upload_max_bytes = upload_max_bytes
        #: A generous budget (the browser takes what it is sent), so the same scheduler runs here.
        self.rates = {LOCAL_CHANNEL: Rate(LOCAL_WRITES_PER_S, int(LOCAL_WRITES_PER_S))}
        self.blobs = blobs
        self.specs = specs
        admin_ids = {member_id(a) for a in admins}
        self.members = {
            member_id(name): Member(member_id(name), name, member_id(name) in admin_ids) for name in members
        }
        self._sockets: dict[str, weakref.WeakSet[web.WebSocketResponse]] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.inflight = InFlight()
        #: One member's commands take turns, in the order they were answered.
        self._turns: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.port: int | None = None
        self.extra_hosts = tuple(allowed_hosts)
        self.hosts = hosts_for("", self.extra_hosts)

    # -- ChatAdapter --------------------------------------------------------------------------

    async def post_status(self, channel: str, view: StatusView) -> MessageRef:
        record = await self.log.add(
            author_id=BOT_ID, author_name=BOT_NAME, bot=True, status=status_json(view)
        )
        await self._broadcast(record)
        return MessageRef(platform=PLATFORM, channel=CHANNEL, message_id=str(record.id))

    async def edit_status(self, ref: MessageRef, view: StatusView) -> MessageRef:
        record = await self.log.set_status(int(ref.message_id), status_json(view))
        if record is None:
            raise MessageGone(ref.message_id)
        await self._broadcast(record)
        return ref

    async def post(self, *, text: str, ephemeral_to: str | None = None) -> ChatRecord:
        record = await self.log.add(
            author_id=BOT_ID, author_name=BOT_NAME, bot=True, text=text, ephemeral_to=ephemeral_to
        )
        await self._broadcast(record)
        return record

    # -- the web app --------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The web application. Every request passes :func:`~adapters.local.guard.guard` (its
        host, its origin, JSON for a POST) first; every answer carries the security headers and
        every error answer is one JSON sentence."""
        app = web.Application(client_max_size=64 * 1024, middlewares=[json_errors, guard(self.hosts)])
        app[HOSTS_KEY] = self.hosts
        app.on_response_prepare.append(secure_headers)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC, show_index=False)
        app.router.add_get("/api/session", self._session)
        app.router.add_get("/api/messages", self._messages)
        app.router.add_post("/api/command", self._command)
        app.router.add_post("/api/action", self._action)
        app.router.add_post("/api/uploads", self._upload)
        app.router.add_get("/blobs/{key:.+}", self._blob)
        app.router.add_get("/ws", self._ws)
        return app

    async def start(self, host: str, port: int) -> None:
        if not is_loopback(host):
            log.warning(
                "the local chat listens on %s: it has no login, so anyone who can reach it can "
                "act as any member or admin",
                host,
            )
        self.hosts = hosts_for(host, self.extra_hosts)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self._site = site
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def quiesce(self, grace_s: float = DRAIN_TIMEOUT_S) -> int:
        """Stop taking commands (the port closes; a request already in flight is answered
        "restarting") and wait for the ones answered to finish, up to ``grace_s``. Returns how
        many were cut short (their records stay: see :meth:`revive`)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        return await self.inflight.drain(grace_s)

    async def stop(self) -> None:
        for sockets in self._sockets.values():
            for ws in list(sockets):
                with contextlib.suppress(Exception):
                    await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _member(self, user_id: object) -> Member:
        member = self.members.get(user_id) if isinstance(user_id, str) else None
        if member is None:
            raise refusal(web.HTTPBadRequest, "Unknown member.")
        return member

    def _members_as_ids(self, spec: CommandSpec, options: dict[str, str]) -> dict[str, str]:
        """A member option (``@Bob``, ``bob``) as the member's id; an unknown name is refused
        here, so that nobody bans a name that is no one."""
        resolved = dict(options)
        for option in spec.options:
            raw = options.get(option.name)
            if option.type != "member" or raw is None or not raw.strip():
                continue
            wanted = clean_line(raw).removeprefix("@").strip().lower()
            match = next((m for m in self.members.values() if wanted in (m.id, m.name.lower())), None)
            if match is None:
                names = ", ".join(m.name for m in self.members.values())
                raise GenbotError(
                    ErrorCode.INVALID_OPTION, f"There is no member {shown(raw, 40)!r} here. Members: {names}."
                )
            resolved[option.name] = match.id
        return resolved

    def _with_files(self, spec: CommandSpec, options: dict[str, str], files: list[str]) -> dict[str, str]:
        """The files sent with a command given, in order, to its file options left empty."""
        if not files:
            return options
        empty = [o.name for o in spec.options if o.type in ATTACHMENT_TYPES and not options.get(o.name)]
        if len(files) > len(empty):
            takes = "no file" if len(empty) == 0 else f"{len(empty)} file{'s' if len(empty) > 1 else ''}"
            raise GenbotError(
                ErrorCode.INVALID_OPTION, f"/{spec.key} takes {takes} here; you sent {len(files)}."
            )
        return {**options, **dict(zip(empty, files, strict=False))}

    async def upload_of(self, member: Member, ref: str, max_bytes: int) -> Upload:
        """``member``'s upload ``ref``, as a command's file option reads it."""
        gone = GenbotError(
            ErrorCode.INVALID_OPTION, "That upload is not here any more: attach the file again."
        )
        if self.uploads is None or not UPLOAD_KEY.fullmatch(ref):
            raise gone
        facts, data = await asyncio.gather(
            self.uploads.get(f"uploads/{member.id}/{ref}.json"),
            self.uploads.get(f"uploads/{member.id}/{ref}"),
        )
        if facts is None or data is None:
            raise gone
        about = json.loads(facts)
        if len(data) > max_bytes:
            raise too_large(about["name"], len(data), max_bytes)
        return Upload(about["name"], data, about["content_type"])

    async def _upload(self, request: web.Request) -> web.Response:
        """``POST /api/uploads?user_id=&name=`` with the file as the body
        (``application/octet-stream``): kept for the member's next command, which names it by
        the key this answers (``{"ok": true, "file": key, "name": name}``)."""
        member = self._member(request.query.get("user_id"))
        if self.uploads is None:
            raise refusal(web.HTTPNotFound, "This chat takes no files.")
        name = clean_line(request.query.get("name", ""))[:NAME_MAX] or "file"
        limit = self.upload_max_bytes
        if (request.content_length or 0) > limit:
            raise too_large_http(name, request.content_length, limit)
        data = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > limit:
                raise too_large_http(name, None, limit)
        if not data:
            raise refusal(web.HTTPBadRequest, "The file is empty.")
        key = secrets.token_hex(16)
        about = {"name": name, "content_type": mimetypes.guess_type(name)[0] or "application/octet-stream"}
        await self.uploads.put(f"uploads/{member.id}/{key}", bytes(data))
        await self.uploads.put(f"uploads/{member.id}/{key}.json", json.dumps(about).encode())
        return web.json_response({"ok": True, "file": key, "name": name})

    def actor(self, member: Member) -> Actor:
        return Actor(PLATFORM, WORKSPACE, member.id, member.name, is_admin=member.admin)

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _session(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "channel": CHANNEL,
                "members": [{"id": m.id, "name": m.name, "admin": m.admin} for m in self.members.values()],
                "commands": [
                    {
                        "name": spec.key,
                        "admin": spec.admin,
                        "description": spec.description,
                        "options": [
                            {
                                "name": o.name,
                                "type": o.type,
                                "required": o.required,
                                "description": o.description,
                                "choices": list(o.choices) if o.choices else None,
                                "min": o.min,
                                "max": o.max,
                            }
                            for o in spec.options
                        ],
                    }
                    for spec in self.specs
                ],
            }
        )

    async def _messages(self, request: web.Request) -> web.Response:
        member = self._member(request.query.get("user_id"))
        records = await self.log.history(member.id, HISTORY_LIMIT)
        return web.json_response({"messages": [message_json(r) for r in records]})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object (see :mod:`adapters.local.api`); 400 otherwise."""
        try:
            return api.json_object(await request.read())
        except api.BadRequest as exc:
            raise refusal(web.HTTPBadRequest, exc.sentence) from None

    def _restarting(self) -> web.Response:
        return web.json_response(
            {"ok": False, "error": "genbot is restarting; try again in a moment."}, status=503
        )

    async def _command(self, request: web.Request) -> web.Response:
        if self.inflight.closed:
            return self._restarting()
        with self.inflight.track():
            return await self._take_command(request)

    async def _take_command(self, request: web.Request) -> web.Response:
        """Parse and check a command, record it and answer; the core runs it after (see the
        module's docstring). What the request gets wrong is answered here: 400, or a reply."""
        body = await self._body(request)
        member = self._member(body.get("user_id"))
        responder = LocalResponder(self, member)
        try:
            if "command" in body:  # structured form: {"command": "imagine", "options": {...}}
                name = api.command_name(body)
                spec = next((s for s in self.specs if s.key == name), None)
                options = api.command_options(body, spec)
            else:
                text = api.string_field(body, "text")
                assert text is not None
                if len(text) > TEXT_MAX * 2:
                    raise api.BadRequest("That message is too long.")
                if not text.lstrip().startswith("/"):
                    return await self._say(member, text)
                try:
                    spec, options = parse_text(text, self.specs)
                except GenbotError as exc:
                    await responder.reply_error(exc.text)
                    return web.json_response({"ok": True})
                name = spec.key
        except api.BadRequest as exc:
            raise refusal(web.HTTPBadRequest, exc.sentence) from None
        if spec is not None and (member.admin or not spec.admin):  # else the core refuses it
            try:
                options = self._members_as_ids(spec, options)
                options = self._with_files(spec, options, api.file_keys(body, UPLOAD_KEY, FILES_MAX))
            except api.BadRequest as exc:
                raise refusal(web.HTTPBadRequest, exc.sentence) from None
            except GenbotError as exc:
                await responder.reply_error(exc.text)
                return web.json_response({"ok": True})
        command = CommandRequest(actor=self.actor(member), channel=CHANNEL, name=name, options=options)

        def run(receipt: str) -> Awaitable[None]:
            return self.handler.handle(command, responder, receipt=receipt)

        return await self._acknowledge(member, {"kind": "command", "request": command.to_json()}, run)

    async def _acknowledge(
        self, member: Member, payload: dict[str, Any], run: Callable[[str], Awaitable[None]]
    ) -> web.Response:
        """Record a command (``payload``: what :meth:`revive` rebuilds it from), start ``run``
        with its receipt in ``member``'s turn, and answer ``{"ok": true}`` without waiting for
        it. If the command cannot be recorded, 503, and nothing is done."""
        try:
            receipt = await self.handler.receive(PLATFORM, payload)
        except Exception:
            log.warning("could not record a command; answering that genbot is unavailable", exc_info=True)
            return web.json_response({"ok": False, "error": UNRECORDED}, status=503)
        self.inflight.spawn(self._in_turn(member, lambda: run(receipt)), name=f"local-command-{member.id}")
        return web.json_response({"ok": True})

    async def _in_turn(self, member: Member, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``member``'s command after the ones they sent before it (:class:`asyncio.Lock`
        wakes its waiters first come, first served). Never raises but when cancelled: a failure
        is logged, and the member reads the catalogue's words for it."""
        async with self._turns[member.id]:
            try:
                await run()
            except Exception:
                log.exception("a command of %s failed", member.id)
                try:
                    await LocalResponder(self, member).reply_error(describe(ErrorCode.INTERNAL))
                except Exception:
                    log.exception("telling %s that their command failed failed too", member.id)

    async def revive(self, entry: InboxEntry) -> None:
        """Run again a command (or button press) a bot answered and stopped before finishing
        (see :meth:`Genbot.revive_commands`), from its record: its answers go to the same member
        in the chat."""
        payload = entry.payload
        run: Callable[[], Awaitable[None]]
        if payload.get("kind") == "button":
            actor = Actor(**payload["actor"])
            member = member_of(actor)
            job, action = int(payload["job"]), str(payload["action"])

            def run() -> Awaitable[None]:
                responder = LocalResponder(self, member)
                return self.handler.handle_action(actor, job, action, responder, receipt=entry.key)
        else:
            command = CommandRequest.from_json(payload["request"])
            member = member_of(command.actor)

            def run() -> Awaitable[None]:
                return self.handler.handle(command, LocalResponder(self, member), receipt=entry.key)

        with self.inflight.track():
            async with self._turns[member.id]:
                await run()

    async def _say(self, member: Member, text: str) -> web.Response:
        """A plain chat message: kept with its lines (:func:`~bot.text.clean_block`), at most
        :data:`TEXT_MAX` characters; one that shows nothing is refused."""
        cleaned = clean_block(text)[:TEXT_MAX]
        if not is_visible(cleaned):
            raise refusal(web.HTTPBadRequest, "Type a message.")
        record = await self.log.add(author_id=member.id, author_name=member.name, bot=False, text=cleaned)
        await self._broadcast(record)
        return web.json_response({"ok": True})

    async def _action(self, request: web.Request) -> web.Response:
        if self.inflight.closed:
            return self._restarting()
        with self.inflight.track():
            return await self._take_action(request)

    async def _take_action(self, request: web.Request) -> web.Response:
        """A button press, parsed, checked (400; 404 for a message that has no job), recorded and
        answered; the core runs it after, as a command."""
        body = await self._body(request)
        member = self._member(body.get("user_id"))
        try:
            message_id = api.message_id(body)
            action = api.string_field(body, "action")
            assert action is not None
        except api.BadRequest as exc:
            raise refusal(web.HTTPBadRequest, exc.sentence) from None
        record = await self.log.get(message_id)
        if record is None or not record.status:
            raise refusal(web.HTTPNotFound, "No such message.")
        actor, job = self.actor(member), int(record.status["job"])

        def run(receipt: str) -> Awaitable[None]:
            return self.handler.handle_action(
                actor, job, action, LocalResponder(self, member), receipt=receipt
            )

        payload = {"kind": "button", "actor": asdict(actor), "job": job, "action": action}
        return await self._acknowledge(member, payload, run)

    async def _blob(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        data = None
        if BLOB_KEY.fullmatch(key) and ".." not in key:
            try:
                data = await self.blobs(key)
            except OSError:  # a folder, a name the file system refuses: no image by that key
                log.debug("no blob at %r", key, exc_info=True)
        if data is None:
            raise refusal(web.HTTPNotFound, "No such image.")
        headers = {"Cache-Control": "max-age=3600"}
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        if content_type not in INLINE_TYPES:  # a file result: never a page of this origin
            content_type = "application/octet-stream"
            headers["Content-Disposition"] = "attachment"
        return web.Response(body=data, content_type=content_type, headers=headers)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        member = self._member(request.query.get("user_id"))
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        self._sockets.setdefault(member.id, weakref.WeakSet()).add(ws)
        try:
            async for msg in ws:  # the page only listens; drain pings and close frames
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.get(member.id, weakref.WeakSet()).discard(ws)
        return ws

    async def _broadcast(self, record: ChatRecord) -> None:
        payload = json.dumps({"type": "message", "message": message_json(record)})
        targets = [record.ephemeral_to] if record.ephemeral_to is not None else list(self._sockets)
        sends = [
            ws.send_str(payload)
            for user in targets
            for ws in list(self._sockets.get(user, ()))
            if not ws.closed
        ]
        for result in await asyncio.gather(*sends, return_exceptions=True):
            if isinstance(result, Exception):
                log.debug("a chat socket went away: %s", result)
