"""Trace spans of genbot's work, through the OpenTelemetry API: one per job run (the worker), one
per command or button handled (the bot).

The spans are made with the API only, so that they cost next to nothing unless an SDK is
started: without the ``otel`` extra (no API installed) they are nothing at all; with it, the API's
own no-ops until :func:`start_tracing` (``GENBOT_OTEL__ENABLED``) installs the SDK's tracer
provider, which exports them in batches over OTLP/HTTP. Everything else is the standard variables
the SDK reads itself: where to (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
...), the service's name (``OTEL_SERVICE_NAME``, else ``genbot-bot``, ``genbot-worker`` or
``genbot-dev``), sampling (``OTEL_TRACES_SAMPLER``), batching (``OTEL_BSP_*``),
``OTEL_SDK_DISABLED``. A tracer provider another tool installs (``opentelemetry-instrument``)
gets genbot's spans as well.

A span carries ids, names and outcomes, never a message: no member's text and no secret goes out
(an exception escaping a span marks it failed with the exception's type, without its message).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

try:
    from opentelemetry import trace
except ModuleNotFoundError:  # the otel extra is not installed: no spans at all
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

#: Attribute values a span takes.
Value = str | int | float | bool
#: The attributes genbot's spans carry.
JOB_ID = "genbot.job.id"
JOB_KIND = "genbot.job.kind"
JOB_BACKEND = "genbot.job.backend"
#: What the run did: the state it left the job in (``succeeded``, ``failed``, ``cancelled``, ...) or
#: why it did nothing (``skipped``, ``held``, ``paused``, ``superseded``, ...).
JOB_OUTCOME = "genbot.job.outcome"
#: The error code of a job that failed (``timed_out``, ``backend_unavailable``, ...).
JOB_ERROR = "genbot.job.error"
PLATFORM = "genbot.platform"
COMMAND = "genbot.command"
#: ``ok``, or the error code the member was answered with.
COMMAND_OUTCOME = "genbot.command.outcome"


def version() -> str | None:
    """The installed genbot's version (None for a checkout that was never installed)."""
    try:
        return importlib.metadata.version("genbot")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _tracer() -> trace.Tracer:
    # A proxy until a provider is installed, then the provider's: fetched once, good for both.
    return trace.get_tracer("genbot", version())


@contextlib.contextmanager
def _span(name: str, kind: trace.SpanKind, attributes: Mapping[str, Value]) -> Iterator[None]:
    # Exceptions are not recorded: their messages may hold a member's text or a secret.
    with _tracer().start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield
        except Exception as exc:
            current.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise


@contextlib.contextmanager
def job_span(job: int) -> Iterator[None]:
    """A span (kind consumer) around one run of the job ``job`` in a worker."""
    if trace is None:
        yield
        return
    with _span("genbot.job", trace.SpanKind.CONSUMER, {JOB_ID: job}):
        yield


@contextlib.contextmanager
def command_span(command: str, platform: str) -> Iterator[None]:
    """A span (kind server) around the handling of one command (``imagine``) or button
    (``button:reroll``) from ``platform``."""
    if trace is None:
        yield
        return
    with _span("genbot.command", trace.SpanKind.SERVER, {COMMAND: command, PLATFORM: platform}):
        yield


def annotate(attributes: Mapping[str, Value | None]) -> None:
    """Set ``attributes`` (those not None) on the current span, if any."""
    if trace is None:
        return
    trace.get_current_span().set_attributes({k: v for k, v in attributes.items() if v is not None})


def failed(attribute: str, code: str) -> None:
    """Mark the current span failed, with the error ``code`` (an :class:`~bot.errors.ErrorCode`'s
    value) as ``attribute`` and as the status's description."""
    if trace is None:
        return
    current = trace.get_current_span()
    current.set_attribute(attribute, code)
    current.set_status(trace.StatusCode.ERROR, code)


def start_tracing(process: str) -> Callable[[], None]:
    """Install the SDK's tracer provider, exporting over OTLP/HTTP in batches as the ``OTEL_*``
    variables say; returns what ends it (exporting the spans still held, within the exporter's
    timeout). Once per process: the API refuses a second provider. Needs the ``otel`` extra."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource(process))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


def _resource(process: str) -> Resource:
    """What the spans come from: genbot's version, the process, and the service's name
    (``OTEL_SERVICE_NAME`` or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES`` when set, else
    ``genbot-<process>``)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    attributes: dict[str, Value] = {"genbot.process": process}
    if (release := version()) is not None:
        attributes[SERVICE_VERSION] = release
    # Resource.create gives what it is passed the last word: the service's name goes in only
    # where the variables did not name it (the SDK's fallback is "unknown_service").
    resource = Resource.create(attributes)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"genbot-{process}"}))
    return resource
