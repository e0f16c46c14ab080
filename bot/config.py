"""One typed settings object, read once at start-up and passed down explicitly.

Every setting is an environment variable (or a line in `.env`) named ``GENBOT_<SECTION>__<NAME>``;
``.env.example`` lists them all with a comment. :func:`load_settings` refuses what it cannot use, one
line per mistake, each naming the variable: a ``GENBOT_`` name that is not a setting (with the closest
one), a value that does not parse or is out of range. Names under ``GENBOT_TEST_`` are left to the
test suite and the benchmarks.

List settings take JSON (``["Alice","Bob"]``) or comma-separated items (``Alice,Bob``).
"""

from __future__ import annotations

import difflib
import errno
import json
import logging
import os
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, DotEnvSettingsSource, NoDecode, SettingsConfigDict, SettingsError

ENV_PREFIX = "GENBOT_"
ENV_NESTED = "__"
#: Variables of genbot's tests and benchmarks (``GENBOT_TEST_POSTGRES_URL``, ...): genbot ignores them.
ENV_RESERVED = "GENBOT_TEST_"

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REDIS_SCHEMES = ("redis", "rediss", "unix")
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql")


def _var(section: str, name: str) -> str:
    return f"{ENV_PREFIX}{section}{ENV_NESTED}{name}".upper()


def _list_value(value: object) -> object:
    """A list setting as the environment gives it: a JSON array, or comma-separated items (blank
    ones dropped). Anything else (a list passed in code) goes on to pydantic unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"not a JSON list ({exc.msg} at character {exc.pos + 1}); "
                'write ["a","b"] or a comma-separated list a,b'
            ) from None
    return [item.strip() for item in text.split(",") if item.strip()]


#: A list of strings from JSON or ``a,b,c`` (pydantic-settings would only try JSON).
StrList = Annotated[list[str], NoDecode, BeforeValidator(_list_value)]
#: A list of integers from JSON or ``1,2,3``.
IntList = Annotated[list[int], NoDecode, BeforeValidator(_list_value)]


def _port_of(netloc: str) -> str:
    """The port part of a URL's ``[user[:password]@]host[:port]``, or ``""``."""
    host = netloc.rpartition("@")[2]
    if host.startswith("["):  # [IPv6]:port
        return host.partition("]")[2].removeprefix(":")
    return host.partition(":")[2]


def display_url(url: str) -> str:
    """``url`` as it may be printed: without its password and without its query string."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    netloc = netloc.split("?", 1)[0]
    userinfo, _, host = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user + '@' if user else ''}{host}{slash}{tail.split('?', 1)[0]}"


class Platform(StrEnum):
    LOCAL = "local"
    DISCORD = "discord"
    SLACK = "slack"


class RedisSettings(BaseModel):
    url: str = Field("redis://127.0.0.1:6379/0", description="Redis for the queue, positions and events")
    key_prefix: str = Field("genbot", description="prefix of every genbot key; arq keeps its own")
    queue_name: str = Field("genbot:queue", description="arq queue of generation jobs")
    #: The most connections one pool of a process opens (a worker has one for the process, one per
    #: line it serves and one for its sweep); a command waits for a free one, then fails as Redis
    #: being away does. A pool opens connections only as commands need them, a few per worker.
    max_connections: Annotated[int, Field(ge=2, le=10_000)] = 50

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        """What arq's ``RedisSettings.from_dsn`` reads without raising (it parses with urllib too)."""
        if url.partition("://")[0] not in REDIS_SCHEMES:
            raise ValueError(
                "must be a redis://, rediss:// (TLS) or unix:// URL, such as redis://127.0.0.1:6379/0"
            )
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError:
            raise ValueError("has a host or port that cannot be read (redis://HOST:6379/0)") from None
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("unix:// needs the socket's path, such as unix:///run/redis/redis.sock")
            return url
        database = parse_qs(parts.query).get("db", [parts.path.lstrip("/")])[0]
        if database and not database.isdigit():
            raise ValueError(f"the database after the host must be a number (.../0), not {database!r}")
        return url


