"""The adaptation benchmark's scoring (bench/_adapt.py): metrics, the gap, the rows it
replays, the flipped labels, what it reads from the event log, and the goals."""

from __future__ import annotations

import importlib.util
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "_adapt.py"


@pytest.fixture(scope="module")
def ad() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_adapt", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def event(kind: str, at: datetime, **data: Any) -> dict[str, Any]:
    return {"type": kind, "time": at.isoformat().replace("+00:00", "Z"), "data": data}


def test_accuracy_counts_1_and_1_0_and_the_string_as_one_class(ad: ModuleType) -> None:
    y = np.array([1, 0, 1, 1], dtype=object)
    pred = np.array([1.0, "0", 0, np.int64(1)], dtype=object)

    assert ad.metric("classification", y, pred) == pytest.approx(0.75)


def test_multiclass_accuracy_compares_class_names(ad: ModuleType) -> None:
    y = np.array(["prepaid_card", "upmarket_card", "highstreet_card"], dtype=object)
    pred = np.array(["prepaid_card", "highstreet_card", "highstreet_card"], dtype=object)

    assert ad.metric("classification", y, pred) == pytest.approx(2 / 3)


def test_regression_metric_is_rmse_and_no_rows_is_nan(ad: ModuleType) -> None:
    assert ad.metric("regression", np.array([1.0, 3.0]), np.array([2.0, 1.0])) == pytest.approx(
        math.sqrt((1 + 4) / 2)
    )
    assert math.isnan(ad.metric("regression", np.array([]), np.array([])))


@pytest.mark.parametrize(
    ("task", "served", "static", "oracle", "share"),
    [
        ("classification", 0.93, 0.92, 0.94, 0.5),
        ("classification", 0.94, 0.92, 0.94, 1.0),
        ("classification", 0.92, 0.92, 0.94, 0.0),
        ("classification", 0.90, 0.92, 0.94, -1.0),
        ("regression", 950.0, 1000.0, 900.0, 0.5),  # lower is better
        ("regression", 1100.0, 1000.0, 900.0, -1.0),
    ],
)
def test_gap_recovered_is_the_share_of_static_to_oracle_closed(
    ad: ModuleType, task: str, served: float, static: float, oracle: float, share: float
) -> None:
    assert ad.gap_recovered(task, served, static, oracle) == pytest.approx(share)


@pytest.mark.parametrize(
    ("task", "static", "oracle"),
    [("classification", 0.83, 0.83), ("classification", 0.83, 0.82), ("regression", 900, 950)],
)
def test_no_gap_when_the_oracle_is_not_better(
    ad: ModuleType, task: str, static: float, oracle: float
) -> None:
    assert ad.gap_recovered(task, 0.9, static, oracle) is None


def test_rows_around_the_onset_start_the_onset_on_a_batch(ad: ModuleType) -> None:
    picked, onset = ad.select_rows(
        50_000, 25_000, rows=10_000, pre_rows=3_010, thin=False, batch=20
    )

    assert onset == 3_000  # rounded down to whole batches
    assert picked[onset] == 25_000
    assert len(picked) == 10_000
    assert np.all(np.diff(picked) == 1)


def test_rows_stop_at_the_end_of_the_period(ad: ModuleType) -> None:
    picked, onset = ad.select_rows(1_000, 900, rows=5_000, pre_rows=2_000, thin=False)

    assert (picked[0], picked[-1], onset) == (0, 999, 900)


def test_thinned_rows_span_the_whole_period_in_order(ad: ModuleType) -> None:
    picked, onset = ad.select_rows(208_892, 69_126, rows=30_000, pre_rows=5_000, thin=True)

    assert picked[0] == 0
    assert picked[-1] > 200_000
    assert len(picked) <= 30_000
    assert picked[onset - 1] < 69_126 <= picked[onset]


def test_onset_is_the_half_or_the_first_row_of_the_year(ad: ModuleType) -> None:
    frame = pd.DataFrame({"year": [2016] * 3 + [2017] * 4 + [2018] * 2})

    assert ad.onset_index(ad.SOURCES["employment_MA"], frame) == 3
    assert ad.onset_index(ad.SOURCES["mc"], frame) == 4


