"""Every Redis key genbot uses, in one place. arq's own keys (``arq:job:``, ``arq:in-progress:``...)
come from ``arq.constants``; the arq queue names start with a setting (``GENBOT_REDIS__QUEUE_NAME``).

Jobs wait in **lines**, one per backend (the service a job calls: ``a1111``, ``horde``, a plugin's
own): each line has its waiting set (the positions), its arq queue (the workers that serve it), its
live workers and their capacity (the ETA), its run times and its circuit breaker. The ticket
counter is one for all lines, so that tickets order every line the same way."""

from __future__ import annotations

from dataclasses import dataclass

#: The arq function name of the generation job.
GENERATE_FUNCTION = "generate"
#: The arq queue of the maintenance worker (the sweep) is the generation queue's name plus this.
SWEEP_QUEUE_SUFFIX = ":maintenance"
#: The arq queue of one line is the generation queue's name plus this and the line's name.
LINE_QUEUE_INFIX = ":line:"
#: What separates a job's id from its line in the member's queued set (``1234@a1111``).
LINE_SEPARATOR = "@"


def line_queue(queue_name: str, line: str) -> str:
    """The arq queue of ``line``'s jobs."""
    return f"{queue_name}{LINE_QUEUE_INFIX}{line}"


#: The renderer's consumer group on the event stream (one per platform).
RENDER_GROUP = "render:{platform}"
#: How long an enqueued job's payload lives in Redis before arq drops it unrun.
JOB_PAYLOAD_TTL_MS = 7 * 24 * 3600 * 1000
#: A worker that has not beaten its heartbeat for this long no longer counts toward the ETA.
WORKER_ALIVE_MS = 30_000
#: Events kept in the stream (approximate trim).
EVENTS_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class Keys:
    """genbot's keys under one prefix (``GENBOT_REDIS__KEY_PREFIX``)."""

    prefix: str

    @property
    def ticket(self) -> str:
        """INCR counter: the last ticket given; tickets order the queue. Seeded from the database
        in every life of the Redis server (see :attr:`ticket_life`) before it gives a ticket."""
        return f"{self.prefix}:ticket"

    @property
    def ticket_life(self) -> str:
        """The ``run_id`` of the redis-server life in which the counter was seeded: a counter of
        an earlier life (a restart, even one that loaded a snapshot) is not trusted."""
        return f"{self.prefix}:ticket-life"

    def lock(self, name: str) -> str:
        """A short lock shared by every process (``SET NX PX``), e.g. while tickets are seeded."""
        return f"{self.prefix}:lock:{name}"

    def waiting(self, line: str) -> str:
        """Sorted set of the generation ids waiting in ``line``, scored by ticket; ZRANK + 1 is
        the position."""
        return f"{self.prefix}:waiting:{line}"

    @property
    def waiting_prefix(self) -> str:
        """:meth:`waiting` of a line is this and the line's name (the scripts that move jobs of
        several lines build the keys)."""
        return f"{self.prefix}:waiting:"

    @property
    def lines(self) -> str:
        """Set of the lines jobs were submitted to."""
        return f"{self.prefix}:lines"

    @property
    def legacy_waiting(self) -> str:
        """The one waiting set of releases before lines (emptied at start-up: see
        ``RedisJobQueue.leave_legacy_line``)."""
        return f"{self.prefix}:waiting"

    @property
    def events(self) -> str:
        """Stream of ``{id, kind}`` events for the renderers."""
        return f"{self.prefix}:events"

    def workers(self, line: str) -> str:
        """Sorted set of the live workers of ``line``, scored by their last heartbeat (ms)."""
        return f"{self.prefix}:workers:{line}"

    def worker_capacity(self, line: str) -> str:
        """Hash: worker id -> how many jobs of ``line`` it runs at once."""
        return f"{self.prefix}:worker-capacity:{line}"

    def orphan_read(self, line: str) -> str:
        """Exists (``SET NX PX``) while the last look for orphans in ``line``'s arq queue is
        recent: one worker of the line looks at a time (``jobs/poll.py``)."""
        return f"{self.prefix}:orphan-read:{line}"

    def breaker(self, backend: str, part: str) -> str:
        """The circuit breaker of one backend, shared by every worker (``jobs/breaker.py``):
        ``open`` (exists while open; its PTTL is the time left), ``tripped`` (exists from opening
        until a probe succeeds: open or half-open), ``failures`` (consecutive failures of all
        workers) and ``probe`` (the one worker whose call is the half-open probe)."""
        return f"{self.prefix}:breaker:{backend}:{part}"

    def runtimes(self, backend: str) -> str:
        """List of the most recent run times (s) of one backend, newest first."""
        return f"{self.prefix}:runtimes:{backend}"

    @property
    def failover_watch(self) -> str:
        """Hash ``since``/``last`` (ms, Redis's clock): the unbroken run of failover checks that
        lets the sweep take a job over (``RedisJobQueue.failover_watch``)."""
        return f"{self.prefix}:failover-watch"

    @property
    def paused(self) -> str:
        """Set of ``platform:workspace`` whose queue an admin paused (mirrors the database)."""
        return f"{self.prefix}:paused"

    @property
    def banned(self) -> str:
        """Hash: member -> end of their ban in ms (0: until unbanned); mirrors the database."""
        return f"{self.prefix}:banned"

    def member_queued(self, member: str) -> str:
        """Sorted set of one member's submitted jobs as ``<id>@<line>`` (by ticket), pruned to
        those still waiting whenever a quota is checked."""
        return f"{self.prefix}:member:{member}:queued"

    def member_recent(self, member: str) -> str:
        """Sorted set of one member's submissions in the rate window, scored by time (ms)."""
        return f"{self.prefix}:member:{member}:recent"

    def member_running(self, member: str) -> str:
        """Set of one member's generation ids a worker runs now (pruned of dead workers' jobs)."""
        return f"{self.prefix}:member:{member}:running"

    def member_held(self, member: str) -> str:
        """Sorted set (by ticket) of one member's jobs set aside until one of theirs finishes."""
        return f"{self.prefix}:member:{member}:held"

    def member_strikes(self, member: str) -> str:
        """Sorted set of one member's blocked prompts, scored by time (ms)."""
        return f"{self.prefix}:member:{member}:strikes"

    def confirm(self, member: str, action: str) -> str:
        """A pending confirmation code of one admin for one action (expires)."""
        return f"{self.prefix}:confirm:{action}:{member}"

    def refusals(self, workspace: str, hour: int) -> str:
        """Hash: refusal code -> count, for one workspace and one hour (epoch hours)."""
        return f"{self.prefix}:refusals:{workspace}:{hour}"
