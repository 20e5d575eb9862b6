"""The MLflow `challenger` alias names the version of a cycle still under way: the real
evaluator's and deployer's `serve()` (a real nats-server, database and MLflow store) let go of
it when their version's cycle ends (promoted, failed its evaluation, rolled back), and leave it
alone when a newer cycle's version holds it."""

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
import pytest
from helpers import SPEC, churn, evaluation_passed, staged_spec
from loop import wait_for
from mlflow import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import DEPLOYER_CONTROL, SPECS_BUCKET, ModelTrained
from driftloop.shared.modeling import prepare
from driftloop.shared.registry import (
    CHALLENGER,
    CHAMPION,
    configure_mlflow,
    experiment_id,
    record_artifact_digest,
    version_by_alias,
)
from driftloop.shared.spec import parse_spec

FEATURES = ["tenure", "monthly_charges", "plan", "autopay"]
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # MLflow is under test


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    async with connect_bus(settings, service="test") as connected:
        yield connected


async def apply(bus: Bus, spec_text: str) -> None:
    spec = parse_spec(spec_text)
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())


def good() -> Pipeline:
    frame = churn(np.random.default_rng(1), 600)
    pipeline = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("num", "passthrough", ["tenure", "monthly_charges"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "autopay"]),
                    ]
                ),
            ),
            ("tree", DecisionTreeClassifier(max_depth=5, random_state=0)),
        ]
    )
    return pipeline.fit(prepare(frame, FEATURES), frame["churned"])


def useless() -> Pipeline:
    """Says nobody churns, whoever asks."""
    frame = churn(np.random.default_rng(2), 50)
    dummy = DummyClassifier(strategy="constant", constant=0)
    return Pipeline([("dummy", dummy)]).fit(prepare(frame, FEATURES), frame["churned"])


def register(client: MlflowClient, settings: Settings, pipeline: Pipeline) -> tuple[str, str]:
    """A run with a holdout and the model, registered and hashed as the trainer does; the
    challenger alias on it, as the trainer leaves a new version. Returns (version, run_id)."""
    with mlflow.start_run(
        experiment_id=experiment_id(client, settings, "churn"),
        tags={"driftloop.features": json.dumps(FEATURES)},
    ) as run:
        with tempfile.TemporaryDirectory() as tmp:
            holdout = churn(np.random.default_rng(3), 400)
            holdout.to_parquet(Path(tmp) / "holdout.parquet", index=False)
            mlflow.log_artifacts(tmp, artifact_path="data")
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name="churn",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],  # not inferred: that loads it in a subprocess
        )
    version = str(info.registered_model_version)
    record_artifact_digest(client, "churn", version)
    client.set_registered_model_alias("churn", CHALLENGER, version)
    return version, run.info.run_id


def challenger(client: MlflowClient) -> str | None:
    ref = version_by_alias(client, "churn", CHALLENGER)
    return ref.version if ref else None


@pytest.mark.parametrize("newer", [False, True], ids=["its own", "a newer one"])
async def test_a_failed_evaluation_lets_go_of_its_challenger_alias_only(
    settings: Settings, bus: Bus, running: Any, newer: bool
) -> None:
    await apply(bus, SPEC)
    client = await asyncio.to_thread(configure_mlflow, settings)
    champion, _ = await asyncio.to_thread(register, client, settings, good())
    client.set_registered_model_alias("churn", CHAMPION, champion)
    version, run_id = await asyncio.to_thread(register, client, settings, useless())
    if newer:  # a later cycle registered its version meanwhile
        later, _ = await asyncio.to_thread(register, client, settings, good())
    running(evaluator(settings))

    cycle = str(uuid.uuid4())
    await bus.publish(
        ModelTrained(
            model="churn",
            cycle_id=cycle,
            version=version,
            run_id=run_id,
            dataset_version="test",
            metrics={},
            trigger="manual",
        )
    )
    await wait_for(settings, cycle, "EvaluationFailed", timeout=150)

    assert challenger(client) == (later if newer else None)
    assert version_by_alias(client, "churn", CHAMPION) is not None


async def control(bus: Bus, action: str, **fields: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await bus.request(
        DEPLOYER_CONTROL, {"action": action, "model": "churn", "actor": "ana", **fields}, timeout=30
    )
    assert answer["ok"], answer
    return answer


async def released(bus: Bus, version: str, run_id: str) -> str:
    """Publish the version's EvaluationPassed (acting as the evaluator); returns its cycle."""
    cycle = f"cycle-{uuid.uuid4().hex[:8]}"
    await bus.publish(evaluation_passed(version, run_id, cycle_id=cycle, metric="accuracy"))
    return cycle


async def test_a_promoted_version_is_the_champion_and_no_longer_the_challenger(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await apply(bus, SPEC)
    client = await asyncio.to_thread(configure_mlflow, settings)
    first, first_run = await asyncio.to_thread(register, client, settings, good())
    second, second_run = await asyncio.to_thread(register, client, settings, good())
    running(deployer(settings))

    await wait_for(settings, await released(bus, first, first_run), "Deployed")
    kept = challenger(client)  # the first version's promotion leaves the newer challenger
    await wait_for(settings, await released(bus, second, second_run), "Deployed")

    assert kept == second
    assert challenger(client) is None
    champion = version_by_alias(client, "churn", CHAMPION)
    assert champion is not None
    assert champion.version == second


async def test_a_rolled_back_version_lets_go_of_its_challenger_alias_only(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await apply(bus, staged_spec())  # a release waits in shadow for live figures
    client = await asyncio.to_thread(configure_mlflow, settings)
    first, first_run = await asyncio.to_thread(register, client, settings, good())
    running(deployer(settings))
    await wait_for(settings, await released(bus, first, first_run), "Deployed")
    second, second_run = await asyncio.to_thread(register, client, settings, good())
    rolled = await released(bus, second, second_run)
    await wait_for(settings, rolled, "RolloutAdvanced")
    third, third_run = await asyncio.to_thread(register, client, settings, good())

    await control(bus, "rollback", reason="test: a newer challenger is judged meanwhile")
    await wait_for(settings, rolled, "RolledBack")
    newer_kept = challenger(client)
    last = await released(bus, third, third_run)
    await wait_for(settings, last, "RolloutAdvanced")
    await control(bus, "rollback", reason="test: its own")
    await wait_for(settings, last, "RolledBack")

    assert newer_kept == third
    assert challenger(client) is None
    champion = version_by_alias(client, "churn", CHAMPION)
    assert champion is not None
    assert champion.version == first
