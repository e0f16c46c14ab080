"""The composition root: the only module that knows every concrete class. It builds them from the
settings and hands them down; swapping the platform or the backend is a setting, not code.

Discord, Slack and PostgreSQL are extras of the package (``pip install 'genbot[discord]'``): their
adapters are imported by the functions that build them, never at the top of this module, so that
an installation without them runs the local chat on SQLite. A setting that chooses one the
installation lacks is refused with one line naming the extra (:func:`require_platform`,
:func:`require_database`), before anything is connected."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from adapters.local.chat import LocalChat
from bot.commands import admin_specs, command_specs
from bot.config import (
    DISCORD_API,
    BlobSettings,
    ConfigError,
    DatabaseSettings,
    Platform,
    Settings,
    StartupError,
    display_url,
)
from bot.metrics import BREAKER_OPEN, QUEUE_DEPTH
from bot.ops import Check, Ops
from bot.ops import serve as serve_ops
from bot.plugins import Plugins, all_specs, load_plugins
from bot.ports import ALL_WAITING, BREAKER_EVENT, BlobStore, ChatAdapter, InboxEntry
from bot.renderer import Renderer
from bot.service import Genbot
from jobs.breaker import Breaker, BreakerKeys
from jobs.budgets import RedisBudgets
from jobs.connections import open_redis
from jobs.constants import RENDER_GROUP, Keys
from jobs.events import RedisEventFeed
from jobs.queue import ArqRedis, RedisJobQueue
from jobs.runner import GenerationRunner, KindRuntime, defer_slice_s
from jobs.worker import build_sweeper, build_worker, close_worker, served_lines
from storage import db
from storage.blobs import DatabaseBlobStore, LocalBlobStore, prune_blobs
from storage.chatlog import TortoiseChatLog
from storage.inbox import TortoiseCommandInbox
from storage.moderation import TortoiseModerationStore
from storage.store import TortoiseGenerationStore

if TYPE_CHECKING:
    from adapters.discord.client import GenbotClient
    from adapters.slack.app import SlackBot

log = logging.getLogger(__name__)

#: A bot looks for commands of stopped bots to run again at least this often.
REVIVE_EVERY_S = 10.0
#: genbot's own plugins, loaded before the installed ones.
BUILTIN_PLUGINS = ("jobs.imagine:plugin",)


def plugins_of(settings: Settings) -> Plugins:
    """genbot's plugins and the installed ones (see :mod:`bot.plugins`). Raises
    :class:`~bot.plugins.PluginError` (a :class:`ConfigError`) naming the first that fails."""
    core = [spec.key for spec in command_specs() + admin_specs()]
    return load_plugins(settings, BUILTIN_PLUGINS, reserved=core)


@dataclass(frozen=True)
class Extra:
    """An optional part of genbot: the extra of the package that installs it, and the modules it
    needs, each with the distribution that provides it."""

    name: str
    modules: dict[str, str]

    def missing(self) -> list[str]:
        """The distributions of the modules this installation cannot import, in order."""
        return [dist for module, dist in self.modules.items() if importlib.util.find_spec(module) is None]


DISCORD = Extra("discord", {"discord": "discord.py"})
SLACK = Extra("slack", {"slack_bolt": "slack-bolt", "slack_sdk": "slack-sdk"})
POSTGRES = Extra("postgres", {"asyncpg": "asyncpg"})
S3 = Extra("s3", {"aiobotocore": "aiobotocore"})
PLATFORM_EXTRAS = {Platform.DISCORD: DISCORD, Platform.SLACK: SLACK}


def _require(extra: Extra, needed_by: str) -> None:
    missing = extra.missing()
    if missing:
        raise ConfigError(f"{needed_by} needs {' and '.join(missing)}: pip install 'genbot[{extra.name}]'")


def require_platform(platform: Platform, needed_by: str | None = None) -> None:
    """Raise :class:`ConfigError`, one line naming the extra to install, when ``platform``'s
    packages are not installed (``needed_by`` says what asked for them; by default
    ``GENBOT_PLATFORM=<platform>``). The local chat needs nothing beyond the core."""
    extra = PLATFORM_EXTRAS.get(platform)
    if extra is not None:
        _require(extra, needed_by or f"GENBOT_PLATFORM={platform.value}")


def require_blob_store(blobs: BlobSettings) -> None:
    """Raise :class:`ConfigError`, one line naming the extra to install, when the blob store
    chosen is S3 and aiobotocore is not installed (the others need nothing beyond the core)."""
    if blobs.store == "s3":
        _require(S3, "GENBOT_BLOBS__STORE=s3")


@contextlib.asynccontextmanager
async def blob_store(settings: Settings) -> AsyncIterator[BlobStore]:
    """The blob store ``GENBOT_BLOBS__STORE`` chooses, for the life of the block. Raises, before
    the block runs, :class:`StartupError` naming the ``GENBOT_BLOBS__S3__*`` settings when the S3
    bucket cannot be used (out of reach, missing, or refusing the credentials)."""
    blobs = settings.blobs
    if blobs.store != "s3":
        yield DatabaseBlobStore() if blobs.in_database(settings.database.url) else LocalBlobStore(blobs.dir)
        return
    from storage.s3 import BucketUnusable, s3_blob_store

    s3 = blobs.s3
    async with s3_blob_store(
        s3.bucket,
        s3.prefix,
        endpoint_url=s3.endpoint_url or None,
        region=s3.region or None,
        access_key_id=s3.access_key_id or None,
        secret_access_key=s3.secret_access_key.get_secret_value() or None,
    ) as store:
        try:
            await store.check()
        except BucketUnusable as exc:
            where = display_url(s3.endpoint_url) if s3.endpoint_url else "AWS S3"
            raise StartupError(
                f"cannot use the S3 bucket {s3.bucket!r} at {where} ({exc}): check "
                "GENBOT_BLOBS__S3__BUCKET, GENBOT_BLOBS__S3__ENDPOINT_URL and the credentials"
            ) from None
        yield store


def require_database(db_url: str) -> None:
    """Raise :class:`ConfigError`, one line naming the extra to install, when ``db_url`` is a
    PostgreSQL URL and its driver is not installed (SQLite needs nothing beyond the core)."""
    scheme = db_url.partition("://")[0]
    if scheme != "sqlite":
        _require(POSTGRES, f"GENBOT_DATABASE__URL={scheme}://...")


def database_pool(database: DatabaseSettings) -> db.Pool:
    """The PostgreSQL pool of ``GENBOT_DATABASE__POOL_MIN``, ``POOL_MAX`` and
    ``STATEMENT_CACHE_SIZE``."""
    return db.Pool(database.pool_min, database.pool_max, database.statement_cache_size)


async def migrate(db_url: str, pool: db.Pool | None = None) -> None:
    """Apply the database migrations (:func:`storage.db.migrate`). Raises :class:`StartupError`
    naming ``GENBOT_DATABASE__URL`` when the database cannot be reached, :class:`ConfigError`
    when its driver is not installed (:func:`require_database`)."""
    require_database(db_url)
    try:
        await db.migrate(db_url, pool)
    except db.DatabaseUnavailable as exc:
        raise _database_unreachable(db_url, exc) from None


def _database_unreachable(db_url: str, exc: db.DatabaseUnavailable) -> StartupError:
    check = (
        "check GENBOT_DATABASE__URL; the file and its folder must be writable"
        if db_url.startswith("sqlite:")
        else "check GENBOT_DATABASE__URL and that the server runs"
    )
    return StartupError(f"cannot reach the database at {display_url(db_url)} ({exc}): {check}")


async def _connect_database(db_url: str, pool: db.Pool) -> None:
    """Connect, and refuse a database that lacks this release's migrations (:class:`ConfigError`:
    never migrated, or by an older release)."""
    try:
        await db.connect(db_url, pool)
    except db.DatabaseUnavailable as exc:
        raise _database_unreachable(db_url, exc) from None
    try:
        pending = await db.pending_migrations()
    except BaseException:
        await db.close()
        raise
    if pending:
        await db.close()
        what = (
            pending[0] if len(pending) == 1 else f"{len(pending)} migrations, {pending[0]} to {pending[-1]}"
        )
        raise ConfigError(
            f"the database at {display_url(db_url)} is not migrated ({what} not applied): "
            "run `genbot migrate` with the same GENBOT_DATABASE__URL"
        )


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Hold back ``logger``'s warnings for the block."""
    log_ = logging.getLogger(logger)
    level = log_.level
    log_.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log_.setLevel(level)


