"""Logging and tracing: JSON logs with trace ids, spans to OTLP or to a file under HOME.

Spans follow OpenTelemetry's semantic conventions (messaging and HTTP, as of semconv 1.27+): a
publish is a PRODUCER span `send <subject>`, a handled message a CONSUMER span
`process <subject>`, both with `messaging.system=nats`, `messaging.destination.name`,
`messaging.message.id` and `messaging.operation.type`/`.name`; the gateway's SERVER spans
carry `http.request.method`, `http.route`, `url.path`, `http.response.status_code`,
`server.address`/`.port`. The standard variables choose the exporter: `OTEL_TRACES_EXPORTER`
(`otlp`, `console`, `none`; unset: OTLP when an OTLP endpoint is set, else a span file under
HOME), `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf`; `grpc` with
opentelemetry-exporter-otlp-proto-grpc installed), `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES` (over the default `service.name=driftloop-<service>`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from driftloop.shared.config import Settings

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, trace ids, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            doc["trace_id"] = format(ctx.trace_id, "032x")
            doc["span_id"] = format(ctx.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class LogThrottle:
    """A warning that can repeat once per request under overload, logged at most once per
    `every` seconds: `due(now)` is None while held back, else how many occurrences the line
    stands for (this one and the ones held back since the last line). `now` in seconds, from
    any monotonic clock."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: float | None = None
        self._held = 0

    def due(self, now: float) -> int | None:
        self._held += 1
        if self._last is not None and now - self._last < self.every:
            return None
        count, self._held, self._last = self._held, 0, now
        return count


def configure_logging(settings: Settings, *, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("nats", "urllib3", "alembic", "mlflow", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans, one JSON object a line, to a file (read by `driftloop trace`)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_to_dict(span), default=str) for span in spans]
        with self._lock, self.path.open("a") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x") if ctx else None,
        "span_id": format(ctx.span_id, "016x") if ctx else None,
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "start": span.start_time,
        "end": span.end_time,
        "service": span.resource.attributes.get("service.name"),
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


def tracer_provider(settings: Settings, *, service: str) -> TracerProvider:
    """A provider exporting where the OTEL_* settings say (module docstring); not installed."""
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES over ours (Resource.create alone would not)
    resource = Resource.create({"service.name": f"driftloop-{service}"}).merge(
        OTELResourceDetector().detect()
    )
    # OTEL_TRACES_SAMPLER, when set, is the SDK's to read (sampler=None)
    sampler = None if settings.otel_traces_sampler else loop_sampler(settings.trace_requests_per_s)
    provider = TracerProvider(resource=resource, sampler=sampler)
    for exporter in _exporters(settings, service):
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider


def loop_sampler(per_second: float, *, clock: Any = time.monotonic) -> LoopSampler:
    """Every trace of the loop's own work (a cycle is one trace, whole); of the per-request
    traffic, which at a thousand requests a second would cost a quarter of the gateway's CPU
    to trace in full (docs/benchmarks.md), at most `per_second` new traces a second. A span
    with a parent follows its parent's choice, so a trace is kept or dropped whole."""
    return LoopSampler(RequestTraffic(per_second, clock=clock))


# a request that carries prediction traffic: its SERVER span's path, or the record it publishes
_REQUEST_PATH = re.compile(r"^/v[12]/models/[^/]+(/versions/[^/]+)?/(predict|infer|feedback)$")
_RECORD_SUBJECTS = ("driftloop.predictions.", "driftloop.feedback.")


