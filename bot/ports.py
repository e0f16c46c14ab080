"""The ports: one small protocol per outside world. The core imports these, never an SDK.

Concrete classes live in ``adapters/`` (chat platforms), ``jobs/`` (queue, events, backends) and
``storage/`` (database, blobs); ``bot.app`` wires them from the settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.errors import ErrorCode, ErrorText, GenbotError
from bot.models import (
    Actor,
    AuditEntry,
    Ban,
    CommandRequest,
    Generation,
    MessageRef,
    NewGeneration,
    Quota,
    State,
    Stats,
    StatusView,
)
from bot.moderation import BlockedTerm


class MessageGone(Exception):
    """The status message was deleted or can no longer be edited; the renderer posts a new one."""


class MessageUnreachable(GenbotError):
    """genbot may not post in the channel at all (no access, archived, ...): no retry fixes it.

    From a command's first post the member reads the sentence; the renderer stops updating that
    message (and logs why) instead of trying again and again."""

    def __init__(self, sentence: str) -> None:
        super().__init__(ErrorCode.CHAT_UNAVAILABLE, sentence)


#: A :class:`~bot.models.MessageRef` whose ``extra`` holds this key was posted without everything
#: its view shows (for example the image still to upload): the renderer edits it again at once.
PARTIAL = "partial"
#: A row's ``meta`` key: its command could not post the status message (a 429, an error, its bot
#: stopping) and handed that over to the renderers, which post it at once (first of all writes).
HANDED_OVER = "handed_over"


@dataclass(frozen=True)
class Rate:
    """A platform's budget for one kind of write: ``per_s`` on average, ``burst`` at once."""

    per_s: float
    burst: int


@dataclass(frozen=True)
class Spend:
    """What one platform call costs: ``cost`` tokens of the budget ``kind`` (a key of the
    adapter's :attr:`ChatAdapter.rates`) for one ``key`` (a channel, a workspace, ``""`` for a
    global budget)."""

    kind: str
    key: str
    cost: int = 1

    @property
    def scope(self) -> str:
        return f"{self.kind}:{self.key}"


class RateLimited(Exception):
    """The platform answered 429 (or its equivalent) for ``scope``: nothing was written. The
    scheduler holds that scope for ``retry_after`` seconds, in every bot process, and tries the
    write again then; nobody sleeps on it."""

    def __init__(self, scope: str, retry_after: float, ref: MessageRef | None = None) -> None:
        super().__init__(f"rate limited on {scope} for {retry_after:.1f} s")
        self.scope = scope
        self.retry_after = retry_after
        #: The message's reference with what was done before the 429 (an image's bytes uploaded),
        #: to store so that the next try resumes there.
        self.ref = ref


class NotYet(Exception):
    """The write can only succeed later (Slack shows a just-uploaded file after a moment): the
    reference in ``ref`` (possibly with what was done so far) is stored and the write is tried
    again in ``retry_after`` seconds."""

    def __init__(self, ref: MessageRef, retry_after: float) -> None:
        super().__init__(f"try again in {retry_after:.1f} s")
        self.ref = ref
        self.retry_after = retry_after


class Budgets(Protocol):
    """Write budgets shared by every bot process (token buckets), and holds after a 429."""

    async def take(self, spends: Sequence[Spend]) -> float:
        """Take every spend at once, or none: 0 when taken, else the seconds until they could be."""
        ...

    async def hold(self, scope: str, seconds: float) -> None:
        """Take nothing from ``scope`` (a :attr:`Spend.scope`) for ``seconds``."""
        ...


@dataclass(frozen=True, slots=True)
class RowUpdate:
    """A patch of one row's ``message`` and ``meta`` (RFC 7396; None: leave the column be).

    ``fenced``: a renderer's store of what a message shows (``meta["rendered"]``), made only while
    the row's ``meta["rendered"]`` is still ``rendered_was``, the digest it read before writing.
    Otherwise another renderer stored what it wrote meanwhile (this one's lease ran out), and which
    write landed last is not known: the row's digest is cleared instead, so the next render writes
    the message again."""

    generation_id: int
    message: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    fenced: bool = False
    rendered_was: str | None = None


