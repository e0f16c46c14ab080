"""Positions and the job queue: the :class:`~bot.ports.JobQueue` on Redis and arq.

Why one Lua script writes the arq job itself
-------------------------------------------
A position is only honest if the job at position 1 is the next one a free worker starts. arq's
workers take jobs from its queue sorted set by score, then by member. genbot therefore scores every
job with its **ticket** (an ``INCR`` counter), so arq's order is the ticket order, whatever the clocks
of the bot hosts say. Ticket, waiting-set entry and arq job must appear in Redis at one instant: were
the arq job enqueued in a second round trip, a later submission could reach arq first and start ahead
of position 1. So :data:`SUBMIT` does what ``ArqRedis.enqueue_job`` does (the same dedupe on
``arq:job:<id>``, the same payload from ``arq.jobs.serialize_job``) inside the
same atomic script that takes the ticket.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from arq.jobs import serialize_job

from bot.models import JOB_ID_PREFIX, Generation, Quota, job_id_for
from bot.ports import LineBasis, QueuedState, QuotaRefused, TicketsLost
from jobs.breaker import ADMIT_FUNCTION, Admission, Breaker, BreakerKeys, breaker_retry_in
from jobs.connections import unavailable_on_outage
from jobs.constants import (
    EVENTS_MAXLEN,
    GENERATE_FUNCTION,
    JOB_PAYLOAD_TTL_MS,
    LINE_QUEUE_INFIX,
    LINE_SEPARATOR,
    WORKER_ALIVE_MS,
    Keys,
    line_queue,
)

log = logging.getLogger(__name__)

__all__ = ["ArqRedis", "QueuedState", "RedisJobQueue"]

# KEYS: ticket, waiting (of the job's line), arq job key, arq queue (of the line), paused set,
#       member's queued set, member's recent submissions, banned hash, member's held set (a held
#       job still counts as queued), member's running set, ticket life, set of lines
# ARGV: generation id, job payload, payload ttl ms, ticket to reuse or "", arq job id,
#       quota check ("" for none, else now in ms), workspace, global max (of the line), exempt
#       ("1"/"0"), member max queued, rate count, rate window ms, member, in-progress key prefix,
#       max running, the job's entry in the member's queued set (``id@line``), waiting key
#       prefix, line
# Returns {ticket, position, added (1 if the waiting entry or the arq job had to be written)};
# position 0: the member already runs as many jobs as they may, so the job is held aside (no
# waiting entry, no arq job) until one of theirs ends (RELEASE).
# or {-5, ban end ms or 0, 0} banned, {-1, 0, 0} paused, {-2, 0, 0} queue full,
# {-3, 0, 0} member's queue full, {-4, retry-after ms, 0} rate limited, {-6, 0, 0} the ticket
# counter was not seeded in this life of the Redis server (it restarted: empty, or from a snapshot
# whose counter may be behind; or it lost the counter): seed it from the database first. Nothing
# was written then. A reused ticket raises the counter if it is behind, but never creates it.
# Idempotent, and it repairs: a waiting entry whose arq job is gone (Redis evicted it, arq gave up
# on it) gets its job back, at the same ticket.
#: The server's ``run_id``: new at every start of redis-server, whatever it loaded from disk.
_RUN_ID = """
local function RUN_ID() return string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') end
"""

#: A member's queued entry as ``id, line``: ``id@line``, or a bare id of a release before lines,
#: whose line is found (and the entry rewritten as ``id@line``) or is nil when it waits in none.
_ENTRY = """
local function ENTRY(queued_key, entry, waiting_prefix, lines_key)
    local id, line = string.match(entry, '^(%d+)@(.+)$')
    if id then return id, line end
    if not string.match(entry, '^%d+$') then return nil, nil end
    for _, other in ipairs(redis.call('SMEMBERS', lines_key)) do
        if redis.call('ZSCORE', waiting_prefix .. other, entry) then
            local score = redis.call('ZSCORE', queued_key, entry)
            redis.call('ZREM', queued_key, entry)
            redis.call('ZADD', queued_key, score, entry .. '@' .. other)
            return entry, other
        end
    end
    return entry, nil
end
"""

SUBMIT = (
    _RUN_ID
    + _ENTRY
    + """
local ticket
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
local now = tonumber(ARGV[6])
if now and not score then
    local ban = redis.call('HGET', KEYS[8], ARGV[13])
    if ban and (ban == '0' or tonumber(ban) > now) then return {-5, tonumber(ban), 0} end
    if redis.call('SISMEMBER', KEYS[5], ARGV[7]) == 1 then return {-1, 0, 0} end
    if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[8]) then return {-2, 0, 0} end
    if ARGV[9] == '0' then
        local queued = 0
        for _, entry in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
            local id, line = ENTRY(KEYS[6], entry, ARGV[17], KEYS[12])
            local waits = line and redis.call('ZSCORE', ARGV[17] .. line, id)
            if id and (waits or redis.call('ZSCORE', KEYS[9], id)) then
                queued = queued + 1
            else
                redis.call('ZREM', KEYS[6], entry)
            end
        end
        if queued >= tonumber(ARGV[10]) then return {-3, 0, 0} end
        local window = tonumber(ARGV[12])
        redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - window)
        if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[11]) then
            local oldest = redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')
            return {-4, tonumber(oldest[2]) + window - now, 0}
        end
    end
end
if score then
    ticket = tonumber(score)
elseif ARGV[4] ~= '' then
    ticket = tonumber(ARGV[4])
    local last = redis.call('GET', KEYS[1])
    if last and tonumber(last) < ticket then
        redis.call('SET', KEYS[1], ticket)
    end
