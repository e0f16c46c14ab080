"""One typed settings object, read once at start-up and passed down explicitly.

Every setting is an environment variable (or a line in `.env`) named ``GENBOT_<SECTION>__<NAME>``;
``.env.example`` lists them all with a comment. A bad value stops start-up with a message that names the
variable (see :func:`load_settings`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GENBOT_"
ENV_NESTED = "__"


class Platform(StrEnum):
    LOCAL = "local"
    DISCORD = "discord"
    SLACK = "slack"


class RedisSettings(BaseModel):
    url: str = Field("redis://127.0.0.1:6379/0", description="Redis for the queue, positions and events")
    key_prefix: str = Field("genbot", description="prefix of every genbot key; arq keeps its own")
    queue_name: str = Field("genbot:queue", description="arq queue of generation jobs")


class DatabaseSettings(BaseModel):
    url: str = Field(
        "sqlite://data/genbot.sqlite3", description="Tortoise URL: sqlite://... or postgres://..."
    )


class WorkerSettings(BaseModel):
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    job_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    backend_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    progress_interval_s: Annotated[float, Field(ge=0)] = 1.0
    breaker_fail_max: Annotated[int, Field(ge=1)] = 5
    breaker_reset_s: Annotated[float, Field(gt=0)] = 60.0
    stuck_after_s: Annotated[float, Field(gt=0)] = 300.0
    stuck_retries: Annotated[int, Field(ge=0, le=10)] = 1
    #: Minutes between sweeps; below 1, seconds count (0.1: every 6 s, for tests and small setups).
    sweep_every_min: Annotated[float, Field(ge=1 / 60, le=60)] = 1
    eta_window: Annotated[int, Field(ge=1, le=1000)] = 20
    default_run_s: Annotated[float, Field(gt=0)] = 15.0

    @model_validator(mode="after")
    def _job_outlives_backend_call(self) -> WorkerSettings:
        if self.job_timeout_s <= self.backend_timeout_s:
            raise ValueError("job_timeout_s must be longer than backend_timeout_s")
        return self


class BackendSettings(BaseModel):
    name: str = Field("demo", description="'demo' or a dotted path to an ImageBackend factory")
    demo_step_delay_s: Annotated[float, Field(ge=0)] = 0.4


class LimitsSettings(BaseModel):
    prompt_max: Annotated[int, Field(ge=1, le=4000)] = 1000
    sizes: list[str] = Field(default_factory=lambda: ["512x512", "768x768", "512x768", "768x512"])
    default_size: str = "512x512"
    steps_min: Annotated[int, Field(ge=1)] = 1
    steps_max: Annotated[int, Field(ge=1)] = 50
    default_steps: Annotated[int, Field(ge=1)] = 20

    @field_validator("sizes")
    @classmethod
    def _sizes_are_wxh(cls, sizes: list[str]) -> list[str]:
        if not sizes:
            raise ValueError("give at least one size")
        for size in sizes:
            width, _, height = size.partition("x")
            if not (width.isdigit() and height.isdigit()):
                raise ValueError(f"{size!r} is not WIDTHxHEIGHT")
        return sizes

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> LimitsSettings:
        if self.default_size not in self.sizes:
            raise ValueError(f"default_size {self.default_size!r} is not one of sizes")
        if not self.steps_min <= self.default_steps <= self.steps_max:
            raise ValueError("default_steps must lie between steps_min and steps_max")
        return self


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
    exact_positions: Annotated[int, Field(ge=1)] = 10
    far_refresh_s: Annotated[float, Field(ge=0)] = 10.0
    claim_idle_s: Annotated[float, Field(ge=0)] = 30.0


class LocalChatSettings(BaseModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    members: list[str] = Field(default_factory=lambda: ["Alice", "Bob", "Admin"])
    admins: list[str] = Field(default_factory=lambda: ["Admin"])
    #: Host names the chat answers to besides loopback and ``host`` (a name in front of it).
    allowed_hosts: list[str] = Field(default_factory=list)


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
    admin_user_ids: list[str] = Field(default_factory=list)
    admin_cache_s: Annotated[float, Field(ge=0)] = Field(
        300.0, description="seconds users.info's answer (workspace admin or owner) is kept; 0: always ask"
    )

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
    admin_role_ids: list[int] = Field(
        default_factory=list, description="members with one of these roles are genbot admins"
    )

    @field_validator("api_base_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/")


class BlobSettings(BaseModel):
    dir: Path = Path("data/blobs")


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
    redis: RedisSettings = Field(default_factory=RedisSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    renderer: RendererSettings = Field(default_factory=RendererSettings)
    local: LocalChatSettings = Field(default_factory=LocalChatSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    blobs: BlobSettings = Field(default_factory=BlobSettings)


class ConfigError(Exception):
    """A setting has a bad value; the message names the environment variable."""


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a pydantic error location, e.g. GENBOT_WORKER__CONCURRENCY."""
    parts = [str(part) for part in loc if not isinstance(part, int)]
    return ENV_PREFIX + ENV_NESTED.join(parts).upper()


def load_settings(**overrides: object) -> Settings:
    """Read the environment and `.env` once.

    Raises :class:`ConfigError` naming every bad variable and why.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"{env_name(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
