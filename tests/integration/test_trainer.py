"""The trainer's real `serve()` on a real nats-server, a real database and a real MLflow store:
how a retraining ends when it cannot train, and how it joins predictions with late labels."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import SPEC, churn, eventually, of_cycle, read_all_events
from sqlalchemy.exc import DBAPIError

from driftloop.cli.client import cancel_and_wait, follow_waits, trainer_waits
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
    prediction_subject,
)
from driftloop.shared.registry import configure_mlflow, read_parquet_artifact
from driftloop.shared.spec import parse_spec
from driftloop.trainer.adapters.registry import DatasetMismatchError, materialise
from driftloop.trainer.adapters.store import messaging, samples
from driftloop.trainer.adapters.worker import TrainingWorkers, WorkerError
from driftloop.trainer.domain.dataset import content_hash
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


# training in a worker process ---------------------------------------------------------------

SLOW = SPEC.replace(
    "params: {max_iter: 60, random_state: 0}",
    "params: {max_iter: 1000000, early_stopping: false, random_state: 0}",
).replace("holdout: 0.25}", "holdout: 0.25, time_limit: 1s}")
BAD_PARAMS = SPEC.replace("max_iter: 60", "max_iter: many")


@pytest.mark.parametrize(
    ("spec_text", "failure", "named"),
    [(SLOW, "timeout", "trainer.time_limit (1s)"), (BAD_PARAMS, "RecipeError", "max_iter")],
    ids=["too-slow-for-the-time-limit", "bad-params"],
)
async def test_a_failed_training_is_training_failed_and_the_trainer_trains_the_next_request(
    settings: Settings, bus: Bus, tmp_path: Path, spec_text: str, failure: str, named: str
) -> None:
    await apply(bus, spec_text)
    frame = churn(np.random.default_rng(4), 400)

    failed = await outcome(settings, await request_bootstrap(settings, bus, frame, tmp_path))
    await apply(bus)
    trained = await outcome(settings, await request_bootstrap(settings, bus, frame, tmp_path))

    assert failed["type"] == "TrainingFailed"
    assert named in failed["data"]["reason"]
    assert failed["data"]["report"]["failure"] == failure
    assert (
        failed["data"]["report"]["estimator"] == "sklearn.ensemble.HistGradientBoostingClassifier"
    )
    assert trained["type"] == "ModelTrained", trained["data"]


def raise_memory_error() -> None:
    bytearray(2**62)  # refused at once: nothing is allocated


@pytest.mark.parametrize(
    ("work", "args", "kind", "named"),
    [
        (os._exit, (3,), "crash", "exited with code 3"),
        (signal.raise_signal, (signal.SIGKILL,), "crash", "killed by SIGKILL"),
        (raise_memory_error, (), "MemoryError", "MemoryError"),
        (time.sleep, (30,), "timeout", "the limit (0.5s)"),
    ],
    ids=["exit", "killed", "memory-error", "timeout"],
)
async def test_a_worker_that_dies_raises_or_overruns_is_an_error_and_the_next_job_runs(
    work: Any, args: tuple[Any, ...], kind: str, named: str
) -> None:
    workers = TrainingWorkers()

    with pytest.raises(WorkerError) as failed:
        await workers.run(
            work, *args, limit=0.5 if kind == "timeout" else 30, limit_name="the limit"
        )
    after = await workers.run(os.getpid, limit=30)

    assert failed.value.kind == kind
    assert named in failed.value.reason
    assert after.value != os.getpid()


def openmp_threads() -> list[int]:
    """In a worker: how many threads each loaded OpenMP runtime would use."""
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]


async def test_a_training_runs_with_the_native_threads_it_is_given() -> None:
    limited = await TrainingWorkers(threads=1).run(openmp_threads, limit=30)
    default = await TrainingWorkers().run(openmp_threads, limit=30)

    assert limited.value, "scikit-learn's OpenMP runtime is loaded in the worker"
    assert set(limited.value) == {1}
    if (os.cpu_count() or 1) > 1:  # unlimited: one per core
        assert max(default.value) > 1


# lineage and the stored training set --------------------------------------------------------


async def test_a_run_records_its_lineage_and_its_training_set_rematerialises_exactly(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    await apply(bus)
    frame = churn(np.random.default_rng(5), 500)
    repeated = pd.concat([frame, frame.head(7)], ignore_index=True)

    cycle = await request_bootstrap(settings, bus, repeated, tmp_path)
    answer = await outcome(settings, cycle)
    client = configure_mlflow(settings)
    version = answer["data"]["version"]
    run = client.get_run(answer["data"]["run_id"])
    stored = await asyncio.to_thread(materialise, client, "churn", version)

    assert answer["type"] == "ModelTrained", answer["data"]
    tags, params = run.data.tags, run.data.params
    dataset_version = answer["data"]["dataset_version"]
    assert tags["driftloop.dataset_version"] == dataset_version
    assert content_hash(stored) == dataset_version
    assert len(stored) == 507  # a first version's file is taken whole, its repeats included
    assert [i.dataset.digest for i in run.inputs.dataset_inputs] == [dataset_version]
    assert tags["driftloop.cycle_id"] == cycle
    assert (tags["driftloop.trigger"], tags["driftloop.reason"]) == ("bootstrap", "test")
    assert tags["driftloop.window"] == "file"
    assert tags["driftloop.parent_version"] == ""
    assert tags["driftloop.code_version"].startswith(tags["driftloop.package_version"])
    assert parse_spec(SPEC).recipe.model_dump_json() == tags["driftloop.recipe"]
    assert params["estimator"] == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert params["param.max_iter"] == "60"
    assert (params["recent_rows"], params["reference_rows"]) == ("507", "0")
    assert (params["recent_duplicates"], params["reference_duplicates"]) == ("0", "0")
    assert (params["time_limit"], params["window"]) == ("600s", "none")
    assert run.data.metrics["train_seconds"] > 0


async def test_a_changed_stored_training_set_does_not_rematerialise(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    await apply(bus)
    cycle = await request_bootstrap(settings, bus, churn(np.random.default_rng(6), 400), tmp_path)
    answer = await outcome(settings, cycle)
    client = configure_mlflow(settings)
    artifacts = Path(
        client.get_run(answer["data"]["run_id"]).info.artifact_uri.removeprefix("file://")
    )
    stored = artifacts / "data" / "dataset.parquet"
    pd.read_parquet(stored).iloc[1:].to_parquet(stored, index=False)

    with pytest.raises(DatasetMismatchError, match="hashes to"):
        await asyncio.to_thread(materialise, client, "churn", answer["data"]["version"])


# the time window ----------------------------------------------------------------------------


async def send_samples(
    bus: Bus, frame: pd.DataFrame, *, prefix: str, labelled_at: datetime
) -> None:
    ids = [f"{prefix}{i}" for i in range(len(frame))]
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
            at=labelled_at,
        ),
        msg_id=f"predictions-{prefix}",
    )
    batch = FeedbackBatch(
        model="churn",
        labels=[Label(id=i, label=int(y)) for i, y in zip(ids, frame["churned"], strict=True)],
        at=labelled_at,
    )
    await bus.publish_record("driftloop.feedback.churn", batch, msg_id=f"feedback-{prefix}")


@pytest.mark.parametrize(
    ("window", "recent_rows", "kind"),
    [(None, 800, "rows"), ("1d", 400, "time")],
    ids=["by-rows", "by-time"],
)
async def test_a_time_window_keeps_older_labelled_rows_out_and_is_recorded(
    settings: Settings,
    bus: Bus,
    stored: Callable[[], dict[str, Any]],
    window: str | None,
    recent_rows: int,
    kind: str,
) -> None:
    spec_text = (
        SPEC
        if window is None
        else SPEC.replace("holdout: 0.25}", f"holdout: 0.25, window: {window}}}")
    )
    await apply(bus, spec_text)
    rng = np.random.default_rng(8)
    now = datetime.now(UTC)
    await send_samples(bus, churn(rng, 400), prefix="old", labelled_at=now - timedelta(days=2))
    await send_samples(bus, churn(rng, 400), prefix="new", labelled_at=now)
    await eventually(
        until(
            stored,
            lambda rows: (
                sum(r.features is not None and r.label is not None for r in rows.values()) == 800
            ),
        ),
        timeout=30,
    )

    answer = await outcome(settings, await request(bus, "churn", trigger="manual"))
    run = configure_mlflow(settings).get_run(answer["data"]["run_id"])

    assert answer["type"] == "ModelTrained", answer["data"]
    assert run.data.params["recent_rows"] == str(recent_rows)
    assert run.data.tags["driftloop.window"] == kind
    assert ("driftloop.recent_since" in run.data.tags) is (window is not None)


async def test_the_trainer_is_not_handed_a_shadows_records(
    settings: Settings, bus: Bus, stored: Callable[[], dict[str, Any]]
) -> None:
    frame = churn(np.random.default_rng(4), 4)
    instances = frame[FEATURES].to_dict(orient="records")

    def record(route: str, ids: list[str]) -> PredictionBatch:
        return PredictionBatch(
            model="churn",
            version="2" if route == "shadow" else "1",
            route=route,
            ids=ids,
            instances=instances[: len(ids)],
            predictions=[1] * len(ids),
            latency_ms=2.0,
            at=datetime.now(UTC),
        )

    # the shadow's copy first: a consumer handed both would see it before the served one
    shadow = record("shadow", ["s1", "s2"])
    await bus.publish_record(prediction_subject("churn", "shadow"), shadow, msg_id="shadow-1")
    served = record("champion", ["c1", "c2"])
    await bus.publish_record(prediction_subject("churn", "champion"), served, msg_id="served-1")
    rows = await eventually(until(stored, lambda rows: len(rows) >= 2), timeout=20)
    engine = make_engine(settings.database_url_for("trainer"))
    with engine.connect() as conn:
        handled = set(conn.execute(sa.select(messaging.inbox.c.message_id)).scalars())
    engine.dispose()

    assert sorted(rows) == ["c1", "c2"]
    assert "served-1" in handled
    assert "shadow-1" not in handled  # never delivered, not merely ignored
    assert prediction_subject("churn", "shadow") == "driftloop.predictions.churn.shadow"


# training on the new regime -----------------------------------------------------------------

ONSET_SPEC = SPEC.replace(
    "trainer: {max_rows: 900, min_rows: 300, holdout: 0.25}",
    "trainer: {max_rows: 900, min_rows: 100, holdout: 0.2, onset_holdout_rows: 40}",
)  # a drift-triggered cycle needs max(100, ceil(40 / 0.2)) = 200 post-onset rows


async def request_drift(bus: Bus, onset: datetime) -> str:
    cycle = str(uuid.uuid4())
    await bus.publish(
        RetrainRequested(
            model="churn",
            cycle_id=cycle,
            trigger="drift",
            reason="test",
            requested_at=datetime.now(UTC),
            onset=onset,
        )
    )
    return cycle


def joined(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda rows: (
        sum(r.features is not None and r.label is not None for r in rows.values()) == n
    )


async def trainer_waiting(bus: Bus, cycle: str) -> dict[str, Any]:
    """The trainer's wait line for `cycle`, as the CLI's wait for a cycle shows it."""
    shown: list[dict[str, Any]] = []
    follower = asyncio.create_task(
        follow_waits(bus, "churn", shown.append, cycle_id=cycle, every=0.2)
    )

    async def check() -> dict[str, Any]:
        assert shown, "the trainer reported no wait"
        return shown[0]

    try:
        found: dict[str, Any] = await eventually(check, timeout=30)
    finally:
        await cancel_and_wait(follower)
    listed = [w["progress"] for w in await trainer_waits(bus) if w["cycle_id"] == cycle]
    assert listed == [found["progress"]]  # as `driftloop status` lists every model's waits
    return found


async def test_a_drift_cycle_waits_for_post_onset_labels_and_holds_out_only_post_onset_rows(
    settings: Settings, bus: Bus, stored: Callable[[], dict[str, Any]]
) -> None:
    await apply(bus, ONSET_SPEC)
    rng = np.random.default_rng(21)
    now = datetime.now(UTC)
    onset = now - timedelta(hours=1)
    after = [churn(rng, 120, drifted=True), churn(rng, 100, drifted=True)]
    await send_samples(bus, churn(rng, 400), prefix="old", labelled_at=onset - timedelta(hours=1))
    await send_samples(bus, after[0], prefix="new", labelled_at=now)
    await eventually(until(stored, joined(520)), timeout=30)

    cycle = await request_drift(bus, onset)
    wait = await trainer_waiting(bus, cycle)
    before = [
        e["envelope"]["type"]
        for e in of_cycle(await read_all_events(settings.resolved_nats_url()), cycle)
    ]
    await send_samples(bus, after[1], prefix="newer", labelled_at=now)
    answer = await outcome(settings, cycle)
    client = configure_mlflow(settings)
    run = client.get_run(answer["data"]["run_id"])
    holdout = await asyncio.to_thread(
        read_parquet_artifact, client, answer["data"]["run_id"], "data/holdout.parquet"
    )

    assert (wait["labelled_rows"], wait["needed"]) == (120, 200)
    assert wait["progress"] == (
        f"waiting for labels after the onset {onset.isoformat(timespec='seconds')}: 120/200"
    )
    assert before == ["RetrainRequested"]
    assert answer["type"] == "ModelTrained", answer["data"]
    params, tags = run.data.params, run.data.tags
    assert (params["recent_rows"], params["older_rows"], params["reference_rows"]) == (
        "220",
        "400",
        "0",
    )
    served_after = {(r.tenure, r.monthly_charges, r.plan) for r in pd.concat(after).itertuples()}
    assert len(holdout) == 44
    assert all((r.tenure, r.monthly_charges, r.plan) in served_after for r in holdout.itertuples())
    assert tags["driftloop.onset"] == onset.isoformat()
    assert tags["driftloop.candidate"] == params["candidate"]
    selection = json.loads(tags["driftloop.candidates"])
    assert selection["chosen"] in {"recent", "recent+reference", "weighted"}
    assert {c["name"] for c in selection["candidates"]} == {
        "recent",
        "recent+reference",
        "weighted",
    }
    assert all(c["score"] is not None for c in selection["candidates"])
    assert {c["name"]: c["older_rows"] for c in selection["candidates"]} == {
        "recent": 0,
        "recent+reference": 400,
        "weighted": 400,
    }


async def test_a_drift_cycle_without_enough_post_onset_labels_fails_naming_the_figures(
    settings: Settings, bus: Bus, stored: Callable[[], dict[str, Any]]
) -> None:
    await apply(
        bus,
        ONSET_SPEC.replace("onset_holdout_rows: 40}", "onset_holdout_rows: 40, label_wait: 1s}"),
    )
    rng = np.random.default_rng(22)
    now = datetime.now(UTC)
    await send_samples(bus, churn(rng, 400), prefix="old", labelled_at=now - timedelta(hours=2))
    await send_samples(bus, churn(rng, 50, drifted=True), prefix="new", labelled_at=now)
    await eventually(until(stored, joined(450)), timeout=30)

    answer = await outcome(settings, await request_drift(bus, now - timedelta(hours=1)))

    assert answer["type"] == "TrainingFailed", answer["data"]
    assert "only 50 labelled rows served after the onset" in answer["data"]["reason"]
    assert "200 needed" in answer["data"]["reason"]
    report = answer["data"]["report"]
    assert (report["labelled_rows"], report["needed"]) == (50, 200)
    assert report["waited_seconds"] > 1