class DatabaseSettings(BaseModel):
    url: str = Field(
        "sqlite://data/genbot.sqlite3", description="Tortoise URL: sqlite://... or postgres://..."
    )
    #: PostgreSQL: the connections each process keeps open, and the most it opens at once (asyncpg's
    #: pool; a query waits for a free one). SQLite has one connection and ignores both.
    pool_min: Annotated[int, Field(ge=0, le=1000)] = 1
    pool_max: Annotated[int, Field(ge=1, le=1000)] = 5
    #: PostgreSQL: prepared statements asyncpg keeps per connection; 0 behind PgBouncer in
    #: transaction pooling (a statement prepared on one server connection is unknown to the next).
    statement_cache_size: Annotated[int, Field(ge=0, le=10_000)] = 100

    @field_validator("url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        """The two databases genbot runs on, spelt as Tortoise reads them."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in DATABASE_SCHEMES:
            raise ValueError(
                "genbot runs on SQLite or PostgreSQL: write sqlite://PATH (such as "
                "sqlite://data/genbot.sqlite3) or postgres://USER:PASSWORD@HOST:5432/DATABASE "
                "(postgresql:// works too)"
            )
        if scheme == "sqlite":
            if not rest.split("?", 1)[0]:
                raise ValueError("sqlite:// needs a file path, such as sqlite://data/genbot.sqlite3")
            return url
        port = _port_of(rest.split("/", 1)[0].split("?", 1)[0])
        if port and not port.isdigit():
            raise ValueError(f"the port must be a number (postgres://HOST:5432/DATABASE), not {port!r}")
        return url

    @model_validator(mode="after")
    def _pool_min_within_max(self) -> DatabaseSettings:
        if self.pool_min > self.pool_max:
            raise ValueError(
                f"{_var('database', 'pool_min')} ({self.pool_min}) must not be more than "
                f"{_var('database', 'pool_max')} ({self.pool_max})"
            )
        return self


#: The most jobs of one line a worker runs at once.
CONCURRENCY_MAX = 64


class WorkerSettings(BaseModel):
    concurrency: Annotated[int, Field(ge=1, le=CONCURRENCY_MAX)] = 1
    #: The lines (backends) this worker serves, ``name`` or ``name=jobs at once``; all if empty.
    lines: StrList = Field(default_factory=list)
    job_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    backend_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    progress_interval_s: Annotated[float, Field(ge=0)] = 1.0
    breaker_fail_max: Annotated[int, Field(ge=1)] = 5
    breaker_reset_s: Annotated[float, Field(gt=0)] = 60.0
    #: A running job whose heartbeat stopped this long ago (its worker died, or is cut off from
    #: the database) is taken over by the sweep and put back in line at its ticket. A running job
    #: beats every sixth of it.
    failover_after_s: Annotated[float, Field(ge=6, le=3600)] = 60.0
    stuck_retries: Annotated[int, Field(ge=0, le=10)] = 1
    #: Minutes between sweeps; below 1, seconds count (0.1: every 6 s, for tests and small setups).
    sweep_every_min: Annotated[float, Field(ge=1 / 60, le=60)] = 1
    eta_window: Annotated[int, Field(ge=1, le=1000)] = 20
    default_run_s: Annotated[float, Field(gt=0)] = 15.0

    @property
    def failover_check_s(self) -> int:
        """Seconds between two failover checks: a quarter of ``failover_after_s``, 1 to 60, and a
        divisor of 60 (arq's cron takes the seconds of a minute)."""
        wanted = max(1, min(60, int(self.failover_after_s / 4)))
        return max(d for d in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60) if d <= wanted)

    @property
    def failover_gap_s(self) -> float:
        """The longest gap between two failover checks that keeps their run unbroken: half the
        failover time, never less than two check intervals and a second. An outage shorter than
        the gap leaves every live run's beat younger than ``failover_after_s`` (a run beats every
        sixth of it); a longer one starts the watch over."""
        return max(self.failover_after_s / 2, 2 * self.failover_check_s + 1)

    @model_validator(mode="before")
    @classmethod
    def _stuck_after_is_failover_after(cls, data: Any) -> Any:
        """``STUCK_AFTER_S``, the old name of ``FAILOVER_AFTER_S``, is read for one release."""
        if isinstance(data, dict) and (old := data.get("stuck_after_s")) is not None:
            data = {k: v for k, v in data.items() if k != "stuck_after_s"}
            data.setdefault("failover_after_s", old)
            log.warning(
                "%s is now %s; the old name is read until the next release",
                _var("worker", "stuck_after_s"),
                _var("worker", "failover_after_s"),
            )
        return data

    @model_validator(mode="after")
    def _job_outlives_backend_call(self) -> WorkerSettings:
        if self.job_timeout_s <= self.backend_timeout_s:
            raise ValueError(
                f"{_var('worker', 'job_timeout_s')} ({self.job_timeout_s:g}) must be longer than "
                f"{_var('worker', 'backend_timeout_s')} ({self.backend_timeout_s:g})"
            )
        return self


