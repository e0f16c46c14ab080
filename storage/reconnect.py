"""A database connection that died under a statement is replaced, and the statement tried again.

PostgreSQL may end a connection at any time (``pg_terminate_backend``, a failover, an idle timeout
of a proxy). asyncpg's pool opens a new connection on the next acquire, but the statement that met
the dead one fails; Tortoise 1.x does not retry it. :func:`reconnecting` tries such a statement
again, a few times with a short pause. It is safe for genbot's statements: a statement whose
connection was lost before or while it ran was not committed, and every write genbot makes is
either idempotent (merges of the same patch) or guarded (state transitions check the state).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asyncpg.exceptions import (  # type: ignore[import-untyped]
    CannotConnectNowError,
    OperatorInterventionError,
    PostgresConnectionError,
)

log = logging.getLogger(__name__)

#: What a lost connection looks like: the backend was terminated, or the socket was closed.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    PostgresConnectionError,
    OperatorInterventionError,  # AdminShutdownError: terminated by an administrator
    CannotConnectNowError,
    ConnectionError,
)
ATTEMPTS = 5
PAUSE_S = 0.05

C = TypeVar("C", bound=type)


def reconnecting(cls: C) -> C:
    """Class decorator: every public coroutine method of ``cls`` is retried on a lost connection."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _retried(member))
    return cls


def _retried(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await fn(*args, **kwargs)
            except CONNECTION_LOST as exc:
                if attempt == ATTEMPTS:
                    raise
                log.warning("database connection lost (%s); trying %s again", type(exc).__name__, fn.__name__)
                await asyncio.sleep(PAUSE_S * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    return wrapper
