"""A local OpenTelemetry collector's OTLP/HTTP receiver: ``POST /v1/traces`` with an
``ExportTraceServiceRequest`` in protobuf, decoded with
opentelemetry-proto and answered as a collector answers; the spans kept, each with its
resource's attributes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.fake_server import serve

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str  # SPAN_KIND_SERVER, SPAN_KIND_CONSUMER, ...
    attributes: dict[str, Any]
    status: str  # STATUS_CODE_UNSET, STATUS_CODE_OK, STATUS_CODE_ERROR
    status_message: str
    resource: dict[str, Any]
    scope: str
    trace_id: bytes
    ended: bool


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which is not None else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


class OtlpServer:
    def __init__(self) -> None:
        self.port = 0
        self.spans: list[ReceivedSpan] = []
        self.refused: list[str] = []

    @property
    def endpoint(self) -> str:
        """What ``OTEL_EXPORTER_OTLP_ENDPOINT`` names: the exporter adds ``/v1/traces``."""
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        return app

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            self.refused.append(request.content_type)
            return web.Response(status=415)
        # A gzip Content-Encoding (OTEL_EXPORTER_OTLP_COMPRESSION) is undone by aiohttp's server.
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=Span.SpanKind.Name(span.kind),
                            attributes=_attributes(span.attributes),
                            status=Status.StatusCode.Name(span.status.code),
                            status_message=span.status.message,
                            resource=resource,
                            scope=scope_spans.scope.name,
                            trace_id=span.trace_id,
                            ended=span.end_time_unix_nano >= span.start_time_unix_nano > 0,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), headers={"Content-Type": PROTOBUF}
        )

    def named(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]


@contextlib.asynccontextmanager
async def otlp_server() -> AsyncIterator[OtlpServer]:
    server = OtlpServer()
    runner, server.port = await serve(server.app())
    try:
        yield server
    finally:
        await runner.cleanup()