else
    if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('GET', KEYS[11]) ~= RUN_ID() then
        return {-6, 0, 0}
    end
    ticket = redis.call('INCR', KEYS[1])
end
local added = 0
if now and not score then
    local window = tonumber(ARGV[12])
    redis.call('ZADD', KEYS[6], ticket, ARGV[16])
    redis.call('ZADD', KEYS[7], now, ARGV[1])
    redis.call('PEXPIRE', KEYS[6], 7 * 24 * 3600 * 1000)
    redis.call('PEXPIRE', KEYS[7], window)
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[10])) do
        if redis.call('EXISTS', ARGV[14] .. id) == 0 then redis.call('SREM', KEYS[10], id) end
    end
    if redis.call('SCARD', KEYS[10]) >= tonumber(ARGV[15]) then
        redis.call('ZADD', KEYS[9], ticket, ARGV[1])
        return {ticket, 0, 1}
    end
end
if not score then
    redis.call('ZADD', KEYS[2], ticket, ARGV[1])
    redis.call('SADD', KEYS[12], ARGV[18])
    added = 1
end
if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
    redis.call('ZADD', KEYS[4], ticket, ARGV[5])
    added = 1
end
return {ticket, redis.call('ZRANK', KEYS[2], ARGV[1]) + 1, added}
"""
)

# KEYS: waiting, arq queue, arq job key; ARGV: generation id, arq job id. Returns 1 if it was waiting.
REMOVE_WAITING = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('DEL', KEYS[3])
end
return removed
"""


# KEYS: waiting, arq job key, arq queue; ARGV: generation id, job payload, payload ttl ms, arq job id
# A waiting job without its arq job gets it back at its ticket; returns 1 if it had to.
REPAIR = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], score, ARGV[4])
return 1
"""

# The per-member running cap. A member's running set is pruned first of jobs whose arq in-progress
# key is gone (their worker died), so a crash never blocks a member for good.
_PRUNE_RUNNING = """
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if id ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. id) == 0 then
        redis.call('SREM', KEYS[2], id)
    end
end
"""

# KEYS: waiting (of the job's line), member's running set, member's held set, member's queued set,
#       set of lines, paused set
# ARGV: generation id, max running, arq in-progress key prefix of genbot jobs, ticket,
#       arq job key prefix of genbot jobs, arq job id prefix, workspace, waiting key prefix,
#       arq queue name prefix of the lines
# Returns {1 (started; it was waiting) | 0 (started; it was not waiting) | -1 (held) | -2 (its
# workspace is paused: out of the waiting set, not started), moved ids...}.
# Held: the member already runs max running jobs, so it waits aside, keeping its ticket. Started:
# if that fills the member's places, their other waiting jobs move aside too (waiting entry and
# arq job gone, ticket kept), so that the waiting set holds only jobs a worker can start: the
# positions stay exact. :data:`START_FUNCTION` is a Lua function ``START(KEYS, ARGV)`` of them (it
# needs :data:`_ENTRY` before it).
START_FUNCTION = (
    """
local function START(KEYS, ARGV)
"""
    + _PRUNE_RUNNING
    + """
if redis.call('SISMEMBER', KEYS[6], ARGV[7]) == 1 then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return {-2}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
    return {-1}
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local result = {redis.call('ZREM', KEYS[1], ARGV[1])}
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then
    for _, entry in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
        local id, line = ENTRY(KEYS[4], entry, ARGV[8], KEYS[5])
        local ticket = line and redis.call('ZSCORE', ARGV[8] .. line, id)
        if ticket then
            redis.call('ZREM', ARGV[8] .. line, id)
            redis.call('ZADD', KEYS[3], ticket, id)
            redis.call('ZREM', ARGV[9] .. line, ARGV[6] .. id)
            redis.call('DEL', ARGV[5] .. id)
            table.insert(result, tonumber(id))
        end
    end
end
return result
end
"""
)
START = _ENTRY + START_FUNCTION + "return START(KEYS, ARGV)\n"

# KEYS: START's six, then the breaker's five (jobs.breaker.ADMIT). ARGV: START's nine, then
# ADMIT's four. The first steps of a queued job in one: is its workspace paused (then nothing is
# written: {-3}); else may it call the backend (ADMIT; refused: nothing is written,
# {-4, ms, failures} as ADMIT's refusal); else it starts (START): {ADMIT's verdict (1 or 2), the
# shared failures, START's answer...}. The same steps, in the same order, as the runner's pause
# check, the breaker's admission and :data:`START` one after the other.
ADMIT_START = (
    _ENTRY
    + START_FUNCTION
    + ADMIT_FUNCTION
    + """
if redis.call('SISMEMBER', KEYS[6], ARGV[7]) == 1 then return {-3} end
local verdict = ADMIT({unpack(KEYS, 7, 11)}, {unpack(ARGV, 10, 13)})
if verdict[1] == 0 then return {-4, verdict[2], verdict[3]} end
local result = START({unpack(KEYS, 1, 6)}, {unpack(ARGV, 1, 9)})
table.insert(result, 1, verdict[3])
table.insert(result, 1, verdict[1])
return result
"""
)

# KEYS: (unused), member's running set, member's held set
# ARGV: generation id that ended (or "" for none), max running, in-progress key prefix
# Returns {id, ticket} of the member's oldest held job when a place is free, else nil.
RELEASE = (
    """