class BackendSettings(BaseModel):
    name: str = Field(
        "demo",
        description="'demo', 'a1111', 'comfyui', 'openai', 'horde' or package.module:factory",
    )
    #: More backends a workspace (``/admin backend``) or a member (``/imagine backend:``) may
    #: choose, besides ``name`` (the default).
    choices: StrList = Field(default_factory=list)
    demo_step_delay_s: Annotated[float, Field(ge=0)] = 0.4


class LimitsSettings(BaseModel):
    """What members may give any command. (The image plugin's own limits, sizes and steps, are
    its section's, ``GENBOT_PLUGINS__IMAGINE__*``; their names here before plugins are read for one
    release: see :data:`MOVED`.)"""

    prompt_max: Annotated[int, Field(ge=1, le=4000)] = 1000
    #: The largest file a member may attach to a command (Discord's own default limit).
    attachment_max_bytes: Annotated[int, Field(ge=1, le=500 * 2**20)] = 10 * 2**20
    #: The most pixels a picture attached to an ``image`` option may have.
    image_pixels_max: Annotated[int, Field(ge=1, le=2**28)] = 4096 * 4096
    # Moved to the image plugin's section (MOVED); None: not set under the old name.
    sizes: StrList | None = None
    default_size: str | None = None
    steps_min: int | None = None
    steps_max: int | None = None
    default_steps: int | None = None


#: Settings that moved to a plugin's section, ``(section, name): plugin``: the old name
#: (``GENBOT_LIMITS__SIZES``) is read for one release, as the plugin's (``GENBOT_PLUGINS__IMAGINE__
#: SIZES``), which wins when both are set; a warning names the new one.
MOVED = {
    ("limits", key): "imagine" for key in ("sizes", "default_size", "steps_min", "steps_max", "default_steps")
}


class QuotaSettings(BaseModel):
    """Per-member and global limits, checked atomically in Redis at submission."""

    max_queued: Annotated[int, Field(ge=1)] = 3
    max_running: Annotated[int, Field(ge=1)] = 1
    rate_count: Annotated[int, Field(ge=1)] = 10
    rate_window_s: Annotated[int, Field(ge=1)] = 600
    global_max: Annotated[int, Field(ge=1)] = 500
    admins_exempt: bool = True


class ModerationSettings(BaseModel):
    """Blocked prompts: ``strikes`` of them within ``strike_window_min`` minutes give a member a
    timeout of ``timeout_min`` minutes (an automatic, temporary ban)."""

    strikes: Annotated[int, Field(ge=1)] = 3
    strike_window_min: Annotated[int, Field(ge=1)] = 10
    timeout_min: Annotated[int, Field(ge=1)] = 30
    confirm_s: Annotated[int, Field(ge=10)] = 120


