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
    for scope in ("commands", "chat:write", "chat:write.public", "files:write", "files:read"):
        assert f"      - {scope} " in text or f"      - {scope}\n" in text, scope
    assert "interactivity:\n    is_enabled: true" in text, f"{CANCEL_ACTION} needs interactivity"
