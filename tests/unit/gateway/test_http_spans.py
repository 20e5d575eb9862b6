"""The gateway's SERVER span per request follows OpenTelemetry's HTTP conventions: named by
method and route template, `http.request.method`, `http.route`, `url.path`,
`http.response.status_code`, `server.address`/`.port`; an error status for a 5xx only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from driftloop.gateway import app as gateway_app
from driftloop.gateway.app import Traced
from driftloop.shared.telemetry import loop_sampler


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def traced_app() -> FastAPI:
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})  # as the gateway

    @app.get("/v1/models/{model}")
    async def model(model: str) -> dict[str, str]:
        if model == "broken":
            raise HTTPException(503, "no champion")
        return {"model": model}

    @app.post("/v1/models/{model}/predict")
    async def predict(model: str) -> dict[str, str]:
        return {"model": model}

    app.add_middleware(Traced)
    return app


async def get(path: str, method: str = "GET") -> httpx.Response:
    transport = httpx.ASGITransport(app=traced_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.example:8000") as c:
        return await c.request(method, path)


async def test_a_request_span_carries_the_current_http_attributes(
    spans: InMemorySpanExporter,
) -> None:
    await get("/v1/models/churn")

    [span] = spans.get_finished_spans()
    assert span.name == "GET /v1/models/{model}"
    assert span.kind == SpanKind.SERVER
    attributes = dict(span.attributes or {})
    assert (
        attributes.items()
        >= {
            "http.request.method": "GET",
            "http.route": "/v1/models/{model}",
            "url.path": "/v1/models/churn",
            "url.scheme": "http",
            "http.response.status_code": 200,
            "server.address": "gw.example",
            "server.port": 8000,
        }.items()
    )
    assert not {"http.method", "http.status_code", "http.target", "http.url"} & set(attributes)
    assert span.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize(
    ("path", "name", "status", "error"),
    [
        ("/v1/models/broken", "GET /v1/models/{model}", 503, True),
        ("/nowhere", "GET", 404, False),  # no route: the method alone (low cardinality)
    ],
    ids=["5xx-is-an-error", "404-is-not"],
)
async def test_a_server_span_is_an_error_for_a_5xx_only(
    spans: InMemorySpanExporter, path: str, name: str, status: int, error: bool
) -> None:
    await get(path)

    [span] = spans.get_finished_spans()
    assert span.name == name
    assert dict(span.attributes or {})["http.response.status_code"] == status
    assert (span.status.status_code == StatusCode.ERROR) is error


@pytest.mark.parametrize(("rate", "made"), [(0.0, 0), (1000.0, 1)], ids=["spent", "kept"])
async def test_no_span_is_made_for_a_request_the_loop_sampler_would_drop(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, rate: float, made: int
) -> None:
    """The process's sampler is the loop's (telemetry.configure_tracing): a predict request
    past its rate is served without a span; another path is traced whatever the rate. The
    gateway's tracer is made after the sampler is set, as in the process: a tracer keeps the
    sampler it was made with, and the provider keeps a tracer per name, so the module's would
    carry whichever sampler it was first made under (a new name each time)."""
    provider = trace.get_tracer_provider()
    monkeypatch.setattr(provider, "sampler", loop_sampler(rate))
    tracer = provider.get_tracer(f"{gateway_app.__name__}.{uuid.uuid4().hex}")
    monkeypatch.setattr(gateway_app, "_tracer", tracer)

    answered = await get("/v1/models/churn/predict", "POST")
    await get("/v1/models/churn")

    assert answered.status_code == 200
    assert answered.json() == {"model": "churn"}
    names = [s.name for s in spans.get_finished_spans()]
    assert names.count("POST /v1/models/{model}/predict") == made
    assert names.count("GET /v1/models/{model}") == 1
