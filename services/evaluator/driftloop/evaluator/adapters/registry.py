"""The evaluator's MLflow side: the pair of models and the challenger's holdout."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from threadpoolctl import threadpool_limits

from driftloop.shared.modeling import prepare, score
from driftloop.shared.registry import (
    CHAMPION,
    load_model,
    read_parquet_artifact,
    version_by_alias,
)

LATENCY_ROWS = 50


@dataclass(frozen=True)
class Scored:
    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    latency_seconds: list[float]
    holdout_rows: int


def score_pair(
    client: MlflowClient, model: str, version: str, run_id: str, *, task: str, target: str
) -> Scored:
    """Both models on the challenger's holdout, and the challenger's one-row latencies."""
    run = client.get_run(run_id)
    features: list[str] = json.loads(run.data.tags["driftloop.features"])
    holdout = read_parquet_artifact(client, run_id, "data/holdout.parquet")
    x = prepare(holdout, features)
    y = holdout[target]
    challenger: Any = load_model(model, version)
    ours = score(task, y, challenger, x)
    champion_ref = version_by_alias(client, model, CHAMPION)
    theirs = None
    champion_version = None
    if champion_ref is not None and champion_ref.version != version:
        champion_version = champion_ref.version
        theirs = score(task, y, load_model(model, champion_version), x)
    # One thread, as the gateway serves: a multi-threaded OpenMP predict of one row is slower,
    # and on a busy machine its spinning threads can stall it for seconds.
    with threadpool_limits(limits=1):
        latencies = [row_latency(challenger, x.iloc[[i]]) for i in range(min(LATENCY_ROWS, len(x)))]
    return Scored(ours, theirs, champion_version, latencies, len(holdout))


def row_latency(model: Any, row: Any, *, repeats: int = 5) -> float:
    """Seconds the model takes to answer one row: the best of a few tries, so that another
    process busy on a shared machine does not count as the model's own cost."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(row)
        best = min(best, time.perf_counter() - started)
    return best


def record_verdict(client: MlflowClient, run_id: str, passed: bool, report: dict[str, Any]) -> None:
    client.set_tag(run_id, "driftloop.verdict", "passed" if passed else "failed")
    client.log_text(run_id, json.dumps(report, indent=2, default=str), "evaluation/verdict.json")
