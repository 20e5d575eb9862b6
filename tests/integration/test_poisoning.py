"""The poisoning gate end to end: the trainer, evaluator and deployer's real `serve()` on a real
nats-server, a real database and a real MLflow store. After a champion is bootstrapped, the
gateway serves drifted traffic: values far outside the old training range, a label balance
moved from 0.42 to 0.8 churn and a new concept. With honest labels the set passes the gate, is
trained on, passes its evaluation and is deployed (drift is not poison); with 40 % of the labels
flipped at random it is rejected by the label_issues check, which names its figures. Replaces
the label-flip test, whose premise (labels judged by agreement with the old champion) a genuine
concept change breaks. The served rows the feature checks compare with cover the training rows'
period."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import SPEC, churn, eventually, of_cycle, read_all_events, types
from sqlalchemy.exc import DBAPIError

from driftloop.cli.main import _upload
from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
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
from driftloop.shared.samples import record_labels, record_predictions
from driftloop.shared.spec import parse_spec
from driftloop.trainer.adapters.store import metadata, samples, served_features
from driftloop.trainer.main import serve as trainer

FEATURES = ["tenure", "monthly_charges", "plan", "autopay"]
ROWS = 600  # labelled: above the spec's min_rows (300) and the label check's minimum (100)
UNLABELLED = 200  # served as well, never labelled: part of what the feature checks compare with
CHURN_SHARE = 0.8  # of the drifted rows (the bootstrap file has about 0.42)


@pytest.fixture
async def bus(settings: Settings, running: Any) -> AsyncIterator[Bus]:
    async with connect_bus(settings, service="test") as connected:
        for serve in (trainer, evaluator, deployer):
            running(serve(settings))
        yield connected


@pytest.fixture
def labelled(settings: Settings) -> Iterator[Any]:
    """How many of churn's samples the trainer holds with both features and a label."""
    engine = make_engine(settings.database_url_for("trainer"))

    def count() -> int:
        try:
            with engine.connect() as conn:
                query = sa.select(sa.func.count()).where(
                    samples.c.model == "churn",
                    samples.c.features.is_not(None),
                    samples.c.label.is_not(None),
                )
                return int(conn.execute(query).scalar_one())
        except DBAPIError as exc:  # the trainer creates its tables at start-up
            raise AssertionError(f"trainer store not ready: {exc}") from exc

    yield count
    engine.dispose()


async def request(
    bus: Bus, *, trigger: Any, data_uri: str | None = None, onset: datetime | None = None
) -> str:
    cycle = str(uuid.uuid4())
    await bus.publish(
        RetrainRequested(
            model="churn",
            cycle_id=cycle,
            trigger=trigger,
            reason="test",
            data_uri=data_uri,
            requested_at=datetime.now(UTC),
            onset=onset,
        )
    )
    return cycle


async def events_of(settings: Settings, cycle: str, last: set[str]) -> list[dict[str, Any]]:
    """The cycle's events once one of `last` is among them."""

    async def ended() -> list[dict[str, Any]] | None:
        seen = of_cycle(await read_all_events(settings.resolved_nats_url()), cycle)
        return seen if last & set(types(seen)) else None

    return await eventually(ended, timeout=120)


# a drift cycle waits for max(min_rows, 75 / 0.25) = 300 labelled rows served after its onset
ONSET_SPEC = SPEC.replace("holdout: 0.25}", "holdout: 0.25, onset_holdout_rows: 75}")


