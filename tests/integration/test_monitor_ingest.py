"""The monitor's ingest through its real serve() on a real nats-server, SQLite and MLflow store:
served answers kept without their inputs and pruned to the spec's retention, labels still
joining the kept ones, drift windows closed by time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa
from helpers import evaluation_passed, eventually, read_all_events, types
from monitoring import MODEL, T0, frame, predict, start_monitor

from driftloop.monitor.adapters.store import (
    VERSIONS,
    messaging,
    record_served,
    samples,
    window_samples_of,
)
from driftloop.monitor.domain import reservoir
from driftloop.monitor.main import STATUS_SUBJECT, VERSION_SUBJECT
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.db import make_engine, migrate
from driftloop.shared.events import (
    Deployed,
    FeedbackBatch,
    Label,
    PredictionBatch,
)
from driftloop.shared.profile import build_profile
from driftloop.shared.registry import configure_mlflow, experiment_id
from driftloop.shared.samples import record_labels, record_predictions


def stored(settings: Settings) -> list[Any]:
    engine = make_engine(settings.database_url_for("monitor"))
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(samples.c.id, samples.c.features, samples.c.label).where(
                        samples.c.model == MODEL
                    )
                )
            )
    finally:
        engine.dispose()


async def test_samples_beyond_the_retention_are_pruned_and_kept_ones_join_labels(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await start_monitor(settings, bus, running, "  keep_samples: 1000\n")
    rng = np.random.default_rng(1)
    batches = [await predict(bus, 100, T0 + timedelta(seconds=i), rng) for i in range(25)]
    newest = {i for ids in batches[-11:] for i in ids}  # 1,000 rows and the tied rest of a batch

    async def pruned() -> list[Any]:
        rows = stored(settings)
        assert {r.id for r in rows} == newest, len(rows)
        return rows

    # generous: on a loaded CI machine the in-process monitor shares its event loop with the
    # publishes (one run took 190 s before this wait began, and its 30 s ran out mid-ingest)
    rows = await eventually(pruned, timeout=120)
    labels = [Label(id=i, label=1) for i in batches[-1]]
    await bus.publish_record(
        f"driftloop.feedback.{MODEL}",
        FeedbackBatch(model=MODEL, labels=labels, at=datetime.now(UTC)),
        msg_id=str(uuid.uuid4()),
    )

    async def joined() -> bool:
        labelled = [r for r in stored(settings) if r.label is not None]
        assert {r.id for r in labelled} == set(batches[-1]), len(labelled)
        return True

    await eventually(joined, timeout=10)
    assert all(r.features is None for r in rows)  # the monitor keeps no inputs per row
    assert len(stored(settings)) == len(newest)  # the labels joined; no orphans were added


async def test_samples_older_than_the_retention_age_are_pruned(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await start_monitor(settings, bus, running, "  keep_samples_for: 1d\n")
    rng = np.random.default_rng(2)
    old = [await predict(bus, 50, T0 - timedelta(days=2, seconds=i), rng) for i in range(3)]
    recent = [await predict(bus, 50, T0 + timedelta(seconds=i), rng) for i in range(2)]

    async def pruned() -> bool:
        ids = {r.id for r in stored(settings)}
        assert ids == {i for ids in recent for i in ids}, len(ids)
        return True

    await eventually(pruned, timeout=30)
    assert old  # three batches were there to prune


async def test_a_window_closes_by_time_once_it_has_enough_rows(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await start_monitor(
        settings, bus, running, "  window: 10000\n  window_time: 1m\n  window_min_rows: 100\n"
    )
    rng = np.random.default_rng(3)

    await predict(bus, 50, T0, rng)
    await predict(bus, 60, T0 + timedelta(minutes=2), rng)  # too few rows yet: stays open
    await predict(bus, 10, T0 + timedelta(minutes=2, seconds=1), rng)  # closes it first

    async def judged() -> dict[str, Any]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert status["rows_seen"] == 120, status
        return status

    status = await eventually(judged, timeout=15)
    assert status["last_drift"]["rows"] == 110
    assert status["last_drift"]["window_start"] == T0.isoformat()
    assert status["last_drift"]["window_end"] == (T0 + timedelta(minutes=2)).isoformat()
    assert status["window_rows"] == 10


async def test_a_window_past_its_time_is_judged_when_traffic_pauses(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await start_monitor(
        settings, bus, running, "  window: 10000\n  window_time: 1m\n  window_min_rows: 100\n"
    )
    rng = np.random.default_rng(4)

    await predict(bus, 150, T0, rng)  # an hour ago; nothing comes after it

    async def judged() -> dict[str, Any]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert status["last_drift"] is not None, status
        return status

    status = await eventually(judged, timeout=20)
    assert status["last_drift"]["rows"] == 150
    assert status["window_rows"] == 0


def test_served_answers_are_stored_as_the_shared_upsert_stores_them(settings: Settings) -> None:
    engine = make_engine(settings.database_url_for("monitor"))
    migrate(engine, service="monitor", versions=VERSIONS)
    at = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    answers: list[Any] = [1, "yes", {"p": [0.25, 0.75]}]

    def served(ids: list[str]) -> PredictionBatch:
        return PredictionBatch(
            model=MODEL,
            version="3",
            route="canary",
            ids=ids,
            instances=[{"tenure": 1.0}] * 3,
            predictions=answers,
            latency_ms=1.0,
            at=at,
        )

    with engine.begin() as conn:
        labelled_first = FeedbackBatch(model=MODEL, labels=[Label(id="a1", label=0)], at=at)
        record_labels(conn, samples, labelled_first)
        record_served(conn, served(["a1", "a2", "a3"]))
        record_predictions(conn, samples, served(["b1", "b2", "b3"]))
        raw = {
            r[0]: tuple(r[1:])
            for r in conn.exec_driver_sql(
                f"SELECT id, prediction, version, predicted_at, label FROM {samples.name}"
            )
        }
        typed = {r.id: r for r in conn.execute(sa.select(samples))}
    engine.dispose()

    for n in range(3):
        assert raw[f"a{n + 1}"][:3] == raw[f"b{n + 1}"][:3]  # the same stored text
        assert typed[f"a{n + 1}"].prediction == answers[n]
        assert typed[f"a{n + 1}"].predicted_at == at
    assert typed["a1"].label == 0  # the label that came first kept its half of the row
    assert typed["a2"].features is None


def window_sample_sizes(settings: Settings) -> dict[str, tuple[int, int]]:
    """Per feature: the floats the model's stored reservoir segments hold (a segment is one
    letter then base64), and the size of the sample they make."""
    engine = make_engine(settings.database_url_for("monitor"))
    try:
        with engine.connect() as conn:
            segments = window_samples_of(conn, MODEL)
    finally:
        engine.dispose()
    return {
        name: (sum(len(reservoir.decode(s[1:])) for s in parts), reservoir.sample(parts).size)
        for name, parts in segments.items()
    }


async def test_a_windows_stored_sample_stays_bounded_and_goes_when_it_is_judged(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await start_monitor(settings, bus, running, "  window: 12000\n")
    rng = np.random.default_rng(5)
    for i in range(11):  # 11,000 rows: the window stays open, its reservoir long since full
        await predict(bus, 1000, T0 + timedelta(seconds=i), rng)

    async def open_window() -> dict[str, tuple[int, int]]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert status["window_rows"] == 11000, status
        return window_sample_sizes(settings)

    sizes = await eventually(open_window, timeout=30)
    assert set(sizes) == {"tenure"}  # numeric features only
    stored_floats, sample_size = sizes["tenure"]
    assert sample_size == reservoir.CAPACITY
    assert stored_floats <= 3 * reservoir.CAPACITY  # not the 11,000 values it was drawn from

    await predict(bus, 1000, T0 + timedelta(seconds=11), rng)  # the window's last rows

    async def judged() -> dict[str, Any]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert status["last_drift"] is not None, status
        return status

    status = await eventually(judged, timeout=30)
    assert status["last_drift"]["rows"] == 12000
    assert status["window_rows"] == 0
    assert window_sample_sizes(settings) == {}


async def test_served_predictions_and_fed_labels_are_judged_against_the_references(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await start_monitor(settings, bus, running, "  window: 200\n")
    # a new champion whose profile has predictions (90 % class 0) and labels (90 % churned 0)
    client = configure_mlflow(settings)
    run = client.create_run(experiment_id(client, settings, MODEL))
    rng = np.random.default_rng(6)
    reference = frame(rng, 2000).assign(churned=rng.choice([0, 1], 2000, p=[0.9, 0.1]))
    profile = build_profile(
        MODEL,
        reference,
        ["tenure", "plan"],
        predictions=rng.choice([0, 1], 2000, p=[0.9, 0.1]),
        target="churned",
    )
    client.log_dict(run.info.run_id, profile.model_dump(mode="json"), "data/reference_profile.json")
    await bus.publish(
        Deployed(
            model=MODEL, cycle_id="c2", version="2", previous_version="1", run_id=run.info.run_id
        )
    )

    async def has_new_reference() -> bool:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        return bool(status["reference_version"] == "2")

    await eventually(has_new_reference, timeout=15)
    # served predictions half 0, half 1 (predict's), on inputs like the reference's
    ids = [i for s in range(4) for i in await predict(bus, 50, T0 + timedelta(seconds=s), rng)]

    async def judged() -> dict[str, Any]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert status["last_drift"] is not None, status
        return status

    status = await eventually(judged, timeout=15)
    prediction = status["last_drift"]["prediction"]
    assert status["last_drift"]["rows"] == 200
    assert (prediction["feature"], prediction["drifted"]) == ("prediction", True)
    assert prediction["chi2_pvalue"] < 1e-6
    assert status["last_drift"]["drifted_features"] == []  # the inputs did not move

    async def feed(batch: list[str]) -> None:
        await bus.publish_record(
            f"driftloop.feedback.{MODEL}",
            FeedbackBatch(
                model=MODEL, labels=[Label(id=i, label=1) for i in batch], at=datetime.now(UTC)
            ),
            msg_id=str(uuid.uuid4()),
        )

    await feed(ids[:120])

    async def filling() -> dict[str, Any]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert status["label_window_rows"] == 120, status
        return status

    assert (await eventually(filling, timeout=15))["last_label_drift"] is None
    await feed(ids[100:])  # 20 repeated: counted once

    async def labels_judged() -> dict[str, Any]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert status["last_label_drift"] is not None, status
        return status

    status = await eventually(labels_judged, timeout=15)
    labels = status["last_label_drift"]
    assert (labels["feature"], labels["rows"], labels["drifted"]) == ("churned", 200, True)
    assert labels["reference_version"] == "2"
    assert status["label_window_rows"] == 0


async def test_a_canary_is_judged_in_a_window_of_its_own_against_its_own_training_set(
    settings: Settings, bus: Bus, running: Any, nats_url: str
) -> None:
    await start_monitor(settings, bus, running, "  window: 200\n")
    # version 2 was trained on longer tenures (three times the scale) than the champion
    client = configure_mlflow(settings)
    run = client.create_run(experiment_id(client, settings, MODEL))
    own = build_profile(
        MODEL, frame(np.random.default_rng(7), 2000, scale=36.0), ["tenure", "plan"]
    )
    client.log_dict(run.info.run_id, own.model_dump(mode="json"), "data/reference_profile.json")
    await bus.publish(evaluation_passed("2", run.info.run_id, cycle_id="c-2"))

    async def registered() -> bool:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        return "2" in status["versions"]

    await eventually(registered, timeout=15)
    rng = np.random.default_rng(8)
    for s in range(4):  # the canary serves customers like its training set's
        await predict(
            bus, 50, T0 + timedelta(seconds=s), rng, version="2", route="canary", scale=36
        )
    await predict(bus, 50, T0 + timedelta(seconds=5), rng)  # the champion serves its own

    async def judged() -> dict[str, Any]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert status["versions"]["2"]["last_drift"] is not None, status
        assert status["rows_seen"] == 50, status
        return status

    status = await eventually(judged, timeout=20)
    canary = status["versions"]["2"]
    assert canary["last_drift"]["rows"] == 200
    assert canary["last_drift"]["reference_version"] == "2"
    assert canary["last_drift"]["drifted_features"] == []  # like what it learned from
    assert canary["window_rows"] == 0
    assert status["window_rows"] == 50  # the champion's window holds its own rows only
    assert status["last_drift"] is None
    live = await bus.request(VERSION_SUBJECT, {"model": MODEL, "version": "2"})
    assert live["drift"]["last_drift"]["rows"] == 200
    events = await read_all_events(nats_url, MODEL)
    assert "DriftDetected" not in types(events)  # a canary's window reports, never triggers


async def test_a_canary_without_a_profile_of_its_own_is_judged_against_the_champions(
    settings: Settings, bus: Bus, running: Any
) -> None:
    run_one = await start_monitor(settings, bus, running, "  window: 200\n")
    rng = np.random.default_rng(9)
    client = configure_mlflow(settings)
    bare = client.create_run(experiment_id(client, settings, MODEL))  # logged no profile
    verdict = await bus.publish(evaluation_passed("3", bare.info.run_id, cycle_id="c-3"))

    async def handled() -> bool:  # taken once, not retried until it is a dead letter
        engine = make_engine(settings.database_url_for("monitor"))
        try:
            with engine.connect() as conn:
                ids = set(conn.execute(sa.select(messaging.inbox.c.message_id)).scalars())
        finally:
            engine.dispose()
        return verdict in ids

    await eventually(handled, timeout=20)
    for s in range(4):  # version 3 has no training profile of its own (a run made by hand)
        await predict(
            bus, 50, T0 + timedelta(seconds=s), rng, version="3", route="canary", scale=36
        )

    async def judged() -> dict[str, Any]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert (status["versions"].get("3") or {}).get("last_drift") is not None, status
        return status

    status = await eventually(judged, timeout=20)
    drift = status["versions"]["3"]["last_drift"]
    assert drift["reference_version"] == "1"
    assert drift["drifted_features"] == ["tenure"]
    tenure = drift["features"]["tenure"]  # every figure, not PSI alone
    assert tenure["psi"] >= tenure["warn"]
    assert tenure["ks_pvalue"] < 1e-6
    assert tenure["wasserstein"] > 0.5
    assert drift["features"]["plan"]["chi2_pvalue"] is not None
    assert status["window_rows"] == 0  # nothing joined the champion's window

    await bus.publish(
        Deployed(model=MODEL, cycle_id="c3", version="3", previous_version="1", run_id=run_one)
    )

    async def dropped() -> bool:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        return status["reference_version"] == "3" and status["versions"] == {}

    await eventually(dropped, timeout=15)


async def test_a_canary_window_past_its_time_is_judged_when_its_traffic_pauses(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await start_monitor(
        settings, bus, running, "  window: 10000\n  window_time: 1m\n  window_min_rows: 100\n"
    )
    rng = np.random.default_rng(10)

    await predict(bus, 150, T0, rng, version="3", route="canary")  # an hour ago; nothing since

    async def judged() -> dict[str, Any]:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        assert (status["versions"].get("3") or {}).get("last_drift") is not None, status
        return status

    status = await eventually(judged, timeout=20)
    assert status["versions"]["3"]["last_drift"]["rows"] == 150
    assert status["versions"]["3"]["window_rows"] == 0
    assert status["last_drift"] is None  # the champion's window saw none of it
