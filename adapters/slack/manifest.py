"""The Slack app manifest of a deployment: ``manifest.yaml`` with a slash command of its own for
every top-level command its plugins add (``/ask``), beside ``/imagine`` and ``/genbot``."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.slack.payloads import GENBOT, IMAGINE, options_usage
from bot.commands import CommandSpec

TEMPLATE = Path(__file__).with_name("manifest.yaml")
#: Where the slash commands end in the template.
_AFTER_COMMANDS = "oauth_config:"
#: Slack's limits for a slash command's description and usage hint.
DESCRIPTION_MAX = 2000
USAGE_MAX = 1000


def app_manifest(specs: tuple[CommandSpec, ...]) -> str:
    """The manifest, with an entry per top-level command of ``specs`` it does not have yet (the
    plugins'; genbot's own ``/queue`` and the rest stay under ``/genbot``). Each is escaped, as
    ``/genbot`` is, so that a member option arrives as ``<@U123|name>``. Pure."""
    text = TEMPLATE.read_text()
    url = text.split("url: ", 1)[1].split("\n", 1)[0]
    entries = [_entry(spec, url) for spec in specs if _own_command(spec)]
    head, _, tail = text.partition(_AFTER_COMMANDS)
    return head + "".join(entries) + _AFTER_COMMANDS + tail


#: genbot's own member commands, which Slack members type under ``/genbot``.
_GENBOT_ONLY = frozenset({"queue", "cancel", "status"})


def _own_command(spec: CommandSpec) -> bool:
    return not spec.group and f"/{spec.name}" not in (IMAGINE, GENBOT) and spec.name not in _GENBOT_ONLY


def _entry(spec: CommandSpec, url: str) -> str:
    # JSON strings are YAML's double-quoted scalars: any text reads back as written.
    description = json.dumps(spec.description[:DESCRIPTION_MAX])
    hint = json.dumps(options_usage(spec)[:USAGE_MAX])
    return (
        f"    - command: /{spec.name}\n"
        f"      url: {url}\n"
        f"      description: {description}\n"
        f"      usage_hint: {hint}\n"
        "      should_escape: true\n"
    )
