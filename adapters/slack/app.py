"""The Bolt wiring: slash commands and the Cancel button in, the core's answers out.

Every listener acks first (nothing but parsing before it; Slack's deadline is 3 s), then runs the
core. Bolt's async runner (``process_before_response=False``) answers Slack as soon as ``ack()`` is
called and lets the listener carry on in the background. Authorization makes no call per request:
``auth.test`` runs once in :meth:`SlackBot.start` (which so fails fast on a bad token).

Whether the member is an admin is decided after the ack, for every command and button press
(:class:`~adapters.slack.admins.SlackAdmins`: configured ids, else ``users.info``, cached), and the
core gets an :class:`~bot.models.Actor` carrying the answer; the core checks it for every admin
command and for buttons on other members' jobs.

Two modes: Socket Mode when an app-level token is given, else HTTP (an aiohttp server at
``http_path``). In HTTP mode genbot checks every request's signature itself, before Bolt sees it
(a bad one, or a timestamp more than 5 minutes off, gets 401 and one INFO line without the body,
headers or response_url), then the request's shape (:func:`~adapters.slack.payloads.request_body`:
400 for what Slack does not send); Bolt checks the signature again.

Bolt logs the whole body of a request it refuses (signature) or drops (a global middleware) at
INFO and WARNING: :class:`NoRequestBodies` keeps those lines and drops the bodies.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack.adapter import SlackChat, make_client, slack_error
from adapters.slack.admins import SlackAdmins
from adapters.slack.blocks import ACTION_IDS, error_text, reply_text
from adapters.slack.files import SlackFiles, pictures_only
from adapters.slack.payloads import (
    PLATFORM,
    MalformedRequest,
    action_target,
    command_request,
    help_text,
    request_body,
    slash_commands,
    wants_help,
)
from adapters.slack.session import SlackSession
from bot.commands import CommandSpec
from bot.config import ConfigError, StartupError
from bot.errors import ErrorCode, ErrorText, GenbotError, describe
from bot.inflight import DRAIN_TIMEOUT_S, InFlight
from bot.models import Actor, CommandRequest, MessageRef, StatusView
from bot.ports import CommandHandler, InboxEntry, Spend, Upload

log = logging.getLogger(__name__)

#: The answer to a command that reaches a process that is stopping.
RESTARTING = describe(ErrorCode.QUEUE_UNAVAILABLE, "genbot is restarting right now.")
#: The answer to a command that could not be recorded (the database is away).
UNRECORDED = describe(ErrorCode.QUEUE_UNAVAILABLE, "genbot can't take requests right now.")

#: Slack's signature headers as Slack sends them: ``v0=`` and 64 hex digits, epoch seconds.
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def signed(verifier: SignatureVerifier, body: str, timestamp: str | None, signature: str | None) -> bool:
    """Whether ``body`` carries Slack's signature, made within 5 minutes of now. Headers of the
    wrong shape are refused before they reach the SDK (which raises on a timestamp that is not a
    number, and on a signature that is not ASCII)."""
    if timestamp is None or signature is None:
        return False
    if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
        return False
    return verifier.is_valid(body, timestamp, signature)


#: The start of each Bolt log line that carries a request body, and the line logged instead.
_WITHHELD = {
    "Invalid request signature detected": "Invalid request signature detected (request withheld)",
    "A global middleware": "A global middleware dropped a request without a response (request withheld)",
}


class NoRequestBodies(logging.Filter):
    """Drops the request bodies from Bolt's log lines: Bolt logs the whole body of a request whose
    signature is bad (INFO) and of one a global middleware dropped (WARNING), ``response_url``
    and all a member typed included, for anyone who sends one. The line stays, without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            for prefix, line in _WITHHELD.items():
                if record.msg.startswith(prefix):
                    record.msg, record.args = line, ()
        return True


NO_REQUEST_BODIES = NoRequestBodies()
#: Bolt's loggers that write those lines: the app's own (passed to it) and its verifier's.
BOLT_LOGGERS = ("slack_bolt", "slack_bolt.AsyncRequestVerification")