async def _open_redis(url: str, max_connections: int) -> ArqRedis:
    """:func:`jobs.queue.open_redis`, with its failure as one :class:`StartupError` naming
    ``GENBOT_REDIS__URL`` (arq's own retry warnings held back: the failure says it all)."""
    try:
        with _quiet("arq.connections"):
            return await open_redis(url, max_connections=max_connections)
    except (RedisError, OSError, TimeoutError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StartupError(
            f"cannot reach Redis at {display_url(url)} ({reason}): start it, or point "
            "GENBOT_REDIS__URL at a running one"
        ) from None


@dataclass
class Runtime:
    """What every genbot process shares: settings, Redis, the database, the core."""

    settings: Settings
    redis: ArqRedis
    store: TortoiseGenerationStore
    queue: RedisJobQueue
    moderation: TortoiseModerationStore
    blobs: BlobStore
    core: Genbot


@contextlib.asynccontextmanager
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Connect to the database, Redis and the blob store for the life of the block.

    Raises, before the block runs: :class:`StartupError` naming ``GENBOT_DATABASE__URL``,
    ``GENBOT_REDIS__URL`` or the ``GENBOT_BLOBS__S3__*`` settings for a server out of reach,
    :class:`ConfigError` for a database that lacks this release's migrations (run ``genbot
    migrate``), a database driver or an S3 library that is not installed
    (:func:`require_database`, :func:`require_blob_store`), or a plugin that does not load. The
    platform's packages are not checked: a worker needs none."""
    require_database(settings.database.url)
    require_blob_store(settings.blobs)
    plugins = plugins_of(settings)
    await _connect_database(settings.database.url, database_pool(settings.database))
    try:
        redis = await _open_redis(settings.redis.url, settings.redis.max_connections)
    except BaseException:
        await db.close()
        raise
    try:
        store = TortoiseGenerationStore()
        moderation = TortoiseModerationStore()
        queue = RedisJobQueue(
            redis,
            Keys(settings.redis.key_prefix),
            settings.redis.queue_name,
            eta_window=settings.worker.eta_window,
            default_run_s=settings.worker.default_run_s,
        )
        async with blob_store(settings) as blobs:
            yield Runtime(
                settings=settings,
                redis=redis,
                store=store,
                queue=queue,
                moderation=moderation,
                blobs=blobs,
                core=Genbot(settings, store, queue, moderation, TortoiseCommandInbox(), plugins, blobs),
            )
    finally:
        await redis.aclose()
        await db.close()


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def build_local_chat(rt: Runtime) -> LocalChat:
    return LocalChat(
        log_store=TortoiseChatLog(),
        handler=rt.core,
        blobs=rt.blobs.get,
        specs=tuple(rt.core.specs.values()),
        members=rt.settings.local.members,
        admins=rt.settings.local.admins,
        allowed_hosts=rt.settings.local.allowed_hosts,
        uploads=rt.blobs,
        upload_max_bytes=rt.settings.limits.attachment_max_bytes,
    )


