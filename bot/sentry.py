"""Errors to Sentry (``GENBOT_SENTRY__DSN``, the ``sentry`` extra): what a bot or a worker logs at
ERROR, genbot's way of reporting every exception it catches (a job's failure, a command's), with
its traceback, and what escapes uncaught; the records at INFO and above before it go along as
breadcrumbs.

Each event is tagged with the job and the platform it comes from (``genbot.job``,
``genbot.platform``: the context variables of :mod:`bot.logs`, read as the event is made, in the
task that logged it) and with the process (``genbot.process``: ``bot``, ``worker`` or ``dev``).

No secret leaves: :func:`scrubbed` (Sentry's ``before_send``) masks in every string of the event,
message, traceback, local variables and breadcrumbs alike, what :func:`bot.logs.redact` masks in
the logs; Sentry's own scrubber blanks the variables named like secrets (``token``,
``password``, ...), and no personal data is sent.

Sentry's integrations for the installed libraries are on (arq's jobs and aiohttp's requests as
transactions, when ``GENBOT_SENTRY__TRACES_SAMPLE_RATE`` traces some), but Redis's: it records a
breadcrumb per command, and an idle worker sends Redis hundreds a second, which would push the
log's breadcrumbs out of every event and weigh on the polling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.config import SentrySettings
from bot.logs import JOB, PLATFORM, redact

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

#: The longest the end of a process waits for the events still to send.
FLUSH_S = 5.0


def start_sentry(settings: SentrySettings, *, release: str | None, process: str) -> Callable[[], None]:
    """Start reporting to the DSN of ``settings``; returns what sends the events still held (at
    most :data:`FLUSH_S`). Needs the ``sentry`` extra."""
    import sentry_sdk
    from sentry_sdk.integrations.redis import RedisIntegration

    sentry_sdk.init(
        dsn=settings.dsn.get_secret_value(),
        environment=settings.environment or None,
        release=f"genbot@{release}" if release else None,
        # None, not 0: no transactions made at all (0 makes them, to drop them)
        traces_sample_rate=settings.traces_sample_rate or None,
        before_send=scrubbed,
        before_send_transaction=scrubbed,
        send_default_pii=False,
        disabled_integrations=[RedisIntegration()],
    )
    sentry_sdk.set_tag("genbot.process", process)
    return lambda: sentry_sdk.flush(timeout=FLUSH_S)


def scrubbed(event: Event, _hint: Hint) -> Event:
    """``event`` tagged with the job and the platform of the task it is made in, every secret of
    it masked. Pure but for reading the context."""
    tags = dict(event.get("tags") or {})
    if (job := JOB.get()) is not None:
        tags["genbot.job"] = str(job)
    if (platform := PLATFORM.get()) is not None:
        tags["genbot.platform"] = platform
    masked: Event = _masked(event)
    masked["tags"] = _masked(tags)
    return masked


def _masked(value: Any) -> Any:
    """``value`` with :func:`redact` applied to every string inside (dict keys are names, left)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_masked(item) for item in value)
    return value
