"""genbot's plugin API: everything a plugin imports, from this one module.

A plugin is one :class:`Plugin` value: its commands, its job kinds and, optionally, the model of its
settings section (``GENBOT_PLUGINS__<NAME>__*``). genbot finds it through the ``genbot.plugins``
entry-point group of an installed package, or through ``GENBOT_PLUGINS__MODULES`` (dotted paths
``package.module:attribute``), and gives every job kind, with no code of the plugin's own: a row with
merge updates, a ticket and an exact position, the live status message on Discord, Slack and the
local chat, the cancel button, quotas, bans, blocked terms on its text options, pause, the sweep, a
circuit breaker, the audit log and ``/admin queue|stats``.

A minimal plugin (see ``docs/plugins.md`` and ``examples/``)::

    from bot.api import Command, Job, JobKind, Option, Plugin, TextResult

    async def shout(job: Job) -> TextResult:
        return TextResult(job.text.upper())

    plugin = Plugin(
        name="shout",
        commands=(Command("shout", "Say it louder", (Option("text", "string", "What", required=True),),
                          job="shout"),),
        jobs=(JobKind("shout", shout, verb="Shouting"),),
    )

The names here are stable: a release that changes one says so in the changelog and keeps the old name
working for one release.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from bot.attachments import Attachment
from bot.commands import OptionSpec as Option
from bot.config import Settings
from bot.config import StrList as ListSetting
from bot.errors import ErrorCode, GenbotError
from bot.models import Actor
from bot.ports import BlobStore, FileResult, ImageResult, ImagesResult, JobStopped, Refused, TextResult

__all__ = [
    "Actor",
    "Attachment",
    "Call",
    "Command",
    "FileResult",
    "ImageResult",
    "ImagesResult",
    "Invalid",
    "Job",
    "JobKind",
    "JobRequest",
    "JobStopped",
    "ListSetting",
    "Option",
    "Plugin",
    "Refused",
    "Result",
    "Settings",
    "TextResult",
]

#: What a job function returns.
Result = ImageResult | ImagesResult | TextResult | FileResult


class Invalid(GenbotError):
    """What a plugin raises for an option it refuses: the member reads ``sentence`` (one sentence
    saying what to give instead), and nothing is queued."""

    def __init__(self, sentence: str) -> None:
        super().__init__(ErrorCode.INVALID_OPTION, sentence)


@dataclass(frozen=True, slots=True)
class Call:
    """One use of a command: who, where, and the options as parsed (see :class:`Option`: text as
    ``str``, whole numbers as ``int``, numbers as ``float``, booleans as ``bool``, a member as their
    platform id, a file (``attachment`` or ``image``) as an :class:`Attachment` already checked and
    kept for the job), plus the plugin's settings section (None without a model) and ``backend``:
    the line its job joins unless :class:`JobRequest` names another of its kind's ``backends``
    (the one the workspace's admins chose with ``/admin backend``, else the kind's ``backend``)."""

    actor: Actor
    channel: str
    options: Mapping[str, Any]
    settings: Any = None
    backend: str = ""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a job command queues: ``text`` is the line its status message quotes (a prompt, a
    question, a file name); ``options`` what the job function reads, as JSON values (an
    :class:`Attachment` is stored as JSON, read back by :meth:`Job.attachment`). Blocked terms
    are checked on every text option of the command, whatever ``prepare`` keeps. ``backend``: which
    of its kind's ``backends`` runs it (None: :attr:`Call.backend`)."""

    text: str
    options: Mapping[str, Any] = field(default_factory=dict)
    backend: str | None = None


