"""``genbot``: the command line.

- ``genbot dev``: everything on one laptop (embedded Redis, SQLite, demo backend, local chat).
- ``genbot bot``: the chat adapter and the renderer, against the configured Redis and database.
- ``genbot worker``: an arq worker running generation jobs.
- ``genbot migrate``: apply database migrations.
- ``genbot discord sync [--guild ID]``: register the slash commands with Discord.
- ``genbot plugins``: the plugins genbot loads, with their commands, job kinds and settings.
- ``genbot slack manifest``: the Slack app manifest, with a slash command per plugin command.
- ``genbot --version``: the installed genbot's version (its package metadata).

A start-up failure is one line on stderr naming what to fix, never a traceback: exit code 2 for a
setting (:class:`~bot.config.ConfigError`: a name that is not a setting, a bad value, a token the
platform refuses, a database not migrated, a platform, a database, Sentry or OpenTelemetry whose
extra is not installed), 1 for the world around (:class:`~bot.config.StartupError`: a server out of
reach, a port or a data folder in use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from bot.config import ConfigError, Platform, Settings, StartupError, load_settings
from bot.devlock import data_folder_lock
from bot.embedded_redis import RedisNotFound, embedded_redis
from bot.logs import configure as configure_logging
from bot.telemetry import started as telemetry_started

log = logging.getLogger("genbot")

DEV_DATA = Path("data")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genbot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"genbot {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run everything locally: embedded Redis, SQLite, local chat")
    dev.add_argument("--port", type=_port, help="local chat port (default 8000; 0: any free one)")
    bot = sub.add_parser("bot", help="run the chat adapter and the renderer")
    bot.add_argument("--platform", choices=[p.value for p in Platform])
    sub.add_parser("worker", help="run a generation worker")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("plugins", help="list the plugins, their commands, job kinds and settings")
    discord = sub.add_parser("discord", help="Discord application chores")
    chores = discord.add_subparsers(dest="chore", required=True)
    sync = chores.add_parser("sync", help="register the slash commands (globally, or in one guild)")
    sync.add_argument("--guild", type=int, help="a guild id: register there only, effective at once")
    slack = sub.add_parser("slack", help="Slack application chores")
    slack_chores = slack.add_subparsers(dest="chore", required=True)
    slack_chores.add_parser("manifest", help="print the app manifest, with the plugins' commands")
    return parser


def _version() -> str:
    """The version of the installed ``genbot`` distribution (pyproject's ``version``); a checkout on
    the path that was never installed has none, and says so."""
    try:
        return importlib.metadata.version("genbot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


async def _dev(settings: Settings) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    with telemetry_started(settings, "dev"), data_folder_lock(DEV_DATA):
        await _dev_locked(settings, stop)


async def _dev_locked(settings: Settings, stop: asyncio.Event) -> None:
    from bot.app import PlatformWatch, all_lines, migrate, ops_running, runtime, serve_bot, serve_worker

    async with embedded_redis(DEV_DATA / "redis") as redis:
        settings = settings.model_copy(
            update={
                "platform": Platform.LOCAL,
                "redis": settings.redis.model_copy(update={"url": redis.url}),
                "database": settings.database.model_copy(
                    update={"url": f"sqlite://{DEV_DATA / 'genbot.sqlite3'}"}
                ),
                "blobs": settings.blobs.model_copy(update={"dir": DEV_DATA / "blobs"}),
            }
        )
        await migrate(settings.database.url)
        async with runtime(settings) as rt:
            watch = PlatformWatch()
            async with ops_running(rt, watch=watch, lines=all_lines(rt.core.plugins)):
                listening = asyncio.Event()

                def ready(_port: int) -> None:
                    log.info("embedded Redis at %s, SQLite at %s", redis.url, settings.database.url)
                    listening.set()

                bot = asyncio.create_task(
                    serve_bot(rt, stop, on_listening=ready, watch=watch), name="genbot-dev-bot"
                )
                # The worker starts once the chat listens: a port in use stops `genbot dev` before
                # anything else ran, with one line.
                worker = asyncio.create_task(
                    _once(listening, stop, lambda: serve_worker(rt, stop)), name="genbot-dev-worker"
                )
                try:
                    await asyncio.gather(bot, worker)
                finally:
                    # If one failed, the other stops in order before the runtime closes under it; the
                    # failure is what the command line reports.
                    stop.set()
                    await asyncio.wait({bot, worker})


async def _once(ready: asyncio.Event, stop: asyncio.Event, work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work`` once ``ready`` is set, unless ``stop`` is set first."""
    waits = {asyncio.create_task(ready.wait()), asyncio.create_task(stop.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    if not stop.is_set():
        await work()


async def _bot(settings: Settings) -> None:
    from bot.app import PlatformWatch, ops_running, require_platform, runtime, serve_bot

    require_platform(settings.platform)  # before connecting: a missing extra is the one complaint
    stop = asyncio.Event()
    _stop_on_signals(stop)
    watch = PlatformWatch()
    with telemetry_started(settings, "bot"):
        async with runtime(settings) as rt, ops_running(rt, watch=watch):
            await serve_bot(rt, stop, watch=watch)


async def _worker(settings: Settings) -> None:
    from bot.app import ops_running, runtime, serve_worker, worker_lines

    stop = asyncio.Event()
    _stop_on_signals(stop)
    with telemetry_started(settings, "worker"):
        async with runtime(settings) as rt, ops_running(rt, lines=worker_lines(rt)):
            await serve_worker(rt, stop)


async def _migrate(settings: Settings) -> None:
    from bot.app import database_pool, migrate

    await migrate(settings.database.url, database_pool(settings.database))
    print("migrations applied", flush=True)


async def _plugins(settings: Settings) -> None:
    from bot.app import plugins_of
    from bot.plugins import describe

    print(describe(plugins_of(settings)), flush=True)


async def _slack_manifest(settings: Settings) -> None:
    from bot.app import require_platform, slack_manifest

    require_platform(Platform.SLACK, "genbot slack manifest")
    print(slack_manifest(settings), end="", flush=True)


async def _discord_sync(settings: Settings, guild: int | None) -> None:
    from bot.app import require_platform, runtime, sync_discord_commands

    require_platform(Platform.DISCORD, "genbot discord sync")
    async with runtime(settings) as rt:
        count = await sync_discord_commands(rt, guild)
    where = f"in guild {guild}" if guild is not None else "globally (may take up to an hour to show)"
    print(f"registered {count} commands {where}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides: dict[str, object] = {}
        if getattr(args, "platform", None):
            overrides["platform"] = args.platform
        settings = load_settings(**overrides)
        if getattr(args, "port", None) is not None:
            settings = settings.model_copy(
                update={"local": settings.local.model_copy(update={"port": args.port})}
            )
    except ConfigError as exc:
        return _fail(exc, 2)
    configure_logging(settings.log_level, settings.log_format)
    # At DEBUG these print interaction tokens (webhook URLs) and raw Slack payloads: never that.
    for chatty in ("discord.webhook", "discord.http", "slack_sdk", "slack_bolt"):
        logging.getLogger(chatty).setLevel(max(logging.INFO, logging.getLogger().level))
    # Tortoise's only INFO line is "Tortoise-ORM shutdown", on every close (a start-up failure
    # too); its DEBUG (the SQL) stays available.
    root_level = logging.getLogger().level
    logging.getLogger("tortoise").setLevel(root_level if root_level <= logging.DEBUG else logging.WARNING)
    commands: dict[str, Callable[[Settings], Coroutine[Any, Any, None]]] = {
        "dev": _dev,
        "bot": _bot,
        "worker": _worker,
        "migrate": _migrate,
        "plugins": _plugins,
        "discord": lambda s: _discord_sync(s, args.guild),
        "slack": _slack_manifest,
    }
    try:
        asyncio.run(commands[args.command](settings))
    except (ConfigError, RedisNotFound) as exc:
        return _fail(exc, 2)
    except StartupError as exc:
        return _fail(exc, 1)
    except (OSError, RedisConnectionError) as exc:  # what start-up did not name more precisely
        return _fail(exc, 1)
    except KeyboardInterrupt:
        pass
    return 0


def _fail(exc: Exception, code: int) -> int:
    """Print ``exc``, one ``genbot:`` line per mistake, and return the exit code."""
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"genbot: {line}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
