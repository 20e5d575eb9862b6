"""The standard OTEL_* variables choose the tracer provider's exporter and resource: the
service name, `none`, the OTLP protocol; bad values refused naming the variable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from driftloop.shared.config import Settings
from driftloop.shared.telemetry import tracer_provider

OTEL = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


@pytest.fixture(autouse=True)
def no_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)


def spans_written(home: Path) -> list[str]:
    """Make a span with a fresh provider from the environment's settings, flush it, and list
    what reached the span files under HOME."""
    settings = Settings(home=home)
    provider = tracer_provider(settings, service="monitor")
    with provider.get_tracer("test").start_as_current_span("work"):
        pass
    provider.force_flush()
    provider.shutdown()
    return [line for f in settings.trace_dir.glob("*.jsonl") for line in f.read_text().splitlines()]


def test_the_service_name_defaults_to_driftloop_and_the_service(tmp_path: Path) -> None:
    provider = tracer_provider(Settings(home=tmp_path), service="monitor")

    assert provider.resource.attributes["service.name"] == "driftloop-monitor"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_SERVICE_NAME", "churn-monitor"),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=churn-monitor"),
    ],
    ids=["OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"],
)
def test_the_otel_variables_override_the_service_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    provider = tracer_provider(Settings(home=tmp_path), service="monitor")

    assert provider.resource.attributes["service.name"] == "churn-monitor"


def test_without_otel_variables_spans_go_to_the_file_under_home(tmp_path: Path) -> None:
    assert spans_written(tmp_path)


def test_otel_traces_exporter_none_exports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")

    assert spans_written(tmp_path) == []


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
    ids=["unknown-exporter", "unsupported-protocol"],
)
def test_an_unsupported_choice_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError, match=named):
        Settings(home=tmp_path)


def test_the_traces_protocol_variable_wins_over_the_general_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")

    assert Settings(home=tmp_path).otel_exporter_otlp_protocol == "http/protobuf"


def test_otlp_over_grpc_without_its_exporter_installed_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if not installed, whether or not it is here: an import of it then fails
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")

    with pytest.raises(RuntimeError, match="opentelemetry-exporter-otlp-proto-grpc"):
        tracer_provider(Settings(home=tmp_path), service="monitor")