class Job(Protocol):
    """A job as its function sees it, in the worker.

    Cancellation: a member's cancel, an admin's, a timeout or the worker stopping cancels the
    function's task (``asyncio.CancelledError``: let it propagate) or makes :meth:`progress` raise
    :class:`JobStopped`. Either way nothing the function does after it is shown."""

    #: The job number members see.
    id: int
    text: str
    options: Mapping[str, Any]
    #: The plugin's settings section, validated (None without a model).
    settings: Any
    #: The backend the job runs on: one of its kind's ``backends``.
    backend: str
    #: Where results and previews live; a job may keep blobs of its own under ``plugins/``.
    blobs: BlobStore

    def attachment(self, option: str) -> Attachment:
        """The file the member attached to ``option`` (an ``attachment`` or ``image`` option, or
        an :class:`Attachment` ``prepare`` kept under that name). Raises ``KeyError`` if none."""
        ...

    async def read(self, attachment: Attachment) -> bytes:
        """The bytes of ``attachment``. Raises ``FileNotFoundError`` if they are gone (its blob
        was removed): the job fails, and its service's breaker does not count it."""
        ...

    async def progress(
        self,
        step: int | None = None,
        total: int | None = None,
        *,
        text: str | None = None,
        preview: bytes | None = None,
        waiting: str | None = None,
    ) -> None:
        """Report how far the job is: ``step`` of ``total`` (the percent in the status message),
        the text so far (``text``: a streamed answer, shown as it grows) and a small JPEG or PNG
        ``preview``; or that it waits in its service's own line (``waiting``: ``"waiting on the
        Horde, #12, about 40 s"``, shown in the headline instead of the percent until a report
        with a step). Reports are thinned to one per ``worker.progress_interval_s`` (the last step
        always goes out). Raises :class:`JobStopped` once the job was cancelled."""
        ...


JobFunction = Callable[[Job], Awaitable[Result]]


def _no_reroll(options: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return None


def _no_details(options: Mapping[str, Any]) -> str:
    return ""


@dataclass(frozen=True, slots=True)
class JobKind:
    """A kind of job: its function and how its status message reads.

    ``backend``: the name of the service the function calls; jobs of one backend wait in one line
    (positions count the jobs ahead in it; the workers that serve it start them) and share a
    circuit breaker (it opens after ``worker.breaker_fail_max`` failures in a row, and waiting jobs
    then say that the service is unavailable) and an ETA. Defaults to the kind's name.
    ``backends``: for a kind whose function can call one of several services (:attr:`Job.backend`
    says which), their names; ``backend`` is then the default among them (the first if unset). A
    workspace's admins choose among them with ``/admin backend``, and a command may choose per job
    (:attr:`JobRequest.backend`).
    ``verb``: the running headline, "Generating · 40%". ``details``: the small line under the
    text (sizes, steps; the job number is added). ``reroll``: the options of a new job like this
    one, for the Reroll button a finished job shows (None, the default: no such button).
    """

    name: str
    run: JobFunction
    verb: str = "Working"
    backend: str | None = None
    details: Callable[[Mapping[str, Any]], str] = _no_details
    reroll: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] = _no_reroll
    backends: tuple[str, ...] = ()

    @property
    def backend_name(self) -> str:
        """The default backend (and line) of this kind's jobs."""
        return self.backend or (self.backends[0] if self.backends else self.name)

    @property
    def lines(self) -> tuple[str, ...]:
        """Every backend this kind's jobs may run on, the default first."""
        return (self.backend_name, *(b for b in self.backends if b != self.backend_name))

    @property
    def rerolls(self) -> bool:
        """Whether a finished job of this kind offers a Reroll."""
        return self.reroll is not _no_reroll


@dataclass(frozen=True, slots=True)
class Command:
    """A slash command, registered on every platform from this one spec.

    A **job command** names the job kind it queues (``job``); ``prepare`` turns its parsed options
    into a :class:`JobRequest`, raising :class:`Invalid` for what it refuses (default: the first
    text option is the text, every option is kept). Any other command has ``run``: it answers
    with one message (at most 1,800 characters), to the member alone unless ``public``; a
    banned member, or a blocked term in its text options, is refused first. ``run`` has half of
    ``GENBOT_RENDERER__ADOPT_AFTER_S`` to answer. ``run`` and ``prepare`` must be safe to run again:
    a command whose bot died is run again by another.
    ``admin`` commands are for the workspace's admins only, checked by the core on every call.
    """

    name: str
    description: str
    options: tuple[Option, ...] = ()
    job: str | None = None
    prepare: Callable[[Call], JobRequest] | None = None
    run: Callable[[Call], Awaitable[str]] | None = None
    admin: bool = False
    public: bool = False


@dataclass(frozen=True, slots=True)
class Plugin:
    """What a plugin gives genbot. ``name``: lowercase letters, digits and ``_`` (its settings
    are ``GENBOT_PLUGINS__<NAME>__*``, read into ``settings``, a pydantic model)."""

    name: str
    commands: tuple[Command, ...] = ()
    jobs: tuple[JobKind, ...] = ()
    settings: type[BaseModel] | None = None


#: An entry point (or a ``GENBOT_PLUGINS__MODULES`` path) names a :class:`Plugin`, or a callable
#: that takes genbot's settings and returns one (for a plugin that builds a client from them).
PluginFactory = Callable[[Any], Plugin]
