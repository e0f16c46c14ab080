"""The genbot Discord client: an :class:`discord.AutoShardedClient` (all shards in one process)
with the slash commands, the persistent buttons and the :class:`DiscordChat` the renderer edits
through. It needs no privileged intent, only ``guilds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import asdict
from typing import Any

import aiohttp
import discord
import discord.gateway
import yarl
from discord import app_commands

from adapters.discord.adapter import BlobReader, DiscordChat, DiscordResponder, error_words
from adapters.discord.buttons import JobButton
from adapters.discord.commands import PLATFORM, actor_of, app_commands_of, request_of
from bot.commands import CommandSpec
from bot.config import ConfigError, StartupError
from bot.errors import ErrorCode, GenbotError, describe
from bot.inflight import InFlight
from bot.models import Actor, CommandRequest
from bot.ports import CommandHandler, InboxEntry, Rate

log = logging.getLogger(__name__)

#: The answer to a command that reaches a process that is stopping.
RESTARTING = describe(ErrorCode.QUEUE_UNAVAILABLE, "genbot is restarting right now.")
#: The answer to a command that could not be recorded (the database is away).
UNRECORDED = describe(ErrorCode.QUEUE_UNAVAILABLE, "genbot can't take requests right now.")


def set_api_base(url: str) -> str:
    """Point discord.py's REST (bot and webhook routes alike) at ``url``; returns the old base.

    ``discord.http.Route.BASE`` is process-wide, which is why only the composition root (and tests,
    which restore it) call this."""
    old = discord.http.Route.BASE
    discord.http.Route.BASE = url.rstrip("/")
    return old


def set_gateway(url: str | yarl.URL) -> yarl.URL:
    """Point the gateway discord.py dials by default (``DiscordWebSocket.DEFAULT_GATEWAY``, as
    process-wide as ``Route.BASE``) at ``url``; returns the old address."""
    old = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
    return old


def revival(interaction: discord.Interaction) -> dict[str, Any]:
    """What a command's record keeps of its interaction, so that another bot can answer it if this
    one dies first (:meth:`GenbotClient.revive`): the fields of Discord's payload that
    ``discord.Interaction`` needs to reach the interaction's webhook and its channel. The token is
    a secret that expires with the interaction (15 minutes); the record goes when the command is
    done."""
    # genbot's commands are guild-only. Whatever the channel's kind (a thread, a voice channel's
    # chat), it is kept as the shape of a plain text channel: only its id is ever used.
    raw_channel: dict[str, Any] = {
        "id": str(interaction.channel_id),
        "type": 0,
        "guild_id": str(interaction.guild_id),
        "name": "",
        "position": 0,
        "permission_overwrites": [],
    }
    data: dict[str, Any] = {
        "id": str(interaction.id),
        "application_id": str(interaction.application_id),
        "type": interaction.type.value,
        "token": interaction.token,
        "version": interaction.version,
        "channel_id": str(interaction.channel_id),
        "channel": raw_channel,
        "attachment_size_limit": interaction.filesize_limit,
        "guild_id": str(interaction.guild_id),
    }
    return {"interaction": data}


#: The longest 429 discord.py waits out itself; see :class:`~adapters.discord.adapter.DiscordChat`.
MAX_RATELIMIT_WAIT_S = 30.0


class GenbotClient(discord.AutoShardedClient):
    """Commands and buttons hand off to ``handler`` (the core) after deferring; status messages go
    through :attr:`chat`.

    Every command is deferred before anything but parsing: visibly for ``/imagine`` and
    ``/status`` (their answer is the public status message), to the member alone otherwise
    (``/queue``, ``/cancel``, every ``/admin`` command).
    """

    def __init__(
        self,
        *,
        handler: CommandHandler,
        specs: tuple[CommandSpec, ...],
        blobs: BlobReader,
        admin_role_ids: Collection[int] = (),
        application_id: int | None = None,
        shard_count: int | None = None,
        clock: Callable[[], float] = time.time,
        rates: dict[str, Rate] | None = None,
    ) -> None:
        # genbot never joins voice: no start-up warnings about voice libraries it does not need.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.none()
        intents.guilds = True
        options: dict[str, Any] = {"application_id": application_id} if application_id else {}
        super().__init__(
            intents=intents,
            shard_count=shard_count,
            allowed_mentions=discord.AllowedMentions.none(),
            # A 429 longer than this raises (the renderer holds the channel and writes others
            # meanwhile) instead of being slept out inside one write.
            max_ratelimit_timeout=MAX_RATELIMIT_WAIT_S,
            **options,
        )
        self.handler = handler
        self.inflight = InFlight()
        self.admin_role_ids = frozenset(admin_role_ids)
        self.chat = DiscordChat(self, blobs=blobs, clock=clock, rates=rates)
        self.tree: app_commands.CommandTree[GenbotClient] = app_commands.CommandTree(self)
        for command in app_commands_of(specs, self.run_command):
            self.tree.add_command(command)

    async def sign_in(self, token: str) -> None:
        """Log in over REST (``GET /users/@me``), which checks the token.

        Raises :class:`ConfigError` naming ``GENBOT_DISCORD__TOKEN`` when Discord refuses the token
        (401), and :class:`StartupError` naming ``GENBOT_DISCORD__API_BASE_URL`` when its REST base
        cannot be reached. The client must be closed either way."""
        client_log = logging.getLogger("discord.client")
        level = client_log.level
        client_log.setLevel(max(logging.WARNING, level))  # "logging in using static token": say more below
        try:
            await self.login(token)
        except discord.LoginFailure:
            raise ConfigError(
                "GENBOT_DISCORD__TOKEN: Discord refused the bot token (401 Unauthorized): copy it "
                "again from the Developer Portal (your application > Bot > Reset Token)"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StartupError(
                f"cannot reach Discord at {discord.http.Route.BASE} ({reason}): "
                "check GENBOT_DISCORD__API_BASE_URL and the network"
            ) from None
        finally:
            client_log.setLevel(level)
        log.info("Discord: signed in as %s (application %s)", self.user, self.application_id)

    async def use_announced_gateway(self) -> yarl.URL:
        """Dial the gateway that ``GET /gateway/bot`` of the current REST base announces; returns
        the address dialled before (process-wide, like ``Route.BASE``: restore it when done).

        discord.py asks REST for the gateway only when it picks the shard count itself, and only
        for the first connection; with a fixed count, and on every fresh (not resumed) reconnect
        (after INVALID_SESSION, a dropped connection) whatever the count, it dials Discord's
        built-in address, which bypasses a proxy (or a fake)."""
        _shards, url, _limits = await self.http.get_bot_gateway()
        return set_gateway(url)

    async def sync_commands(self, guild: int | None = None) -> int:
        """Register the commands globally (Discord takes up to an hour to show them everywhere),
        or in ``guild`` only, where they show at once. Returns the count. Replaces what was
        registered before at that scope."""
        if guild is None:
            return len(await self.tree.sync())
        target = discord.Object(id=guild)
        self.tree.copy_global_to(guild=target)  # the same commands, as guild commands
        return len(await self.tree.sync(guild=target))

    async def setup_hook(self) -> None:
        self.add_dynamic_items(JobButton)

    async def run_command(
        self, interaction: discord.Interaction, spec: CommandSpec, options: dict[str, str]
    ) -> None:
        if await self._refused_while_stopping(interaction):
            return
        with self.inflight.track():
            public = spec.public
            try:
                request = request_of(interaction, spec.key, options, self.admin_role_ids)
            except GenbotError as exc:  # ids that are not Discord's
                await interaction.response.defer(ephemeral=True, thinking=True)
                await DiscordResponder(interaction, self.chat, public=False).reply_error(exc.text)
                return
            receipt = await self._receive(
                interaction,
                {"kind": "command", "public": public, "request": request.to_json(), **revival(interaction)},
            )
            if receipt is None:
                return
            await interaction.response.defer(ephemeral=not public, thinking=True)
            responder = DiscordResponder(interaction, self.chat, public=public)
            await self.handler.handle(request, responder, receipt=receipt)

    async def on_genbot_button(self, interaction: discord.Interaction, job: int, action: str) -> None:
        """A click on a status message's button: acknowledged without changing the message (the
        renderer edits it), answered to the clicker alone."""
        if await self._refused_while_stopping(interaction):
            return
        with self.inflight.track():
            try:
                actor = actor_of(interaction, self.admin_role_ids)
            except GenbotError as exc:
                await interaction.response.defer(ephemeral=True, thinking=False)
                await DiscordResponder(interaction, self.chat, public=False).reply_error(exc.text)
                return
            receipt = await self._receive(
                interaction,
                {
                    "kind": "button",
                    "job": job,
                    "action": action,
                    "actor": asdict(actor),
                    **revival(interaction),
                },
            )
            if receipt is None:
                return
            await interaction.response.defer(ephemeral=True, thinking=False)
            responder = DiscordResponder(interaction, self.chat, public=False)
            await self.handler.handle_action(actor, job, action, responder, receipt=receipt)

    async def revive(self, entry: InboxEntry) -> None:
        """Run again a command (or button press) a bot acknowledged and died before finishing
        (see :meth:`Genbot.revive_commands`). Its interaction is rebuilt from the record, so its
        answers go where they would have: the deferred response and follow-ups, through the
        interaction token (valid 15 minutes)."""
        payload = entry.payload
        interaction: discord.Interaction = discord.Interaction(
            data=payload["interaction"],
            state=self._connection,
        )
        with self.inflight.track():
            if payload.get("kind") == "button":
                responder = DiscordResponder(interaction, self.chat, public=False)
                actor = Actor(**payload["actor"])
                await self.handler.handle_action(
                    actor, int(payload["job"]), str(payload["action"]), responder, receipt=entry.key
                )
            else:
                responder = DiscordResponder(interaction, self.chat, public=bool(payload["public"]))
                request = CommandRequest.from_json(payload["request"])
                await self.handler.handle(request, responder, receipt=entry.key)

    async def _receive(self, interaction: discord.Interaction, payload: dict[str, Any]) -> str | None:
        """Record the command before its ack (see :meth:`CommandHandler.receive`). If it cannot be
        recorded (the database is away), the answer says so, to its member alone."""
        try:
            return await self.handler.receive(PLATFORM, payload)
        except Exception:
            log.warning("could not record a command; answering that genbot is unavailable", exc_info=True)
            await interaction.response.send_message(error_words(UNRECORDED), ephemeral=True)
            return None

    async def _refused_while_stopping(self, interaction: discord.Interaction) -> bool:
        """While this process stops (it waits for the commands it took), a new one is answered,
        to its member alone, that genbot is restarting."""
        if not self.inflight.closed:
            return False
        await interaction.response.send_message(error_words(RESTARTING), ephemeral=True)
        return True
