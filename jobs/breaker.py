"""The circuit breaker around the image backend, shared by every worker through Redis.

aiobreaker 1.2.0 stays the breaker of each process (it runs the call, classifies its exceptions
and keeps the streak of failures), but its state is per process, its half-open state lets every
concurrent call through and its reopen time is wrong off UTC. So the **shared state lives in
Redis** and is the truth. Before every call the local aiobreaker is set to it: its state (closed,
or half-open for the probe) and its streak, which its storage (:class:`SharedStreak`) takes from
the shared count of failures in a row of all workers. The local breaker therefore opens exactly
when the shared count reaches ``fail_max``, never on one worker's streak alone; and the opening
itself is decided in Redis, by the script that counts the failure:

- ``open`` exists while the breaker is open. It is written with ``PX = reset``, so its PTTL *is*
  the "retry in" figure, the same for every worker and for the bot, whatever their clocks say.
- ``tripped`` exists from the opening until a probe succeeds: with ``open`` gone, the breaker is
  half-open.
- ``failures`` counts consecutive failures of *all* workers: ``fail_max`` of them open the
  breaker, however the failing calls were spread over the workers. A success resets it.
- ``probe`` (``SET NX PX``) lets exactly one call through in half-open, across all workers. If the
  prober dies, the key expires (``probe_ttl_s``, longer than a backend call may take) and another
  worker probes.

Each step is one Lua script, so two workers can never both probe, or both miss an opening.
A probe that succeeds closes the breaker; one that fails opens it for another ``reset_s``. The
call that is the probe is a real job's call: if it fails, that job fails as ``backend_error``, like
every call that meets a failing backend (a job that waits forever for a backend that chokes on it
would hold the head of the line; see :class:`jobs.runner.GenerationRunner` for the jobs that meet
the *open* breaker, which wait instead).

Openings and closings are announced with :data:`~jobs.constants.BREAKER_EVENT` events, so the bot
re-renders the waiting messages ("waiting for the service", then back to the ETA).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from aiobreaker import CircuitBreaker, CircuitBreakerError
from aiobreaker.state import CircuitBreakerState
from aiobreaker.storage.memory import CircuitMemoryStorage
from redis.asyncio import Redis

from bot.errors import ErrorCode, GenbotError
from bot.ports import QueueUnavailable, Refused
from jobs.connections import REDIS_DOWN
from jobs.constants import Keys

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Half-open, the probe is the head job's for this long; then any waiting job's.
PROBE_HEAD_GRACE_S = 3.0

# KEYS: open, tripped, probe, failures, waiting. ARGV: probe token, probe ttl ms, generation id or
# '', head grace ms.
# Returns {verdict, ms, failures}: 1 closed (call), 2 probe (this call is the half-open probe),
# 0 refused (ms: how long until it is worth asking again); failures: the shared streak now.
# Half-open, the probe goes to the job at the head of the line (position 1 is the next job to
# start); another waiting job may take it only once the head has not for ARGV[4] ms (its worker
# may be gone). ``tripped`` holds the time (ms) the open period ends.
# :data:`ADMIT_FUNCTION` is the same as a Lua function ``ADMIT(KEYS, ARGV)`` (the keys and
# arguments above), for a script that asks for leave and does more in the same step (jobs.queue).
ADMIT_FUNCTION = """
local function ADMIT(KEYS, ARGV)
local failures = tonumber(redis.call('GET', KEYS[4]) or '0')
local left = redis.call('PTTL', KEYS[1])
if left > 0 then return {0, left, failures} end
if redis.call('EXISTS', KEYS[2]) == 1 then
    if ARGV[3] ~= '' then
        local rank = redis.call('ZRANK', KEYS[5], ARGV[3])
        if rank and rank > 0 then
            local t = redis.call('TIME')
            local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
            if now - tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[4]) then
                return {0, 100, failures}
            end
        end
    end
    local prober = redis.call('GET', KEYS[3])
    if prober == ARGV[1] then return {2, 0, failures} end  -- a retry of this very call
    if not prober and redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2]) then return {2, 0, failures} end
    return {0, math.max(redis.call('PTTL', KEYS[3]), 0), failures}
