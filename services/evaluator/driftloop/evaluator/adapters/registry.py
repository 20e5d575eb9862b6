"""The evaluator's MLflow side: the pair of models, their outputs on the challenger's
holdout, the challenger's latency; and the verdict written back to the challenger's run."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from mlflow import MlflowClient
from threadpoolctl import threadpool_limits

from driftloop.evaluator.domain.resampling import Outputs
from driftloop.evaluator.domain.verdict import Evidence, Verdict, p95_ms
from driftloop.shared.modeling import prepare
from driftloop.shared.registry import (
    CHALLENGER,
    CHAMPION,
    load_model,
    read_parquet_artifact,
    release_alias,
    version_by_alias,
)
from driftloop.shared.spec import ModelSpec

LATENCY_ROWS = 50
REPORT_PATH = "evaluation/verdict.json"


REFIT = "driftloop.refit"  # the trainer's tag: a first version refitted on its holdout too


@dataclass(frozen=True)
class Loaded:
    evidence: Evidence
    champion_version: str | None
    latency_seconds: list[float]


def load_evidence(client: MlflowClient, spec: ModelSpec, version: str, run_id: str) -> Loaded:
    """Both models' outputs on the challenger's holdout, and the challenger's one-row
    latencies."""
    run = client.get_run(run_id)
    features: list[str] = json.loads(run.data.tags["driftloop.features"])
    holdout = read_parquet_artifact(client, run_id, "data/holdout.parquet")
    x = prepare(holdout, features)
    y = holdout[spec.target].to_numpy()
    challenger: Any = load_model(spec.model, version)
    champion: Any = None
    champion_ref = version_by_alias(client, spec.model, CHAMPION)
    champion_version = None
    champion_trained: dict[str, float] | None = None
    if champion_ref is not None and champion_ref.version != version:
        champion_version = champion_ref.version
        champion = load_model(spec.model, champion_version)
        champion_trained = trained_metrics(client, champion_ref.run_id)
    classes = _classes(y, challenger, champion) if spec.task == "classification" else None
    columns = {
        s.column: holdout[s.column].to_numpy() for s in spec.evaluator.slices if s.column in holdout
    }
    # One thread, as the gateway serves: a multi-threaded OpenMP predict of one row is slower,
    # and on a busy machine its spinning threads can stall it for seconds.
    with threadpool_limits(limits=1):
        latencies = [row_latency(challenger, x.iloc[[i]]) for i in range(min(LATENCY_ROWS, len(x)))]
    evidence = Evidence(
        y_true=y,
        challenger=outputs_of(challenger, x, classes),
        champion=None if champion is None else outputs_of(champion, x, classes),
        latency_p95_ms=p95_ms(latencies) if latencies else 0.0,
        classes=classes,
        columns=columns,
        measured=dict(run.data.metrics) if run.data.tags.get(REFIT) == "true" else None,
        champion_trained=champion_trained,
    )
    return Loaded(evidence, champion_version, latencies)


def trained_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float] | None:
    """A version's metrics on its own holdout, as its training run logged them (a refitted
    first version logged them before the refit); the evaluation's `eval.*` figures left out.
    None when the version has no run."""
    if not run_id:
        return None
    metrics = client.get_run(run_id).data.metrics
    return {k: v for k, v in metrics.items() if not k.startswith("eval.")}


def _classes(y: Any, *models: Any) -> list[Any]:
    """The challenger's classes in its order, then the champion's and the labels' others."""
    out: list[Any] = []
    for source in [*(getattr(m, "classes_", []) for m in models if m is not None), np.unique(y)]:
        for value in source:
            plain = value.item() if isinstance(value, np.generic) else value
            if plain not in out:
                out.append(plain)
    return out


def outputs_of(model: Any, x: Any, classes: list[Any] | None) -> Outputs:
    """Predictions and, where the model has them, probabilities aligned to `classes`."""
    predictions = np.asarray(model.predict(x))
    if classes is None or not hasattr(model, "predict_proba"):
        return Outputs(predictions)
    raw = np.asarray(model.predict_proba(x), dtype=float)
    proba = np.zeros((len(predictions), len(classes)))
    for j, label in enumerate(model.classes_):
        plain = label.item() if isinstance(label, np.generic) else label
        proba[:, classes.index(plain)] = raw[:, j]
    return Outputs(predictions, proba)


def row_latency(model: Any, row: Any, *, repeats: int = 5) -> float:
    """Seconds the model takes to answer one row: the best of a few tries, so that another
    process busy on a shared machine does not count as the model's own cost."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(row)
        best = min(best, time.perf_counter() - started)
    return best


def record_verdict(
    client: MlflowClient, run_id: str, verdict: Verdict, report: dict[str, Any]
) -> None:
    """The verdict on the challenger's run: tags, figures as metrics, the report as JSON."""
    client.set_tag(run_id, "driftloop.verdict", "passed" if verdict.passed else "failed")
    client.set_tag(run_id, "driftloop.verdict_reason", verdict.reason[:5000])
    failed = [c.name for c in verdict.checks if not c.passed]
    client.set_tag(run_id, "driftloop.failed_checks", ",".join(failed)[:5000])
    rule = verdict.report.get("rule")
    if rule:  # absent when there was no champion to compare with
        client.set_tag(run_id, "driftloop.verdict_rule", rule["label"][:5000])
    for name, value in verdict_metrics(verdict.report).items():
        client.log_metric(run_id, name, value)
    client.log_text(run_id, json.dumps(report, indent=2, default=str), REPORT_PATH)


def release_challenger(client: MlflowClient, model: str, version: str) -> None:
    """A failed version's cycle ends with its verdict: it is no longer the challenger. Deleted
    only while the alias still points at it (a newer cycle's challenger keeps it)."""
    release_alias(client, model, CHALLENGER, version)


def verdict_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's figures as MLflow metrics: `eval.<model>.<metric>`, `eval.delta*`,
    `eval.mcnemar_p`, `eval.latency_p95_ms`, `eval.passed`; finite values only."""
    out: dict[str, Any] = {"eval.latency_p95_ms": report.get("latency_p95_ms")}
    for who in ("challenger", "champion"):
        for name, value in ((report.get(who) or {}).get("metrics") or {}).items():
            out[f"eval.{who}.{name}"] = value
    difference = report.get("difference") or {}
    out["eval.delta"] = difference.get("estimate")
    out["eval.delta_ci_low"] = difference.get("ci_low")
    out["eval.delta_ci_high"] = difference.get("ci_high")
    out["eval.mcnemar_p"] = (difference.get("mcnemar") or {}).get("p_value")
    out["eval.passed"] = 1.0 if report.get("passed") else 0.0
    return {
        k: float(v)
        for k, v in out.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
