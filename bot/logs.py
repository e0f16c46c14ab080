"""Logging: one line of text, or one JSON object (``GENBOT_LOG_FORMAT=json``), per record; each
carries the job and the platform of the work it comes from (:func:`at_work`), and no secret.

The job and the platform live in context variables: set where a job runs (the worker), where a
command is handled and where a status message is written (the bot), they reach every record logged
beneath, by genbot or a library, in that task and the tasks it starts. Secrets (Slack and OpenAI
tokens, Discord webhook and interaction tokens, Authorization values, Slack's response URLs) are
masked in the whole formatted record, its traceback included, whatever logged them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

#: The job a record comes from (its id), and its platform.
JOB: contextvars.ContextVar[int | None] = contextvars.ContextVar("genbot_job", default=None)
PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar("genbot_platform", default=None)

MASK = "[secret]"
_SECRETS = re.compile(
    r"xox[abposre]-[A-Za-z0-9-]+"  # Slack bot, user, app-level and refresh tokens
    r"|xapp-[A-Za-z0-9-]+"
    r"|sk-[A-Za-z0-9_-]{16,}"  # OpenAI keys
    r"|(?<=/webhooks/)\d+/[A-Za-z0-9_.-]+"  # Discord webhook and interaction tokens
    r"|(?<=/interactions/)\d+/[A-Za-z0-9_.-]+"
    r"|(?<=hooks\.slack\.com/)[^\s\"'<>]+"  # response URLs
    r"|(?i:(?<=bot )|(?<=bearer )|(?<=basic ))[A-Za-z0-9._~+/=-]{16,}"  # Authorization values
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(job)s %(platform)s"


def redact(text: str) -> str:
    """``text`` with every secret it holds masked. Pure."""
    return _SECRETS.sub(MASK, text)


def at_work(job: int | None = None, platform: str | None = None) -> None:
    """Say, for the records the current task (and the tasks it starts) logs from now on, which
    job and platform they are about (None leaves one as it is)."""
    if job is not None:
        JOB.set(job)
    if platform is not None:
        PLATFORM.set(platform)


@contextlib.contextmanager
def working_on(job: int, platform: str | None = None) -> Iterator[None]:
    """:func:`at_work` for the records logged inside, as they were after."""
    job_token = JOB.set(job)
    platform_token = PLATFORM.set(platform) if platform is not None else None
    try:
        yield
    finally:
        JOB.reset(job_token)
        if platform_token is not None:
            PLATFORM.reset(platform_token)


class _Context(logging.Filter):
    """Puts the job and the platform on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job = JOB.get()
        record.platform = PLATFORM.get()
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [job 12 slack]``, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job, platform = getattr(record, "job", None), getattr(record, "platform", None)
        where = " ".join(part for part in (f"job {job}" if job is not None else None, platform) if part)
        if where:
            head, sep, rest = line.partition("\n")  # after the message, before a traceback
            line = f"{head} [{where}]{sep}{rest}"
        return redact(line)


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, ``job``,
    ``platform`` (and ``exc_info`` with a traceback), secrets masked."""

    def __init__(self) -> None:
        super().__init__(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: str, form: Literal["text", "json"], stream: TextIO | None = None) -> logging.Handler:
    """Log to ``stream`` (stderr) at ``level`` in ``form``, replacing the root's handlers; the
    handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_Context())
    formatter: logging.Formatter = JsonLineFormatter() if form == "json" else TextFormatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
