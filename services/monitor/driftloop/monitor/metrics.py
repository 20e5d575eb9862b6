"""The monitor's Prometheus metrics, read from its tables at scrape time (so a restart loses
none of them): the live metric on labelled traffic, each feature's PSI and KS of the last
judged window, the rows in the open windows, the retrain decisions and the cycles."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import Metric
from sqlalchemy.engine import Connection, Engine

from driftloop.monitor.adapters.store import cycles, decisions, models, version_windows
from driftloop.monitor.domain.decisions import reason_kind
from driftloop.shared.metrics import StoreCollector, as_float, counter, gauge, histogram

_MODELS = sa.select(
    models.c.model,
    models.c.reference_version,
    models.c.window["rows"].as_integer().label("window_rows"),
    models.c.last_drift,
    models.c.last_performance,
)
_VERSION_WINDOWS = sa.select(
    version_windows.c.model,
    version_windows.c.version,
    version_windows.c.window["rows"].as_integer().label("window_rows"),
    version_windows.c.last_drift,
)
_CYCLES = sa.select(
    cycles.c.model, cycles.c.trigger, cycles.c.outcome, cycles.c.started_at, cycles.c.ended_at
)


class DecisionTally:
    """The decisions counted per (model, trigger, outcome, reason kind): the table is read
    once, then only its rows added since the last scrape (ids only grow)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str, str]] = Counter()
        self.last_id = 0
        self._lock = threading.Lock()  # the exporter may serve two scrapes at once

    def read(self, conn: Connection) -> dict[tuple[str, str, str, str], int]:
        with self._lock:
            rows = conn.execute(
                sa.select(
                    decisions.c.id,
                    decisions.c.model,
                    decisions.c.trigger,
                    decisions.c.fired,
                    decisions.c.reason,
                )
                .where(decisions.c.id > self.last_id)
                .order_by(decisions.c.id)
            )
            for row in rows:
                fired = bool(row.fired)
                outcome = "fired" if fired else "suppressed"
                kind = reason_kind(fired=fired, reason=row.reason)
                self.counts[(row.model, row.trigger, outcome, kind)] += 1
                self.last_id = row.id
            return dict(self.counts)


def monitor_collector(engine: Engine) -> StoreCollector:
    """The collector to register on the monitor's bus registry."""
    tally = DecisionTally()

    def read(conn: Connection) -> Iterator[Metric]:
        yield from _drift(conn)
        yield from _decisions(tally.read(conn))
        yield from _cycles(conn)

    return StoreCollector(engine, read)


def _drift(conn: Connection) -> Iterator[Metric]:
    key = ["model", "version"]
    live = gauge(
        "driftloop_live_metric",
        "the champion's metric on its latest labelled traffic (the spec's "
        "monitor.performance.metric, judged every min_labels labels)",
        [*key, "metric"],
    )
    labels = gauge(
        "driftloop_live_metric_labels", "labelled rows the live metric was taken over", key
    )
    rows = gauge(
        "driftloop_window_rows",
        "predicted rows in the open drift window (judged at monitor.window rows)",
        key,
    )
    psi = gauge(
        "driftloop_drift_psi",
        "population stability index of a feature in the last judged drift window",
        [*key, "feature"],
    )
    ks = gauge(
        "driftloop_drift_ks_statistic",
        "two-sample Kolmogorov-Smirnov statistic of a numeric feature in the last judged window",
        [*key, "feature"],
    )
    drifted = gauge(
        "driftloop_drift_features_drifted",
        "features at or past psi_warn in the last judged drift window",
        key,
    )
    judged = gauge(
        "driftloop_drift_window_end_timestamp_seconds",
        "when the last judged drift window's newest row was predicted (Unix time)",
        key,
    )
    windows: list[tuple[str, str | None, int | None, Any]] = []
    for row in conn.execute(_MODELS):
        windows.append((row.model, row.reference_version, row.window_rows, row.last_drift))
        perf = row.last_performance or {}
        figure = as_float(perf.get("figure"))
        if figure is not None and perf.get("version") is not None:
            measured = str(perf["version"])
            live.add_metric([row.model, measured, str(perf.get("metric", ""))], figure)
            labels.add_metric([row.model, measured], float(perf.get("labels") or 0))
    for other in conn.execute(_VERSION_WINDOWS):
        windows.append((other.model, other.version, other.window_rows, other.last_drift))
    for model, version, window_rows, last in windows:
        if version is None:  # no champion yet: no window
            continue
        rows.add_metric([model, version], float(window_rows or 0))
        last = last or {}
        if not last:
            continue
        drifted.add_metric([model, version], float(len(last.get("drifted_features") or [])))
        end = last.get("window_end")
        if isinstance(end, str):
            judged.add_metric([model, version], datetime.fromisoformat(end).timestamp())
        for feature, figures in sorted((last.get("features") or {}).items()):
            value = as_float(figures.get("psi"))
            if value is not None:
                psi.add_metric([model, version, feature], value)
            value = as_float(figures.get("ks_statistic"))
            if value is not None:
                ks.add_metric([model, version, feature], value)
    yield from (live, labels, rows, psi, ks, drifted, judged)


def _decisions(counts: dict[tuple[str, str, str, str], int]) -> Iterator[Metric]:
    family = counter(
        "driftloop_retrain_decisions",
        "retrain decisions recorded: fired, or suppressed and why (reason: condition, retry, "
        "cycle_running, cooldown, waiting_for_labels, below_threshold, within_floor, other)",
        ["model", "trigger", "outcome", "reason"],
    )
    for key, n in sorted(counts.items()):
        family.add_metric(list(key), float(n))
    yield family


def _cycles(conn: Connection) -> Iterator[Metric]:
    ended = counter(
        "driftloop_cycles",
        "retraining cycles that ended, by trigger and by the event that ended them "
        "(Deployed, RolledBack, EvaluationFailed, DataRejected, TrainingFailed)",
        ["model", "trigger", "outcome"],
    )
    running = gauge("driftloop_cycles_running", "cycles started and not yet ended", ["model"])
    ended_counts: Counter[tuple[str, str, str]] = Counter()
    open_counts: Counter[str] = Counter()
    durations: dict[tuple[str, ...], list[float]] = {}
    for row in conn.execute(_CYCLES):
        if row.outcome is None:
            open_counts[row.model] += 1
            continue
        ended_counts[(row.model, row.trigger or "unknown", row.outcome)] += 1
        if row.started_at is not None and row.ended_at is not None:
            seconds = max(0.0, (row.ended_at - row.started_at).total_seconds())
            durations.setdefault((row.model, row.outcome), []).append(seconds)
    for key, n in sorted(ended_counts.items()):
        ended.add_metric(list(key), float(n))
    for model, n in sorted(open_counts.items()):
        running.add_metric([model], float(n))
    yield ended
    yield running
    yield histogram(
        "driftloop_cycle_duration_seconds",
        "seconds from a cycle's RetrainRequested to the monitor handling its end",
        ["model", "outcome"],
        durations,
    )
