"""Statements that meet a dead database connection are tried again, and are safe to try again.

PostgreSQL may end a connection at any time (``pg_terminate_backend``, a failover, an idle timeout
of a proxy). asyncpg's pool opens a new connection on the next acquire, but the statement that met
the dead one fails, and Tortoise 1.x does not retry it. :func:`reconnecting` tries such a statement
again, a few times with a short pause.

A connection can also die *after* the server committed a statement and before its reply arrived
(asyncpg then raises ``ConnectionDoesNotExistError``, or ``InternalClientError: cannot switch to
state ...`` when the protocol is left mid-operation). Such an error is ambiguous: the write may or
may not have happened. So every write genbot retries is one whose second run does no harm and
reports what the first did:

- merges of a JSON patch and plain ``SET``\\s: running them twice is running them once;
- inserts carry an idempotency key (a unique ``request_key`` column): the retry finds the row the
  first attempt made (:func:`insert_once`), and never makes a second one;
- state transitions check, when the retry finds the row already moved, whether it was moved by
  the first attempt (see ``TortoiseGenerationStore.transition``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tortoise.exceptions import IntegrityError
from tortoise.models import Model

log = logging.getLogger(__name__)

try:
    from asyncpg.exceptions import (  # type: ignore[import-untyped]
        CannotConnectNowError,
        InterfaceError,
        InternalClientError,
        OperatorInterventionError,
        PostgresConnectionError,
    )
except ImportError:
    # Without the postgres extra genbot runs on SQLite only, and asyncpg's errors cannot occur.
    ASYNCPG_LOST: tuple[type[BaseException], ...] = ()
else:
    ASYNCPG_LOST = (
        PostgresConnectionError,  # ConnectionDoesNotExistError, ConnectionFailureError, ...
        OperatorInterventionError,  # AdminShutdownError: terminated by an administrator
        CannotConnectNowError,
        InternalClientError,  # "cannot switch to state N; another operation is in progress"
        InterfaceError,  # "connection is closed", "another operation is in progress"
    )

#: What a lost connection looks like: the backend was terminated (before, during or after the
#: statement), the socket was closed, or asyncpg's protocol was left mid-operation by either.
CONNECTION_LOST: tuple[type[BaseException], ...] = (*ASYNCPG_LOST, ConnectionError)
ATTEMPTS = 5
PAUSE_S = 0.05

C = TypeVar("C", bound=type)
T = TypeVar("T")
M = TypeVar("M", bound=Model)


def reconnecting(cls: C) -> C:
    """Class decorator: every public coroutine method of ``cls`` is retried on a lost connection
    (except those marked :func:`retries_inside`). Each such method must be safe to run again (see
    the module docstring)."""
    for name, member in list(vars(cls).items()):
        if (
            not name.startswith("_")
            and inspect.iscoroutinefunction(member)
            and not getattr(member, "_retries_inside", False)
        ):
            setattr(cls, name, _retried(member))
    return cls


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def retries_inside(fn: F) -> F:
    """Mark a method that retries its own statements (:func:`with_retries`), because what it
    checks after a retry depends on values it fixed once (:func:`reconnecting` leaves it alone)."""
    fn._retries_inside = True  # type: ignore[attr-defined]
    return fn


async def with_retries(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``await call()``, run again on a new connection (up to :data:`ATTEMPTS` times in all) when
    the connection is lost; the last error propagates."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await call()
        except CONNECTION_LOST as exc:
            if attempt == ATTEMPTS:
                raise
            log.warning("database connection lost (%s); trying %s again", type(exc).__name__, what)
            await asyncio.sleep(PAUSE_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _retried(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await with_retries(lambda: fn(*args, **kwargs), fn.__name__)

    return wrapper


async def insert_once(model: type[M], request_key: str, **values: Any) -> M:
    """Insert a row of ``model`` keyed by ``request_key`` (its unique ``request_key`` column), or,
    if a row with that key exists (an earlier attempt of this same insert committed and its reply
    was lost), return that row. Safe to retry."""
    try:
        return await model.create(request_key=request_key, **values)
    except IntegrityError:
        existing = await model.get_or_none(request_key=request_key)
        if existing is None:
            raise
        return existing
