"""Sentry and OpenTelemetry for a bot or a worker: both optional (the ``sentry`` and ``otel``
extras), both off until set (``GENBOT_SENTRY__DSN``, ``GENBOT_OTEL__ENABLED``).

:func:`started` is the one place a process turns them on, as it starts (``genbot bot``,
``genbot worker``, ``genbot dev``), and sends what they still hold as it stops. A setting that
asks for one whose extra is not installed is refused there, in one line naming the extra, before
anything is connected.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator

from bot.config import ConfigError, Settings
from bot.tracing import version

#: Each extra: the modules it brings, with their distributions.
SENTRY = ("sentry", {"sentry_sdk": "sentry-sdk"})
OTEL = (
    "otel",
    {
        "opentelemetry.trace": "opentelemetry-api",
        "opentelemetry.sdk": "opentelemetry-sdk",
        "opentelemetry.exporter.otlp.proto.http": "opentelemetry-exporter-otlp-proto-http",
    },
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _require(extra: tuple[str, dict[str, str]], needed_by: str) -> None:
    name, modules = extra
    missing = list(dict.fromkeys(dist for module, dist in modules.items() if not _installed(module)))
    if missing:
        raise ConfigError(f"{needed_by} needs {' and '.join(missing)}: pip install 'genbot[{name}]'")


def require_telemetry(settings: Settings) -> None:
    """Raise :class:`ConfigError`, one line naming the extra to install, when Sentry or
    OpenTelemetry is switched on and its packages are not installed."""
    if settings.sentry.dsn.get_secret_value():
        _require(SENTRY, "GENBOT_SENTRY__DSN")
    if settings.otel.enabled:
        _require(OTEL, "GENBOT_OTEL__ENABLED")


@contextlib.contextmanager
def started(settings: Settings, process: str) -> Iterator[None]:
    """Sentry and OpenTelemetry as ``settings`` say, for the block, in the process named
    ``process`` (``bot``, ``worker``, ``dev``); what they hold is sent on the way out. Raises
    :class:`ConfigError` (see :func:`require_telemetry`) before the block runs. Once per process."""
    require_telemetry(settings)
    ends: list[Callable[[], object]] = []
    try:
        if settings.sentry.dsn.get_secret_value():
            from bot.sentry import start_sentry

            ends.append(start_sentry(settings.sentry, release=version(), process=process))
        if settings.otel.enabled:
            from bot.tracing import start_tracing

            ends.append(start_tracing(process))
        yield
    finally:
        for end in reversed(ends):
            end()
