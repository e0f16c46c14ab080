"""The REST fake plus a fake of Discord's gateway (WebSocket), so the bot can be started the way
production starts it: log in over REST, ask ``GET /gateway/bot`` where the gateway is, connect.

Speaks the gateway's wire format (v10, JSON): HELLO (op 10) with ``heartbeat_interval``; IDENTIFY
(op 2, with ``shard`` [id, count]) answered by READY (op 0) and a GUILD_CREATE for each guild of
that shard; HEARTBEAT (op 1) answered by HEARTBEAT_ACK (op 11); RESUME (op 6) by RESUMED;
dispatches (op 0) numbered by ``s``. Frames go out zlib-stream compressed (binary, each ending in a
``Z_SYNC_FLUSH``) when the client asks for ``compress=zlib-stream``, as plain JSON text otherwise.
Every frame the client sends is recorded per connection.
"""

from __future__ import annotations

import itertools
import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.adapters.discord.fake import API, APP_ID, BOT_USER, FakeDiscord, reply, text_channel

GUILD_ID = "400000000000000001"  # the guild and channel of fake.interaction_payload's defaults
CHANNEL_ID = "500000000000000001"

HELLO, HEARTBEAT, IDENTIFY, RESUME, INVALID_SESSION, DISPATCH, HEARTBEAT_ACK = 10, 1, 2, 6, 9, 0, 11


@dataclass
class GatewaySession:
    """One WebSocket connection from the client."""

    ws: web.WebSocketResponse
    query: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)  # frames from the client, in order
    sent: list[dict[str, Any]] = field(default_factory=list)  # frames to the client, in order
    shard: tuple[int, int] | None = None  # from IDENTIFY
    session_id: str | None = None
    seq: int = 0
    close_code: int | None = None  # once the connection is over
    _zlib: Any = None

    def of(self, op: int) -> list[dict[str, Any]]:
        return [f for f in self.received if f.get("op") == op]

    @property
    def ready(self) -> bool:
        return any(f.get("t") == "READY" for f in self.sent)

    @property
    def open(self) -> bool:
        return self.close_code is None and not self.ws.closed

    async def send(self, op: int, d: Any, t: str | None = None) -> None:
        frame: dict[str, Any] = {"op": op, "d": d, "s": None, "t": t}
        if op == DISPATCH:
            self.seq += 1
            frame["s"] = self.seq
        self.sent.append(frame)
        data = json.dumps(frame)
        if self._zlib is None:
            await self.ws.send_str(data)
        else:  # one shared zlib context per connection; every message ends with a sync flush
            await self.ws.send_bytes(self._zlib.compress(data.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH))