redis.call('SREM', KEYS[2], ARGV[1])
"""
    + _PRUNE_RUNNING
    + """
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then return nil end
local popped = redis.call('ZPOPMIN', KEYS[3])
if #popped == 0 then return nil end
return popped
"""
)
#: arq's in-progress key of a genbot job, but for the generation id.
_IN_PROGRESS = in_progress_key_prefix + JOB_ID_PREFIX
#: A worker whose last beat is older than this is forgotten (it counts for nothing after
#: ``WORKER_ALIVE_MS`` already; this bounds the keys).
DEAD_AFTER_MS = 2 * WORKER_ALIVE_MS
_REFUSALS = {-1: "paused", -2: "global", -3: "queued", -4: "rate", -5: "banned"}
_TICKETS_LOST = -6

# KEYS: the waiting set of releases before lines, their arq queue. ARGV: arq job id prefix of
# genbot jobs, arq job key prefix of genbot jobs, arq in-progress key prefix of genbot jobs.
# Empties both of genbot's jobs (their rows go back in their lines at the next heal), but for a job
# a worker of the release before still runs (its keys are that worker's); returns the ids and
# tickets that waited, flat: {id, ticket, id, ticket, ...}.
LEAVE_LEGACY = """
for _, job in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local id = string.sub(job, string.len(ARGV[1]) + 1)
    if string.sub(job, 1, string.len(ARGV[1])) == ARGV[1] and redis.call('EXISTS', ARGV[3] .. id) == 0 then
        redis.call('ZREM', KEYS[2], job)
        redis.call('DEL', ARGV[2] .. id)
    end
end
local waited = {}
if redis.call('TYPE', KEYS[1])['ok'] == 'zset' then
    waited = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    redis.call('DEL', KEYS[1])
end
return waited
"""

# KEYS: ticket counter, ticket life. ARGV: the last ticket to count as given.
# The counter starts there (never lower than it is) in this life of the server.
SEED = (
    _RUN_ID
    + """
local last = redis.call('GET', KEYS[1])
if not last or tonumber(last) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('SET', KEYS[2], RUN_ID())
return 1
"""
)

# KEYS: ticket counter, ticket life. Returns {counter or false, 1 if seeded in this life else 0}.
TICKET_STATE = (
    _RUN_ID
    + """
local last = redis.call('GET', KEYS[1])
local seeded = last and redis.call('GET', KEYS[2]) == RUN_ID()
return {last, seeded and 1 or 0}
"""
)

# KEYS: the line's live workers, their capacity. ARGV: worker id, its capacity, now ms, the beat
# before which a worker is dead. Records the beat, and removes the dead from both.
HEARTBEAT = """
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
if #dead > 0 then
    redis.call('HDEL', KEYS[2], unpack(dead))
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
end
return #dead
"""

# KEYS: the failover watch. ARGV: the longest gap between two checks that keeps the run unbroken
# (ms). Returns how long (ms, Redis's clock) the checks have run without such a gap, this one
# included: a gap (the sweep, its Redis or its database was away; Redis lost its data) starts over.
FAILOVER_WATCH = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local since = tonumber(redis.call('HGET', KEYS[1], 'since'))
local last = tonumber(redis.call('HGET', KEYS[1], 'last'))
if not since or not last or now - last > tonumber(ARGV[1]) then
    since = now
    redis.call('HSET', KEYS[1], 'since', now)
end
redis.call('HSET', KEYS[1], 'last', now)
return now - since
"""

# KEYS: the member's running set. ARGV: generation id, its arq job id.
# A dead run's hold on its job and its member's place is let go: arq's in-progress key (so a
# worker may claim the job again at once), arq's count of tries (genbot counts attempts on the row)
# and the member's running entry.
TAKE_OVER = (
    f"""
redis.call('DEL', '{in_progress_key_prefix}' .. ARGV[2], '{retry_key_prefix}' .. ARGV[2])
"""
    + """
redis.call('SREM', KEYS[1], ARGV[1])
"""
)

# KEYS: a line's run times, its live workers, their capacity, its breaker's open and tripped keys.
# ARGV: the ETA window, the beat since which a worker is alive (ms). Returns {the sum of the recent
# run times (a string: Lua numbers become integers), how many, the live capacity, the open key's
# PTTL, 1 if tripped}: what the ETA and the "service unavailable" line of a waiting job need.
LINE_BASIS = """
local times = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local total = 0
for _, t in ipairs(times) do total = total + tonumber(t) end
local capacity = 0
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], '+inf')) do
    capacity = capacity + (tonumber(redis.call('HGET', KEYS[3], worker)) or 0)
end
return {tostring(total), #times, capacity, redis.call('PTTL', KEYS[4]), redis.call('EXISTS', KEYS[5])}
"""

# KEYS: locks. ARGV: their tokens. Deletes each lock only if its token still holds it.
UNLOCK = """
local deleted = 0
for i, key in ipairs(KEYS) do
    if redis.call('GET', key) == ARGV[i] then deleted = deleted + redis.call('DEL', key) end
end
return deleted
"""


def _submitted(result: list[Any]) -> tuple[int, int, bool]:
    """The :data:`SUBMIT` script's answer: ``(ticket, position, added)``, or its refusal raised."""
    first = int(result[0])
    if first == _TICKETS_LOST:
        raise TicketsLost
    if first < 0:
        reason = _REFUSALS[first]
        if reason == "banned":
            until = int(result[1])
            raise QuotaRefused(reason, until=datetime.fromtimestamp(until / 1000, UTC) if until else None)
        raise QuotaRefused(reason, int(result[1]) / 1000 if reason == "rate" else None)
    return first, int(result[1]), bool(result[2])


@dataclass(frozen=True, slots=True)
class Opened:
    """What :meth:`RedisJobQueue.admit_and_start` came to: ``paused`` (its workspace is: nothing
    was written), or refused by the breaker (``admission`` None; ``retry_in``: seconds until it is
    worth asking again; nothing was written), or admitted (``admission``) and ``started`` as
    :meth:`RedisJobQueue.start` answers."""

    paused: bool = False
    admission: Admission | None = None
    retry_in: float = 0.0
    started: tuple[bool | str | None, list[int]] = (False, [])