class RequestTraffic(Sampler):
    """Root spans: a per-request one (`_REQUEST_PATH`, `_RECORD_SUBJECTS`) sampled while a
    token bucket of `per_second` tokens a second (holding at most one second's worth, at least
    one; none at 0) has a token; every other root sampled. `clock`: seconds, monotonic."""

    def __init__(self, per_second: float, *, clock: Any = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._capacity = max(1.0, per_second) if per_second > 0 else 0.0
        self._tokens = self._capacity
        self._last = clock()
        self._lock = threading.Lock()

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        keep = not per_request(kind, attributes) or self._take()
        if keep:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return SamplingResult(Decision.DROP)

    def _take(self) -> bool:
        if math.isinf(self._capacity):
            return True
        with self._lock:
            if not self._refilled():
                return False
            self._tokens -= 1.0
            return True

    def would_keep(self) -> bool:
        """Whether a per-request root started now would be kept (a token is there), taking
        none: the span that is then made takes it."""
        if math.isinf(self._capacity):
            return True
        with self._lock:
            return self._refilled()

    def _refilled(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.per_second)
        self._last = now
        return self._tokens >= 1.0

    def get_description(self) -> str:
        return f"RequestTraffic{{{self.per_second}/s}}"


class LoopSampler(ParentBased):
    """`loop_sampler`'s: ParentBased over `traffic`, the per-request traffic's rate."""

    def __init__(self, traffic: RequestTraffic) -> None:
        super().__init__(root=traffic)
        self.traffic = traffic


def dropped_root(kind: SpanKind, attributes: Attributes, *, provider: Any = None) -> bool:
    """Whether a span started now, with no current span, would be a root of per-request
    traffic that the loop's sampler drops (its rate spent): the caller may then make no span
    at all. A dropped span still costs its ids, the sampler, its context and its end: about a
    tenth of the gateway's CPU for a one-row request's, about half as much again for its
    record's (docs/benchmarks.md). False under a current span (a child follows its parent's choice)
    and under any other sampler (OTEL_TRACES_SAMPLER). `provider`: the process's by default."""
    if trace.get_current_span().get_span_context().is_valid:
        return False
    sampler = getattr(provider or trace.get_tracer_provider(), "sampler", None)
    return (
        isinstance(sampler, LoopSampler)
        and per_request(kind, attributes)
        and not sampler.traffic.would_keep()
    )


def per_request(kind: SpanKind | None, attributes: Attributes) -> bool:
    """Whether a root span is per-request traffic: a prediction or feedback request's SERVER
    span, or the PRODUCER span of the record it publishes."""
    attributes = attributes or {}
    if kind == SpanKind.SERVER:
        return bool(_REQUEST_PATH.match(str(attributes.get("url.path", ""))))
    if kind == SpanKind.PRODUCER:
        return str(attributes.get("messaging.destination.name", "")).startswith(_RECORD_SUBJECTS)
    return False


def configure_tracing(settings: Settings, *, service: str) -> TracerProvider:
    """Install the process's tracer provider (`tracer_provider`); with no exporter (`none`)
    spans are still made, so trace context still travels in the headers and the logs."""
    provider = tracer_provider(settings, service=service)
    trace.set_tracer_provider(provider)
    return provider


def _exporters(settings: Settings, service: str) -> list[SpanExporter]:
    names = settings.trace_exporters
    if names is None:  # ours: OTLP when an endpoint is set, else the span file
        names = ("otlp",) if settings.otel_exporter_otlp_endpoint else ("file",)
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            exporters.append(_otlp_exporter(settings.otel_exporter_otlp_protocol))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "file":
            exporters.append(JsonLinesSpanExporter(settings.trace_dir / f"{service}.jsonl"))
    return exporters


def _otlp_exporter(protocol: str) -> SpanExporter:
    """The exporter reads its endpoint, headers and timeout from the OTEL_* variables."""
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                "installed; or use http/protobuf (the collector's port 4318)"
            ) from exc
        exporter: SpanExporter = GrpcSpanExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


# Messaging spans (semantic conventions: messaging, NATS) ----------------------------------


def send_span(subject: str, message_id: str) -> tuple[str, dict[str, str]]:
    """Name and attributes of the PRODUCER span of one publish."""
    return f"send {subject}", _messaging(subject, message_id, "send")


def process_span(subject: str, message_id: str, durable: str) -> tuple[str, dict[str, str]]:
    """Name and attributes of the CONSUMER span of one handled message; the durable consumer
    (shared by a service's replicas) is the consumer group."""
    attributes = _messaging(subject, message_id, "process")
    attributes["messaging.consumer.group.name"] = durable
    return f"process {subject}", attributes


def _messaging(subject: str, message_id: str, operation: str) -> dict[str, str]:
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.message.id": message_id,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """The current trace context as W3C `traceparent`/`tracestate` headers."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> Any:
    return propagate.extract(dict(headers or {}))


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id inside a W3C traceparent header (`00-<trace>-<span>-<flags>`)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else None


def read_spans(trace_dir: Path) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    spans.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write
    return spans
