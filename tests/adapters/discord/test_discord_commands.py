"""The pure translation of interaction options and members (no connection, no network)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import discord
import pytest
from discord.state import ConnectionState
from discord.user import ClientUser

from adapters.discord.client import GenbotClient
from adapters.discord.commands import actor_of, option_text, request_of, role_ids, snowflake
from bot.errors import GenbotError
from tests.adapters.discord.fake import BOT_USER, interaction_payload
from tests.image_jobs import every_spec

SPECS = every_spec()


def test_a_picked_member_reaches_the_core_as_its_id() -> None:
    assert option_text(discord.Object(id=300000000000000002)) == "300000000000000002"
    assert option_text("wolf") == "wolf"
    assert option_text(7) == "7"


def test_role_ids_come_from_the_payload_even_without_the_guild_cache() -> None:
    # A Member whose guild discord.py has not cached: ``roles`` resolves nothing, ``_roles`` has them.
    uncached = SimpleNamespace(_roles=[700000000000000001], roles=[])
    assert role_ids(uncached) == {700000000000000001}  # type: ignore[arg-type]
    cached = SimpleNamespace(_roles=[1], roles=[SimpleNamespace(id=2)])
    assert role_ids(cached) == {1, 2}  # type: ignore[arg-type]
    assert role_ids(SimpleNamespace()) == set()  # type: ignore[arg-type]


@pytest.fixture
def state() -> ConnectionState:  # type: ignore[type-arg]
    """A client's parser state, signed in as the fake's bot user, without a connection: enough to
    read an interaction payload the way discord.py does."""

    async def no_blob(_key: str) -> None:
        return None

    client = GenbotClient(handler=None, specs=SPECS, blobs=no_blob)  # type: ignore[arg-type]
    client._connection.user = ClientUser(state=client._connection, data=BOT_USER)  # type: ignore[arg-type]
    return client._connection


def interaction(state: ConnectionState, **kw: Any) -> discord.Interaction:  # type: ignore[type-arg]
    nick = kw.pop("nick", None)
    payload = interaction_payload(name="imagine", options={"prompt": "fox"}, **kw)
    payload["member"]["nick"] = nick
    return discord.Interaction(data=payload, state=state)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("username", "nick", "shown"),
    [
        ("alice", None, "Alice"),  # the global name
        ("alice", "Ali\x00ce\u200b\n", "Alice\u200b"),
        ("alice", "\u3164\u3164", "300000000000000001"),  # draws nothing: the id
        ("alice", "n" * 200, "n" * 79 + "…"),
        ("alice", "\ud800ok", "ok"),
    ],
)
def test_display_names_from_a_payload_are_cleaned(
    state: ConnectionState,  # type: ignore[type-arg]
    username: str,
    nick: str | None,
    shown: str,
) -> None:
    actor = actor_of(interaction(state, username=username, nick=nick), [])
    assert actor.display_name == shown
    assert (actor.user_id, actor.workspace) == ("300000000000000001", "400000000000000001")


def test_request_ids_are_snowflakes(state: ConnectionState) -> None:  # type: ignore[type-arg]
    request = request_of(interaction(state), "imagine", {"prompt": "fox"}, [])
    assert request.channel == "500000000000000001"
    for bad in (0, -1, 2**64, None, "123", 1.0, True):
        with pytest.raises(GenbotError) as caught:
            snowflake(bad)
        assert caught.value.text.what == "Discord sent an interaction genbot cannot read."
    assert snowflake(2**64 - 1) == str(2**64 - 1)
