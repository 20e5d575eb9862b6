"""Prometheus metrics read from durable state at scrape time, and the bus's own.

A service's figures that a restart must not lose (the last drift window, a rollout's stage, the
cycles it saw) are read from its database when Prometheus scrapes, by a `StoreCollector`
registered on the bus's registry (`Bus.metrics`, served on `DRIFTLOOP_METRICS_PORT`). The
exporter calls `collect` in its own thread: a collector opens its own short connection, runs a
few small queries and never touches the event loop. What is only ever counted as it happens
(redeliveries, dead letters) stays in ordinary counters. docs/metrics.md lists every metric.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)

# Seconds: a cycle or a rollout takes from seconds (a bootstrap) to days (a manual approval).
DURATION_BUCKETS: tuple[float, ...] = (
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)


def histogram(
    name: str,
    documentation: str,
    labels: Sequence[str],
    observations: Mapping[tuple[str, ...], Iterable[float]],
    *,
    buckets: Sequence[float] = DURATION_BUCKETS,
) -> HistogramMetricFamily:
    """A histogram family from every observation per label set (cumulative buckets, +Inf,
    sum and count, as a prometheus_client Histogram would expose them)."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for key, values in sorted(observations.items()):
        seen = sorted(values)
        counts = [bisect.bisect_right(seen, bound) for bound in buckets]
        family.add_metric(
            list(key),
            [(_bound(b), float(n)) for b, n in zip(buckets, counts, strict=True)]
            + [("+Inf", float(len(seen)))],
            sum_value=float(sum(seen)),
        )
    return family


def _bound(value: float) -> str:
    return str(float(value))


class StoreCollector(Collector):
    """Metrics read from a service's database at each scrape, in the exporter's thread.

    `read(conn)` returns the families; a store that cannot be read (busy, away) costs that
    scrape its families (logged at WARNING), never the exporter or the service."""

    def __init__(self, engine: Engine, read: Callable[[Connection], Iterable[Metric]]) -> None:
        self.engine = engine
        self.read = read

    def collect(self) -> Iterator[Metric]:
        try:
            with self.engine.connect() as conn:
                families = list(self.read(conn))
        except Exception as exc:
            logger.warning("metrics: store not readable", extra={"error": str(exc)})
            return
        yield from families

    def describe(self) -> Iterable[Metric]:
        return []  # no read at registration: the families are known at scrape time


@dataclass(frozen=True)
class ConsumerInfo:
    """What JetStream last said of a durable consumer (`Bus` asks every few seconds)."""

    stream: str
    pending: int  # messages of its filter not yet delivered: the consumer's lag
    ack_pending: int  # delivered, not yet acked
    redelivered: int  # delivered more than once, not yet acked


class ConsumerCollector(Collector):
    """The bus's consumers as JetStream last described them (cached, so a scrape makes no
    request to the server)."""

    def __init__(self, infos: Callable[[], Mapping[str, ConsumerInfo]]) -> None:
        self.infos = infos

    def collect(self) -> Iterator[Metric]:
        labels = ["stream", "consumer"]
        pending = GaugeMetricFamily(
            "driftloop_consumer_pending_messages",
            "messages of a durable consumer's subjects not yet delivered to it (its lag)",
            labels=labels,
        )
        ack_pending = GaugeMetricFamily(
            "driftloop_consumer_ack_pending_messages",
            "messages delivered to a durable consumer and not yet acknowledged",
            labels=labels,
        )
        redelivered = GaugeMetricFamily(
            "driftloop_consumer_redelivered_messages",
            "messages delivered more than once and not yet acknowledged",
            labels=labels,
        )
        for durable, info in sorted(dict(self.infos()).items()):
            key = [info.stream, durable]
            pending.add_metric(key, float(info.pending))
            ack_pending.add_metric(key, float(info.ack_pending))
            redelivered.add_metric(key, float(info.redelivered))
        yield from (pending, ack_pending, redelivered)

    def describe(self) -> Iterable[Metric]:
        return []


def gauge(name: str, documentation: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def counter(name: str, documentation: str, labels: Sequence[str]) -> CounterMetricFamily:
    """A counter family; `name` without `_total` (the exposition adds it)."""
    return CounterMetricFamily(name, documentation, labels=list(labels))


def as_float(value: Any) -> float | None:
    """A stored figure as a float; None when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