class FakeGateway(FakeDiscord):
    """:class:`FakeDiscord` whose ``GET /gateway/bot`` announces its own WebSocket endpoint."""

    def __init__(self, *, shards: int = 1, heartbeat_interval_ms: int = 250) -> None:
        super().__init__()
        self.shards = shards
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.guilds = [GUILD_ID]
        self.sessions: list[GatewaySession] = []
        self.gateway_url = ""
        self._session_ids = itertools.count(1)

    # -- control ------------------------------------------------------------------------------

    def identified(self) -> list[GatewaySession]:
        return [s for s in self.sessions if s.shard is not None]

    def live(self, shard_id: int) -> GatewaySession | None:
        """The newest open connection that identified (or resumed) as ``shard_id``."""
        for session in reversed(self.sessions):
            if session.open and session.shard is not None and session.shard[0] == shard_id:
                return session
        return None

    def shard_of(self, guild_id: str | int) -> int:
        return (int(guild_id) >> 22) % self.shards

    async def dispatch(self, event: str, data: Any, *, shard_id: int = 0) -> GatewaySession:
        session = self.live(shard_id)
        if session is None:
            raise AssertionError(f"no live gateway connection for shard {shard_id}")
        await session.send(DISPATCH, data, event)
        return session

    async def deliver(self, payload: dict[str, Any]) -> GatewaySession:
        """An INTERACTION_CREATE, on the connection of the shard its guild belongs to."""
        self.token_channels[payload["token"]] = payload["channel_id"]
        return await self.dispatch("INTERACTION_CREATE", payload, shard_id=self.shard_of(payload["guild_id"]))

    async def invalidate(self, shard_id: int, *, resumable: bool) -> None:
        session = self.live(shard_id)
        assert session is not None, f"no live gateway connection for shard {shard_id}"
        await session.send(INVALID_SESSION, resumable)

    # -- server -------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}{API}"
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"
        return self.base_url

    async def stop(self) -> None:
        for session in self.sessions:
            if not session.ws.closed:
                await session.ws.close(code=1001)
        await super().stop()

    def _respond(self, rec: Any) -> web.Response:
        if rec.method == "GET" and rec.path == "/gateway/bot" and not self._failing(rec):
            return reply(
                {
                    "url": self.gateway_url,
                    "shards": self.shards,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 14400000,
                        "max_concurrency": 1,
                    },
                }
            )
        return super()._respond(rec)

    def _failing(self, rec: Any) -> bool:
        return any(f.times > 0 and f.match(rec) for f in self.failures)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        session = GatewaySession(ws, dict(request.query))
        if session.query.get("compress") == "zlib-stream":
            session._zlib = zlib.compressobj()
        self.sessions.append(session)
        self.changed.set()
        try:
            await session.send(HELLO, {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake"]})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                session.received.append(frame)
                await self._on_frame(session, frame)
                self.changed.set()
        finally:
            session.close_code = ws.close_code if ws.close_code is not None else -1
            self.changed.set()
        return ws

    async def _on_frame(self, session: GatewaySession, frame: dict[str, Any]) -> None:
        op, d = frame.get("op"), frame.get("d") or {}
        if op == HEARTBEAT:
            await session.send(HEARTBEAT_ACK, None)
        elif op == IDENTIFY:
            shard_id, count = d.get("shard") or [0, 1]
            session.shard = (shard_id, count)
            session.session_id = f"fake-session-{next(self._session_ids)}"
            mine = [g for g in self.guilds if (int(g) >> 22) % count == shard_id]
            await session.send(DISPATCH, self.ready_payload(session, mine), "READY")
            for guild in mine:
                await session.send(DISPATCH, guild_create(guild), "GUILD_CREATE")
        elif op == RESUME:
            old = next((s for s in self.sessions if s.session_id == d.get("session_id")), None)
            if old is None:
                await session.send(INVALID_SESSION, False)
                return
            session.shard, session.session_id, session.seq = old.shard, old.session_id, old.seq
            await session.send(DISPATCH, {"_trace": ["fake"]}, "RESUMED")

    def ready_payload(self, session: GatewaySession, guilds: list[str]) -> dict[str, Any]:
        assert session.shard is not None
        return {
            "v": 10,
            "user": {**BOT_USER, "verified": True, "mfa_enabled": False, "flags": 0, "email": None},
            "guilds": [{"id": g, "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "shard": list(session.shard),
            "application": {"id": APP_ID, "flags": 0},
            "private_channels": [],
            "presences": [],
            "relationships": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["local"],
            "auth_session_id_hash": "fake",
            "_trace": ["fake"],
        }


def guild_create(guild_id: str, channel_id: str = CHANNEL_ID) -> dict[str, Any]:
    """A GUILD_CREATE for a small guild with one text channel and the bot as its only member."""
    return {
        "id": guild_id,
        "name": "genbot test",
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": "300000000000000009",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "application_id": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "features": [],
        "roles": [
            {
                "id": guild_id,  # @everyone has the guild's id
                "name": "@everyone",
                "color": 0,
                "hoist": False,
                "icon": None,
                "unicode_emoji": None,
                "position": 0,
                "permissions": "2048",
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        ],
        "emojis": [],
        "stickers": [],
        "joined_at": datetime.now(UTC).isoformat(),
        "large": False,
        "unavailable": False,
        "lazy": True,
        "member_count": 1,
        "members": [
            {
                "user": BOT_USER,
                "roles": [],
                "joined_at": datetime.now(UTC).isoformat(),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "nick": None,
            }
        ],
        "channels": [
            {
                **text_channel(channel_id, guild_id),
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "flags": 0,
            }
        ],
        "threads": [],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "incidents_data": None,
    }