def test_flipping_changes_that_share_of_post_onset_labels_only(ad: ModuleType) -> None:
    labels = np.array([0, 1] * 500)
    posted, flipped = ad.flip_labels(labels, 200, 0.4, np.random.default_rng(0))

    assert not flipped[:200].any()
    assert flipped.sum() == round(0.4 * 800)
    assert np.array_equal(posted[flipped], 1 - labels[flipped])
    assert np.array_equal(posted[~flipped], labels[~flipped])


def test_flipping_a_multiclass_label_picks_another_class(ad: ModuleType) -> None:
    labels = np.array(["a", "b", "c"] * 100, dtype=object)
    posted, flipped = ad.flip_labels(labels, 0, 0.4, np.random.default_rng(1))

    assert flipped.sum() == 120
    assert all(posted[i] != labels[i] for i in np.flatnonzero(flipped))
    assert set(posted) == {"a", "b", "c"}


def test_oracle_learns_from_5000_rows_or_a_third(ad: ModuleType) -> None:
    assert ad.oracle_split(25_000) == 5_000
    assert ad.oracle_split(9_000) == 3_000


def test_features_leave_out_what_nannyml_ships_beside_them(ad: ModuleType) -> None:
    frame = pd.DataFrame(
        columns=[
            "id", "distance_from_office", "timestamp", "y_pred_proba", "period", "y_pred",
            "work_home_actual", "year", "prediction", "predicted_probability", "workday",
        ]
    )  # fmt: skip

    assert ad.feature_columns(frame, "work_home_actual") == ["distance_from_office", "workday"]


def test_first_adapted_row_is_the_first_newer_champion_from_the_onset(ad: ModuleType) -> None:
    versions = ["1", "1", "1", "2", "1", "2", None, "2"]
    routes = ["champion", "champion", "champion", "canary", "champion", "shadow", None, "champion"]

    assert ad.first_adapted_row(versions, routes, 2) == 7
    assert ad.first_adapted_row(versions[:7], routes[:7], 2) is None


def test_a_version_significantly_worse_than_static_is_flagged(ad: ModuleType) -> None:
    y = np.array([1] * 1000)
    static = np.array([1] * 950 + [0] * 50)
    worse = np.array([1] * 850 + [0] * 150)
    tie = static.copy()

    assert ad.paired_difference("classification", y, worse, static)["worse"]
    assert not ad.paired_difference("classification", y, tie, static)["worse"]
    assert ad.paired_difference("classification", y, worse, static)["diff"] == pytest.approx(-0.1)


def test_retrains_before_the_onset_leave_out_the_bootstrap(ad: ModuleType) -> None:
    log = [
        event("RetrainRequested", T0, trigger="bootstrap", cycle_id="c0"),
        event("RetrainRequested", T0 + timedelta(seconds=10), trigger="drift", cycle_id="c1"),
        event("RetrainRequested", T0 + timedelta(seconds=50), trigger="performance", cycle_id="c2"),
    ]

    assert ad.retrains_before(log, T0 + timedelta(seconds=30)) == 1
    assert ad.retrains_before(log, T0) == 0


def test_cycle_outcomes_name_how_each_cycle_ended_and_why(ad: ModuleType) -> None:
    log = [
        event("RetrainRequested", T0, trigger="bootstrap", cycle_id="c0"),
        event("Deployed", T0, cycle_id="c0", version="1"),
        event("RetrainRequested", T0, trigger="drift", cycle_id="c1"),
        event("ModelTrained", T0, cycle_id="c1", version="2"),
        event(
            "EvaluationFailed",
            T0,
            cycle_id="c1",
            version="2",
            checks=[{"name": "metric", "passed": False, "detail": "accuracy -0.003"}],
        ),
        event("RetrainRequested", T0, trigger="performance", cycle_id="c2"),
        event("DataRejected", T0, cycle_id="c2", reason="label_consistency 0.38 > 0.2"),
        event("RetrainRequested", T0, trigger="performance", cycle_id="c3"),
        event("ModelTrained", T0, cycle_id="c3", version="3"),
        event("Deployed", T0, cycle_id="c3", version="3"),
    ]

    got = {c["cycle_id"]: (c["ended"], c["version"], c["why"]) for c in ad.cycle_outcomes(log)}

    assert got == {
        "c1": ("EvaluationFailed", "2", "accuracy -0.003"),
        "c2": ("DataRejected", None, "label_consistency 0.38 > 0.2"),
        "c3": ("Deployed", "3", None),
    }