end
return {1, 0, failures}
end
"""
ADMIT = ADMIT_FUNCTION + "return ADMIT(KEYS, ARGV)\n"

# KEYS: open, tripped, probe, failures, this call's mark. ARGV: fail_max, reset ms, probe token or ''.
# Returns 1 if this failure opened the breaker: the probe's, or the fail_max-th in a row of all
# workers (a success of any worker in between resets the count). A call is counted once, however
# often its verdict is sent (a retry after a lost reply): its mark says it was.
FAILURE = """
if not redis.call('SET', KEYS[5], '1', 'NX', 'PX', 60000) then return 0 end
local function trip()
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
    redis.call('SET', KEYS[2], now + tonumber(ARGV[2]))
    redis.call('DEL', KEYS[4])
    return 1
end
if ARGV[3] ~= '' then
    if redis.call('GET', KEYS[3]) == ARGV[3] then
        redis.call('DEL', KEYS[3])
        return trip()
    end
    return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local failures = redis.call('INCR', KEYS[4])
if failures >= tonumber(ARGV[1]) then return trip() end
return 0
"""

# KEYS: open, tripped, probe, failures. ARGV: probe token or ''. Returns 1 if this closed it.
SUCCESS = """
redis.call('DEL', KEYS[4])
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) == ARGV[1] then
    redis.call('DEL', KEYS[3], KEYS[2], KEYS[1])
    return 1
end
return 0
"""

# KEYS: probe. ARGV: probe token. The probe ended without a verdict (cancelled, never called).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class NotAFailure(Exception):
    """Base of exceptions that pass through the breaker without counting as backend failures
    (for example: the job was cancelled, so the call was stopped on purpose)."""


class BreakerOpen(GenbotError):
    """The backend is considered down; ``retry_in`` says when asking again is worth it."""

    def __init__(self, retry_in: float) -> None:
        super().__init__(ErrorCode.BACKEND_UNAVAILABLE)
        self.retry_in = retry_in


@dataclass(frozen=True, slots=True)
class Admission:
    """Leave to call the backend once: as a normal call, or as the half-open probe.
    ``failures``: the shared streak of failures when leave was given; ``call_id``: this call's,
    so that its verdict counts once."""

    probe_token: str | None = None
    failures: int = 0
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def probe(self) -> bool:
        return self.probe_token is not None


class SharedStreak(CircuitMemoryStorage):  # type: ignore[misc]
    """aiobreaker's storage, whose streak of failures is the shared one: :meth:`follow` sets it to
    the count of all workers before a call, and aiobreaker adds this call's failure to it."""

    def __init__(self) -> None:
        super().__init__(CircuitBreakerState.CLOSED)

    def follow(self, failures: int) -> None:
        self._fail_counter = failures


@dataclass(frozen=True, slots=True)
class BreakerKeys:
    open: str
    tripped: str
    probe: str
    failures: str
    #: The backend's line of waiting jobs: the half-open probe goes to its head.
    waiting: str

    @classmethod
    def of(cls, keys: Keys, backend: str) -> BreakerKeys:
        part = functools.partial(keys.breaker, backend)
        return cls(part("open"), part("tripped"), part("probe"), part("failures"), keys.waiting(backend))


