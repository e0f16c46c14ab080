"""Platform-neutral domain types: what a request is, where it stands, and what a message shows."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED})
ACTIVE = frozenset({State.QUEUED, State.RUNNING})

#: The state machine. ``running -> queued`` only for a retry (attempts + 1); terminal states are final.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.FAILED}),
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED, State.QUEUED}),
}


def sources_of(target: State) -> frozenset[State]:
    """The states from which ``target`` may be entered."""
    return frozenset(src for src, dsts in TRANSITIONS.items() if target in dsts)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who sent a command: a member of one workspace (Slack) or guild (Discord) or the local chat."""

    platform: str
    workspace: str
    user_id: str
    display_name: str
    is_admin: bool = False

    @property
    def member(self) -> str:
        """``platform:workspace:user``: the member, scoped to their workspace."""
        return f"{self.platform}:{self.workspace}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Quota:
    """The limits one submission is checked against, atomically with taking its place."""

    member: str  # Actor.member
    workspace: tuple[str, str]  # (platform, workspace): a paused one takes no new jobs
    max_queued: int
    rate_count: int
    rate_window_s: int
    global_max: int
    exempt: bool = False  # an admin exempt from the per-member limits
    max_running: int = 2**31  # the member's jobs beyond this many running wait aside (everyone)


@dataclass(frozen=True, slots=True)
class Ban:
    platform: str
    workspace: str
    user_id: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None

    @property
    def member(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor_id: str
    actor_name: str
    action: str
    target: str | None
    reason: str | None
    details: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Stats:
    """A workspace's last hours: counts by final state and error code, mean wait and run times."""

    submitted: int
    succeeded: int
    by_code: dict[str, int]
    active: int
    mean_wait_s: float | None
    mean_run_s: float | None


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A slash command, translated from the platform payload. ``options`` are raw strings."""

    actor: Actor
    channel: str
    name: str
    options: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "actor": asdict(self.actor),
            "channel": self.channel,
            "name": self.name,
            "options": self.options,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CommandRequest:
        return cls(Actor(**data["actor"]), str(data["channel"]), str(data["name"]), dict(data["options"]))


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """A job about to be queued: of which ``kind`` (a plugin's job kind), the ``text`` its status
    message quotes, the ``options`` its job function reads (JSON values), the ``backend`` whose
    breaker and ETA it shares, and ``look``: how its status message reads (see :data:`LOOK`)."""

    actor: Actor
    channel: str
    kind: str
    text: str
    options: dict[str, Any]
    backend: str
    look: dict[str, Any] = field(default_factory=dict)
    #: Idempotency key: inserting the same request twice (a retry) makes one row.
    request_key: str = field(default_factory=lambda: uuid.uuid4().hex)


#: The key of a row's ``meta`` that holds how its status message reads, set once at submit from
#: its job kind: ``verb`` ("Generating"), ``details`` (the small line), ``reroll`` (whether a
#: finished job offers one). The views read it, so no renderer needs the plugins.
LOOK = "look"


@dataclass(frozen=True, slots=True)
class Generation:
    """A snapshot of one generation row: everything needed to re-render its status message."""

    id: int
    platform: str
    workspace: str
    channel: str
    user_id: str
    user_name: str
    #: The job's text, as its status message quotes it (a prompt, a question).
    prompt: str
    options: dict[str, Any]
    backend: str
    state: State
    error_code: str | None
    attempts: int
    ticket: int | None
    result_key: str | None
    message: dict[str, Any]
    meta: dict[str, Any]
    version: int
    created_at: datetime
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None
    #: The plugin job kind that runs it (``imagine``: genbot's own image generation).
    kind: str = "imagine"

    @property
    def member(self) -> str:
        """The member who asked, as :attr:`Actor.member`."""
        return f"{self.platform}:{self.workspace}:{self.user_id}"

    @property
    def look(self) -> dict[str, Any]:
        """How its status message reads (see :data:`LOOK`)."""
        look = self.meta.get(LOOK)
        return look if isinstance(look, dict) else {}


JOB_ID_PREFIX = "gen:"


def job_id_for(generation_id: int) -> str:
    """The arq job id of a generation: one id, so enqueueing twice is a no-op."""
    return f"{JOB_ID_PREFIX}{generation_id}"


@dataclass(frozen=True, slots=True)
class ErrorView:
    code: str
    title: str
    what: str
    todo: str


@dataclass(frozen=True, slots=True)
class Button:
    action: str
    label: str
    style: str = "secondary"


@dataclass(frozen=True, slots=True)
class ResultFile:
    """A file a finished job's status message carries besides its image: where it is in the blob
    store, the name it is shown under, its type and size (bytes), and whether it is a picture."""

    key: str
    name: str
    content_type: str
    size: int

    @property
    def image(self) -> bool:
        return self.content_type.startswith("image/")


@dataclass(frozen=True, slots=True)
class StatusView:
    """What a status message shows, before any platform turns it into embeds or blocks.

    Text fields hold member text as is; each adapter escapes it for its platform.
    ``preview_key`` and ``image_key`` name blobs in the blob store.
    """

    job: int
    state: State
    headline: str
    prompt: str
    details: str
    requested_by: str
    progress: float | None = None
    preview_key: str | None = None
    image_key: str | None = None
    #: A job's text: an answer as it streams in, then the whole of it.
    text: str | None = None
    note: str | None = None
    error: ErrorView | None = None
    buttons: tuple[Button, ...] = field(default_factory=tuple)
    #: The job kind: the command that started it, as the local chat shows it.
    kind: str = "imagine"
    #: How long a waiting job should wait still ("about 40 s", "3-4 min"); shown after the
    #: headline. A change of it alone is no reason to edit a message (see ``bot.views``).
    wait: str | None = None
    #: The files a finished job's result carries besides ``image_key`` (several images; a file).
    files: tuple[ResultFile, ...] = field(default_factory=tuple)

    @property
    def title(self) -> str:
        """The headline with the wait, as a member reads it."""
        return f"{self.headline} · {self.wait}" if self.wait else self.headline


#: Secrets a :class:`MessageRef`'s ``extra`` may hold only while they are valid, each with the key
#: of its expiry (epoch seconds): Discord's interaction token (15 minutes) and, for an adapter that
#: keeps one, a Slack ``response_url`` (30 minutes). The sweep removes expired ones from the rows.
EXPIRING_SECRETS: dict[str, str] = {"token": "token_expires", "response_url": "response_url_expires"}
#: The longest any of them lives.
SECRET_LIFETIME_S = 30 * 60


@dataclass(frozen=True, slots=True)
class MessageRef:
    """Where a status message lives on its platform. Stored in the row's ``message`` JSON."""

    platform: str
    channel: str
    message_id: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "channel": self.channel,
            "message_id": self.message_id,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MessageRef | None:
        if not data.get("message_id"):
            return None
        return cls(
            platform=str(data.get("platform", "")),
            channel=str(data.get("channel", "")),
            message_id=str(data["message_id"]),
            extra=dict(data.get("extra") or {}),
        )