class RendererSettings(BaseModel):
    batch: Annotated[int, Field(ge=1, le=1000)] = 100
    min_edit_interval_s: Annotated[float, Field(ge=0)] = 1.0
    exact_positions: Annotated[int, Field(ge=1)] = Field(
        10, description="places shown exactly at the head of the line; further back, 1-2-5 bands"
    )
    claim_idle_s: Annotated[float, Field(ge=0)] = 30.0
    #: A request whose status message is still not posted this long after it was made lost its
    #: bot (killed mid-command): the renderer posts the message. A command gives up posting its
    #: own after half of it, so that the two never both post.
    adopt_after_s: Annotated[float, Field(gt=0)] = 120.0


class LocalChatSettings(BaseModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    members: StrList = Field(default_factory=lambda: ["Alice", "Bob", "Admin"])
    admins: StrList = Field(default_factory=lambda: ["Admin"])
    #: Host names the chat answers to besides loopback and ``host`` (a name in front of it).
    allowed_hosts: StrList = Field(default_factory=list)


class SlackSettings(BaseModel):
    """The Slack app. Socket Mode when ``app_token`` is set, else HTTP mode (Slack POSTs the
    signed events to ``http_host:http_port`` + ``http_path``)."""

    bot_token: SecretStr = Field(SecretStr(""), description="xoxb-... bot token (both modes)")
    app_token: SecretStr = Field(SecretStr(""), description="xapp-... app-level token: Socket Mode")
    signing_secret: SecretStr = Field(SecretStr(""), description="verifies HTTP requests (HTTP mode)")
    api_base_url: str = Field("https://slack.com/api/", description="Web API base URL (GovSlack differs)")
    # Slack reaches HTTP mode through a public URL, usually a proxy on another host; every request
    # is signed and checked, so listening on all interfaces is the expected default.
    http_host: str = "0.0.0.0"  # noqa: S104
    http_port: Annotated[int, Field(ge=0, le=65535)] = 3000
    http_path: str = "/slack/events"
    thread_images: bool = True
    admin_user_ids: StrList = Field(default_factory=list)
    admin_cache_s: Annotated[float, Field(ge=0)] = Field(
        300.0, description="seconds users.info's answer (workspace admin or owner) is kept; 0: always ask"
    )
    channel_writes_per_s: Annotated[float, Field(gt=0)] = Field(
        1.0, description="message writes per second per channel (Slack: about 1, short bursts)"
    )
    channel_burst: Annotated[int, Field(ge=1)] = Field(2, description="writes at once in one channel")
    updates_per_min: Annotated[float, Field(gt=0)] = Field(
        50.0, description="chat.update calls per minute per workspace (Slack's Tier 3)"
    )
    updates_burst: Annotated[int, Field(ge=1)] = Field(8, description="chat.update calls at once")

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token.get_secret_value())


DISCORD_API = "https://discord.com/api/v10"


class DiscordSettings(BaseModel):
    """The Discord adapter. ``api_base_url`` moves REST (and, through its ``/gateway/bot``, the
    gateway) elsewhere: a rate-limit proxy such as nirn-proxy in production, a local fake in tests."""

    token: SecretStr = Field(SecretStr(""), description="the bot token (Bot tab of the application)")
    application_id: int | None = Field(None, description="the application id (General Information tab)")
    api_base_url: str = Field(DISCORD_API, description="REST base URL, API version included")
    shard_count: Annotated[int, Field(ge=1)] | None = Field(None, description="None: as Discord advises")
    admin_role_ids: IntList = Field(
        default_factory=list, description="members with one of these roles are genbot admins"
    )
    channel_writes_per_s: Annotated[float, Field(gt=0)] = Field(
        1.0, description="message posts and edits per second per channel (Discord: 5 per 5 s)"
    )
    channel_burst: Annotated[int, Field(ge=1)] = Field(4, description="writes at once in one channel")
    global_per_s: Annotated[float, Field(gt=0)] = Field(
        45.0, description="bot-token requests per second, all channels (Discord's global limit: 50)"
    )

    @field_validator("api_base_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/")


