"""The app manifest in the repo registers what the Bolt app handles, with the scopes it needs."""

from __future__ import annotations

from pathlib import Path

from adapters.slack.blocks import CANCEL_ACTION
from adapters.slack.payloads import GENBOT, IMAGINE

MANIFEST = Path(__file__).resolve().parents[3] / "adapters" / "slack" / "manifest.yaml"


def test_manifest_has_the_commands_interactivity_and_scopes() -> None:
    text = MANIFEST.read_text()
    for command in (IMAGINE, GENBOT):
        assert f"- command: {command}\n" in text
    for scope in ("commands", "chat:write", "chat:write.public", "files:write", "files:read", "users:read"):
        assert f"      - {scope} " in text or f"      - {scope}\n" in text, scope
    assert "interactivity:\n    is_enabled: true" in text, f"{CANCEL_ACTION} needs interactivity"


def test_genbot_is_escaped_so_a_picked_member_arrives_with_its_id() -> None:
    """The admin commands need ``<@U123|name>``; /imagine keeps its prompt as typed."""
    text = MANIFEST.read_text()
    imagine = text.split(f"- command: {IMAGINE}\n")[1].split("- command:")[0]
    genbot = text.split(f"- command: {GENBOT}\n")[1].split("oauth_config:")[0]
    assert "should_escape: false" in imagine
    assert "should_escape: true" in genbot
