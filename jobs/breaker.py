"""The circuit breaker around the image backend: aiobreaker, with two of its gaps closed.

- aiobreaker 1.2.0's half-open state lets every concurrent call through; :class:`Breaker` lets one
  probe through and refuses the rest until the probe has answered.
- Its reopen time is computed from ``utcnow()`` against local time (wrong off UTC), so the "retry in
  N s" figure is computed here from a monotonic clock instead.

The state is per process; sharing it between workers is a reliability issue of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerListener
from aiobreaker.state import CircuitBreakerState

from bot.errors import ErrorCode, GenbotError

T = TypeVar("T")


class NotAFailure(Exception):
    """Base of exceptions that pass through the breaker without counting as backend failures
    (for example: the job was cancelled, so the call was stopped on purpose)."""


class BreakerOpen(GenbotError):
    """The backend is considered down; ``retry_in`` says when a probe will be let through."""

    def __init__(self, retry_in: float) -> None:
        super().__init__(ErrorCode.BACKEND_UNAVAILABLE)
        self.retry_in = retry_in


class _OpenedAt(CircuitBreakerListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.at = 0.0

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        if new.state == CircuitBreakerState.OPEN:
            self.at = time.monotonic()


class Breaker:
    def __init__(self, fail_max: int, reset_s: float) -> None:
        self.reset_s = reset_s
        self._opened = _OpenedAt()
        self._breaker = CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=timedelta(seconds=reset_s),
            exclude=[NotAFailure],
            listeners=[self._opened],
        )
        self._probe = asyncio.Lock()

    @property
    def state(self) -> str:
        return str(self._breaker.current_state.name).lower()

    def retry_in(self) -> float:
        return max(0.0, self.reset_s - (time.monotonic() - self._opened.at))

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Call ``fn(*args)`` through the breaker. Raises :class:`BreakerOpen` when open (or while
        another call is the half-open probe); any other exception is the backend's own."""
        if self._breaker.current_state == CircuitBreakerState.CLOSED:
            return await self._guarded(fn, *args)
        if self._probe.locked():
            raise BreakerOpen(self.retry_in())
        async with self._probe:
            return await self._guarded(fn, *args)

    async def _guarded(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            result: T = await self._breaker.call_async(fn, *args)
        except CircuitBreakerError as exc:
            if exc.__cause__ is not None:  # this call's failure opened it: report the failure
                raise exc.__cause__ from None
            raise BreakerOpen(self.retry_in()) from None
        return result