@dataclass(frozen=True, slots=True)
class RunReport:
    """One running job's write, as a worker batches them (:meth:`GenerationStore.record_runs`):
    merge ``patch`` into the row's ``meta`` and stamp its heartbeat (``patch`` None: the heartbeat
    alone), only while the row is ``running`` at ``attempt``."""

    generation_id: int
    attempt: int
    patch: dict[str, Any] | None = None


class GenerationStore(Protocol):
    """The database: the source of truth for every generation."""

    async def create(self, new: NewGeneration) -> Generation: ...

    async def get(self, generation_id: int) -> Generation | None: ...

    async def get_many(self, ids: Sequence[int]) -> list[Generation]:
        """The generations of ``ids`` in the order given, each once; ids without a row are left
        out. Any number of ids: the store reads them in bounded slices."""
        ...

    async def update(
        self,
        generation_id: int,
        *,
        message: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        ticket: int | None = None,
    ) -> None:
        """In one atomic statement: deep-merge ``message`` and ``meta`` into the row's JSON
        documents (RFC 7396: ``None`` deletes a key) and set its ``ticket`` if it has none (a
        row's ticket never changes once set). Safe under concurrent writers: no writer's keys are
        lost."""
        ...

    async def update_many(self, updates: Sequence[RowUpdate]) -> set[int]:
        """:meth:`update` (``message`` and ``meta`` only) of several rows, in one statement.
        Returns the ids of the fenced updates refused (see :class:`RowUpdate`)."""
        ...

    async def update_message(self, generation_id: int, patch: dict[str, Any]) -> None:
        """Deep-merge ``patch`` into the row's ``message`` JSON; see :meth:`update`."""
        ...

    async def update_meta(self, generation_id: int, patch: dict[str, Any]) -> None:
        """Like :meth:`update_message`, for the ``meta`` JSON."""
        ...

    async def record_progress(
        self, generation_id: int, patch: dict[str, Any], *, attempt: int | None = None
    ) -> bool:
        """Merge ``patch`` into ``meta`` and beat the heartbeat, only while the row is running
        (and, with ``attempt``, only while it is that attempt's run).

        Returns False (and changes nothing) when the row is in any other state, so a late progress
        report never touches a finished generation, nor a run that was taken over the new one.
        """
        ...

    async def beat(self, generation_id: int, attempt: int) -> bool:
        """Stamp the heartbeat of the run ``attempt`` of the row, while it is running; False when
        the row is no longer that run's (it ended, was cancelled, or another worker took it over).
        Changes nothing else (not ``version``: nothing a member sees changed)."""
        ...

    async def record_runs(self, reports: Sequence[RunReport]) -> set[tuple[int, int]]:
        """:meth:`record_progress` (a report with a patch) and :meth:`beat` (one without) of many
        runs at once, in as few statements as the database allows (one per few hundred reports),
        each report with the same semantics as those two: fenced by its state and attempt, the
        patch deep-merged, ``version`` + 1 only where a patch was merged. At most one report per
        ``(generation_id, attempt)`` (merge them first). Returns the ``(generation_id, attempt)``
        of the reports written; the others' rows are no longer those runs'. Safe to retry."""
        ...

    async def claim_again(
        self, generation_id: int, attempt: int, *, stale_before: datetime
    ) -> Generation | None:
        """A worker found the job of a ``running`` row in its queue again (its worker died): take
        the run over as attempt ``attempt + 1``, only if the row is still at ``attempt`` and its
        heartbeat is older than ``stale_before`` (else another run is alive). Returns the claimed
        row, or None."""
        ...

    async def transition(
        self,
        generation_id: int,
        target: State,
        *,
        error_code: str | None = None,
        result_key: str | None = None,
        retry: bool = False,
        ticket: int | None = None,
        attempt: int | None = None,
        stale_before: datetime | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Generation | None:
        """Move the row to ``target`` if the state machine allows it from its current state
        (and, with ``attempt``, only if the row is still at that attempt: a run's writes are fenced
        by it, so a worker that was cut off and taken over cannot end the new run; with
        ``stale_before``, only if its heartbeat is older: a run that beats is not taken over).

        The check and the write are one atomic statement. Returns the new snapshot, or None when
        the transition was refused (the row was already elsewhere, for example terminal).
        ``retry`` (``running -> queued``) increments ``attempts``; ``ticket`` is stored if the row
        has none yet (a job that starts before its command stored it). ``meta``: a JSON patch
        deep-merged into the row's ``meta`` in the same statement (as :meth:`record_progress`
        merges one), written only if the transition is.
        """
        ...

    async def list_active(
        self, platform: str | None = None, *, finished_since: datetime | None = None
    ) -> list[Generation]:
        """Queued and running generations (and those finished since ``finished_since``), oldest
        first."""
        ...

    async def active_ids(self, platform: str, *, finished_since: datetime) -> list[int]:
        """The ids of the rows :meth:`list_active` returns for ``platform`` and ``finished_since``,
        ascending (oldest first): only ids, in one indexed query, so that tens of thousands of
        active rows can be read in slices with :meth:`get_many`."""
        ...

    async def list_for_user(
        self, platform: str, workspace: str, user_id: str, states: Sequence[State]
    ) -> list[Generation]: ...

    async def list_workspace(
        self, platform: str, workspace: str, states: Sequence[State]
    ) -> list[Generation]:
        """A workspace's generations in ``states``, oldest first."""
        ...

    async def claim_unposted(self, generation_id: int, *, stale_before: float) -> bool:
        """Claim the right to post the status message of a row that has none (its bot died
        before posting it), in one atomic statement: True for exactly one of concurrent callers.
        A claim older than ``stale_before`` (epoch seconds) is taken over (its claimer died)."""
        ...

    async def max_ticket(self) -> int:
        """The highest ticket any row holds (0 when none has one)."""
        ...

    async def next_ticket_epoch(self, at_least: int) -> int:
        """Count one more seed of the ticket counter: returns an epoch number above every one
        returned before and at least ``at_least`` (the first one ever: ``at_least``). Kept in the
        database, so that two losses of Redis in a row never start at the same epoch."""
        ...

    async def discard(self, generation_id: int) -> None:
        """Delete a row that never reached the queue (its submission was refused)."""
        ...

    async def stats(self, platform: str, workspace: str, since: datetime) -> Stats:
        """What the workspace asked for since ``since`` and how it ended."""
        ...

    async def list_queued(self) -> list[Generation]:
        """Every queued generation, oldest first; through an index on the state."""
        ...

    async def list_stuck(self, heartbeat_before: datetime) -> list[Generation]:
        """Running generations whose heartbeat is older than ``heartbeat_before``; through an
        index on the state and the heartbeat."""
        ...

    async def scrub_expired_secrets(
        self, now: datetime, *, platforms: Sequence[str], finished_since: datetime
    ) -> int:
        """Remove every secret of :data:`~bot.models.EXPIRING_SECRETS` that has expired by ``now``
        from the message references of the active rows and of the rows of ``platforms`` finished
        since ``finished_since``, in a few statements that read no other row. Returns how many
        rows changed. Safe under concurrent writers (a fresh secret is never removed)."""
        ...


class ModerationStore(Protocol):
    """Bans, blocked terms, paused workspaces and the audit log; each scoped to a workspace."""

    async def get_ban(self, platform: str, workspace: str, user_id: str) -> Ban | None:
        """The member's ban if it is in force (expired bans read as None)."""
        ...

    async def put_ban(self, ban: Ban) -> None:
        """Ban, or replace the member's ban."""
        ...

    async def delete_ban(self, platform: str, workspace: str, user_id: str) -> bool: ...

    async def list_bans(self, platform: str, workspace: str | None) -> list[Ban]:
        """Bans in force (of one workspace, or of all of the platform's with None), oldest first."""
        ...

    async def all_bans(self) -> list[Ban]:
        """Every ban in force, on every platform."""
        ...

    async def add_term(self, platform: str, workspace: str, term: BlockedTerm, created_by: str) -> bool:
        """False when the workspace already blocks that (normalised) term."""
        ...

    async def remove_term(self, platform: str, workspace: str, normalized: str) -> bool: ...

    async def list_terms(self, platform: str, workspace: str) -> list[BlockedTerm]: ...

    async def set_paused(self, platform: str, workspace: str, paused: bool, by: str) -> bool:
        """Returns whether it changed."""
        ...

    async def paused_workspaces(self) -> list[tuple[str, str]]: ...

    async def get_limits(self, platform: str, workspace: str) -> dict[str, int]:
        """The member limits the workspace set for itself (setting name to value)."""
        ...

    async def set_limits(
        self, platform: str, workspace: str, changes: dict[str, int | None], by: str
    ) -> dict[str, int]:
        """Merge ``changes`` into them (None: back to the deployment's); returns the result."""
        ...

    async def get_backend(self, platform: str, workspace: str) -> str | None:
        """The backend the workspace's admins chose for its jobs (None: the default)."""
        ...

    async def set_backend(self, platform: str, workspace: str, backend: str | None, by: str) -> None:
        """Choose the workspace's backend (None: back to the default)."""
        ...

    async def audit(
        self,
        actor: Actor,
        action: str,
        *,
        target: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append a row to the audit log."""
        ...

    async def list_audit(self, platform: str, workspace: str, limit: int) -> list[AuditEntry]:
        """The newest entries first."""
        ...


class QuotaRefused(Exception):
    """:meth:`JobQueue.submit` refused a new job: ``reason`` is ``banned``, ``paused``,
    ``global``, ``queued`` or ``rate``; ``retry_after_s`` says when the rate limit lets the member
    in again, ``until`` when a ban ends (None: until unbanned)."""

    def __init__(
        self, reason: str, retry_after_s: float | None = None, *, until: datetime | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.until = until


class QueueUnavailable(GenbotError):
    """The job queue (Redis) cannot be reached: it is down or restarting, and did not come back
    within the few seconds a command waits for it. Every :class:`JobQueue` and
    :class:`EventFeed` method raises it instead of the transport's own exception. Whatever the
    call was doing may or may not have happened; the sweep heals either way."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.QUEUE_UNAVAILABLE)


class TicketsLost(Exception):
    """:meth:`JobQueue.submit` needed a new ticket, but the ticket counter was not seeded in this
    life of the Redis server (Redis restarted, with or without its data, or lost the counter):
    nothing was written. Seed the counter from the database (:meth:`JobQueue.seed_tickets`),
    then submit again."""


@dataclass(frozen=True, slots=True)
class LineBasis:
    """What a waiting job's status needs of its line."""

    #: The mean run time (s) of the line's recent jobs (a default before any ended).
    mean_run_s: float
    #: How many jobs the line's live workers run at once (0: none is alive).
    capacity: int
    #: None while the backend's circuit breaker is closed; else the seconds until it lets a probe
    #: through (0: half-open).
    down_in: float | None


@dataclass(frozen=True, slots=True)
class QueuedState:
    """A queued row's job as Redis has it (what the sweep reads of every queued row)."""

    #: A worker holds it (it is starting, or waiting for the circuit breaker).
    held_by_worker: bool
    #: Its waiting entry and its arq job are there: it is in line.
    in_place: bool
    #: It is held aside: its member runs as many jobs as they may.
    held_aside: bool


class JobQueue(Protocol):
    """Positions and the job queue (Redis + arq). A job waits in the **line** of its backend
    (``line``: its row's ``backend``); positions count the jobs ahead in that line only."""

    async def submit(
        self, generation_id: int, *, line: str, ticket: int | None = None, quota: Quota | None = None
    ) -> tuple[int, int]:
        """Give the generation a ticket and a position in ``line``, then enqueue its job, atomically.

        Returns ``(ticket, position)``. Idempotent for one generation: a second call returns the
        existing ticket and does not enqueue twice. ``ticket`` re-uses a ticket the row already
        has (re-enqueueing after Redis lost its data keeps the old order). With ``quota`` (a new
        member submission) the same atomic step checks the pause and the limits first and raises
        :class:`QuotaRefused` having changed nothing. Raises :class:`TicketsLost` (having
        changed nothing) when it needs a new ticket and Redis has lost the counter.
        """
        ...

    async def ticket_state(self) -> tuple[int | None, bool]:
        """The last ticket given (None when Redis has lost the counter), and whether the counter
        was seeded in this life of the Redis server (False after any restart)."""
        ...

    async def seed_tickets(self, at_least: int) -> None:
        """Make the next ticket greater than ``at_least``, for this life of the Redis server:
        creates the counter if Redis lost it, raises it if it is lower, never lowers it."""
        ...

    async def lock(self, name: str, ttl_s: float) -> str | None:
        """Take a short lock shared by every process (a token to give back), or None if another
        process holds it."""
        ...

    async def unlock(self, name: str, token: str) -> None: ...

    async def lock_many(self, names: Sequence[str], ttl_s: float) -> list[str | None]:
        """:meth:`lock` of each of ``names``, in one round trip: a token per name, None where
        another process holds it."""
        ...

    async def unlock_many(self, held: Sequence[tuple[str, str]]) -> None:
        """:meth:`unlock` of each ``(name, token)``, in one round trip."""
        ...

    async def aside(self, gen: Generation) -> str | None:
        """Why a queued job is out of the line: ``"paused"`` (its workspace), ``"held"`` (its
        member runs as many jobs as they may), or None (it is starting)."""
        ...

    async def unhold(self, member: str, generation_id: int) -> bool:
        """Forget a held job (cancelled). True if it was held."""
        ...

    async def held_behind_running(self, member: str, generation_id: int) -> bool:
        """Whether the queued job waits aside because its member runs as many jobs as they may."""
        ...

    async def is_paused(self, platform: str, workspace: str) -> bool:
        """Whether the workspace's queue is paused (the Redis mirror of the database)."""
        ...

    async def sync_paused(self, read: Callable[[], Awaitable[Iterable[tuple[str, str]]]]) -> None:
        """Make the Redis mirror of paused workspaces agree with ``read()`` (the database)."""
        ...

    async def pause(self, platform: str, workspace: str, paused: bool) -> None:
        """Mirror one workspace's pause in Redis (after the database has it)."""
        ...

    async def sync_bans(self, read: Callable[[], Awaitable[Iterable[tuple[str, datetime | None]]]]) -> None:
        """Make the Redis mirror of bans agree with ``read()`` (member, end or None)."""
        ...

    async def ban(self, member: str, until: datetime | None) -> None:
        """Mirror one ban in Redis, where the submit script checks it."""
        ...

    async def unban(self, member: str) -> None: ...

    async def strike(self, member: str, window_s: int) -> int:
        """Count one blocked prompt of ``member``; returns their count within the window."""
        ...

    async def count_refusal(self, platform: str, workspace: str, code: str) -> None:
        """Count a refused submission (by error code) for the workspace's stats."""
        ...

    async def refusals(self, platform: str, workspace: str, hours: int) -> dict[str, int]:
        """Refused submissions by code over the last ``hours`` hours."""
        ...

    async def set_confirm(self, member: str, action: str, code: str, ttl_s: int) -> None:
        """Remember a confirmation code an admin must send back within ``ttl_s``."""
        ...

    async def take_confirm(self, member: str, action: str) -> str | None:
        """The pending confirmation code (and forget it), or None."""
        ...

    async def restore(self, generation_id: int, ticket: int | None, *, line: str) -> tuple[int, int, bool]:
        """:meth:`submit` at the row's own ticket (a new one if it has none); also returns
        whether anything was missing from Redis and has been put back."""
        ...

    async def job_state(self, generation_id: int) -> str | None:
        """What Redis knows of the job: ``"running"`` (a worker holds it), ``"queued"`` (its
        payload waits for a worker) or None (Redis lost it, or it finished)."""
        ...

    async def job_states(self, generation_ids: list[int]) -> list[str | None]:
        """:meth:`job_state` of each of ``generation_ids``, in few round trips."""
        ...

    async def restore_many(self, jobs: Sequence[tuple[int, int | None, str]]) -> list[tuple[int, int, bool]]:
        """:meth:`restore` of each ``(id, ticket, line)``, in few round trips. Raises
        :class:`TicketsLost` like it."""
        ...

    async def publish_many(self, generation_ids: Iterable[int], kind: str) -> None:
        """:meth:`publish` of each, in one round trip."""
        ...

    async def queued_states(self, gens: Sequence[Generation]) -> list[QueuedState]:
        """:class:`QueuedState` of each queued row of ``gens``, in few round trips."""
        ...

    async def position(self, generation_id: int, *, line: str) -> int | None:
        """1-based position among the jobs waiting in ``line``, or None when not waiting. O(log N)."""
        ...

    async def positions(self, jobs: Sequence[tuple[int, str]]) -> list[int | None]:
        """:meth:`position` of each ``(id, line)``, in one round trip."""
        ...

    async def ticket_of(self, generation_id: int, *, line: str) -> int | None:
        """The ticket a waiting job holds in the line, or None when it is not waiting."""
        ...

    async def waiting(self, line: str | None = None) -> list[int]:
        """The generation ids waiting in ``line``, position 1 first; without a line, those of
        every line in ticket order."""
        ...

    async def lined_up(self) -> list[tuple[int, str]]:
        """``(id, line)`` of every waiting job, in ticket order."""
        ...

    async def leave_legacy_line(self) -> dict[int, int]:
        """Empty the one line of releases before lines (its rows go back into their own); the
        ids that waited there, with their tickets."""
        ...

    async def remove_waiting(self, generation_id: int, *, line: str) -> bool:
        """Take a queued job out of the queue (cancel). True if it was waiting."""
        ...

    async def mark_done(self, generation_id: int, *, line: str) -> None:
        """Make sure a job that no longer waits (it ended, or runs) holds no place in line."""
        ...

    async def failover_watch(self, gap_s: float) -> float:
        """Count one failover check; for how many seconds the checks have run without a gap
        longer than ``gap_s``, on one clock shared by every process."""
        ...

    async def take_over(self, generation_id: int, member: str) -> None:
        """Let go of a dead run's hold on its job and on its member's place, so that a worker may
        start the job again at once."""
        ...

    async def abort_running(self, generation_id: int) -> None:
        """Ask the worker running this job to stop it. Returns at once."""
        ...

    async def line_basis(self, backend: str) -> LineBasis:
        """What a waiting job's status needs of ``backend``'s line, in one round trip."""
        ...

    async def backend_down(self, backend: str) -> float | None:
        """None while ``backend``'s circuit breaker is closed; else the seconds until it lets a
        probe through (0 when half-open). Waiting jobs say so in their status message."""
        ...

    async def publish(self, generation_id: int, kind: str) -> None:
        """Append an event for the renderer. Safe to call more than once."""
        ...


#: The generation id of events that concern every waiting message, not one generation.
ALL_WAITING = 0
#: Event kind (with :data:`ALL_WAITING`): a backend's circuit breaker opened or closed, so every
#: waiting message changes ("waiting for the service", or back to its ETA).
BREAKER_EVENT = "breaker"


@dataclass(frozen=True, slots=True)
class Event:
    entry_id: str
    generation_id: int
    kind: str


class EventsLost(Exception):
    """The event stream lost events (Redis lost its data, consumer group included): the feed has
    started over, and whoever reads it must re-read the truth from the rows."""


class EventFeed(Protocol):
    """The renderer's side of the event stream: at-least-once delivery, as long as Redis keeps
    its data; when it loses them, :meth:`read` and :meth:`claim_stale` raise :class:`EventsLost`
    once."""

    async def ensure_group(self, start: str = "$") -> None: ...

    async def forget_idle_consumers(self, idle_ms: int) -> int:
        """Remove the consumers of stopped renderers (no pending event, idle for ``idle_ms``)."""
        ...

    async def read(self, count: int, block_ms: int) -> list[Event]: ...

    async def ack(self, events: Sequence[Event], *, later: bool = False) -> None:
        """Acknowledge handled events; ``later``: with the next :meth:`read`, in its round trip
        (an event whose ack is lost with its process is handled again by another renderer, which
        costs a render, not a wrong message)."""
        ...

    async def claim_stale(self, min_idle_ms: int, count: int) -> list[Event]:
        """Take over events another (crashed) renderer read but never acknowledged."""
        ...


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def prune(self, older_than: datetime, most: int) -> int:
        """Remove at most ``most`` blobs last written before ``older_than``; how many went."""
        ...


@dataclass(frozen=True, slots=True)
class ImageResult:
    """A job's result: one PNG image."""

    png: bytes


@dataclass(frozen=True, slots=True)
class ImagesResult:
    """A job's result: several PNG images (1 to :data:`RESULT_FILES_MAX`). Its status message
    shows them as one grid, like a contact sheet, and carries each image as a file of its own."""

    pngs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class FileResult:
    """A job's result: a file (a document, a model, an archive), carried by its status message
    as an attachment named ``name``. At most :data:`RESULT_FILE_MAX_BYTES`."""

    data: bytes
    name: str
    content_type: str = "application/octet-stream"


#: The most files one result carries: with the grid of several images, Discord's ten attachments
#: per message.
RESULT_FILES_MAX = 9
#: The largest file result (Discord's default upload limit; a platform with a lower one says so).
RESULT_FILE_MAX_BYTES = 10 * 2**20


@dataclass(frozen=True, slots=True)
class TextResult:
    """A job's result: text (an answer), shown in its status message, cut at
    :data:`RESULT_TEXT_MAX` characters."""

    text: str


#: The longest text a status message shows (Slack's section block holds 3,000 characters).
RESULT_TEXT_MAX = 2800


class JobStopped(Exception):
    """Raised in a job by its progress report once the job was cancelled: stop and let it go up."""


class Refused(Exception):
    """Raised by a job whose service refused the request itself (its content rules, a prompt it
    will not draw): the job fails as ``backend_refused`` (the member reads what to do), and the
    service is not counted as failing (the circuit breaker lets it pass). The message is for the
    log."""


class ChatAdapter(Protocol):
    """A chat platform, as the renderer needs it: post and edit status messages."""

    platform: str
    #: The budgets its writes spend, by kind (from the platform's documented limits and the
    #: settings).
    rates: dict[str, Rate]

    def spends(self, channel: str, ref: MessageRef | None, view: StatusView) -> list[Spend]:
        """What posting (``ref`` None) or editing ``ref`` to show ``view`` costs."""
        ...

    async def post_status(self, channel: str, view: StatusView) -> MessageRef: ...

    async def edit_status(self, ref: MessageRef, view: StatusView) -> MessageRef:
        """Edit a status message in place; return its (possibly new) reference.

        Raises :class:`MessageGone` when the message can no longer be edited.
        """
        ...


@dataclass(frozen=True, slots=True)
class Upload:
    """A file a member attached to a command, as its adapter fetched it (see
    :mod:`bot.attachments`): the name it was shared under, the type the platform gave, the bytes."""

    name: str
    data: bytes
    content_type: str = ""


class Responder(Protocol):
    """The answer channel of one command: what the adapter gives the core per request."""

    async def fetch(self, ref: str, max_bytes: int) -> Upload:
        """The file an attachment option names: ``ref`` is the option's value as this adapter
        gave it (Discord: the attachment's link; Slack: a file id or link, or ``latest``; the
        local chat: an upload's key). At most ``max_bytes`` are read. Raises
        :class:`~bot.errors.GenbotError` (invalid_option) with one sentence for a file that is
        not there, not the member's to use, or too large (:func:`bot.attachments.too_large`)."""
        ...

    async def reply(self, text: str) -> None:
        """Say something to the member who sent the command, and only to them."""
        ...

    async def reply_error(self, error: ErrorText) -> None: ...

    async def say(self, text: str) -> None:
        """Say something to the whole channel (a plugin command's public answer). Member and
        plugin text: it pings no one."""
        ...

    def spends(self, view: StatusView) -> list[Spend]:
        """What posting the status message costs (the platform's budgets; see
        :meth:`ChatAdapter.spends`)."""
        ...

    async def post_status(self, view: StatusView) -> MessageRef:
        """Post the public status message for a new job."""
        ...


@dataclass(frozen=True, slots=True)
class ChatRecord:
    """One message of the local web chat."""

    id: int
    author_id: str
    author_name: str
    bot: bool
    text: str | None
    status: dict[str, Any] | None
    ephemeral_to: str | None
    created_at: str
    edited_at: str | None


class ChatLog(Protocol):
    """Where the local web chat keeps its history, so that it survives a restart."""

    async def add(
        self,
        *,
        author_id: str,
        author_name: str,
        bot: bool,
        text: str | None = None,
        status: dict[str, Any] | None = None,
        ephemeral_to: str | None = None,
    ) -> ChatRecord: ...

    async def set_status(self, message_id: int, status: dict[str, Any]) -> ChatRecord | None: ...

    async def get(self, message_id: int) -> ChatRecord | None: ...

    async def history(self, viewer: str, limit: int) -> list[ChatRecord]:
        """The newest ``limit`` messages ``viewer`` may see, oldest first."""
        ...


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """An acknowledged command that is not finished (see :class:`CommandInbox`)."""

    key: str
    platform: str
    payload: dict[str, Any]
    created_at: datetime


class CommandInbox(Protocol):
    """Commands a bot acknowledged and has not finished: recorded before the ack goes out, so that
    a bot that dies mid-command leaves a record another bot runs the command again from."""

    async def put(self, key: str, platform: str, payload: dict[str, Any]) -> None:
        """Record a command (safe to retry: one record per ``key``)."""
        ...

    async def done(self, key: str) -> None:
        """Forget a finished command."""
        ...

    async def stale(self, platform: str, before: datetime, limit: int) -> list[InboxEntry]:
        """``platform``'s records made before ``before``, oldest first."""
        ...

    async def claim(self, key: str, now: datetime, stale_before: datetime) -> bool:
        """Claim a record to run it again: True for exactly one of concurrent callers; a claim made
        before ``stale_before`` (its claimer died) is taken over."""
        ...

    async def expire(self, before: datetime) -> int:
        """Drop records made before ``before`` (their reply handles are dead); returns how many."""
        ...


class CommandHandler(Protocol):
    """The core, as an adapter sees it.

    Slack and Discord acknowledge a command before the core runs it; so that a bot killed between
    the two loses nothing, the adapter first records the command with :meth:`receive` (it passes
    what it needs to run the command again, as plain JSON), then acknowledges it, then hands it to
    :meth:`handle` with the receipt. A command whose record outlives its bot is run again by
    another bot of the platform (the adapter rebuilds it from the payload)."""

    async def receive(self, platform: str, payload: dict[str, Any]) -> str:
        """Record an acknowledged command; returns its receipt. One INSERT: fast enough to come
        before the ack."""
        ...

    async def handle(
        self, request: CommandRequest, responder: Responder, *, receipt: str | None = None
    ) -> None: ...

    async def handle_action(
        self,
        actor: Actor,
        generation_id: int,
        action: str,
        responder: Responder,
        *,
        receipt: str | None = None,
    ) -> None: ...