async def bootstrap_champion(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    assert ONSET_SPEC != SPEC
    spec = parse_spec(ONSET_SPEC)
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
    data = tmp_path / "churn.csv"
    churn(np.random.default_rng(1), 1200).to_csv(data, index=False)
    uri = await asyncio.to_thread(_upload, settings, "churn", data)
    cycle = await request(bus, trigger="bootstrap", data_uri=uri)
    seen = types(await events_of(settings, cycle, {"Deployed", "DataRejected", "TrainingFailed"}))
    assert seen[-1] == "Deployed", seen


def drifted_traffic(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Drifted customers (helpers.churn's other concept) with charges 100 higher, past the old
    training range, and churners making up `CHURN_SHARE` of them."""
    pool = churn(rng, 4 * n, drifted=True)
    churners = round(CHURN_SHARE * n)
    frame = pd.concat(
        [pool[pool["churned"] == 1].head(churners), pool[pool["churned"] == 0].head(n - churners)]
    )
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return frame.assign(monthly_charges=frame["monthly_charges"] + 100)


async def send_traffic(bus: Bus, *, flip: float, seed: int) -> None:
    """ROWS + UNLABELLED served predictions of drifted traffic, then the labels of the first
    ROWS with a `flip` share of them inverted at random."""
    rng = np.random.default_rng(seed)
    frame = drifted_traffic(rng, ROWS + UNLABELLED)
    ids = [f"t{i}" for i in range(len(frame))]
    labels = frame["churned"].to_numpy()[:ROWS]
    flipped = rng.random(ROWS) < flip
    labels = np.where(flipped, 1 - labels, labels)
    await bus.publish_record(
        "driftloop.predictions.churn",
        PredictionBatch(
            model="churn",
            version="1",
            route="champion",
            ids=ids,
            instances=frame[FEATURES].to_dict(orient="records"),
            predictions=[0] * len(frame),
            latency_ms=2.0,
            at=datetime.now(UTC),
        ),
        msg_id=f"predictions-{seed}",
    )
    await bus.publish_record(
        "driftloop.feedback.churn",
        FeedbackBatch(
            model="churn",
            labels=[Label(id=i, label=int(y)) for i, y in zip(ids, labels, strict=False)],
            at=datetime.now(UTC),
        ),
        msg_id=f"feedback-{seed}",
    )


@pytest.mark.parametrize(
    ("flip", "ends_with"),
    [(0.0, "Deployed"), (0.4, "DataRejected")],
    ids=["drift-trained-and-deployed", "poisoned-labels-rejected"],
)
async def test_drift_past_the_old_range_trains_and_flipped_labels_are_rejected(
    settings: Settings,
    bus: Bus,
    labelled: Any,
    tmp_path: Path,
    flip: float,
    ends_with: str,
) -> None:
    await bootstrap_champion(settings, bus, tmp_path)
    onset = datetime.now(UTC)
    await send_traffic(bus, flip=flip, seed=7)

    async def stored() -> bool:
        return bool(labelled() == ROWS)

    await eventually(stored, timeout=30)
    cycle = await request(bus, trigger="drift", onset=onset)
    ended = {"DataRejected", "TrainingFailed", "EvaluationFailed", "RolledBack", "Deployed"}
    events = await events_of(settings, cycle, ended)

    answer = next(e["envelope"] for e in events if e["envelope"]["type"] in ended)
    assert answer["type"] == ends_with, answer["data"]
    if ends_with == "Deployed":  # trained on the drifted rows, judged on them, and released
        seen = types(events)
        assert seen.index("ModelTrained") < seen.index("EvaluationPassed") < seen.index("Deployed")
        # better on the drifted rows than the champion: it passes whichever rule judged it
        verdict = events[seen.index("EvaluationPassed")]["envelope"]["data"]
        assert verdict["challenger_score"] > verdict["champion_score"], verdict["reason"]
    if ends_with == "DataRejected":
        data = answer["data"]
        report = {c["name"]: c for c in data["report"]}
        issues = report["label_issues"]
        assert issues["passed"] is False
        assert issues["figure"] > issues["threshold"]
        assert f"of {ROWS} new rows have label issues vs" in issues["detail"]
        assert "max increase" in issues["detail"]
        assert data["reason"].startswith("label_issues: ")
        assert [n for n, c in report.items() if not c["passed"]] == ["label_issues"]
        # the drift itself is not what is refused: values past the old range were served, and
        # the label balance's move is reported, not a gate
        assert report["value_range"]["passed"]
        assert f"({ROWS + UNLABELLED} served rows)" in report["value_range"]["detail"]
        assert report["label_shift"]["passed"]
        assert report["label_shift"]["threshold"] is None


def test_the_served_baseline_covers_the_training_rows_period(settings: Settings) -> None:
    engine = make_engine(settings.database_url_for("trainer"))
    metadata.create_all(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def served(ids: list[str], at: datetime, value: float) -> PredictionBatch:
        return PredictionBatch(
            model="churn",
            version="1",
            route="champion",
            ids=ids,
            instances=[{"x": value}] * len(ids),
            predictions=[0] * len(ids),
            latency_ms=1.0,
            at=at,
        )

    with engine.begin() as conn:
        record_predictions(conn, samples, served(["a", "b"], t0, 1.0))
        record_predictions(conn, samples, served(["c", "d"], t0 + timedelta(hours=1), 2.0))
        record_predictions(conn, samples, served(["e"], t0 + timedelta(hours=3), 3.0))
        shadow = served(["s"], t0, 9.0).model_copy(update={"route": "shadow"})
        record_predictions(conn, samples, shadow)
        for i, at in (("a", t0 + timedelta(minutes=30)), ("c", t0 + timedelta(hours=2))):
            labels = [Label(id=i, label=1)]
            record_labels(conn, samples, FeedbackBatch(model="churn", labels=labels, at=at))

    def values(**period: Any) -> list[float]:
        return sorted(served_features(engine, "churn", **period)["x"])

    try:
        since_onset = values(onset=t0 + timedelta(hours=2), labelled_after=None)
        since_c = values(onset=None, labelled_after=t0 + timedelta(hours=1))
        since_a = values(onset=None, labelled_after=t0)
        everything = values(onset=None, labelled_after=None)
    finally:
        engine.dispose()

    assert since_onset == [3.0]
    assert since_c == [2.0, 2.0, 3.0]  # from when "c", the only row labelled after, was served
    assert since_a == [1.0, 1.0, 2.0, 2.0, 3.0]
    assert everything == [1.0, 1.0, 2.0, 2.0, 3.0]  # shadow answers are not samples
