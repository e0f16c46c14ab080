"""The pure translation of interaction options and members (no client, no network)."""

from __future__ import annotations

from types import SimpleNamespace

import discord

from adapters.discord.commands import option_text, role_ids


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