class SlackResponder:
    """The answers to one command or button press: ephemeral replies through ``response_url``
    (Bolt's ``respond``), the status message through the adapter (``chat.postMessage``), and the
    files its options name (``files``, for ``member``'s command; ``pictures``: its file options
    are all pictures)."""

    def __init__(
        self,
        respond: AsyncRespond,
        chat: SlackChat,
        channel: str,
        *,
        files: SlackFiles | None = None,
        member: str = "",
        pictures: bool = False,
    ) -> None:
        self.respond = respond
        self.chat = chat
        self.channel = channel
        self.files = files
        self.member = member
        self.pictures = pictures

    async def fetch(self, ref: str, max_bytes: int) -> Upload:
        """The file ``ref`` names, shared in this channel (see :class:`SlackFiles`)."""
        if self.files is None or not self.member:  # a button press names no file
            raise GenbotError(ErrorCode.INVALID_OPTION, "A button takes no file.")
        return await self.files.fetch(
            ref, channel=self.channel, member=self.member, max_bytes=max_bytes, pictures=self.pictures
        )

    async def _send(self, text: str, response_type: str) -> None:
        """Post to the command's ``response_url`` as Bolt's ``respond`` does, on the bot's session
        (Bolt's opens a session, so a connection, per reply). Raises ValueError without one."""
        if self.respond.response_url is None:
            raise ValueError("this request carries no response_url")
        webhook = AsyncWebhookClient(url=self.respond.response_url, session=self.chat.client.session)
        await webhook.send(text=text, response_type=response_type, replace_original=False)

    async def _ephemeral(self, text: str) -> None:
        try:
            await self._send(text, "ephemeral")
        except Exception:
            # response_url lives 30 minutes and takes 5 uses; losing a reply must not fail the job
            log.exception("an ephemeral reply in %s failed", self.channel)

    async def reply(self, text: str) -> None:
        await self._ephemeral(reply_text(text))

    async def reply_error(self, error: ErrorText) -> None:
        await self._ephemeral(error_text(error))

    async def say(self, text: str) -> None:
        """In the channel, through the command's ``response_url`` (escaped: no mention pings)."""
        try:
            await self._send(reply_text(text), "in_channel")
        except Exception:
            log.exception("a public answer in %s failed", self.channel)

    async def post_status(self, view: StatusView) -> MessageRef:
        return await self.chat.post_status(self.channel, view)

    def spends(self, view: StatusView) -> list[Spend]:
        return self.chat.spends(self.channel, None, view)