async def breaker_retry_in(redis: Redis, keys: BreakerKeys) -> float | None:
    """What the bot shows: None when the breaker is closed, else the seconds until a probe may be
    tried (0 when half-open). Two reads, no scan."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.pttl(keys.open)
        pipe.exists(keys.tripped)
        left, tripped = await pipe.execute()
    if not tripped and int(left) <= 0:
        return None
    return max(0, int(left)) / 1000


class Breaker:
    """The breaker of one backend, shared by every worker of one Redis.

    ``on_change(state)`` is awaited with ``"open"`` or ``"closed"`` after this process opened or
    closed the shared breaker (to tell the renderers)."""

    def __init__(
        self,
        redis: Redis,
        keys: BreakerKeys,
        *,
        fail_max: int,
        reset_s: float,
        probe_ttl_s: float,
        on_change: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.fail_max = fail_max
        self.reset_s = reset_s
        self.probe_ttl_s = probe_ttl_s
        self.on_change = on_change
        self._streak = SharedStreak()
        self._local = CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=timedelta(seconds=reset_s),
            exclude=[NotAFailure, Refused],
            state_storage=self._streak,
        )
        self._admit = redis.register_script(ADMIT)
        self._failure = redis.register_script(FAILURE)
        self._success = redis.register_script(SUCCESS)
        self._release = redis.register_script(RELEASE)

    async def state(self) -> str:
        """``closed``, ``open`` or ``half_open``: the shared state."""
        retry_in = await breaker_retry_in(self.redis, self.keys)
        if retry_in is None:
            return "closed"
        return "open" if retry_in > 0 else "half_open"

    async def admit(self, generation_id: int | None = None) -> Admission:
        """Ask for leave to call the backend once, for the job of ``generation_id``. Raises
        :class:`BreakerOpen` while the breaker is open, or while it is half-open and another call
        (of any worker) is the probe, or the job is not at the head of the line (for the first
        :data:`PROBE_HEAD_GRACE_S` of half-open). An admission that ends up unused must be given
        back with :meth:`release`."""
        token = uuid.uuid4().hex
        try:
            verdict, ms, failures = await self._admit(
                keys=self.admit_keys(), args=self.admit_args(token, generation_id)
            )
        except REDIS_DOWN as exc:
            raise QueueUnavailable from exc
        if int(verdict) == 0:
            raise BreakerOpen(int(ms) / 1000)
        return self.admission(token, verdict, failures)

    def admit_keys(self) -> list[str]:
        """The keys of :data:`ADMIT` (for a script that runs it inside: :data:`ADMIT_FUNCTION`)."""
        return [self.keys.open, self.keys.tripped, self.keys.probe, self.keys.failures, self.keys.waiting]

    def admit_args(self, token: str, generation_id: int | None) -> list[str | int]:
        """The arguments of :data:`ADMIT`: ``token`` is the call's (:meth:`admission`'s)."""
        return [
            token,
            int(self.probe_ttl_s * 1000),
            "" if generation_id is None else generation_id,
            int(PROBE_HEAD_GRACE_S * 1000),
        ]

    @staticmethod
    def admission(token: str, verdict: Any, failures: Any) -> Admission:
        """The admission that :data:`ADMIT`'s answer ``verdict`` (1 or 2, not 0) and ``failures``
        give to the call of ``token``."""
        return Admission(token if int(verdict) == 2 else None, int(failures), token)

    async def release(self, admission: Admission) -> None:
        """Give back an admission that reached no verdict (safe after a verdict too). While Redis
        is away this gives nothing back: the probe key expires by itself."""
        if admission.probe_token is not None:
            try:
                await self._release(keys=[self.keys.probe], args=[admission.probe_token])
            except REDIS_DOWN:
                log.warning("could not give the breaker's probe back: Redis is unreachable")

    async def call(self, admission: Admission, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Call ``fn(*args)`` under ``admission``. A failure counts toward the shared breaker
        (and a failed probe opens it again); a success resets the count (and a successful probe
        closes it). Exceptions of ``fn`` propagate unchanged; :class:`NotAFailure` ones count as
        neither."""
        # The local breaker follows the shared one: closed for a normal call, half-open for the
        # probe, with the streak of all workers.
        wanted = CircuitBreakerState.HALF_OPEN if admission.probe else CircuitBreakerState.CLOSED
        if self._local.current_state != wanted:
            if admission.probe:
                self._local.half_open()
            else:
                self._local.close()
        self._streak.follow(admission.failures)
        try:
            result: T = await self._local.call_async(fn, *args)
        except CircuitBreakerError as exc:
            cause = exc.__cause__
            if cause is None:  # cannot happen: the local state was set just above
                raise BreakerOpen(self.reset_s) from None
            await self._record_failure(admission)
            raise cause from None
        except (NotAFailure, Refused):  # the service answered: it is not failing
            await self.release(admission)
            raise
        except Exception:
            await self._record_failure(admission)
            raise
        try:
            closed = await self._success(
                keys=[self.keys.open, self.keys.tripped, self.keys.probe, self.keys.failures],
                args=[admission.probe_token or ""],
            )
        except REDIS_DOWN:
            # The image is made: a verdict Redis cannot hear costs nothing but the count.
            log.warning("could not tell the breaker the image service answered: Redis is unreachable")
            return result
        if int(closed):
            log.warning("the image service answered the probe: circuit breaker closed")
            await self._announce("closed")
        return result

    async def _record_failure(self, admission: Admission) -> None:
        try:
            opened = await self._failure(
                keys=[
                    self.keys.open,
                    self.keys.tripped,
                    self.keys.probe,
                    self.keys.failures,
                    f"{self.keys.failures}:{admission.call_id}",
                ],
                args=[self.fail_max, int(self.reset_s * 1000), admission.probe_token or ""],
            )
        except REDIS_DOWN:
            log.warning("could not count a failure of the image service: Redis is unreachable")
            return
        if int(opened):
            log.warning("image service failing: circuit breaker open for %.0f s", self.reset_s)
            await self._announce("open")

    async def _announce(self, state: str) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(state)
        except Exception:  # the renderers also refresh on their own, later
            log.warning("announcing the breaker's state failed", exc_info=True)