def build_slack(rt: Runtime) -> SlackBot:
    """The Slack app from ``GENBOT_SLACK__*``. Raises :class:`ConfigError` when a token the
    chosen mode needs is missing, or the ``slack`` extra is not installed."""
    require_platform(Platform.SLACK)
    from adapters.slack.adapter import SlackChat, make_client, slack_rates
    from adapters.slack.admins import SlackAdmins
    from adapters.slack.app import SlackBot

    s = rt.settings.slack
    token = s.bot_token.get_secret_value()
    if not token:
        raise ConfigError("GENBOT_SLACK__BOT_TOKEN: set the Slack bot token (xoxb-...) to run on Slack")
    if not s.socket_mode and not s.signing_secret.get_secret_value():
        raise ConfigError(
            "GENBOT_SLACK__SIGNING_SECRET: HTTP mode needs the app's signing secret "
            "(or set GENBOT_SLACK__APP_TOKEN for Socket Mode)"
        )
    chat = SlackChat(
        make_client(token, s.api_base_url),
        rt.blobs.get,
        thread_images=s.thread_images,
        rates=slack_rates(s.channel_writes_per_s, s.channel_burst, s.updates_per_min, s.updates_burst),
    )
    return SlackBot(
        handler=rt.core,
        chat=chat,
        specs=tuple(rt.core.specs.values()),
        bot_token=token,
        signing_secret=s.signing_secret.get_secret_value(),
        api_base_url=s.api_base_url,
        app_token=s.app_token.get_secret_value(),
        admins=SlackAdmins(
            make_client(token, s.api_base_url, wait_out_429=True), s.admin_user_ids, ttl_s=s.admin_cache_s
        ),
        http_path=s.http_path,
    )