class SlackBot:
    """genbot's Slack app: Bolt, in Socket Mode or behind an HTTP server.

    Call :meth:`start` once, then :meth:`stop`; :attr:`port` is the HTTP port once listening.
    From :meth:`start` to :meth:`stop` every Web API client here (the adapter's, the files', the
    admins', Bolt's) and the ``response_url`` replies share one HTTP session (:attr:`session`).
    """

    def __init__(
        self,
        *,
        handler: CommandHandler,
        chat: SlackChat,
        specs: tuple[CommandSpec, ...],
        bot_token: str,
        signing_secret: str,
        api_base_url: str,
        admins: SlackAdmins,
        app_token: str = "",
        http_path: str = "/slack/events",
    ) -> None:
        self.handler = handler
        self.chat = chat
        self.specs = specs
        self.bot_token = bot_token
        self.app_token = app_token
        self.admins = admins
        self.http_path = http_path
        #: Files members name in commands; a 429 there is a sentence, not a wait.
        self.files = SlackFiles(make_client(bot_token, api_base_url), bot_token, api_base_url)
        self._auth: AuthorizeResult | None = None
        self.verifier = SignatureVerifier(signing_secret) if signing_secret else None
        for name in BOLT_LOGGERS:
            logging.getLogger(name).addFilter(NO_REQUEST_BODIES)  # once: addFilter skips a repeat

        async def authorize() -> AuthorizeResult:  # Bolt fills parameters by name: none here
            assert self._auth is not None, "SlackBot.start() checks the token first"
            return self._auth

        self.app = AsyncApp(
            # a template for Bolt's per-request clients; the token comes from _authorize
            client=AsyncWebClient(base_url=api_base_url),
            signing_secret=signing_secret,
            authorize=authorize,
            process_before_response=False,
            request_verification_enabled=True,
            logger=logging.getLogger("slack_bolt"),
        )
        self.commands = slash_commands(specs)
        for command in sorted(self.commands):
            self.app.command(command)(self._listener(self._on_command))
        for action, action_id in ACTION_IDS.items():
            self.app.action(action_id)(self._listener(self._button(action)))
        #: One session for all of them (see adapters.slack.session), open from start to stop.
        self.session = SlackSession()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self.inflight = InFlight()
        self.port: int | None = None

    def _listener(
        self,
        method: Callable[[AsyncAck, dict[str, Any], AsyncRespond], Awaitable[None]],
    ) -> Callable[..., Awaitable[None]]:
        """Bolt passes arguments by parameter name, so give it a plain function with those names.
        Each runs in Bolt's background task after the ack: tracked, so that a stop waits for it."""

        async def listener(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
            if self.inflight.closed:
                await ack(text=error_text(RESTARTING), response_type="ephemeral")
                return
            with self.inflight.track():
                await method(ack, body, respond)

        return listener

    # -- listeners ----------------------------------------------------------------------------

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        if wants_help(body):
            await ack(text=help_text(self.specs), response_type="ephemeral")
            return
        try:
            request = command_request(body, self.specs)
        except GenbotError as exc:  # a typo: the answer is the ack itself, no I/O
            await ack(text=error_text(exc.text), response_type="ephemeral")
            return
        receipt = await self._receive(ack, {"kind": "command", "body": body})
        if receipt is None:
            return
        await ack()
        await self._run_command(request, respond, receipt)

    async def _receive(self, ack: AsyncAck, payload: dict[str, Any]) -> str | None:
        """Record the command before its ack (see :meth:`CommandHandler.receive`). If it cannot be
        recorded (the database is away), the ack itself says so, and nothing is done."""
        try:
            return await self.handler.receive(PLATFORM, payload)
        except Exception:
            log.warning("could not record a command; answering that genbot is unavailable", exc_info=True)
            await ack(text=error_text(UNRECORDED), response_type="ephemeral")
            return None

    async def _run_command(self, request: CommandRequest, respond: AsyncRespond, receipt: str) -> None:
        request = replace(request, actor=await self._resolved(request.actor))
        spec = next((s for s in self.specs if s.key == request.name), None)
        responder = SlackResponder(
            respond,
            self.chat,
            request.channel,
            files=self.files,
            member=request.actor.user_id,
            pictures=spec is not None and pictures_only(spec),
        )
        await self.handler.handle(request, responder, receipt=receipt)

    async def revive(self, entry: InboxEntry) -> None:
        """Run again a command (or button press) a bot acknowledged and died before finishing
        (see :meth:`Genbot.revive_commands`), from Slack's body as it was recorded: its answers go
        through the same response_url (valid 30 minutes) and channel."""
        body = entry.payload["body"]
        respond = AsyncRespond(response_url=body.get("response_url"))
        with self.inflight.track():
            if entry.payload.get("kind") == "button":
                await self._run_button(str(entry.payload["action"]), body, respond, entry.key)
            else:
                await self._run_command(command_request(body, self.specs), respond, entry.key)

    async def _resolved(self, actor: Actor) -> Actor:
        """``actor`` with ``is_admin`` decided (after the ack: it may call ``users.info``)."""
        return replace(actor, is_admin=await self.admins.is_admin(actor.workspace, actor.user_id))

    def _button(self, action: str) -> Callable[[AsyncAck, dict[str, Any], AsyncRespond], Awaitable[None]]:
        """The listener of one button (``cancel``, ``reroll``): ack, then the core, which checks
        that the member may (the job's author or an admin)."""

        async def on_button(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
            receipt = await self._receive(ack, {"kind": "button", "action": action, "body": body})
            if receipt is None:
                return
            await ack()
            await self._run_button(action, body, respond, receipt)

        return on_button

    async def _run_button(
        self, action: str, body: dict[str, Any], respond: AsyncRespond, receipt: str
    ) -> None:
        try:
            actor, job, channel = action_target(body)
        except GenbotError as exc:  # ids of the wrong shape (HTTP mode refuses them before)
            await SlackResponder(respond, self.chat, "").reply_error(exc.text)
            return
        responder = SlackResponder(respond, self.chat, channel)
        if job is None:
            await responder.reply_error(describe(ErrorCode.NOT_FOUND))
            return
        await self.handler.handle_action(await self._resolved(actor), job, action, responder, receipt=receipt)

    # -- serving ------------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        """The HTTP mode's aiohttp application: Slack's requests at ``http_path``, at most 1 MiB
        (413 beyond). Each is checked in this order: UTF-8 (400), its signature (401), its shape
        (400, :func:`~adapters.slack.payloads.request_body`); then Bolt handles it."""
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(self.http_path, self._events)
        return app

    async def _events(self, request: web.Request) -> web.Response:
        try:
            text = (await request.read()).decode("utf-8")  # the SDK's verifier reads text only
        except UnicodeDecodeError:
            return _refusal(400, "The request is not UTF-8.")
        headers = request.headers
        if self.verifier is None or not signed(
            self.verifier, text, headers.get("X-Slack-Request-Timestamp"), headers.get("X-Slack-Signature")
        ):
            log.info("Slack: refused a request from %s: bad signature or timestamp", request.remote)
            return _refusal(401, "The request's signature is not valid.")
        try:
            body = request_body(text, request.content_type, self.commands)
            bolt_request = AsyncBoltRequest(body=text, query=request.query_string, headers=headers)  # type: ignore[arg-type]
        except MalformedRequest as exc:
            return _refusal(400, exc.sentence)
        # Bolt's parse of the same text may differ (see request_body): genbot's is the one used.
        bolt_request.body = body
        bolt_request.context = build_async_context(AsyncBoltContext({}), body)
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    async def start(self, host: str = "127.0.0.1", port: int = 3000) -> None:
        """Check the bot token (``auth.test``), then connect to Slack (Socket Mode, after checking
        the app-level token with ``apps.connections.open``) or listen on ``host:port`` (HTTP
        mode). Raises :class:`ConfigError` for a token Slack refuses,
        :class:`StartupError` for a Web API out of reach or a port that cannot be opened; each
        names the setting to fix. Opens the bot's HTTP session (:meth:`stop` closes it, also
        after a failed start)."""
        await self.session.open(self.chat.client, self.files.client, self.admins.client, self.app.client)
        try:
            auth = await self.chat.client.auth_test()
        except SlackApiError as exc:
            raise ConfigError(
                f"GENBOT_SLACK__BOT_TOKEN: Slack refused the bot token ({slack_error(exc)})"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StartupError(
                f"cannot reach Slack's Web API at {self.chat.client.base_url} "
                f"({' '.join(str(exc).split()) or type(exc).__name__}): check GENBOT_SLACK__API_BASE_URL"
            ) from None
        self._auth = AuthorizeResult.from_auth_test_response(
            bot_token=self.bot_token, auth_test_response=auth
        )
        log.info("Slack: signed in as %s in team %s", auth.get("user"), auth.get("team_id"))
        if self.app_token:
            # The Socket Mode client retries a refused token for ever, logging a traceback each
            # time: ask once (the address it hands out expires unused) and stop if Slack says no.
            try:
                await self.chat.client.apps_connections_open(app_token=self.app_token)
            except SlackApiError as exc:
                raise ConfigError(
                    f"GENBOT_SLACK__APP_TOKEN: Slack refused the app-level token ({slack_error(exc)}); "
                    "it needs the connections:write scope (or leave it empty for HTTP mode)"
                ) from None
            self._socket = AsyncSocketModeHandler(self.app, self.app_token)
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
            log.info("Slack: Socket Mode connected")
            return
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise StartupError.cannot_listen(
                exc, host, port, "GENBOT_SLACK__HTTP_HOST", "GENBOT_SLACK__HTTP_PORT"
            ) from None
        self._site = site
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("Slack: HTTP mode, listening on %s:%s%s", host, self.port, self.http_path)

    async def quiesce(self, grace_s: float = DRAIN_TIMEOUT_S) -> int:
        """Stop taking commands (HTTP mode: the port closes, so a load balancer sends Slack's
        requests to another replica; Socket Mode: the connection closes, so Slack sends them to
        another one of the app's connections) and wait for the acknowledged ones to finish.
        Returns how many were cut short."""
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._site is not None:
            await self._site.stop()
            self._site = None
        return await self.inflight.drain(grace_s)

    async def stop(self) -> None:
        """Stop taking requests, then close the HTTP session (a call after this opens a session
        of its own, as slack_sdk does without one). Safe to call more than once."""
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.session.close()


def _refusal(status: int, sentence: str) -> web.Response:
    return web.json_response({"ok": False, "error": sentence}, status=status)
