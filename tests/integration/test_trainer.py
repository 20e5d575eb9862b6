"""The trainer's real `serve()` on a real nats-server, a real database and a real MLflow store:
how a retraining ends when it cannot train, and how it joins predictions with late labels."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import SPEC, churn, eventually, of_cycle, read_all_events
from sqlalchemy.exc import DBAPIError

from driftloop.cli.main import _upload
from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.db import make_engine
from driftloop.shared.events import (
    SPECS_BUCKET,
    FeedbackBatch,
    Label,
    PredictionBatch,
    RetrainRequested,
)
from driftloop.shared.spec import parse_spec
from driftloop.trainer.adapters.store import samples
from driftloop.trainer.main import serve as trainer

FEATURES = ["tenure", "monthly_charges", "plan", "autopay"]


@pytest.fixture
async def bus(settings: Settings, running: Any) -> AsyncIterator[Bus]:
    async with connect_bus(settings, service="test") as connected:
        running(trainer(settings))
        yield connected


async def apply(bus: Bus, spec_text: str = SPEC) -> None:
    spec = parse_spec(spec_text)
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())


async def request_bootstrap(
    settings: Settings, bus: Bus, frame: pd.DataFrame, tmp_path: Path
) -> str:
    data = tmp_path / "churn.csv"
    frame.to_csv(data, index=False)
    uri = await asyncio.to_thread(_upload, settings, "churn", data)
    return await request(bus, "churn", trigger="bootstrap", data_uri=uri)


async def request(bus: Bus, model: str, *, trigger: Any, data_uri: str | None = None) -> str:
    cycle = str(uuid.uuid4())
    await bus.publish(
        RetrainRequested(
            model=model,
            cycle_id=cycle,
            trigger=trigger,
            reason="test",
            data_uri=data_uri,
            requested_at=datetime.now(UTC),
        )
    )
    return cycle


async def outcome(settings: Settings, cycle: str) -> dict[str, Any]:
    """The envelope of the first event the trainer emitted for `cycle`."""

    async def emitted() -> dict[str, Any] | None:
        events = of_cycle(await read_all_events(settings.resolved_nats_url()), cycle)
        answers = [e["envelope"] for e in events if e["envelope"]["type"] != "RetrainRequested"]
        return answers[0] if answers else None

    answer: dict[str, Any] = await eventually(emitted, timeout=60)
    return answer


async def test_a_model_without_a_spec_fails_training_naming_the_model(
    settings: Settings, bus: Bus
) -> None:
    cycle = await request(bus, "nospec", trigger="manual")

    answer = await outcome(settings, cycle)

    assert answer["type"] == "TrainingFailed"
    assert answer["subject"] == "nospec"
    assert "'nospec'" in answer["data"]["reason"]
    assert "driftloop apply" in answer["data"]["reason"]


async def test_a_one_class_training_file_is_rejected_by_the_label_check(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    await apply(bus)
    frame = churn(np.random.default_rng(1), 400).assign(churned=1)

    cycle = await request_bootstrap(settings, bus, frame, tmp_path)
    answer = await outcome(settings, cycle)

    assert answer["type"] == "DataRejected"
    report = {c["name"]: c for c in answer["data"]["report"]}
    assert report["label_classes"]["passed"] is False
    assert report["label_classes"]["figure"] == 1
    assert report["min_rows"]["passed"] is True
    assert "label_classes" in answer["data"]["reason"]


async def test_an_unknown_estimator_fails_training_naming_recipe_estimator(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    await apply(
        bus,
        SPEC.replace(
            "sklearn.ensemble.HistGradientBoostingClassifier", "sklearn.linear_model.NoSuchModel"
        ),
    )
    frame = churn(np.random.default_rng(2), 400)

    cycle = await request_bootstrap(settings, bus, frame, tmp_path)
    answer = await outcome(settings, cycle)

    assert answer["type"] == "TrainingFailed"
    assert "recipe.estimator" in answer["data"]["reason"]
    assert "sklearn.linear_model.NoSuchModel" in answer["data"]["reason"]
    assert answer["data"]["report"]["estimator"] == "sklearn.linear_model.NoSuchModel"


@pytest.fixture
def stored(settings: Settings) -> Iterator[Callable[[], dict[str, Any]]]:
    """Read the trainer's samples of `churn` by id (from its own table, as the trainer does)."""
    engine = make_engine(settings.database_url_for("trainer"))

    def read() -> dict[str, Any]:
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.select(samples).where(samples.c.model == "churn"))
                return {r.id: r for r in rows}
        except DBAPIError as exc:  # the trainer creates its tables at start-up
            raise AssertionError(f"trainer store not ready: {exc}") from exc

    yield read
    engine.dispose()


def until(
    stored: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool]
) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def check() -> dict[str, Any]:
        rows = stored()
        assert done(rows), rows
        return rows

    return check


async def send_labels(bus: Bus, labels: dict[str, int], *, msg_id: str) -> None:
    batch = FeedbackBatch(
        model="churn",
        labels=[Label(id=i, label=y) for i, y in labels.items()],
        at=datetime.now(UTC),
    )
    await bus.publish_record("driftloop.feedback.churn", batch, msg_id=msg_id)


async def test_labels_that_arrive_before_their_predictions_are_joined_by_id(
    settings: Settings, bus: Bus, stored: Callable[[], dict[str, Any]]
) -> None:
    frame = churn(np.random.default_rng(3), 5)
    ids = [f"p{i}" for i in range(5)]
    instances = frame[FEATURES].to_dict(orient="records")
    labels = dict(zip(ids, (int(y) for y in frame["churned"]), strict=True))
    predictions = PredictionBatch(
        model="churn",
        version="1",
        route="champion",
        ids=ids,
        instances=instances,
        predictions=[0] * 5,
        latency_ms=3.0,
        at=datetime.now(UTC),
    )

    await send_labels(bus, labels, msg_id="feedback-1")
    early = await eventually(until(stored, lambda rows: len(rows) == 5), timeout=20)
    await bus.publish_record("driftloop.predictions.churn", predictions, msg_id="predictions-1")
    joined = await eventually(
        until(stored, lambda rows: all(r.features is not None for r in rows.values())), timeout=20
    )

    assert all(r.features is None and r.label is not None for r in early.values())
    assert sorted(joined) == ids
    assert {i: joined[i].label for i in ids} == labels
    assert [joined[i].features for i in ids] == instances
    assert {(r.version, r.prediction) for r in joined.values()} == {("1", 0)}
    assert all(r.predicted_at is not None and r.labelled_at is not None for r in joined.values())


async def test_a_repeated_label_does_not_change_the_first_one(
    settings: Settings, bus: Bus, stored: Callable[[], dict[str, Any]]
) -> None:
    first = {"a": 1, "b": 0}

    await send_labels(bus, first, msg_id="feedback-1")
    await eventually(until(stored, lambda rows: len(rows) == 2), timeout=20)
    await send_labels(bus, {"a": 0, "b": 1, "c": 1}, msg_id="feedback-2")
    rows = await eventually(until(stored, lambda rows: "c" in rows), timeout=20)

    assert {i: r.label for i, r in rows.items()} == {"a": 1, "b": 0, "c": 1}