def workspace_key(platform: str, workspace: str) -> str:
    return f"{platform}:{workspace}"


def _ban_end(until: datetime | None) -> int:
    return 0 if until is None else int(until.timestamp() * 1000)


def _ms() -> int:
    return int(time.time() * 1000)


@unavailable_on_outage
class RedisJobQueue:
    """Submit, position, cancel and ETA over one Redis. Every method is one round trip or one
    atomic script, so any number of bot and worker processes can share it.

    A job waits in the line of its backend (``line``: its row's ``backend``): its position counts
    the jobs ahead of it in that line only, and only the workers that serve the line start it
    (:func:`jobs.constants.line_queue`)."""

    def __init__(
        self,
        redis: ArqRedis,
        keys: Keys,
        queue_name: str,
        *,
        eta_window: int = 20,
        default_run_s: float = 15.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.queue_name = queue_name
        self.eta_window = eta_window
        self.default_run_s = default_run_s
        self._submit = redis.register_script(SUBMIT)
        self._remove = redis.register_script(REMOVE_WAITING)
        self._start = redis.register_script(START)
        self._admit_start = redis.register_script(ADMIT_START)
        self._repair = redis.register_script(REPAIR)
        self._release = redis.register_script(RELEASE)
        self._seed = redis.register_script(SEED)
        self._ticket_state = redis.register_script(TICKET_STATE)
        self._unlock = redis.register_script(UNLOCK)
        self._leave_legacy = redis.register_script(LEAVE_LEGACY)
        self._heartbeat = redis.register_script(HEARTBEAT)
        self._line_basis = redis.register_script(LINE_BASIS)
        self._failover_watch = redis.register_script(FAILOVER_WATCH)
        self._take_over = redis.register_script(TAKE_OVER)

    def line_queue(self, line: str) -> str:
        """The arq queue of ``line``'s jobs."""
        return line_queue(self.queue_name, line)

    async def submit(
        self, generation_id: int, *, line: str, ticket: int | None = None, quota: Quota | None = None
    ) -> tuple[int, int]:
        """See :meth:`bot.ports.JobQueue.submit`."""
        taken, position, _added = await self._run_submit(generation_id, line, ticket, quota)
        return taken, position

    async def restore(self, generation_id: int, ticket: int | None, *, line: str) -> tuple[int, int, bool]:
        return await self._run_submit(generation_id, line, ticket, None)

    async def leave_legacy_line(self) -> dict[int, int]:
        """Take genbot's jobs out of the one waiting set and arq queue of releases before lines
        (their rows go back in their own lines at the next heal); the ids that waited there, with
        their tickets. Harmless once they are gone."""
        waited: list[bytes] = await self._leave_legacy(
            keys=[self.keys.legacy_waiting, self.queue_name],
            args=[JOB_ID_PREFIX, job_key_prefix + JOB_ID_PREFIX, _IN_PROGRESS],
        )
        return {int(gid): int(float(ticket)) for gid, ticket in zip(waited[::2], waited[1::2], strict=True)}

    async def restore_many(self, jobs: Sequence[tuple[int, int | None, str]]) -> list[tuple[int, int, bool]]:
        """:meth:`restore` of each ``(id, ticket, line)``, pipelined: one round trip per 1,000.
        Raises :class:`TicketsLost` if any needed a new ticket and the counter is not seeded
        (each restore is idempotent: seed, and call again)."""
        results: list[tuple[int, int, bool]] = []
        for start in range(0, len(jobs), 1000):
            async with self.redis.pipeline(transaction=False) as pipe:
                for generation_id, ticket, line in jobs[start : start + 1000]:
                    await self._call_submit(generation_id, line, ticket, None, client=pipe)
                replies = await pipe.execute()
            results += [_submitted(reply) for reply in replies]
        return results

    async def _run_submit(
        self, generation_id: int, line: str, ticket: int | None, quota: Quota | None
    ) -> tuple[int, int, bool]:
        return _submitted(await self._call_submit(generation_id, line, ticket, quota))

    async def _call_submit(
        self, generation_id: int, line: str, ticket: int | None, quota: Quota | None, client: Any = None
    ) -> Any:
        """The :data:`SUBMIT` script's call (queued on ``client``, a pipeline, if given)."""
        job_id = job_id_for(generation_id)
        payload = serialize_job(GENERATE_FUNCTION, (generation_id,), {}, None, _ms())
        member = quota.member if quota else "-"
        checks: list[str | int] = ["", "", 0, "1", 0, 0, 0, "", _IN_PROGRESS, 0]
        if quota is not None:
            checks = [
                _ms(),
                workspace_key(*quota.workspace),
                quota.global_max,
                "1" if quota.exempt else "0",
                quota.max_queued,
                quota.rate_count,
                quota.rate_window_s * 1000,
                quota.member,
                _IN_PROGRESS,
                quota.max_running,
            ]
        return await self._submit(
            keys=[
                self.keys.ticket,
                self.keys.waiting(line),
                job_key_prefix + job_id,
                self.line_queue(line),
                self.keys.paused,
                self.keys.member_queued(member),
                self.keys.member_recent(member),
                self.keys.banned,
                self.keys.member_held(member),
                self.keys.member_running(member),
                self.keys.ticket_life,
                self.keys.lines,
            ],
            args=[
                generation_id,
                payload,
                JOB_PAYLOAD_TTL_MS,
                "" if ticket is None else ticket,
                job_id,
                *checks,
                f"{generation_id}{LINE_SEPARATOR}{line}",
                self.keys.waiting_prefix,
                line,
            ],
            client=client,
        )

    async def ticket_state(self) -> tuple[int | None, bool]:
        last, seeded = await self._ticket_state(keys=[self.keys.ticket, self.keys.ticket_life])
        return (None if last is None else int(last)), bool(seeded)

    async def seed_tickets(self, at_least: int) -> None:
        await self._seed(keys=[self.keys.ticket, self.keys.ticket_life], args=[at_least])

    async def lock(self, name: str, ttl_s: float) -> str | None:
        token = uuid.uuid4().hex
        taken = await self.redis.set(self.keys.lock(name), token, nx=True, px=int(ttl_s * 1000))
        return token if taken else None

    async def unlock(self, name: str, token: str) -> None:
        await self._unlock(keys=[self.keys.lock(name)], args=[token])

    async def lock_many(self, names: Sequence[str], ttl_s: float) -> list[str | None]:
        tokens = [uuid.uuid4().hex for _ in names]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, token in zip(names, tokens, strict=True):
                pipe.set(self.keys.lock(name), token, nx=True, px=int(ttl_s * 1000))
            taken = await pipe.execute()
        return [token if ok else None for token, ok in zip(tokens, taken, strict=True)]

    async def unlock_many(self, held: Sequence[tuple[str, str]]) -> None:
        if held:
            await self._unlock(keys=[self.keys.lock(name) for name, _ in held], args=[t for _, t in held])

    # -- moderation -------------------------------------------------------------------------

    async def is_paused(self, platform: str, workspace: str) -> bool:
        return bool(await self.redis.sismember(self.keys.paused, workspace_key(platform, workspace)))  # type: ignore[misc]

    async def sync_paused(self, read: Callable[[], Awaitable[Iterable[tuple[str, str]]]]) -> None:
        """Make the mirror of paused workspaces agree with ``read()`` (the database).

        Redis is read *before* the database: an admin's pause or resume writes the database, then
        Redis, so a change that lands meanwhile is either already in both reads or in neither of
        the two that matter, and is never undone here."""
        have = {m.decode() for m in await self.redis.smembers(self.keys.paused)}  # type: ignore[misc]
        wanted = {workspace_key(p, w) for p, w in await read()}
        async with self.redis.pipeline(transaction=True) as pipe:
            if wanted - have:
                pipe.sadd(self.keys.paused, *(wanted - have))
            if have - wanted:
                pipe.srem(self.keys.paused, *(have - wanted))
            await pipe.execute()

    async def pause(self, platform: str, workspace: str, paused: bool) -> None:
        key = workspace_key(platform, workspace)
        if paused:
            await self.redis.sadd(self.keys.paused, key)  # type: ignore[misc]
        else:
            await self.redis.srem(self.keys.paused, key)  # type: ignore[misc]

    async def sync_bans(self, read: Callable[[], Awaitable[Iterable[tuple[str, datetime | None]]]]) -> None:
        """Make the mirror of bans agree with ``read()`` (member, end or None), reading Redis
        first, as :meth:`sync_paused` does."""
        have = {m.decode(): v.decode() for m, v in (await self.redis.hgetall(self.keys.banned)).items()}  # type: ignore[misc]
        wanted = {member: str(_ban_end(until)) for member, until in await read()}
        changed = {m: v for m, v in wanted.items() if have.get(m) != v}
        async with self.redis.pipeline(transaction=True) as pipe:
            if changed:
                pipe.hset(self.keys.banned, mapping=changed)
            if set(have) - set(wanted):
                pipe.hdel(self.keys.banned, *(set(have) - set(wanted)))
            await pipe.execute()

    async def ban(self, member: str, until: datetime | None) -> None:
        await self.redis.hset(self.keys.banned, member, str(_ban_end(until)))  # type: ignore[misc]

    async def unban(self, member: str) -> None:
        await self.redis.hdel(self.keys.banned, member)  # type: ignore[misc]

    async def strike(self, member: str, window_s: int) -> int:
        key = self.keys.member_strikes(member)
        now = _ms()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - window_s * 1000)
            pipe.zadd(key, {f"{now}:{uuid.uuid4().hex[:8]}": now})
            pipe.zcard(key)
            pipe.pexpire(key, window_s * 1000)
            results = await pipe.execute()
        return int(results[2])

    async def count_refusal(self, platform: str, workspace: str, code: str) -> None:
        key = self.keys.refusals(workspace_key(platform, workspace), _ms() // 3_600_000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, code, 1)
            pipe.expire(key, 26 * 3600)
            await pipe.execute()

    async def refusals(self, platform: str, workspace: str, hours: int) -> dict[str, int]:
        now = _ms() // 3_600_000
        async with self.redis.pipeline(transaction=False) as pipe:
            for hour in range(now - hours + 1, now + 1):
                pipe.hgetall(self.keys.refusals(workspace_key(platform, workspace), hour))
            buckets: list[dict[bytes, bytes]] = await pipe.execute()
        totals: dict[str, int] = {}
        for bucket in buckets:
            for code, count in bucket.items():
                totals[code.decode()] = totals.get(code.decode(), 0) + int(count)
        return totals

    async def set_confirm(self, member: str, action: str, code: str, ttl_s: int) -> None:
        await self.redis.set(self.keys.confirm(member, action), code, ex=ttl_s)

    async def take_confirm(self, member: str, action: str) -> str | None:
        value = await self.redis.getdel(self.keys.confirm(member, action))
        return value.decode() if value is not None else None

    async def repair(self, generation_id: int, *, line: str) -> bool:
        """Give a waiting job its arq job back if it has none. Run after every job ends: a job set
        aside (held, paused) may have been put back while arq was still finishing its run, and
        arq's clean-up then deleted the arq job the restore found in place."""
        job_id = job_id_for(generation_id)
        payload = serialize_job(GENERATE_FUNCTION, (generation_id,), {}, None, _ms())
        repaired = await self._repair(
            keys=[self.keys.waiting(line), job_key_prefix + job_id, self.line_queue(line)],
            args=[generation_id, payload, JOB_PAYLOAD_TTL_MS, job_id],
        )
        return bool(repaired)

    async def job_state(self, generation_id: int) -> str | None:
        job_id = job_id_for(generation_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(in_progress_key_prefix + job_id)
            pipe.exists(job_key_prefix + job_id)
            running, queued = await pipe.execute()
        return "running" if running else "queued" if queued else None

    async def job_states(self, generation_ids: list[int]) -> list[str | None]:
        """:meth:`job_state` of many jobs, in one pipelined round trip per 1,000."""
        states: list[str | None] = []
        for start in range(0, len(generation_ids), 1000):
            chunk = generation_ids[start : start + 1000]
            async with self.redis.pipeline(transaction=False) as pipe:
                for generation_id in chunk:
                    job_id = job_id_for(generation_id)
                    pipe.exists(in_progress_key_prefix + job_id)
                    pipe.exists(job_key_prefix + job_id)
                replies = await pipe.execute()
            for running, queued in zip(replies[::2], replies[1::2], strict=True):
                states.append("running" if running else "queued" if queued else None)
        return states

    async def queued_states(self, gens: Sequence[Generation]) -> list[QueuedState]:
        """What the sweep needs to know of queued rows, in one pipelined round trip per 1,000:
        whether a worker holds each job, whether it is in place (its waiting entry and its arq job
        are there: putting it back would write nothing), and whether it is held aside."""
        states: list[QueuedState] = []
        for start in range(0, len(gens), 1000):
            chunk = gens[start : start + 1000]
            async with self.redis.pipeline(transaction=False) as pipe:
                for gen in chunk:
                    job_id = job_id_for(gen.id)
                    pipe.exists(in_progress_key_prefix + job_id)
                    pipe.exists(job_key_prefix + job_id)
                    pipe.zscore(self.keys.waiting(gen.backend), str(gen.id))
                    pipe.zscore(self.keys.member_held(gen.member), str(gen.id))
                replies = await pipe.execute()
            for n in range(len(chunk)):
                running, queued, waiting, held = replies[4 * n : 4 * n + 4]
                states.append(
                    QueuedState(bool(running), bool(queued) and waiting is not None, held is not None)
                )
        return states

    async def position(self, generation_id: int, *, line: str) -> int | None:
        rank = await self.redis.zrank(self.keys.waiting(line), str(generation_id))
        return None if rank is None else int(rank) + 1

    async def positions(self, jobs: Sequence[tuple[int, str]]) -> list[int | None]:
        if not jobs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for generation_id, line in jobs:
                pipe.zrank(self.keys.waiting(line), str(generation_id))
            ranks = await pipe.execute()
        return [None if rank is None else int(rank) + 1 for rank in ranks]

    async def ticket_of(self, generation_id: int, *, line: str) -> int | None:
        score = await self.redis.zscore(self.keys.waiting(line), str(generation_id))
        return None if score is None else int(score)

    async def depth(self, line: str) -> int:
        """How many jobs wait in ``line``."""
        return int(await self.redis.zcard(self.keys.waiting(line)))

    async def lines(self) -> list[str]:
        """Every line a job was ever submitted to (their waiting sets may be empty)."""
        members: list[bytes] = await self.redis.smembers(self.keys.lines)  # type: ignore[misc]
        return sorted(m.decode() for m in members)

    async def waiting(self, line: str | None = None) -> list[int]:
        """The ids waiting in ``line``, first first; without one, those of every line in ticket
        order (one pipelined round trip after the read of the lines)."""
        if line is not None:
            return [int(m) for m in await self.redis.zrange(self.keys.waiting(line), 0, -1)]
        return [gid for gid, _line in await self.lined_up()]

    async def lined_up(self) -> list[tuple[int, str]]:
        """``(id, line)`` of every waiting job, in ticket order."""
        lines = await self.lines()
        async with self.redis.pipeline(transaction=False) as pipe:
            for line in lines:
                pipe.zrange(self.keys.waiting(line), 0, -1, withscores=True)
            read: list[list[tuple[bytes, float]]] = await pipe.execute()
        entries = [
            (score, int(m), line) for line, members in zip(lines, read, strict=True) for m, score in members
        ]
        return [(gid, line) for _score, gid, line in sorted(entries)]

    async def mark_running(self, generation_id: int, *, line: str) -> bool:
        """Take a starting job out of the waiting set. True if it was waiting."""
        return bool(await self.redis.zrem(self.keys.waiting(line), str(generation_id)))

    async def start(
        self,
        generation_id: int,
        member: str,
        max_running: int,
        ticket: int,
        *,
        workspace: tuple[str, str],
        line: str,
    ) -> tuple[bool | str | None, list[int]]:
        """Take a starting job out of the waiting set and count it as running for its member.
        Returns whether it was waiting (``None``: held, because the member already runs
        ``max_running`` jobs: it is out of the waiting set, its ticket kept, until
        :meth:`release` hands it back; ``"paused"``: its workspace is paused, it is out of the
        waiting set and not started) and the ids of the member's other jobs moved aside because
        this one filled their places."""
        keys, args = self._start_keys_args(generation_id, member, max_running, ticket, workspace, line)
        result: list[int] = await self._start(keys=keys, args=args)
        return self._started(result)

    async def admit_and_start(
        self,
        generation_id: int,
        member: str,
        max_running: int,
        ticket: int,
        *,
        workspace: tuple[str, str],
        line: str,
        breaker: Breaker,
    ) -> Opened:
        """A queued job's first steps in one round trip (:data:`ADMIT_START`): is its workspace
        paused; else may it call the backend (``breaker.admit``); else :meth:`start`. See
        :class:`Opened` for the answer. An admission it gives is to be given back as
        ``breaker.admit``'s is (``breaker.release``)."""
        token = uuid.uuid4().hex
        keys, args = self._start_keys_args(generation_id, member, max_running, ticket, workspace, line)
        result: list[Any] = await self._admit_start(
            keys=[*keys, *breaker.admit_keys()], args=[*args, *breaker.admit_args(token, generation_id)]
        )
        first = int(result[0])
        if first == -3:
            return Opened(paused=True)
        if first == -4:
            return Opened(retry_in=int(result[1]) / 1000)
        admission = breaker.admission(token, first, result[1])
        return Opened(admission=admission, started=self._started(result[2:]))

    def _start_keys_args(
        self,
        generation_id: int,
        member: str,
        max_running: int,
        ticket: int,
        workspace: tuple[str, str],
        line: str,
    ) -> tuple[list[str], list[str | int]]:
        """The keys and arguments of :data:`START`."""
        return (
            [
                self.keys.waiting(line),
                self.keys.member_running(member),
                self.keys.member_held(member),
                self.keys.member_queued(member),
                self.keys.lines,
                self.keys.paused,
            ],
            [
                generation_id,
                max_running,
                _IN_PROGRESS,
                ticket,
                job_key_prefix + JOB_ID_PREFIX,
                JOB_ID_PREFIX,
                workspace_key(*workspace),
                self.keys.waiting_prefix,
                self.queue_name + LINE_QUEUE_INFIX,
            ],
        )

    @staticmethod
    def _started(result: list[Any]) -> tuple[bool | str | None, list[int]]:
        """:meth:`start`'s answer from :data:`START`'s."""
        status = int(result[0])
        moved = [int(i) for i in result[1:]]
        if status == -2:
            return "paused", moved
        return (None if status < 0 else bool(status)), moved

    async def aside(self, gen: Generation) -> str | None:
        if await self.is_paused(gen.platform, gen.workspace):
            return "paused"
        if await self.redis.zscore(self.keys.member_held(gen.member), str(gen.id)) is not None:
            return "held"
        return None

    async def claim_running(self, member: str, generation_id: int) -> None:
        """Count a job that is running again (after its worker died) as running for its member."""
        await self.redis.sadd(self.keys.member_running(member), str(generation_id))  # type: ignore[misc]

    async def release(
        self, member: str, generation_id: int | None, max_running: int
    ) -> tuple[int, int] | None:
        """The job stopped running: free its member's place. Returns ``(id, ticket)`` of the
        member's oldest held job when it may start now (the caller puts it back in the queue)."""
        popped: list[bytes] | None = await self._release(
            keys=[self.keys.lines, self.keys.member_running(member), self.keys.member_held(member)],
            args=["" if generation_id is None else generation_id, max_running, _IN_PROGRESS],
        )
        if not popped:
            return None
        return int(popped[0]), int(float(popped[1]))

    async def unhold(self, member: str, generation_id: int) -> bool:
        return bool(await self.redis.zrem(self.keys.member_held(member), str(generation_id)))

    async def held_behind_running(self, member: str, generation_id: int) -> bool:
        """Whether the job is held aside while its member has a job running (the sweep leaves it
        alone). A held job whose member runs nothing any more reads False: put it back."""
        held = await self.redis.zscore(self.keys.member_held(member), str(generation_id))
        if held is None:
            return False
        running: list[bytes] = await self.redis.smembers(self.keys.member_running(member))  # type: ignore[misc]
        for job in running:
            if await self.redis.exists(in_progress_key_prefix + job_id_for(int(job))):
                return True
        await self.redis.zrem(self.keys.member_held(member), str(generation_id))
        return False

    async def failover_watch(self, gap_s: float) -> float:
        """Count one failover check; returns for how many seconds the checks have run without a
        gap longer than ``gap_s`` (on Redis's clock, shared by every sweeping process)."""
        steady_ms = await self._failover_watch(keys=[self.keys.failover_watch], args=[int(gap_s * 1000)])
        return int(steady_ms) / 1000

    async def take_over(self, generation_id: int, member: str) -> None:
        """Let go of a dead run's hold on its job (see :data:`TAKE_OVER`): a worker may claim the
        job again at once, whatever arq's own in-progress key said, and its member's place is free."""
        await self._take_over(
            keys=[self.keys.member_running(member)], args=[generation_id, job_id_for(generation_id)]
        )

    async def mark_done(self, generation_id: int, *, line: str) -> None:
        """Make sure a finished (or cancelled) job holds no place in the waiting set."""
        await self.redis.zrem(self.keys.waiting(line), str(generation_id))

    async def remove_waiting(self, generation_id: int, *, line: str) -> bool:
        job_id = job_id_for(generation_id)
        removed = await self._remove(
            keys=[self.keys.waiting(line), self.line_queue(line), job_key_prefix + job_id],
            args=[generation_id, job_id],
        )
        return bool(removed)

    async def abort_running(self, generation_id: int) -> None:
        """Ask the worker running the job to cancel it (arq's abort set, which workers poll).
        Returns at once: unlike ``Job.abort``, it does not wait for the job's result."""
        await self.redis.zadd(abort_jobs_ss, {job_id_for(generation_id): _ms()})

    async def record_runtime(self, backend: str, seconds: float) -> None:
        key = self.keys.runtimes(backend)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, f"{seconds:.3f}")
            pipe.ltrim(key, 0, self.eta_window - 1)
            await pipe.execute()

    async def mean_runtime(self, backend: str) -> float:
        values: list[bytes] = await self.redis.lrange(  # type: ignore[misc]
            self.keys.runtimes(backend), 0, self.eta_window - 1
        )
        if not values:
            return self.default_run_s
        return sum(float(v) for v in values) / len(values)

    async def worker_heartbeat(self, worker_id: str, capacity: int, *, line: str) -> None:
        """Say that ``worker_id`` serves ``line`` with ``capacity``; and forget the workers of the
        line that stopped beating (their entries and their capacity), so neither grows."""
        await self._heartbeat(
            keys=[self.keys.workers(line), self.keys.worker_capacity(line)],
            args=[worker_id, capacity, _ms(), _ms() - DEAD_AFTER_MS],
        )

    async def worker_gone(self, worker_id: str, *, line: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.workers(line), worker_id)
            pipe.hdel(self.keys.worker_capacity(line), worker_id)
            await pipe.execute()

    async def capacity(self, line: str) -> int:
        """How many jobs of ``line`` its live workers run at once (0 when none is alive)."""
        alive = await self.redis.zrangebyscore(self.keys.workers(line), _ms() - WORKER_ALIVE_MS, "+inf")
        if not alive:
            return 0
        caps: list[bytes | None] = await self.redis.hmget(  # type: ignore[misc]
            self.keys.worker_capacity(line), alive
        )
        return sum(int(c) for c in caps if c is not None)

    async def line_basis(self, backend: str) -> LineBasis:
        """What a waiting job's status needs of its line, in one round trip (:data:`LINE_BASIS`)."""
        breaker = BreakerKeys.of(self.keys, backend)
        total, count, capacity, left, tripped = await self._line_basis(
            keys=[
                self.keys.runtimes(backend),
                self.keys.workers(backend),
                self.keys.worker_capacity(backend),
                breaker.open,
                breaker.tripped,
            ],
            args=[self.eta_window, _ms() - WORKER_ALIVE_MS],
        )
        mean = float(total) / int(count) if int(count) else self.default_run_s
        down = None if not int(tripped) and int(left) <= 0 else max(0, int(left)) / 1000
        return LineBasis(mean, int(capacity), down)

    async def publish_many(self, generation_ids: Iterable[int], kind: str) -> None:
        """:meth:`publish` of each, pipelined."""
        await self.publish_events((generation_id, kind) for generation_id in generation_ids)

    async def publish_events(self, events: Iterable[tuple[int, str]]) -> None:
        """:meth:`publish` of each ``(id, kind)``, in order, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for generation_id, kind in events:
                self._xadd(pipe, generation_id, kind)
            if pipe.command_stack:
                await pipe.execute()

    async def finished(
        self,
        generation_id: int,
        *,
        line: str,
        runtime: float | None = None,
        release: tuple[str, int] | None = None,
    ) -> tuple[int, int] | None:
        """A job ended: :meth:`mark_done` and the ``finished`` event; with ``runtime`` (seconds),
        :meth:`record_runtime` of ``line``; with ``release`` (member, max running),
        :meth:`release` of the job's place, whose answer it returns. All in one round trip, in
        that order. The run time and the release are best effort: their errors are logged (the
        release then answers None); the end's own raise, and a broken connection raises (the
        caller cannot know what ran)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.waiting(line), str(generation_id))
            self._xadd(pipe, generation_id, "finished")
            if runtime is not None:
                key = self.keys.runtimes(line)
                pipe.lpush(key, f"{runtime:.3f}")
                pipe.ltrim(key, 0, self.eta_window - 1)
            if release is not None:
                member, max_running = release
                # EVAL, not EVALSHA: a pipeline of a registered script asks Redis first whether
                # it knows it (one more round trip); Redis caches an EVAL'd script all the same.
                pipe.eval(
                    RELEASE,
                    3,
                    self.keys.lines,
                    self.keys.member_running(member),
                    self.keys.member_held(member),
                    str(generation_id),
                    str(max_running),
                    _IN_PROGRESS,
                )
            results = await pipe.execute(raise_on_error=False)
        for result in results[:2]:
            if isinstance(result, Exception):
                raise result
        if runtime is not None and any(isinstance(r, Exception) for r in results[2:4]):
            log.warning("recording the run time of %s failed: %s", line, results[2:4])
        if release is None:
            return None
        popped = results[-1]
        if isinstance(popped, Exception):
            log.warning("releasing the place of generation %s failed: %s", generation_id, popped)
            return None
        return (int(popped[0]), int(float(popped[1]))) if popped else None

    def _xadd(self, client: Any, generation_id: int, kind: str) -> None:
        fields = {"id": str(generation_id), "kind": kind}
        client.xadd(self.keys.events, fields, maxlen=EVENTS_MAXLEN, approximate=True)

    async def publish(self, generation_id: int, kind: str) -> None:
        await self.redis.xadd(
            self.keys.events,
            {"id": str(generation_id), "kind": kind},
            maxlen=EVENTS_MAXLEN,
            approximate=True,
        )

    async def backend_down(self, backend: str) -> float | None:
        """None while the circuit breaker of ``backend`` is closed; else the seconds until it lets
        a probe through (0: half-open, a probe may be running)."""
        return await breaker_retry_in(self.redis, BreakerKeys.of(self.keys, backend))