class OpsSettings(BaseModel):
    """Health, readiness and metrics over HTTP (:mod:`bot.ops`), off unless ``port`` is set."""

    host: str = "127.0.0.1"
    #: 0: a free port (it is logged); unset: no such server.
    port: Annotated[int, Field(ge=0, le=65535)] | None = None


class SentrySettings(BaseModel):
    """Errors and logged exceptions to Sentry (the ``sentry`` extra: :mod:`bot.sentry`), off unless
    ``dsn`` is set. The release is genbot's version (``genbot@0.1.0``)."""

    dsn: SecretStr = Field(
        SecretStr(""), description="the project's DSN, https://KEY@HOST/PROJECT; empty: nothing is sent"
    )
    environment: str = Field("", description="production, staging, ...; empty: Sentry's own (production)")
    traces_sample_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="the share of arq jobs and HTTP requests traced for Sentry's performance views"
    )

    @field_validator("dsn")
    @classmethod
    def _a_dsn(cls, dsn: SecretStr) -> SecretStr:
        """What the SDK would refuse at start-up with a traceback: said here, in one line."""
        value = dsn.get_secret_value()
        if not value:
            return dsn
        try:
            parts = urlsplit(value)
            _ = parts.port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.username or not parts.path[1:]:
            raise ValueError(
                "must be a Sentry DSN, https://KEY@HOST/PROJECT (the project's Client Keys page shows it)"
            )
        return dsn


class OtelSettings(BaseModel):
    """Trace spans of the jobs and the commands over OTLP/HTTP (the ``otel`` extra:
    :mod:`bot.tracing`), off unless ``enabled``. Where they go, the service's name, the sampling
    and the batching are the standard ``OTEL_*`` variables, which the SDK reads itself."""

    enabled: bool = False


class S3Settings(BaseModel):
    """An S3-compatible bucket for the blobs (``GENBOT_BLOBS__STORE=s3``, the ``s3`` extra:
    :mod:`storage.s3`). Without keys, the standard AWS credential chain finds them (``AWS_*``
    variables, ``~/.aws``, an instance or task role)."""

    bucket: str = Field("", description="the bucket's name; GENBOT_BLOBS__STORE=s3 needs it")
    endpoint_url: str = Field(
        "", description="the service's URL (MinIO, Cloudflare R2, Backblaze B2, ...); empty: AWS S3"
    )
    region: str = Field("", description="the bucket's region; empty: the AWS configuration's")
    access_key_id: str = ""
    secret_access_key: SecretStr = SecretStr("")
    prefix: str = Field("genbot/", description="the start of every key genbot writes in the bucket")

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, such as http://127.0.0.1:9000")
        return url

    @field_validator("prefix")
    @classmethod
    def _relative(cls, prefix: str) -> str:
        if prefix.startswith("/"):
            raise ValueError("must not start with '/' (keys are relative: genbot/ makes genbot/results/...)")
        return prefix

    @model_validator(mode="after")
    def _both_keys_or_neither(self) -> S3Settings:
        if bool(self.access_key_id) != bool(self.secret_access_key.get_secret_value()):
            raise ValueError(
                f"{_var('blobs', 's3__access_key_id')} and {_var('blobs', 's3__secret_access_key')} "
                "go together: set both, or neither to use the AWS credential chain"
            )
        return self


class BlobSettings(BaseModel):
    """Where images, previews and attached files are kept (:mod:`storage.blobs`)."""

    store: Literal["auto", "folder", "database", "s3"] = Field(
        "auto",
        description="'database' (every bot and worker shares it), 'folder' (GENBOT_BLOBS__DIR), "
        "'s3' (GENBOT_BLOBS__S3__*), or 'auto': the database when it is PostgreSQL, else the folder",
    )
    dir: Path = Path("data/blobs")
    keep_days: Annotated[float, Field(ge=0)] = Field(
        30.0,
        description="blobs (results, previews, attached files) last written longer ago than this are "
        "removed by the sweep, hourly; 0 keeps them forever",
    )
    s3: S3Settings = Field(default_factory=S3Settings)

    @model_validator(mode="after")
    def _a_bucket_for_s3(self) -> BlobSettings:
        if self.store == "s3" and not self.s3.bucket:
            raise ValueError(
                f"{_var('blobs', 's3__bucket')}: set the bucket's name to keep blobs in S3 "
                f"({_var('blobs', 'store')}=s3)"
            )
        if self.store != "s3" and self.s3.bucket:
            log.warning(
                "%s is set but %s is %r: the bucket is not used (set %s=s3 to use it)",
                _var("blobs", "s3__bucket"),
                _var("blobs", "store"),
                self.store,
                _var("blobs", "store"),
            )
        return self

    def in_database(self, database_url: str) -> bool:
        """Whether blobs go to the database at ``database_url``."""
        if self.store == "auto":
            return database_url.startswith(("postgres://", "postgresql://"))
        return self.store == "database"


