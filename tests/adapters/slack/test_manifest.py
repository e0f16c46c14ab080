"""The app manifest in the repo registers what the Bolt app handles, with the scopes it needs."""

from __future__ import annotations

from pathlib import Path

from adapters.slack.blocks import CANCEL_ACTION
from adapters.slack.manifest import app_manifest
from adapters.slack.payloads import GENBOT, IMAGINE
from bot.commands import CommandSpec, OptionSpec
from tests.cli import ROOT, run_genbot

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


def test_the_manifest_of_a_deployment_adds_a_command_per_plugin_command() -> None:
    """``genbot slack manifest``: each top-level plugin command gets an entry like /genbot's
    (escaped, so a picked member arrives with its id), its texts quoted so that any text reads
    back as written; genbot's own commands stay under /genbot."""
    specs = (
        CommandSpec("imagine", "Make an image"),
        CommandSpec("queue", "Your jobs"),
        CommandSpec("hug", 'Say "hi": # to someone', (OptionSpec("who", "member", "Who", required=True),)),
        CommandSpec("purge", "Admins only", group="admin"),
    )
    manifest = app_manifest(specs)
    assert manifest.count("- command: /imagine\n") == 1 and "- command: /queue" not in manifest
    assert "- command: /purge" not in manifest
    hug = manifest.split("    - command: /hug\n")[1].split("oauth_config:")[0]
    assert hug == (
        "      url: https://genbot.example.com/slack/events\n"
        '      description: "Say \\"hi\\": # to someone"\n'
        '      usage_hint: "who"\n'
        "      should_escape: true\n"
    )
    assert manifest.startswith(MANIFEST.read_text().split("oauth_config:")[0])


async def test_genbot_slack_manifest_prints_it_with_the_installed_plugins(tmp_path: Path) -> None:
    env = {
        "PYTHONPATH": f"{ROOT}:{ROOT / 'examples' / 'ask'}",
        "GENBOT_PLUGINS__MODULES": "genbot_ask:plugin",
    }
    printed = await run_genbot("slack", "manifest", cwd=tmp_path, env=env)
    assert printed.code == 0, printed.stderr
    assert "    - command: /ask\n" in printed.stdout and "    - command: /answerer\n" in printed.stdout
    assert printed.stdout.endswith(MANIFEST.read_text().split("oauth_config:")[1])
