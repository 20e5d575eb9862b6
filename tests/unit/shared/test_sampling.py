"""Traces of the per-request traffic are sampled, the loop's own are not: at most
`DRIFTLOOP_TRACE_REQUESTS_PER_S` new prediction or feedback traces a second per process (the
request's SERVER span, or the record's PRODUCER span), every other trace kept, and a trace
kept or dropped whole; a root the sampler would drop is known before it is made, so the
gateway makes none. OTEL_TRACES_SAMPLER, when set, chooses instead."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind

from driftloop.shared.config import Settings
from driftloop.shared.telemetry import dropped_root, loop_sampler, tracer_provider

PREDICT = {"url.path": "/v1/models/churn/predict", "http.request.method": "POST"}
RECORD = {"messaging.destination.name": "driftloop.predictions.churn"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def provider_of(per_second: float, clock: Clock) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(sampler=loop_sampler(per_second, clock=clock))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def request(provider: TracerProvider, path: str = PREDICT["url.path"]) -> None:
    """A request's SERVER span with a child, as the gateway makes them."""
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span(
            "POST", kind=SpanKind.SERVER, attributes={**PREDICT, "url.path": path}
        ),
        tracer.start_as_current_span("predict"),
    ):
        pass


def roots(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is None]


def test_prediction_traces_are_kept_up_to_the_rate_and_each_is_kept_whole() -> None:
    clock = Clock()
    provider, exporter = provider_of(2.0, clock)

    for _ in range(5):
        request(provider)
    kept_at_once = exporter.get_finished_spans()
    clock.now += 1.0
    for _ in range(5):
        request(provider)

    spans = exporter.get_finished_spans()
    assert len(roots(kept_at_once)) == 2
    assert len(roots(spans)) == 4  # two more a second later
    assert len(spans) == 8  # each kept request with its child, no orphan child
    kept = {s.context.trace_id for s in roots(spans)}
    assert {s.context.trace_id for s in spans} == kept


def test_a_published_record_is_per_request_traffic_and_an_event_is_not() -> None:
    clock = Clock()
    provider, exporter = provider_of(1.0, clock)
    tracer = provider.get_tracer("test")

    for _ in range(3):
        with tracer.start_as_current_span(
            "send driftloop.predictions.churn", kind=SpanKind.PRODUCER, attributes=RECORD
        ):
            pass
        with tracer.start_as_current_span(
            "send driftloop.events.churn.RetrainRequested",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.destination.name": "driftloop.events.churn.RetrainRequested"},
        ):
            pass

    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("send driftloop.predictions.churn") == 1
    assert names.count("send driftloop.events.churn.RetrainRequested") == 3


@pytest.mark.parametrize(
    "path",
    ["/v1/models/churn", "/v1/models/churn/status", "/healthz", "/v1/models/churn/rollback"],
)
def test_every_other_request_is_traced(path: str) -> None:
    provider, exporter = provider_of(0.0, Clock())

    for _ in range(3):
        request(provider, path)

    assert len(roots(exporter.get_finished_spans())) == 3


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/churn/predict",
        "/v1/models/churn/feedback",
        "/v2/models/churn/infer",
        "/v2/models/churn/versions/3/infer",
    ],
)
def test_no_request_trace_at_a_rate_of_zero_and_every_one_at_inf(path: str) -> None:
    none, none_spans = provider_of(0.0, Clock())
    every, every_spans = provider_of(math.inf, Clock())

    for _ in range(50):
        request(none, path)
        request(every, path)

    assert none_spans.get_finished_spans() == ()
    assert len(roots(every_spans.get_finished_spans())) == 50


def test_the_rate_is_a_setting_and_otel_traces_sampler_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.setenv("DRIFTLOOP_TRACE_REQUESTS_PER_S", "25")
    ours = tracer_provider(Settings(home=tmp_path), service="gateway").sampler
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    standard = tracer_provider(Settings(home=tmp_path), service="gateway").sampler

    assert "RequestTraffic{25.0/s}" in ours.get_description()
    assert standard.get_description() == "AlwaysOffSampler"


def test_a_negative_rate_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_TRACE_REQUESTS_PER_S", "-1")

    with pytest.raises(ValueError, match="trace_requests_per_s"):
        Settings(home=tmp_path)


def test_a_root_the_sampler_would_drop_is_known_before_it_is_made() -> None:
    clock = Clock()
    provider, exporter = provider_of(1.0, clock)
    tracer = provider.get_tracer("test")

    before = [dropped_root(SpanKind.SERVER, PREDICT, provider=provider) for _ in range(3)]
    request(provider)  # takes the second's one token
    spent = dropped_root(SpanKind.SERVER, PREDICT, provider=provider)
    record = dropped_root(SpanKind.PRODUCER, RECORD, provider=provider)
    other = dropped_root(SpanKind.SERVER, {"url.path": "/healthz"}, provider=provider)
    with tracer.start_as_current_span("a cycle's work"):
        child = dropped_root(SpanKind.PRODUCER, RECORD, provider=provider)
    clock.now += 1.0
    refilled = dropped_root(SpanKind.SERVER, PREDICT, provider=provider)

    assert before == [False, False, False]  # asking takes no token: the request was kept
    assert len(roots(exporter.get_finished_spans())) == 2  # the request's and the cycle's
    assert spent
    assert record
    assert not other  # not per-request traffic: always traced
    assert not child  # a child follows its parent
    assert not refilled


def test_no_root_is_known_dropped_under_another_sampler() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)

    assert not dropped_root(SpanKind.SERVER, PREDICT, provider=provider)
