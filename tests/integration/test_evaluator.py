"""The evaluator's real `serve()` on a real nats-server, a real database and a real MLflow
SQLite store: versions registered as the trainer registers them, a ModelTrained published,
the verdict read back from the events stream and the challenger's MLflow run; the rule the
event's trigger picks (non-inferiority when the champion is known degraded)."""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from helpers import eventually, of_cycle, read_all_events
from mlflow import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from driftloop.evaluator.main import serve as evaluator
from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import SPECS_BUCKET, ModelTrained, Trigger
from driftloop.shared.modeling import prepare
from driftloop.shared.registry import (
    CHAMPION,
    configure_mlflow,
    experiment_id,
    read_json_artifact,
    record_artifact_digest,
)
from driftloop.shared.spec import parse_spec

FEATURES = ["tenure", "monthly_charges", "plan"]
SPEC = """\
model: churn
target: churned
features: [tenure, monthly_charges, plan]
evaluator:
  metric: accuracy
  max_p95_ms: 1000   # latency is not under test here
  slices: [{column: plan}, {column: tenure, bins: [12, 24]}]
"""


@pytest.fixture
async def bus(settings: Settings, running: Any) -> AsyncIterator[Bus]:
    async with connect_bus(settings, service="test") as connected:
        running(evaluator(settings))
        yield connected


def customers(rng: np.random.Generator, n: int, *, noise: float = 0.0) -> pd.DataFrame:
    """Customers on `max` churn when they pay more than 70, the others in their first 20
    months; `noise` of the labels flipped at random."""
    plan = rng.choice(["basic", "pro", "max"], n, p=[0.45, 0.4, 0.15])
    tenure = rng.gamma(2.0, 12.0, n).round(1)
    monthly = rng.normal(70, 20, n).round(2)
    churned = np.where(plan == "max", monthly > 70, tenure < 20)
    churned ^= rng.random(n) < noise
    return pd.DataFrame(
        {"tenure": tenure, "monthly_charges": monthly, "plan": plan, "churned": churned.astype(int)}
    )


