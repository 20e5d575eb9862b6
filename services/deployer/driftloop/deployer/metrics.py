"""The deployer's Prometheus metrics, read from its rollouts table at scrape time: each
model's latest rollout (stage, canary weight, paused) and the rollouts that ended."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import Metric
from sqlalchemy.engine import Connection, Engine

from driftloop.deployer.adapters.store import rollouts
from driftloop.deployer.domain.rollout import RUNNING, TERMINAL, Stage
from driftloop.shared.metrics import StoreCollector, counter, gauge, histogram

_ROLLOUTS = sa.select(
    rollouts.c.model,
    rollouts.c.version,
    rollouts.c.stage,
    rollouts.c.weight,
    rollouts.c.paused,
    rollouts.c.started_at,
    rollouts.c.updated_at,
).order_by(rollouts.c.model, rollouts.c.started_at)


def deployer_collector(engine: Engine) -> StoreCollector:
    """The collector to register on the deployer's bus registry."""
    return StoreCollector(engine, _read)


def _read(conn: Connection) -> Iterator[Metric]:
    key = ["model", "version"]
    stage = gauge(
        "driftloop_rollout_stage",
        "1 for the stage the model's latest rollout is in (shadow, awaiting_approval, canary, "
        "promoted, rolled_back), 0 for the others",
        [*key, "stage"],
    )
    weight = gauge(
        "driftloop_rollout_canary_weight_ratio",
        "share of the model's traffic the running rollout's canary serves (0 to 1; 0 in "
        "shadow, awaiting approval or once the rollout ended)",
        key,
    )
    paused = gauge(
        "driftloop_rollout_paused", "1 while the latest rollout's analysis is paused", key
    )
    ended = counter(
        "driftloop_rollouts",
        "rollouts that ended, by their last stage (promoted, rolled_back)",
        ["model", "outcome"],
    )
    latest: dict[str, Any] = {}  # model -> its latest rollout's row
    ended_counts: Counter[tuple[str, str]] = Counter()
    durations: dict[tuple[str, ...], list[float]] = {}
    for row in conn.execute(_ROLLOUTS):  # oldest first: the last one per model stays
        latest[row.model] = row
        if row.stage in TERMINAL:
            ended_counts[(row.model, row.stage)] += 1
            seconds = max(0.0, (row.updated_at - row.started_at).total_seconds())
            durations.setdefault((row.model, row.stage), []).append(seconds)
    for model, row in sorted(latest.items()):
        for name in Stage:
            stage.add_metric([model, row.version, name.value], 1.0 if row.stage == name else 0.0)
        running = row.stage in RUNNING
        share = row.weight / 100 if running and row.stage == Stage.CANARY else 0.0
        weight.add_metric([model, row.version], share)
        paused.add_metric([model, row.version], 1.0 if running and row.paused else 0.0)
    for key_values, n in sorted(ended_counts.items()):
        ended.add_metric(list(key_values), float(n))
    yield from (stage, weight, paused, ended)
    yield histogram(
        "driftloop_rollout_duration_seconds",
        "seconds from a rollout's start (its evaluation passed) to its end",
        ["model", "outcome"],
        durations,
    )
