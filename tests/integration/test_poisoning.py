"""The poisoning guard end to end: the trainer, evaluator and deployer's real `serve()` on a real
nats-server, a real database and a real MLflow store. After a champion is bootstrapped, a
batch of feedback whose labels are mostly flipped is rejected by the label-flip check; the same
traffic with honest labels is trained on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
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
from driftloop.shared.spec import parse_spec
from driftloop.trainer.adapters.store import samples
from driftloop.trainer.main import serve as trainer

FEATURES = ["tenure", "monthly_charges", "plan", "autopay"]
ROWS = 400  # above the spec's min_rows (300) and the label-flip check's minimum (100)


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


async def request(bus: Bus, *, trigger: Any, data_uri: str | None = None) -> str:
    cycle = str(uuid.uuid4())
    await bus.publish(
        RetrainRequested(
            model="churn",
            cycle_id=cycle,
            trigger=trigger,
            reason="test",
            data_uri=data_uri,
            requested_at=datetime.now(UTC),
        )
    )
    return cycle


async def events_of(settings: Settings, cycle: str, last: set[str]) -> list[dict[str, Any]]:
    """The cycle's events once one of `last` is among them."""

    async def ended() -> list[dict[str, Any]] | None:
        seen = of_cycle(await read_all_events(settings.resolved_nats_url()), cycle)
        return seen if last & set(types(seen)) else None

    return await eventually(ended, timeout=120)


async def bootstrap_champion(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    spec = parse_spec(SPEC)
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
    data = tmp_path / "churn.csv"
    churn(np.random.default_rng(1), 1200).to_csv(data, index=False)
    uri = await asyncio.to_thread(_upload, settings, "churn", data)
    cycle = await request(bus, trigger="bootstrap", data_uri=uri)
    seen = types(await events_of(settings, cycle, {"Deployed", "DataRejected", "TrainingFailed"}))
    assert seen[-1] == "Deployed", seen


async def send_traffic(bus: Bus, *, flip: float, seed: int) -> None:
    """ROWS served predictions, then their labels with a `flip` share of them inverted."""
    rng = np.random.default_rng(seed)
    frame = churn(rng, ROWS)
    ids = [f"t{i}" for i in range(ROWS)]
    labels = frame["churned"].to_numpy()
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
            predictions=[0] * ROWS,
            latency_ms=2.0,
            at=datetime.now(UTC),
        ),
        msg_id=f"predictions-{seed}",
    )
    await bus.publish_record(
        "driftloop.feedback.churn",
        FeedbackBatch(
            model="churn",
            labels=[Label(id=i, label=int(y)) for i, y in zip(ids, labels, strict=True)],
            at=datetime.now(UTC),
        ),
        msg_id=f"feedback-{seed}",
    )


@pytest.mark.parametrize(
    ("flip", "ends_with"),
    [(0.9, "DataRejected"), (0.0, "ModelTrained")],
    ids=["poisoned-labels-rejected", "clean-labels-trained"],
)
async def test_a_poisoned_feedback_batch_is_rejected_by_the_label_flip_check(
    settings: Settings,
    bus: Bus,
    labelled: Any,
    tmp_path: Path,
    flip: float,
    ends_with: str,
) -> None:
    await bootstrap_champion(settings, bus, tmp_path)
    await send_traffic(bus, flip=flip, seed=7)

    async def stored() -> bool:
        return bool(labelled() == ROWS)

    await eventually(stored, timeout=30)
    cycle = await request(bus, trigger="manual")
    events = await events_of(settings, cycle, {"DataRejected", "TrainingFailed", "ModelTrained"})

    answer = next(e["envelope"] for e in events if e["envelope"]["type"] != "RetrainRequested")
    assert answer["type"] == ends_with, answer["data"]
    if ends_with == "DataRejected":
        report = {c["name"]: c for c in answer["data"]["report"]}
        flips = report["label_flip"]
        assert flips["passed"] is False
        assert flips["figure"] > flips["threshold"]
        assert "churned disagrees with the champion" in flips["detail"]
        assert "label_flip" in answer["data"]["reason"]
        assert {"value_range", "unseen_categories", "missing_rate", "duplicates"} <= set(report)
        assert all(report[n]["passed"] for n in ("value_range", "column_types", "duplicates"))
