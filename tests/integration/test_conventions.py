"""The bus speaks the standards' current dialect, on a real nats-server and database: an event
is published with `Content-Type: application/cloudevents+json` (the CloudEvents NATS binding's
structured mode), by `Bus.publish` and by the outbox relay; publish and handling spans follow
OpenTelemetry's messaging conventions (`send <subject>` / `process <subject>`, PRODUCER /
CONSUMER, `messaging.*` attributes), recorded by an in-memory exporter on the real bus."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import eventually, read_all_events
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.db import SqlUnitOfWork, delivering, make_engine, messaging_tables
from driftloop.shared.events import ModelTrained

SUBJECT = "driftloop.events.m.ModelTrained"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process finishes during the test (the process's SDK provider, installed
    here when no test installed one before)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # its processor stays on the provider and exports nothing more


def trained() -> ModelTrained:
    return ModelTrained(
        model="m",
        cycle_id=str(uuid.uuid4()),
        version="1",
        run_id="run-1",
        dataset_version="abc",
        metrics={"f1": 0.9},
        trigger="manual",
    )


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_a_published_event_carries_the_cloudevents_content_type(settings: Settings) -> None:
    async with connect_bus(settings, service="t") as bus:
        event_id = await bus.publish(trained())

    [only] = await read_all_events(settings.resolved_nats_url(), "m")
    assert only["envelope"]["id"] == event_id
    assert only["headers"]["Content-Type"] == "application/cloudevents+json"


async def test_a_relayed_event_carries_the_cloudevents_content_type(settings: Settings) -> None:
    metadata = sa.MetaData()
    messaging = messaging_tables(metadata, "t")
    engine = make_engine(settings.database_url_for("t"))
    metadata.create_all(engine)
    uow = SqlUnitOfWork(engine, service="t", messaging=messaging)
    try:
        async with connect_bus(settings, service="t") as bus:
            bus.start_relay(uow)
            with delivering("cause-1"):
                async with uow.handling() as tx:
                    event_id = tx.emit(trained())

            async def relayed() -> list[dict[str, Any]]:
                events = await read_all_events(settings.resolved_nats_url(), "m")
                return events

            [only] = await eventually(relayed, timeout=10, interval=0.1)
    finally:
        engine.dispose()

    assert only["envelope"]["id"] == event_id
    assert only["headers"]["Content-Type"] == "application/cloudevents+json"


async def test_publish_and_handling_spans_follow_the_messaging_conventions(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    handled: list[ModelTrained] = []

    async def handler(event: ModelTrained) -> None:
        handled.append(event)

    async with connect_bus(settings, service="t") as bus:
        bus.subscribe(ModelTrained, handler)
        event_id = await bus.publish(trained())
        await eventually(lambda: named(spans, f"process {SUBJECT}"), timeout=10)

    [send] = named(spans, f"send {SUBJECT}")
    [process] = named(spans, f"process {SUBJECT}")
    assert send.kind == SpanKind.PRODUCER
    assert process.kind == SpanKind.CONSUMER
    common = {
        "messaging.system": "nats",
        "messaging.destination.name": SUBJECT,
        "messaging.message.id": event_id,
    }
    assert (
        dict(send.attributes or {}).items()
        >= (
            common | {"messaging.operation.type": "send", "messaging.operation.name": "send"}
        ).items()
    )
    assert (
        dict(process.attributes or {}).items()
        >= (
            common
            | {
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.consumer.group.name": "t-ModelTrained",
            }
        ).items()
    )
    legacy = {"messaging.destination", "messaging.message_id", "messaging.consumer"}
    assert not legacy & {*(send.attributes or {}), *(process.attributes or {})}
    # the handling continues the publisher's trace
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id


async def test_a_published_record_span_is_a_send_to_its_subject(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    async with connect_bus(settings, service="t") as bus:
        await bus.publish_raw("driftloop.predictions.m", b"{}", msg_id="r-1")

    [send] = named(spans, "send driftloop.predictions.m")
    assert send.kind == SpanKind.PRODUCER
    assert dict(send.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.destination.name": "driftloop.predictions.m",
        "messaging.message.id": "r-1",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
    }