#: Where the settings of the plugin named ``<name>`` live: ``GENBOT_PLUGINS__<NAME>__<KEY>``.
PLUGIN_SECTIONS = f"{ENV_PREFIX}PLUGINS{ENV_NESTED}"
#: Where the settings of the image service named ``<name>`` live: ``GENBOT_BACKENDS__<NAME>__<KEY>``.
BACKEND_SECTIONS = f"{ENV_PREFIX}BACKENDS{ENV_NESTED}"


class Sections(BaseModel):
    """Settings sections keyed by their owner's name (``GENBOT_<GROUP>__<NAME>__<KEY>``), each read
    into its owner's own model when the owner loads (:meth:`validated`): genbot does not know their
    keys, so they are kept as given until then."""

    model_config = ConfigDict(extra="allow")

    #: The variables' common prefix (``GENBOT_PLUGINS__``) and what owns a section (``plugin``).
    PREFIX: ClassVar[str]
    OWNER: ClassVar[str]

    def section(self, name: str) -> dict[str, Any]:
        """The raw settings of ``name`` (keys lowercased, as pydantic-settings reads them)."""
        value = (self.model_extra or {}).get(name.lower(), {})
        return dict(value) if isinstance(value, dict) else {}

    def sections(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())

    def validated(self, name: str, model: type[M]) -> M:
        """``name``'s section read into its ``model``. Raises :class:`ConfigError` naming the
        variable at fault (``GENBOT_PLUGINS__ASK__WORD_DELAY_S: ...``)."""
        try:
            return model.model_validate(self.section(name))
        except ValidationError as exc:
            error = exc.errors()[0]
            message = "is not a setting of it" if error["type"] == "extra_forbidden" else _message(error)
            if message.startswith(ENV_PREFIX):  # a rule between settings names them itself
                raise ConfigError(f"{message} ({self.OWNER} {name!r})") from None
            key = ".".join(str(part) for part in error["loc"]) or "*"
            variable = f"{self.PREFIX}{name}{ENV_NESTED}{key}".upper()
            raise ConfigError(f"{variable}: {message} ({self.OWNER} {name!r})") from None


class PluginsSettings(Sections):
    """``modules``: plugins to load besides the installed ones (the ``genbot.plugins`` entry
    points), as ``package.module:attribute``. Every other key is one plugin's own section
    (``GENBOT_PLUGINS__ASK__MODEL`` is ``model`` of ``ask``), which the plugin's model validates
    when it loads (:mod:`bot.plugins`)."""

    PREFIX: ClassVar[str] = PLUGIN_SECTIONS
    OWNER: ClassVar[str] = "plugin"

    modules: StrList = Field(default_factory=list)


class BackendsSettings(Sections):
    """Each image service's own section (``GENBOT_BACKENDS__A1111__URL`` is ``url`` of ``a1111``),
    which its backend's model validates when the image plugin loads (:mod:`jobs.backends`)."""

    PREFIX: ClassVar[str] = BACKEND_SECTIONS
    OWNER: ClassVar[str] = "backend"