def fit(frame: pd.DataFrame, columns: list[str], **tree: Any) -> Pipeline:
    """A tree on `columns` (the others are dropped), as a pipeline fed `prepare`d rows."""
    numeric = [c for c in columns if c != "plan"]
    encode = (
        [("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])] if "plan" in columns else []
    )
    pipeline = Pipeline(
        [
            ("features", ColumnTransformer([("num", "passthrough", numeric), *encode])),
            ("tree", DecisionTreeClassifier(random_state=0, **tree)),
        ]
    )
    return pipeline.fit(prepare(frame, FEATURES), frame["churned"])


def register(
    client: MlflowClient,
    settings: Settings,
    pipeline: Pipeline,
    holdout: pd.DataFrame,
    metrics: dict[str, float] | None = None,
) -> tuple[str, str]:
    """Log a run with the holdout, the model and its holdout `metrics`, as the trainer does;
    register a version."""
    with mlflow.start_run(
        experiment_id=experiment_id(client, settings, "churn"),
        tags={"driftloop.features": json.dumps(FEATURES)},
    ) as run:
        mlflow.log_metrics(metrics or {})
        with tempfile.TemporaryDirectory() as tmp:
            holdout.to_parquet(Path(tmp) / "holdout.parquet", index=False)
            mlflow.log_artifacts(tmp, artifact_path="data")
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name="churn",
            serialization_format="cloudpickle",
        )
    version = str(info.registered_model_version)
    record_artifact_digest(client, "churn", version)  # as the trainer does: loaders check it
    return version, run.info.run_id


async def judged(
    settings: Settings, bus: Bus, version: str, run_id: str, *, trigger: Trigger = "manual"
) -> tuple[str, dict[str, Any]]:
    """Publish ModelTrained for the version (a cycle of `trigger`); the verdict's type and
    data once it is out."""
    cycle = str(uuid.uuid4())
    await bus.publish(
        ModelTrained(
            model="churn",
            cycle_id=cycle,
            version=version,
            run_id=run_id,
            dataset_version="test",
            metrics={},
            trigger=trigger,
        )
    )

    async def verdict() -> tuple[str, dict[str, Any]] | None:
        events = of_cycle(await read_all_events(settings.resolved_nats_url(), "churn"), cycle)
        out = [e["envelope"] for e in events if e["envelope"]["type"].startswith("Evaluation")]
        return (out[0]["type"], out[0]["data"]) if out else None

    return await eventually(verdict, timeout=150)


async def setup(
    settings: Settings,
    bus: Bus,
    spec: str,
    champion: Pipeline,
    challenger: Pipeline,
    holdout: pd.DataFrame,
    *,
    champion_trained: dict[str, float] | None = None,
) -> tuple[MlflowClient, str, str]:
    """`champion_trained`: the champion's metrics on its own holdout when it was trained."""
    await (await bus.kv(SPECS_BUCKET)).put("churn", parse_spec(spec).to_json())
    client = configure_mlflow(settings)
    # MLflow blocks: off the event loop, so the evaluator starts meanwhile.
    first, _ = await asyncio.to_thread(
        register, client, settings, champion, holdout, champion_trained
    )
    client.set_registered_model_alias("churn", CHAMPION, first)
    version, run_id = await asyncio.to_thread(register, client, settings, challenger, holdout)
    return client, version, run_id


def checks(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in data["checks"]}


async def test_a_slice_that_regresses_fails_the_verdict_naming_the_slice(
    settings: Settings, bus: Bus
) -> None:
    rng = np.random.default_rng(1)
    clean = customers(rng, 1500)
    max_flipped = clean.assign(
        churned=np.where(clean["plan"] == "max", 1 - clean["churned"], clean["churned"])
    )
    champion = fit(clean, ["monthly_charges", "plan"], max_depth=4)  # blind to tenure
    challenger = fit(max_flipped, FEATURES, max_depth=6)  # learnt plan=max the wrong way
    holdout = customers(rng, 800)
    client, version, run_id = await setup(settings, bus, SPEC, champion, challenger, holdout)

    kind, data = await judged(settings, bus, version, run_id)

    found = checks(data)
    failed = [name for name, c in found.items() if not c["passed"]]
    assert kind == "EvaluationFailed"
    assert failed == ["slice[plan=max].accuracy_delta"]
    assert found["slice[plan=max].accuracy_delta"]["figure"] < -0.5
    assert found["slice[plan=max].accuracy_delta"]["threshold"] == -0.05
    assert "slice[plan=max]" in data["reason"]
    assert found["accuracy_delta"]["figure"] > 0.1, "better overall"
    assert found["accuracy_delta_lower_bound"]["passed"]
    assert {"slice[tenure=(-inf, 12]].accuracy_delta", "slice[plan=basic].accuracy_delta"} <= set(
        found
    )
    assert data["champion_version"] == "1"
    run = client.get_run(run_id)
    assert run.data.tags["driftloop.verdict"] == "failed"
    assert "slice[plan=max]" in run.data.tags["driftloop.verdict_reason"]
    assert run.data.metrics["eval.challenger.accuracy"] == pytest.approx(data["challenger_score"])
    assert run.data.metrics["eval.champion.accuracy"] == pytest.approx(data["champion_score"])
    assert run.data.metrics["eval.delta_ci_low"] > 0
    assert {"eval.delta_ci_high", "eval.mcnemar_p", "eval.challenger.roc_auc"} <= set(
        run.data.metrics
    )
    saved = await asyncio.to_thread(read_json_artifact, client, run_id, "evaluation/verdict.json")
    report = saved["evaluation"]
    [max_slice] = [s for s in report["slices"] if s["name"] == "plan=max"]
    assert max_slice["judged"]
    assert max_slice["rows"] == int((holdout["plan"] == "max").sum())
    assert np.sum(report["challenger"]["confusion"]["matrix"]) == len(holdout)
    assert report["champion"]["confusion"]["labels"] == [0, 1]
    assert np.sum(max_slice["confusion"]["matrix"]) == max_slice["rows"]


async def test_a_difference_within_noise_fails_at_the_default_margin_and_passes_within_one(
    settings: Settings, bus: Bus
) -> None:
    rng = np.random.default_rng(2)
    champion = fit(customers(rng, 400, noise=0.2), FEATURES, max_depth=8)
    challenger = fit(customers(rng, 400, noise=0.2), FEATURES, max_depth=8)
    holdout = customers(rng, 800, noise=0.2)
    _, version, run_id = await setup(settings, bus, SPEC, champion, challenger, holdout)

    strict_kind, strict = await judged(settings, bus, version, run_id)
    lenient_spec = SPEC.replace(
        "  metric: accuracy\n", "  metric: accuracy\n  min_delta: -0.05\n  non_inferiority: 0.05\n"
    )
    await (await bus.kv(SPECS_BUCKET)).put("churn", parse_spec(lenient_spec).to_json())
    lenient_kind, lenient = await judged(settings, bus, version, run_id)

    bound = checks(strict)["accuracy_delta_lower_bound"]
    assert strict_kind == "EvaluationFailed"
    assert not bound["passed"]
    assert bound["figure"] < 0
    assert bound["threshold"] == 0
    assert "accuracy_delta_lower_bound" in strict["reason"]
    assert abs(checks(strict)["accuracy_delta"]["figure"]) < 0.05
    assert lenient_kind == "EvaluationPassed", lenient["reason"]
    assert lenient["champion_degraded"] is False  # a manual cycle: the canary's usual steps
    assert checks(lenient)["accuracy_delta_lower_bound"]["threshold"] == pytest.approx(-0.1)


async def test_a_not_worse_challenger_passes_when_the_champion_is_degraded_and_fails_otherwise(
    settings: Settings, bus: Bus
) -> None:
    rng = np.random.default_rng(5)
    champion = fit(customers(rng, 1500), FEATURES, max_depth=6)
    challenger = fit(customers(rng, 1500), FEATURES, max_depth=6)  # the same rule, relearnt
    holdout = customers(rng, 800, noise=0.1)
    client, version, run_id = await setup(
        settings, bus, SPEC, champion, challenger, holdout, champion_trained={"accuracy": 0.99}
    )

    drift_kind, drift = await judged(settings, bus, version, run_id, trigger="drift")
    drift_tag = client.get_run(run_id).data.tags["driftloop.verdict_rule"]
    manual_kind, manual = await judged(settings, bus, version, run_id, trigger="manual")
    # the champion's run now says it scored no better when trained: drift alone is no evidence
    champion_run = client.get_model_version_by_alias("churn", CHAMPION).run_id
    client.log_metric(champion_run, "accuracy", 0.5, step=1)
    intact_kind, intact = await judged(settings, bus, version, run_id, trigger="drift")

    degraded = "non-inferiority: the champion is degraded (trigger drift)"
    strict = "strict: no evidence the champion is degraded (trigger manual)"
    assert drift_kind == "EvaluationPassed", drift["reason"]
    assert drift["champion_degraded"] is True  # the deployer runs the canary's degraded_steps
    assert abs(checks(drift)["accuracy_delta"]["figure"]) < 0.005, "a tie within noise"
    bound = checks(drift)["accuracy_delta_lower_bound"]
    assert (bound["threshold"], bound["passed"]) == (-0.01, True)
    assert bound["detail"].startswith(degraded)
    assert f"judged by {degraded}: drift, and its accuracy after it" in drift["reason"]
    assert drift_tag == degraded
    assert manual_kind == "EvaluationFailed"
    bound = checks(manual)["accuracy_delta_lower_bound"]
    assert (bound["threshold"], bound["passed"]) == (0, False)
    assert manual["reason"].endswith(f"judged by {strict}: a manual trigger carries no evidence")
    assert intact_kind == "EvaluationFailed"
    assert "is not measurably below the 0.5000 it scored when trained" in intact["reason"]
    assert checks(intact)["accuracy_delta_lower_bound"]["threshold"] == 0
    assert client.get_run(run_id).data.tags["driftloop.verdict_rule"] == (
        "strict: no evidence the champion is degraded (trigger drift)"
    )
