"""Positions and the job queue: the :class:`~bot.ports.JobQueue` on Redis and arq.

Why one Lua script writes the arq job itself
-------------------------------------------
A position is only honest if the job at position 1 is the next one a free worker starts. arq's
workers take jobs from its queue sorted set by score, then by member. genbot therefore scores every
job with its **ticket** (an ``INCR`` counter), so arq's order is the ticket order, whatever the clocks
of the bot hosts say. Ticket, waiting-set entry and arq job must appear in Redis at one instant: were
the arq job enqueued in a second round trip, a later submission could reach arq first and start ahead
of position 1. So :data:`SUBMIT` does what ``ArqRedis.enqueue_job`` does (the same dedupe on
``arq:job:<id>`` and ``arq:result:<id>``, the same payload from ``arq.jobs.serialize_job``) inside the
same atomic script that takes the ticket.
"""

from __future__ import annotations

import time
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from arq.jobs import serialize_job
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.models import job_id_for
from jobs.breaker import BreakerKeys, breaker_retry_in
from jobs.constants import (
    EVENTS_MAXLEN,
    GENERATE_FUNCTION,
    JOB_PAYLOAD_TTL_MS,
    WORKER_ALIVE_MS,
    Keys,
)

__all__ = ["ArqRedis", "RedisJobQueue", "open_redis"]

# KEYS: ticket, waiting, arq job key, arq result key, arq queue
# ARGV: generation id, job payload, payload ttl ms, ticket to reuse or "", arq job id
# Returns {ticket, position, added (1 if the waiting entry or the arq job had to be written)}.
# Idempotent, and it repairs: a waiting entry whose arq job is gone (Redis evicted it, arq gave up
# on it) gets its job back, at the same ticket.
SUBMIT = """
local ticket
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if score then
    ticket = tonumber(score)
elseif ARGV[4] ~= '' then
    ticket = tonumber(ARGV[4])
    if tonumber(redis.call('GET', KEYS[1]) or '0') < ticket then
        redis.call('SET', KEYS[1], ticket)
    end
else
    ticket = redis.call('INCR', KEYS[1])
end
local added = 0
if not score then
    redis.call('ZADD', KEYS[2], ticket, ARGV[1])
    added = 1
end
if redis.call('EXISTS', KEYS[3], KEYS[4]) == 0 then
    redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
    redis.call('ZADD', KEYS[5], ticket, ARGV[5])
    added = 1
end
return {ticket, redis.call('ZRANK', KEYS[2], ARGV[1]) + 1, added}
"""

# KEYS: waiting, arq queue, arq job key; ARGV: generation id, arq job id. Returns 1 if it was waiting.
REMOVE_WAITING = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('DEL', KEYS[3])
end
return removed
"""


#: A command that meets a broken connection (Redis restarted, a network blip) is sent again on a
#: new one, backing off up to 2 s, for about half a minute; then the error propagates.
REDIS_RETRIES = 20


def redis_settings_for(url: str) -> RedisSettings:
    """arq's connection settings for ``url``, for genbot's pool and the workers' alike: commands
    are retried on a lost connection, so that a restarted Redis does not end the worker's loop.
    (Re-sending is safe: genbot's scripts are idempotent, and a duplicate event costs one render.)"""
    settings = RedisSettings.from_dsn(url)
    settings.retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), REDIS_RETRIES)
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError]
    return settings


async def open_redis(url: str) -> ArqRedis:
    """A Redis pool that arq's own calls (job status, abort) also accept. Raises at once (after
    arq's few connection attempts) when Redis cannot be reached at start; once connected, lost
    connections are retried (:func:`redis_settings_for`)."""
    first = await create_pool(RedisSettings.from_dsn(url))
    await first.aclose()
    return await create_pool(redis_settings_for(url))


def _ms() -> int:
    return int(time.time() * 1000)


class RedisJobQueue:
    """Submit, position, cancel and ETA over one Redis. Every method is one round trip or one
    atomic script, so any number of bot and worker processes can share it."""

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

    async def submit(self, generation_id: int, *, ticket: int | None = None) -> tuple[int, int]:
        """See :meth:`bot.ports.JobQueue.submit`."""
        taken, position, _added = await self.restore(generation_id, ticket)
        return taken, position

    async def restore(self, generation_id: int, ticket: int | None) -> tuple[int, int, bool]:
        job_id = job_id_for(generation_id)
        payload = serialize_job(GENERATE_FUNCTION, (generation_id,), {}, None, _ms())
        result: list[Any] = await self._submit(
            keys=[
                self.keys.ticket,
                self.keys.waiting,
                job_key_prefix + job_id,
                result_key_prefix + job_id,
                self.queue_name,
            ],
            args=[generation_id, payload, JOB_PAYLOAD_TTL_MS, "" if ticket is None else ticket, job_id],
        )
        return int(result[0]), int(result[1]), bool(result[2])

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

    async def position(self, generation_id: int) -> int | None:
        rank = await self.redis.zrank(self.keys.waiting, str(generation_id))
        return None if rank is None else int(rank) + 1

    async def waiting(self) -> list[int]:
        members = await self.redis.zrange(self.keys.waiting, 0, -1)
        return [int(m) for m in members]

    async def mark_running(self, generation_id: int) -> bool:
        """Take a starting job out of the waiting set. True if it was waiting."""
        return bool(await self.redis.zrem(self.keys.waiting, str(generation_id)))

    async def mark_done(self, generation_id: int) -> None:
        """Make sure a finished (or cancelled) job holds no place in the waiting set."""
        await self.redis.zrem(self.keys.waiting, str(generation_id))

    async def remove_waiting(self, generation_id: int) -> bool:
        job_id = job_id_for(generation_id)
        removed = await self._remove(
            keys=[self.keys.waiting, self.queue_name, job_key_prefix + job_id],
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

    async def worker_heartbeat(self, worker_id: str, capacity: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.workers, {worker_id: _ms()})
            pipe.hset(self.keys.worker_capacity, worker_id, str(capacity))
            pipe.zremrangebyscore(self.keys.workers, "-inf", _ms() - 10 * WORKER_ALIVE_MS)
            await pipe.execute()

    async def worker_gone(self, worker_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.workers, worker_id)
            pipe.hdel(self.keys.worker_capacity, worker_id)
            await pipe.execute()

    async def capacity(self) -> int:
        """How many jobs the live workers run at once (0 when no worker is alive)."""
        alive = await self.redis.zrangebyscore(self.keys.workers, _ms() - WORKER_ALIVE_MS, "+inf")
        if not alive:
            return 0
        caps: list[bytes | None] = await self.redis.hmget(  # type: ignore[misc]
            self.keys.worker_capacity, alive
        )
        return sum(int(c) for c in caps if c is not None)

    async def eta_basis(self, backend: str) -> tuple[float, int]:
        return await self.mean_runtime(backend), await self.capacity()

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