@dataclass
class Frontend:
    """The configured platform: its adapter (for the renderer), and starting and stopping what
    receives its commands (the local chat's web server, Slack's HTTP server or Socket Mode)."""

    adapter: ChatAdapter
    start: Callable[[], Awaitable[int | None]]  # returns the port it listens on, if any
    #: Stop taking commands and wait for the acknowledged ones; returns how many were cut short.
    quiesce: Callable[[], Awaitable[int]]
    stop: Callable[[], Awaitable[None]]
    #: Run again a command another bot acknowledged and died before finishing (None: the
    #: platform acknowledges only after the work).
    revive: Callable[[InboxEntry], Awaitable[None]] | None = None


def build_frontend(rt: Runtime) -> Frontend:
    """Raises :class:`ConfigError` for a platform this release does not have."""
    platform = rt.settings.platform
    if platform is Platform.LOCAL:
        chat = build_local_chat(rt)
        host, port = rt.settings.local.host, rt.settings.local.port

        async def start_local() -> int | None:
            try:
                await chat.start(host, port)
            except OSError as exc:
                raise StartupError.cannot_listen(
                    exc, host, port, "GENBOT_LOCAL__HOST", "GENBOT_LOCAL__PORT (or genbot dev --port)"
                ) from None
            print(f"genbot local chat: http://{host}:{chat.port}", flush=True)
            return chat.port

        return Frontend(chat, start_local, chat.quiesce, chat.stop, chat.revive)
    if platform is Platform.SLACK:
        slack = build_slack(rt)
        settings = rt.settings.slack

        async def start_slack() -> int | None:
            await slack.start(settings.http_host, settings.http_port)
            return slack.port

        return Frontend(slack.chat, start_slack, slack.quiesce, slack.stop, slack.revive)
    raise ConfigError(f"GENBOT_PLATFORM: no frontend for {platform.value!r}")


def build_discord_client(rt: Runtime, *, clock: Callable[[], float] = time.time) -> GenbotClient:
    """The Discord client (not logged in). Its REST goes wherever ``Route.BASE`` points: call
    :func:`adapters.discord.client.set_api_base` with the setting first (:func:`discord_session`).
    Raises :class:`ConfigError` when the ``discord`` extra is not installed."""
    require_platform(Platform.DISCORD)
    from adapters.discord.adapter import discord_rates
    from adapters.discord.client import GenbotClient

    d = rt.settings.discord
    return GenbotClient(
        handler=rt.core,
        specs=tuple(rt.core.specs.values()),
        blobs=rt.blobs.get,
        admin_role_ids=d.admin_role_ids,
        application_id=d.application_id,
        shard_count=d.shard_count,
        clock=clock,
        rates=discord_rates(d.channel_writes_per_s, d.channel_burst, d.global_per_s),
    )


