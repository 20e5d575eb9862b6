"""Settings from `DRIFTLOOP_*` environment variables (one base class, a subclass per service)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("gateway", "monitor", "trainer", "evaluator", "deployer")
TRACE_EXPORTERS = ("otlp", "console", "file", "none")  # file: HOME/traces/<service>.jsonl
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
ALERT_ENV_PREFIX = "DRIFTLOOP_ALERT_"  # a spec's alerts name these variables (spec.py)


def _alert_urls_from_environment() -> dict[str, str]:
    """The apprise URLs of the alert destinations: every DRIFTLOOP_ALERT_<NAME> variable."""
    return {k: v for k, v in os.environ.items() if k.startswith(ALERT_ENV_PREFIX) and v}


class Settings(BaseSettings):
    """What every process needs: where its state lives and how to reach the bus and MLflow."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore")

    home: Path = Path(".driftloop")
    nats_url: str | None = None  # unset: `driftloop up` starts an embedded server
    database_url: str | None = None  # unset: one SQLite file per service under home
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    api_tokens: str | None = None
    api_token: str | None = None  # what the CLI sends
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DRIFTLOOP_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    log_level: str = "INFO"
    # What the gateway accepts in one request (larger or longer: a 413 or 422 naming the limit).
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_instances: int = Field(default=10_000, ge=1, description="rows per predict request")
    max_string_length: int = Field(default=1_000, ge=1, description="characters per string")
    training_threads: int | None = Field(
        default=1,
        ge=1,
        description="native threads (OpenMP, BLAS) of one training; unset: the libraries' "
        "default, one per core. 1 because the trainer shares its cores with serving: a fit's "
        "spinning OpenMP threads on a busy machine took 5 to 70 s where one thread took 5 "
        "(docs/benchmarks.md)",
    )
    # Each service's store (see shared/db.py for what these bound and why).
    sqlite_busy_timeout: float = Field(
        default=5.0, gt=0, le=20, description="seconds a statement waits for a locked SQLite file"
    )
    inbox_retention_days: float = Field(
        default=7.0, description="days a handled message's inbox row is kept"
    )
    # The record streams' bounds (docs/reliability.md, "Records discarded"): at its limit a
    # stream drops its oldest records, read or not; consumers count what they never received.
    predictions_max_bytes: int = Field(
        default=2 * 1024**3, ge=-1, description="bytes the predictions stream keeps; -1 unbounded"
    )
    feedback_max_bytes: int = Field(
        default=-1, ge=-1, description="bytes the feedback stream keeps; -1 unbounded"
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="the Prometheus port of a monitor, trainer, evaluator or deployer (the "
        "gateway serves /metrics on its own port; `driftloop up` sets one per service); unset: "
        "none",
    )
    metrics_host: str = "127.0.0.1"
    # Alerts (the monitor sends them; `driftloop alerts test` too): each destination of a
    # model's spec names one DRIFTLOOP_ALERT_<NAME> variable holding its apprise URL (a secret:
    # kept out of the spec, of dumps and of reprs).
    alert_urls: dict[str, str] = Field(
        default_factory=_alert_urls_from_environment,
        validation_alias=AliasChoices("alert_urls"),
        exclude=True,
        repr=False,
    )
    console_url: str | None = Field(
        default=None, description="base of the console links in alerts; unset: the gateway's URL"
    )
    alerts_timeout: float = Field(
        default=15.0, gt=0, le=300, description="seconds one alert may take to send"
    )
    record_fetch: int = Field(
        default=500,
        ge=1,
        le=1000,  # the consumers' max_ack_pending
        description="most prediction or feedback records a consumer takes in one fetch",
    )
    record_linger: float = Field(
        default=0.25,
        ge=0,
        le=5,
        description=(
            "seconds a record consumer rests after a fetch that did not fill, so the next one "
            "takes what came meanwhile: fewer, larger transactions; 0: none"
        ),
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description=(
            "the services' event loop: uvloop when it is installed (auto; less CPU per request "
            "and per message, docs/benchmarks.md), or asyncio's own"
        ),
    )
    trace_requests_per_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "new traces a second, per process, of the per-request traffic (prediction and "
            "feedback requests, the records they publish); `inf`: every one. The loop's own "
            "traces (a cycle's events) are always whole. OTEL_TRACES_SAMPLER, when set, "
            "chooses instead"
        ),
    )
    # OpenTelemetry's standard variables (telemetry.py); OTEL_SERVICE_NAME and the exporter's
    # own (endpoint, headers, timeout) are read by the SDK itself.
    otel_traces_exporter: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_TRACES_EXPORTER")
    )
    otel_traces_sampler: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_TRACES_SAMPLER")
    )
    otel_exporter_otlp_protocol: str = Field(
        default="http/protobuf",
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
        ),
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("gateway_port")
    @classmethod
    def _port_in_range(cls, value: int) -> int:
        if not 0 < value < 65536:
            raise ValueError("DRIFTLOOP_GATEWAY_PORT must be between 1 and 65535")
        return value

    @field_validator("inbox_retention_days")
    @classmethod
    def _retention_past_redelivery(cls, value: float) -> float:
        # Shorter could forget a message JetStream still redelivers (the trainer's 1000
        # deliveries span most of a day): a repeat would then be handled twice.
        if value < 1:
            raise ValueError("DRIFTLOOP_INBOX_RETENTION_DAYS must be at least 1 (day)")
        return value

    @field_validator(
        "nats_url",
        "database_url",
        "mlflow_tracking_uri",
        "api_tokens",
        "otel_traces_exporter",
        "otel_traces_sampler",
        "otel_exporter_otlp_endpoint",
        "console_url",
    )
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("otel_traces_exporter")
    @classmethod
    def _known_exporters(cls, value: str | None) -> str | None:
        names = [n.strip().lower() for n in (value or "").split(",") if n.strip()]
        unknown = [n for n in names if n not in TRACE_EXPORTERS]
        if unknown:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} "
                f"(one or more of {', '.join(TRACE_EXPORTERS)})"
            )
        return ",".join(names) or None

    @field_validator("otel_exporter_otlp_protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        if value.strip().lower() not in OTLP_PROTOCOLS:
            raise ValueError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: {value!r} is not supported "
                f"(one of {', '.join(OTLP_PROTOCOLS)})"
            )
        return value.strip().lower()

    @field_validator("api_tokens")
    @classmethod
    def _no_token_is_unset(cls, value: str | None) -> str | None:
        # " " or "," names no token (shared/auth.py reads the same list): unset, not set
        tokens = [t.strip() for t in (value or "").split(",")]
        return ",".join(t for t in tokens if t) or None

    @property
    def trace_exporters(self) -> tuple[str, ...] | None:
        """OTEL_TRACES_EXPORTER as a list (`none`: empty); None when unset."""
        if self.otel_traces_exporter is None:
            return None
        return tuple(n for n in self.otel_traces_exporter.split(",") if n != "none")

    # Derived locations -------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """Pids, ports and the embedded server's URL, written by `driftloop up`."""
        return self.home / "run"

    @property
    def trace_dir(self) -> Path:
        return self.home / "traces"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def resolved_nats_url(self) -> str:
        """The configured URL, else the embedded server's recorded by `driftloop up`."""
        if self.nats_url:
            return self.nats_url
        recorded = self.run_dir / "nats.url"
        if recorded.exists():
            return recorded.read_text().strip()
        raise RuntimeError(
            "no NATS server: set DRIFTLOOP_NATS_URL or start the embedded one with `driftloop up`"
        )

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'db' / f'{service}.sqlite'}"

    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.home / 'mlflow.db'}"

    def console(self, model: str) -> str:
        """The console page of `model` (linked from its alerts)."""
        base = (self.console_url or self.gateway_url()).rstrip("/")
        return f"{base}/ui/models/{model}"

    def artifact_root(self) -> str:
        return (self.home / "mlartifacts").as_uri()

    def gateway_url(self) -> str:
        recorded = self.run_dir / "gateway.url"
        if recorded.exists():
            return recorded.read_text().strip()
        return f"http://{self.gateway_host}:{self.gateway_port}"


def redact(url: str) -> str:
    """`url` without its password, for anything a person or a log will read."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