class Settings(BaseSettings):
    """All of genbot's settings. Construct with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        env_file=".env",
        extra="ignore",
        # `GENBOT_DISCORD__TOKEN=` (as in .env.example) means "not set", not an empty value to parse.
        env_ignore_empty=True,
    )

    platform: Platform = Platform.LOCAL
    log_level: str = "INFO"
    #: ``text`` (a line per record) or ``json`` (an object per line, for a log collector).
    log_format: Literal["text", "json"] = "text"
    ops: OpsSettings = Field(default_factory=OpsSettings)
    sentry: SentrySettings = Field(default_factory=SentrySettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    backends: BackendsSettings = Field(default_factory=BackendsSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    renderer: RendererSettings = Field(default_factory=RendererSettings)
    local: LocalChatSettings = Field(default_factory=LocalChatSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    blobs: BlobSettings = Field(default_factory=BlobSettings)
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)

    @field_validator("log_level")
    @classmethod
    def _a_logging_level(cls, level: str) -> str:
        if level.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level.upper()

    @model_validator(mode="after")
    def _moved_settings_to_their_plugins(self) -> Settings:
        """A setting under its old name (:data:`MOVED`) into its plugin's section, unless that
        sets it too; a warning names the new one."""
        sections = self.plugins.__pydantic_extra__
        assert sections is not None  # extra="allow"
        for (section, key), plugin in MOVED.items():
            value = getattr(getattr(self, section), key)
            if value is None:
                continue
            new = f"{PLUGIN_SECTIONS}{plugin}{ENV_NESTED}{key}".upper()
            log.warning("%s is now %s; the old name is read until the next release", _var(section, key), new)
            own = sections.get(plugin)
            own = dict(own) if isinstance(own, dict) else {}
            own.setdefault(key, value)
            sections[plugin] = own
        return self


class ConfigError(Exception):
    """A setting is wrong, or missing for what was asked. One line per mistake, each naming the
    variable (or the command) that fixes it. The command line exits with 2."""


class StartupError(Exception):
    """Start-up cannot go on for a reason outside the settings' syntax: a server out of reach, a
    port or a data folder in use. One line naming what to fix. The command line exits with 1."""

    @classmethod
    def cannot_listen(
        cls, exc: OSError, host: str, port: int, host_setting: str, port_setting: str
    ) -> StartupError:
        """A server socket that could not be opened, naming the setting that moves it."""
        if exc.errno == errno.EADDRINUSE:
            return cls(f"port {port} on {host} is in use: set {port_setting} to a free port")
        reason = exc.strerror or str(exc)
        return cls(f"cannot listen on {host}:{port} ({reason}): check {host_setting} and {port_setting}")


def setting_names(*, moved: bool = False) -> list[str]:
    """Every variable genbot reads, ``GENBOT_PLATFORM`` and ``GENBOT_<SECTION>__<NAME>``, in the
    order of :class:`Settings` (with ``moved``: the old names of :data:`MOVED` too). A section
    alone (``GENBOT_REDIS`` as one JSON object, which pydantic-settings would read) is not one of
    them: :func:`load_settings` refuses it."""
    names = []
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            subs = [sub for sub in section.model_fields if moved or (name, sub) not in MOVED]
            names += [_var(name, sub) for sub in _nested_names(section, subs)]
        else:
            names.append(f"{ENV_PREFIX}{name}".upper())
    return names


def _nested_names(section: type[BaseModel], subs: list[str]) -> list[str]:
    """``subs`` of ``section``, a sub-section (``s3`` of ``blobs``) as each of its own names
    (``s3__bucket``, ...)."""
    names = []
    for sub in subs:
        inner = section.model_fields[sub].annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            names += [f"{sub}{ENV_NESTED}{name}" for name in _nested_names(inner, list(inner.model_fields))]
        else:
            names.append(sub)
    return names


def _not_a_setting(name: str, where: str, known: list[str]) -> str:
    # Compared without the shared prefix, which would make every name look alike.
    tails = {known_name.removeprefix(ENV_PREFIX): known_name for known_name in known}
    close = difflib.get_close_matches(name.upper()[len(ENV_PREFIX) :], list(tails), n=1, cutoff=0.6)
    if close:
        return f"{name}{where} is not a setting; did you mean {tails[close[0]]}?"
    return (
        f"{name}{where} is not a setting (.env.example lists them all; "
        f"{ENV_RESERVED}* names are left to the tests)"
    )


def unknown_variables(
    environ: Iterable[str], dotenv: Iterable[str] = (), dotenv_name: str = ".env"
) -> list[str]:
    """One line for each ``GENBOT_`` name in ``environ`` or in the ``.env`` file that is not a
    setting (names compare case-insensitively, as pydantic-settings reads them), naming the
    closest setting. Names under :data:`ENV_RESERVED` are not genbot's and pass."""
    known = setting_names()
    known_set = set(setting_names(moved=True))
    lines = []
    for where, names in (("", environ), (f" in {dotenv_name}", dotenv)):
        for name in sorted(set(names)):
            upper = name.upper()
            if any(
                upper.startswith(group) and ENV_NESTED in upper.removeprefix(group)
                for group in (PLUGIN_SECTIONS, BACKEND_SECTIONS)
            ):
                continue  # a plugin's or a backend's own section: its owner checks it as it loads
            if upper.startswith(ENV_PREFIX) and not upper.startswith(ENV_RESERVED) and upper not in known_set:
                lines.append(_not_a_setting(name, where, known))
    return lines


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a pydantic error location, e.g. GENBOT_WORKER__CONCURRENCY."""
    parts = [str(part) for part in loc if not isinstance(part, int)]
    return ENV_PREFIX + ENV_NESTED.join(parts).upper()


def _message(error: ErrorDetails) -> str:
    """An error's sentence: a validator's own words, else pydantic's."""
    ctx = error.get("ctx") or {}
    return str(ctx["error"]) if error["type"] == "value_error" and "error" in ctx else error["msg"]