@contextlib.asynccontextmanager
async def discord_session(
    rt: Runtime, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[GenbotClient]:
    """A Discord client logged in (REST only, no gateway yet) against ``discord.api_base_url``;
    closed, and the REST base restored, on exit. Raises :class:`ConfigError` for a missing or
    refused ``GENBOT_DISCORD__TOKEN`` (see :meth:`GenbotClient.sign_in`), or when the ``discord``
    extra is not installed."""
    require_platform(Platform.DISCORD)
    from adapters.discord.client import set_api_base, set_gateway

    d = rt.settings.discord
    token = d.token.get_secret_value()
    if not token:
        raise ConfigError("GENBOT_DISCORD__TOKEN: set the bot token to run on Discord")
    old_base = set_api_base(d.api_base_url)
    old_gateway = None
    client = build_discord_client(rt, clock=clock)
    try:
        await client.sign_in(token)
        if d.api_base_url != DISCORD_API:
            # With a fixed shard count, and on any fresh reconnect whatever the count, discord.py
            # dials its built-in gateway; take the one that the configured REST base announces
            # instead (a proxy's, or a test fake's).
            old_gateway = await client.use_announced_gateway()
        yield client
    finally:
        await client.close()
        set_api_base(old_base)
        if old_gateway is not None:
            set_gateway(old_gateway)


def build_renderer(rt: Runtime, adapter: ChatAdapter) -> Renderer:
    keys = Keys(rt.settings.redis.key_prefix)
    feed = RedisEventFeed(
        rt.redis, keys.events, RENDER_GROUP.format(platform=adapter.platform), consumer_name()
    )
    # One set of budgets per platform, shared by its commands' first posts and its renderer, and
    # through Redis by every bot process of it.
    budgets = RedisBudgets(rt.redis, keys.prefix, adapter.rates)
    rt.core.budgets = budgets
    return Renderer(
        store=rt.store,
        queue=rt.queue,
        feed=feed,
        adapter=adapter,
        settings=rt.settings.renderer,
        budgets=budgets,
    )


def build_breaker(rt: Runtime, backend: str) -> Breaker:
    """The circuit breaker of ``backend``, shared through Redis by every worker."""
    w = rt.settings.worker

    async def announce(_state: str) -> None:
        await rt.queue.publish(ALL_WAITING, BREAKER_EVENT)

    return Breaker(
        rt.redis,
        BreakerKeys.of(Keys(rt.settings.redis.key_prefix), backend),
        fail_max=w.breaker_fail_max,
        reset_s=w.breaker_reset_s,
        probe_ttl_s=w.backend_timeout_s + 30,
        on_change=announce,
    )


def all_lines(plugins: Plugins) -> list[str]:
    """Every line the loaded plugins' jobs wait in: each kind's backends, defaults first."""
    return list(dict.fromkeys(line for kind, _loaded in plugins.kinds.values() for line in kind.lines))


def worker_lines(rt: Runtime) -> dict[str, int]:
    """The lines this worker serves, and how many jobs of each at once (``GENBOT_WORKER__LINES``)."""
    return served_lines(rt.settings, all_lines(rt.core.plugins))


def build_runner(rt: Runtime) -> GenerationRunner:
    w = rt.settings.worker
    breakers: dict[str, Breaker] = {}
    kinds: dict[str, KindRuntime] = {}
    for name, (kind, loaded) in rt.core.plugins.kinds.items():
        # One breaker per backend, keyed as the rows are: the bot reads the breaker of ``gen.backend``.
        for backend in kind.lines:
            if backend not in breakers:
                breakers[backend] = build_breaker(rt, backend)
        kinds[name] = KindRuntime(kind, {b: breakers[b] for b in kind.lines}, loaded.settings)
    return GenerationRunner(
        store=rt.store,
        queue=rt.queue,
        blobs=rt.blobs,
        kinds=kinds,
        backend_timeout_s=w.backend_timeout_s,
        progress_interval_s=w.progress_interval_s,
        max_running=rt.settings.quota.max_running,
        job_timeout_s=w.job_timeout_s,
        defer_slice_s=defer_slice_s(w.breaker_reset_s),
        failover_after_s=w.failover_after_s,
    )


#: A renderer's consumer that has read nothing for this long, and holds no pending event, is a
#: stopped bot's: the next bot to start removes it (a live renderer reads every few seconds).
STOPPED_CONSUMER_IDLE_MS = 10 * 60 * 1000


class PlatformWatch:
    """Whether a bot's session with its platform is up (``/readyz``): the local chat or Slack's
    app once started, Discord's gateway while it is connected and ready."""

    def __init__(self) -> None:
        self.probe: Callable[[], bool] = lambda: False

    async def check(self) -> None:
        if not self.probe():
            raise RuntimeError("the session with the chat platform is not up")


@contextlib.asynccontextmanager
async def ops_running(
    rt: Runtime, *, watch: PlatformWatch | None = None, lines: Iterable[str] = ()
) -> AsyncIterator[int | None]:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` (:mod:`bot.ops`) on ``ops.host:ops.port``
    while inside; yields the port (None: ``GENBOT_OPS__PORT`` is unset, nothing is served). A bot
    passes its ``watch``; a worker the ``lines`` it serves (their breakers are checked)."""
    settings = rt.settings.ops
    if settings.port is None:
        yield None
        return
    checks: dict[str, Check] = {"redis": rt.redis.ping, "database": db.ping}
    if watch is not None:
        checks["platform"] = watch.check
    for line in lines:
        checks[f"breaker {line}"] = functools.partial(_breaker_closed, rt.queue, line)

    async def refresh() -> None:
        for line in await rt.queue.lines():
            QUEUE_DEPTH.labels(line).set(await rt.queue.depth(line))
            BREAKER_OPEN.labels(line).set(0 if await rt.queue.backend_down(line) is None else 1)

    runner, port = await serve_ops(Ops(checks, refresh), settings.host, settings.port)
    log.info("health and metrics on http://%s:%d (/healthz, /readyz, /metrics)", settings.host, port)
    try:
        yield port
    finally:
        await runner.cleanup()


async def _breaker_closed(queue: RedisJobQueue, line: str) -> None:
    retry_in = await queue.backend_down(line)
    if retry_in is not None:
        raise RuntimeError(f"the service is failing: its breaker is open (next try in {retry_in:.0f} s)")


async def serve_bot(
    rt: Runtime,
    stop: asyncio.Event,
    on_listening: Callable[[int], object] | None = None,
    watch: PlatformWatch | None = None,
) -> None:
    """Run the chat adapter and the renderer until ``stop`` is set. ``on_listening`` gets the
    port the adapter listens on (the local chat, Slack's HTTP mode) once it accepts connections.

    Stopping goes in this order, so that no acknowledged command is stranded: stop taking
    commands, let the acknowledged ones finish (each posts its status message and links it to its
    row), then flush the renders, then close."""
    if rt.settings.platform is Platform.DISCORD:
        await serve_discord(rt, stop, watch)
        return
    frontend = build_frontend(rt)
    renderer = build_renderer(rt, frontend.adapter)
    await renderer.feed.ensure_group()
    await renderer.feed.forget_idle_consumers(STOPPED_CONSUMER_IDLE_MS)
    renders_stop = asyncio.Event()
    try:
        port = await frontend.start()
        if watch is not None:
            watch.probe = lambda: True
        if on_listening is not None and port is not None:
            on_listening(port)
        sweeping = asyncio.create_task(start_sweep(rt), name="genbot-start-sweep")
        render_task = asyncio.create_task(renderer.run(renders_stop), name="genbot-renderer")
        revivals_stop = asyncio.Event()
        revivals = asyncio.create_task(
            revive_loop(rt, frontend.adapter.platform, frontend.revive, revivals_stop), name="genbot-revive"
        )
        stopper = asyncio.create_task(stop.wait())
        try:
            # The renderer only returns once told to; if it dies instead, so does the process
            # (a supervisor restarts it) rather than chatting on with frozen messages.
            await asyncio.wait({render_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not render_task.done():
                revivals_stop.set()  # no command of a dead bot is taken up any more...
                await frontend.quiesce()  # ...and those taken, as the rest, finish (or are cut)
                await _ended(revivals)
                renders_stop.set()
            await render_task
        finally:
            stopper.cancel()
            for task in (render_task, revivals, sweeping):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        if watch is not None:
            watch.probe = lambda: False
        await frontend.stop()


async def start_sweep(rt: Runtime) -> None:
    """A starting bot's sweep (``Genbot.reconcile``: what Redis lost goes back in line), run
    beside its listening, never before it: with many queued rows a bot that swept first answered
    nobody for seconds. Nothing waits for it: a submit that finds Redis's tickets lost seeds them
    itself, and the workers' sweepers run it every minute too."""
    try:
        healed = await rt.core.reconcile()
    except Exception:
        log.warning("the start-up sweep failed; the workers' sweep runs every minute", exc_info=True)
    else:
        log.debug("start-up sweep: %d generations healed", healed)


async def _ended(task: asyncio.Task[None]) -> None:
    """Wait for ``task``; its being cancelled (a stop that cut it short) is no error here, unless
    the task waiting is itself being cancelled."""
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def revive_loop(
    rt: Runtime,
    platform: str,
    revive: Callable[[InboxEntry], Awaitable[None]] | None,
    stop: asyncio.Event,
) -> None:
    """Until ``stop``: every few seconds, run again the commands another bot of ``platform``
    acknowledged and died before finishing (:meth:`Genbot.revive_commands`). A failed round (Redis
    or the database away) is logged once and tried again."""
    if revive is None:
        return
    every = min(rt.settings.renderer.adopt_after_s / 2, REVIVE_EVERY_S)
    failing = False
    while not stop.is_set():
        try:
            await rt.core.revive_commands(platform, revive, stop=stop)
            failing = False
        except Exception:
            if not failing:
                log.warning("running again the commands of stopped bots failed; trying again", exc_info=True)
            failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def serve_discord(rt: Runtime, stop: asyncio.Event, watch: PlatformWatch | None = None) -> None:
    """Run the Discord client (all shards, one process) and the renderer, which edits through the
    client's HTTP client, until ``stop`` is set. Commands are not synced here: ``genbot discord
    sync`` does that, once per change."""
    async with discord_session(rt) as client:
        if watch is not None:
            watch.probe = lambda: client.is_ready() and not client.is_closed()
        renderer = build_renderer(rt, client.chat)
        await renderer.feed.ensure_group()
        await renderer.feed.forget_idle_consumers(STOPPED_CONSUMER_IDLE_MS)
        renders_stop = asyncio.Event()
        revivals_stop = asyncio.Event()
        gateway = asyncio.create_task(client.connect(reconnect=True), name="genbot-discord-gateway")
        sweeping = asyncio.create_task(start_sweep(rt), name="genbot-start-sweep")
        render_task = asyncio.create_task(renderer.run(renders_stop), name="genbot-renderer")
        revivals = asyncio.create_task(
            revive_loop(rt, client.chat.platform, client.revive, revivals_stop), name="genbot-revive"
        )
        stopper = asyncio.create_task(stop.wait())
        tasks = {gateway, render_task, revivals, stopper}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopper}:
                task.result()  # a dead gateway or renderer ends the process (a supervisor restarts it)
            # Stopping: the gateway stays up while the acknowledged commands finish (new ones are
            # answered "restarting"), then the renders are flushed, then everything closes.
            revivals_stop.set()
            await client.inflight.drain()
            await _ended(revivals)
        finally:
            stop.set()
            renders_stop.set()
            revivals_stop.set()
            for task in (*tasks, sweeping):
                if not task.done() and task is not render_task:
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(render_task, 10)


def slack_manifest(settings: Settings) -> str:
    """The Slack app manifest for this deployment's plugins (:func:`adapters.slack.manifest.app_manifest`)."""
    from adapters.slack.manifest import app_manifest

    return app_manifest(all_specs(plugins_of(settings)))


async def sync_discord_commands(rt: Runtime, guild: int | None = None) -> int:
    """Register the slash commands with Discord: globally, or in one guild (instant, for testing).
    Returns how many were registered. Explicit, not on every start: creates are rate limited."""
    async with discord_session(rt) as client:
        return await client.sync_commands(guild)


async def serve_worker(rt: Runtime, stop: asyncio.Event) -> None:
    """Run an arq worker per line served (:func:`jobs.worker.served_lines`) and the sweep until
    ``stop`` is set. Running jobs are cancelled and go back to the queue (see
    :class:`jobs.runner.GenerationRunner`)."""
    runner = build_runner(rt)
    lines = worker_lines(rt)
    workers = [
        *(
            build_worker(
                rt.settings, runner=runner, queue=rt.queue, line=line, concurrency=jobs, handle_signals=False
            )
            for line, jobs in lines.items()
        ),
        build_sweeper(
            rt.settings,
            reconcile=rt.core.reconcile,
            fail_over=rt.core.fail_over,
            prune_blobs=(
                functools.partial(prune_blobs, rt.blobs, rt.settings.blobs.keep_days)
                if rt.settings.blobs.keep_days > 0
                else None
            ),
            handle_signals=False,
        ),
    ]
    tasks = [asyncio.create_task(w.async_run(), name=f"genbot-{w.queue_name}") for w in workers]
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        for worker in workers:
            await close_worker(worker)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
