"""Redis connections that ride out a restart, and the words for an outage.

Redis restarts (a deploy, a crash, a failover) refuse connections for a few seconds. redis-py
retries a command whose connection broke, but not the *opening* of a connection: a command that
needs a new connection while Redis is down fails at once with "Error 111 connecting to ...".
So genbot's pools:

- open connections patiently (:class:`PatientPool`): refused connections are tried again with
  backoff for up to :data:`REDIS_WAIT_S`;
- retry a command whose connection broke for about as long (:class:`PatientRetry`). Re-sending is
  safe: genbot's scripts are idempotent, and a duplicate event costs one render.

Both are bounded by time, not by a count, and by one deadline: redis-py retries the opening of a
connection *inside* each retry of a command, with the same ``Retry``, so counted retries multiply
(12 x 12 tries kept one command waiting 85 s). So a command waits out an outage of up to about
:data:`REDIS_WAIT_S` and then raises. What runs for
the life of a process (the worker's poll, the renderer, the sweep) does not end on that error: it
reports the outage once (:class:`Outage`), backs off and goes on, for as long as Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from arq.connections import ArqRedis
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.ports import QueueUnavailable

#: How long one command waits for Redis to come back before it raises (opening a connection and
#: re-sending on a broken one each back off up to 1 s).
REDIS_WAIT_S = 10.0
#: What a Redis that is down, restarting or unreachable raises. ``WatchError`` is what redis-py
#: raises when the connection of a ``WATCH`` transaction (arq's claim of a job) breaks.
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError, WatchError)
#: The longest pause between two attempts of a long-lived loop while Redis is away.
MAX_BACKOFF_S = 5.0


C = TypeVar("C", bound=type)
T = TypeVar("T")


def unavailable_on_outage(cls: C) -> C:
    """Class decorator: every public coroutine method of ``cls`` raises
    :class:`~bot.ports.QueueUnavailable` (the core's word for it) when it meets a Redis outage
    it could not wait out, instead of redis-py's exception."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _translated(member))
    return cls


def _translated(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except REDIS_DOWN as exc:
            raise QueueUnavailable from exc

    return wrapper


#: The deadline of the Redis call under way in this task (see :func:`_deadline`).
_DEADLINE: ContextVar[float | None] = ContextVar("genbot_redis_deadline", default=None)
#: What is worth trying again: the connection broke, timed out or was refused.
_RETRIED = (RedisConnectionError, RedisTimeoutError, OSError)


@contextlib.contextmanager
def _deadline() -> Iterator[float]:
    """The deadline of the outermost patient call of this task, :data:`REDIS_WAIT_S` after it
    began; a call nested in it (the opening of a connection inside a command's retry) shares it."""
    outer = _DEADLINE.get()
    if outer is not None:
        yield outer
        return
    deadline = time.monotonic() + REDIS_WAIT_S
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


async def _patiently(do: Callable[[], Awaitable[T]], fail: Callable[[BaseException], Any]) -> T:
    """``do()``, tried again with backoff (50 ms, doubling, up to 1 s) until the deadline."""
    with _deadline() as deadline:
        delay = 0.05
        while True:
            try:
                return await do()
            except _RETRIED as error:
                if (outcome := fail(error)) is not None and inspect.isawaitable(outcome):
                    await outcome
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)


class PatientRetry(Retry):
    """redis-py's ``Retry``, bounded by :data:`REDIS_WAIT_S` rather than by a count, with one
    deadline for a command and the openings of connections its retries make."""

    def __init__(self) -> None:
        super().__init__(NoBackoff(), -1, _RETRIED)  # type: ignore[arg-type]

    async def call_with_retry(self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]) -> T:
        return await _patiently(do, fail)  # type: ignore[arg-type]


class PatientPool(BlockingConnectionPool):
    """A connection pool whose new connections are tried again, with backoff, for up to
    :data:`REDIS_WAIT_S` while Redis refuses them (redis-py's pool tries once). It opens at most
    ``max_connections``; past them a command waits for a free one (up to :data:`REDIS_WAIT_S`,
    then it fails as a Redis that is away does) instead of failing at once as redis-py's default
    pool does."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        async def get() -> AbstractConnection:
            connection: AbstractConnection = await super(PatientPool, self).get_connection(*args, **kwargs)
            return connection

        return await _patiently(get, lambda _error: None)


#: The connections of a pool with no ``max_connections`` (redis-py's own default: no bound).
UNBOUNDED = 2**31


def redis_pool(url: str, *, max_connections: int | None = None) -> ArqRedis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``) that arq's own calls
    (enqueue, job status, abort, the worker) accept, that waits out a Redis restart (see the
    module docstring), and that opens at most ``max_connections`` (``GENBOT_REDIS__MAX_CONNECTIONS``).
    No I/O: connections open on first use."""
    pool = PatientPool.from_url(
        url,
        retry=PatientRetry(),
        retry_on_error=list(_RETRIED),
        socket_connect_timeout=1.0,
        max_connections=max_connections or UNBOUNDED,
        timeout=REDIS_WAIT_S,
        encoding="utf8",
    )
    return ArqRedis(pool_or_conn=pool)


async def open_redis(url: str, *, max_connections: int | None = None) -> ArqRedis:
    """:func:`redis_pool`, checked at once: raises ``redis.exceptions.ConnectionError`` (after one
    quick try, not a patient one) when Redis cannot be reached at start-up, so that a process that
    is misconfigured says so instead of waiting."""
    probe = ArqRedis.from_url(url, socket_connect_timeout=2.0)
    try:
        await probe.ping()
    finally:
        await probe.aclose()
    return redis_pool(url, max_connections=max_connections)


def redacted(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class Outage:
    """The state of one long-lived loop's view of Redis: it logs the start of an outage once (a
    warning), stays quiet while it lasts, and logs its end once with how long it lasted.

    ``await outage.failed(exc)`` after a failed attempt: logs if it is the first, then sleeps the
    next backoff (0.5 s, doubling, up to :data:`MAX_BACKOFF_S`); :meth:`note` when something else
    paces the attempts. ``outage.ok()`` after a good one.
    """

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self.log = logger
        self.since: float | None = None
        self._delay = 0.5

    @property
    def down(self) -> bool:
        return self.since is not None

    def note(self, exc: BaseException) -> None:
        """A failed attempt: logged if it starts an outage."""
        if self.since is None:
            self.since = time.monotonic()
            cause = exc.__cause__ or exc
            self.log.warning(
                "%s: Redis is unreachable (%s: %s); trying again until it is back",
                self.what,
                type(cause).__name__,
                cause,
            )

    async def failed(self, exc: BaseException) -> None:
        """A failed attempt: :meth:`note` it, then sleep the next backoff."""
        self.note(exc)
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, MAX_BACKOFF_S)

    def ok(self) -> None:
        if self.since is not None:
            self.log.warning("%s: Redis is back after %.0f s", self.what, time.monotonic() - self.since)
            self.since = None
            self._delay = 0.5
