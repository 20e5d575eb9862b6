"""The live metric on labelled traffic and the performance trigger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import f1_score, mean_squared_error

from driftloop.monitor.domain.performance import live_metric, with_evaluation
from driftloop.monitor.domain.policy import (
    TriggerState,
    decide_on_performance,
    decide_on_schedule,
    decide_on_volume,
)
from driftloop.shared.modeling import prediction_metrics
from driftloop.shared.spec import MonitorSpec, PerformancePolicy

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_accuracy_compares_labels_and_predictions_of_any_json_type() -> None:
    figure = live_metric("accuracy", [1, 0, "yes", 1], [1, 1, "yes", 0])

    assert figure == pytest.approx(0.5)


def test_binary_f1_takes_the_larger_label_as_positive() -> None:
    y_true, y_pred = [0, 1, 1, 0, 1], [0, 1, 0, 1, 1]

    figure = live_metric("f1", y_true, y_pred)

    assert figure == pytest.approx(f1_score(y_true, y_pred, pos_label=1), abs=1e-12)


@pytest.mark.parametrize(
    ("task", "metrics"),
    [
        ("classification", ["accuracy", "f1", "precision", "recall"]),
        ("regression", ["rmse", "mae", "r2"]),
    ],
)
def test_one_metric_alone_is_the_figure_of_all_of_them(task: str, metrics: list[str]) -> None:
    rng = np.random.default_rng(3)
    if task == "classification":
        y_true, y_pred = (
            [str(v) for v in rng.integers(0, 3, 300)],
            [str(v) for v in rng.integers(0, 3, 300)],
        )
    else:
        y_true, y_pred = rng.normal(size=300).tolist(), rng.normal(size=300).tolist()
    every = prediction_metrics(task, y_true, y_pred)

    alone = {m: prediction_metrics(task, y_true, y_pred, only=m) for m in metrics}

    assert sorted(every) == sorted(metrics)
    assert alone == {m: {m: every[m]} for m in metrics}
    assert len(set(every.values())) == len(metrics)  # distinct figures: none stands for another


def test_rmse_matches_sklearn() -> None:
    y_true, y_pred = [1.0, 2.0, 3.5], [1.5, 2.0, 2.0]

    figure = live_metric("rmse", y_true, y_pred)

    assert figure == pytest.approx(mean_squared_error(y_true, y_pred) ** 0.5, abs=1e-12)


def spec(metric: str, floor: float, cooldown: str = "10m") -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "performance": PerformancePolicy(metric=metric, min=floor).model_dump(),
            "cooldown": cooldown,
        }
    )


@pytest.mark.parametrize(
    ("metric", "floor", "figure", "fires"),
    [
        ("accuracy", 0.8, 0.7, True),
        ("accuracy", 0.8, 0.85, False),
        ("rmse", 2.0, 2.5, True),
        ("rmse", 2.0, 1.5, False),
    ],
    ids=["accuracy-below-floor", "accuracy-above-floor", "rmse-above-ceiling", "rmse-below"],
)
def test_performance_trigger_fires_only_when_the_metric_is_worse_than_the_floor(
    metric: str, floor: float, figure: float, fires: bool
) -> None:
    decision = decide_on_performance(figure, 300, TriggerState(), spec(metric, floor), now=NOW)

    assert decision.fire is fires


def test_performance_trigger_respects_cooldown_and_open_cycles() -> None:
    policy = spec("accuracy", 0.8, cooldown="1h")

    cooling = decide_on_performance(
        0.5, 300, TriggerState(last_retrain_at=NOW - timedelta(minutes=10)), policy, now=NOW
    )
    running = decide_on_performance(0.5, 300, TriggerState(open_cycle_id="c1"), policy, now=NOW)
    later = decide_on_performance(
        0.5, 300, TriggerState(last_retrain_at=NOW - timedelta(hours=2)), policy, now=NOW
    )

    assert not cooling.fire
    assert "cooldown" in cooling.reason
    assert not running.fire
    assert "c1" in running.reason
    assert later.fire
    assert later.reason.startswith("performance:")


def test_volume_trigger_waits_for_enough_new_labels_and_is_off_by_default() -> None:
    policy = MonitorSpec.model_validate({"min_new_labels": 500})

    early = decide_on_volume(499, TriggerState(), policy, now=NOW)
    due = decide_on_volume(500, TriggerState(), policy, now=NOW)
    off = decide_on_volume(10**9, TriggerState(), MonitorSpec(), now=NOW)

    assert early is None
    assert due is not None
    assert due.fire
    assert due.reason.startswith("volume:")
    assert off is None


def test_schedule_trigger_counts_from_the_last_retraining_or_the_reference() -> None:
    policy = MonitorSpec.model_validate({"schedule": "7d", "cooldown": "1m"})
    week_ago = NOW - timedelta(days=7, seconds=1)

    fresh = decide_on_schedule(TriggerState(), policy, since=NOW - timedelta(days=1), now=NOW)
    due = decide_on_schedule(TriggerState(), policy, since=week_ago, now=NOW)
    retrained = decide_on_schedule(
        TriggerState(last_retrain_at=NOW - timedelta(days=2)), policy, since=week_ago, now=NOW
    )
    running = decide_on_schedule(TriggerState(open_cycle_id="c9"), policy, since=week_ago, now=NOW)

    assert fresh is None
    assert due is not None
    assert due.fire
    assert retrained is None
    assert running is not None
    assert not running.fire


def test_the_evaluation_history_keeps_the_newest_in_order() -> None:
    history = None
    for n in range(5):
        history = with_evaluation(history, {"figure": n / 10}, kept=3)

    assert history == [{"figure": 0.2}, {"figure": 0.3}, {"figure": 0.4}]