def result(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scenario": "synthetic_sample",
        "task": "classification",
        "poison": 0.0,
        "after_onset": {"rows": 1000, "served": 0.925, "static": 0.917},
        "rest": {"gap_recovered": 0.6},
        "retrains_before_onset": 0,
        "versions": {"1": {"worse_than_static": False}},
    }
    return base | over


def test_goals_pass_when_the_loop_adapts(ad: ModuleType) -> None:
    assert all(met for _, _, met in ad.goals(result()))


def test_goals_fail_on_a_worse_served_metric_a_small_gap_or_an_early_retrain(
    ad: ModuleType,
) -> None:
    goals = ad.goals(
        result(
            after_onset={"rows": 1000, "served": 0.91, "static": 0.917},
            rest={"gap_recovered": 0.3},
            retrains_before_onset=2,
        )
    )

    assert [met for _, _, met in goals] == [False, False, False]


def test_regression_served_must_have_the_lower_rmse(ad: ModuleType) -> None:
    ok = result(
        scenario="regression_synthetic",
        task="regression",
        after_onset={"rows": 10, "served": 890.0, "static": 900.0},
    )
    bad = ok | {"after_onset": {"rows": 10, "served": 910.0, "static": 900.0}}

    assert [g for g, _, _ in ad.goals(ok)] == [
        "served >= static after onset",
        "0 retrains before the onset",
    ]
    assert ad.goals(ok)[0][2]
    assert not ad.goals(bad)[0][2]


def test_poisoned_scenario_fails_when_a_worse_version_served(ad: ModuleType) -> None:
    poisoned = result(
        scenario="synthetic_sample_poisoned",
        poison=0.4,
        versions={"1": {"worse_than_static": False}, "2": {"worse_than_static": True}},
    )

    last = ad.goals(poisoned)[-1]
    assert last[0] == "never serves a version worse than static"
    assert not last[2]
    assert "2" in last[1]


def test_first_new_version_row_counts_the_canary_but_not_the_shadow(ad: ModuleType) -> None:
    versions = ["1", "1", "2", "2", "2"]
    routes = ["champion", "champion", "shadow", "canary", "champion"]

    assert ad.first_new_version_row(versions, routes, 1) == 3


def test_events_are_placed_at_the_row_being_sent(ad: ModuleType) -> None:
    sent = [(T0 + timedelta(seconds=s), 20 * (s + 1)) for s in range(10)]
    log = [
        event("RetrainRequested", T0 - timedelta(seconds=5), trigger="bootstrap", cycle_id="c0"),
        event("Deployed", T0 - timedelta(seconds=4), cycle_id="c0", version="1"),
        event("DriftDetected", T0 + timedelta(seconds=2.5)),
        event("RetrainRequested", T0 + timedelta(seconds=2.6), trigger="drift", cycle_id="c1"),
        event(
            "RolloutAdvanced", T0 + timedelta(seconds=30), cycle_id="c1", stage="canary", weight=10
        ),
    ]

    got = ad.cycle_timelines(log, sent, onset=40)

    assert got["-"] == [{"type": "DriftDetected", "row": 20}]
    assert got["c1"] == [
        {"type": "RetrainRequested", "row": 20, "trigger": "drift"},
        {"type": "RolloutAdvanced", "row": 160, "stage": "canary", "weight": 10},
    ]
    assert "c0" not in got
    assert ad.row_at(sent, T0 - timedelta(seconds=1)) is None