def _error_lines(errors: list[ErrorDetails]) -> list[str]:
    """One line per variable (its first error), naming it; an item of a list by its number."""
    lines: dict[str, str] = {}
    for error in errors:
        message = _message(error)
        if message.startswith(ENV_PREFIX):  # a rule between settings names them itself
            lines.setdefault(message, message)
            continue
        name = env_name(error["loc"])
        items = [part for part in error["loc"] if isinstance(part, int)]
        if items:
            message = f"item {items[-1] + 1} ({error['input']!r}): {message}"
        lines.setdefault(name, f"{name}: {message}")
    return list(lines.values())


def _dotenv_names(env_file: object) -> tuple[list[str], str]:
    """The names the ``.env`` file(s) define, read as pydantic-settings reads them, and how to
    call the file(s) in a message."""
    if isinstance(env_file, str | os.PathLike):
        files = [Path(env_file)]
    elif isinstance(env_file, Iterable):
        files = [Path(file) for file in env_file]
    else:
        return [], ".env"
    where = " / ".join(str(file) for file in files)
    try:
        source = DotEnvSettingsSource(Settings, env_file=files)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror})") from None
    return [name.upper() for name in source.env_vars], where  # pydantic-settings lowercases them


def load_settings(**overrides: object) -> Settings:
    """Read the environment and the ``.env`` file once (``_env_file=`` another file, or None).

    Raises :class:`ConfigError`, one line per mistake, each naming its variable: a ``GENBOT_``
    name that is not a setting, then (only when every name is right) every value that does not
    parse or breaks a rule. Keyword ``overrides`` win over both and are validated alike.
    """
    dotenv, dotenv_name = _dotenv_names(overrides.get("_env_file", Settings.model_config.get("env_file")))
    unknown = unknown_variables(os.environ, dotenv, dotenv_name)
    if unknown:
        raise ConfigError("\n".join(unknown))
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError("\n".join(_error_lines(exc.errors()))) from None
    except SettingsError as exc:  # a value pydantic-settings itself could not decode
        cause = exc.__cause__
        text = f"{exc} ({type(cause).__name__}: {cause})" if cause else str(exc)
        raise ConfigError(" ".join(text.split())) from None
