"""The evidence that the champion is degraded, which picks the lenient rule: a performance
trigger; a drift trigger only when the champion scores measurably worse after the drift than
when it was trained, or below the floor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from driftloop.evaluator.domain.degradation import assess
from driftloop.evaluator.domain.resampling import Outputs
from driftloop.evaluator.domain.uncertainty import bootstrap_interval
from driftloop.evaluator.domain.verdict import Evidence, judge
from driftloop.shared.events import Trigger
from driftloop.shared.spec import EvaluatorSpec, ModelSpec

ZEROS = np.zeros(1000, dtype=int)


def right_on(n: int, right: int) -> Outputs:
    """Predictions of an all-zero target, right on the first `right` rows."""
    predictions = np.ones(n, dtype=int)
    predictions[:right] = 0
    return Outputs(predictions)


def ev(**fields: Any) -> EvaluatorSpec:
    return EvaluatorSpec(metric=fields.pop("metric", "accuracy"), **fields)


def assessed(
    trigger: Trigger, right: int, trained: float | None, *, n: int = 1000, **fields: Any
) -> Any:
    return assess(
        ev(**fields),
        trigger,
        np.zeros(n, dtype=int),
        right_on(n, right),
        [0, 1],
        None if trained is None else {"accuracy": trained},
        rng=np.random.default_rng(0),
    )


def test_a_performance_trigger_is_evidence_by_itself() -> None:
    found = assessed("performance", 900, 0.9)

    assert found.degraded
    assert "live metric below the floor" in found.why


@pytest.mark.parametrize("trigger", ["manual", "schedule", "volume", "bootstrap"])
def test_triggers_without_evidence_never_find_the_champion_degraded(trigger: Trigger) -> None:
    found = assessed(trigger, 500, 0.99)

    assert not found.degraded
    assert found.why == f"a {trigger} trigger carries no evidence"


def test_drift_that_cost_the_champion_measurably_is_evidence() -> None:
    found = assessed("drift", 800, 0.9)  # 0.80 after the drift, 0.90 when trained

    assert found.degraded
    assert (found.figure, found.trained) == (pytest.approx(0.8), 0.9)
    assert found.bound is not None
    assert 0.8 < found.bound < 0.9
    assert "measurably below the 0.9000 it scored when trained" in found.why


def test_drift_within_the_noise_of_the_champions_own_figure_is_not_evidence() -> None:
    found = assessed("drift", 400, 0.81, n=500)  # 0.80 on 500 rows: within noise of 0.81

    assert not found.degraded
    assert found.bound is not None
    assert found.bound > 0.81
    assert "is not measurably below the 0.8100" in found.why


def test_drift_that_leaves_the_champion_as_good_as_it_was_is_not_evidence() -> None:
    assert not assessed("drift", 900, 0.9).degraded
    assert not assessed("drift", 950, 0.9).degraded  # better than when trained


def test_drift_below_the_floor_is_evidence_whatever_the_champion_scored_when_trained() -> None:
    found = assessed("drift", 800, 0.8, min_score=0.85)

    assert found.degraded
    assert "below the floor 0.85" in found.why


def test_drift_with_the_champions_training_figures_unknown_is_not_evidence() -> None:
    found = assessed("drift", 500, None)

    assert not found.degraded
    assert "when trained is unknown" in found.why


def test_a_lower_is_better_metric_is_degraded_when_its_error_grew() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=800)
    champion = Outputs(y + rng.normal(0, 1.0, 800))  # rmse about 1.0 after the drift

    def found(trained: float) -> Any:
        return assess(
            ev(metric="rmse"),
            "drift",
            y,
            champion,
            None,
            {"rmse": trained},
            rng=np.random.default_rng(0),
        )

    worse, same = found(0.8), found(1.0)
    assert worse.degraded
    assert worse.bound is not None
    assert 0.8 < worse.bound < worse.figure  # the lower bound of its error
    assert "measurably above the 0.8000" in worse.why
    assert not same.degraded


def test_the_bound_is_scipys_percentile_bootstrap_of_the_metric() -> None:
    outputs = right_on(600, 450)
    y = np.zeros(600, dtype=int)

    ours = bootstrap_interval(
        "accuracy",
        y,
        outputs,
        [0, 1],
        confidence=0.95,
        resamples=4000,
        rng=np.random.default_rng(3),
    )
    theirs = stats.bootstrap(
        ((outputs.predictions == y).astype(float),),
        np.mean,
        confidence_level=0.90,  # two-sided 90 %: its ends are the one-sided 95 % bounds
        method="percentile",
        n_resamples=4000,
        random_state=np.random.default_rng(4),
    ).confidence_interval

    assert ours.valid == 4000
    assert ours.low == pytest.approx(theirs.low, abs=0.004)
    assert ours.high == pytest.approx(theirs.high, abs=0.004)


def judged(trigger: Trigger, trained: float) -> Any:
    champion = right_on(1000, 800)
    challenger = Outputs(np.roll(champion.predictions, 10))  # d = 0, 20 rows disagree
    evidence = Evidence(
        y_true=ZEROS,
        challenger=challenger,
        champion=champion,
        latency_p95_ms=1.0,
        classes=[0, 1],
        champion_trained={"accuracy": trained},
    )
    model = ModelSpec(model="m", task="classification", target="y", evaluator=ev())
    return judge(model, evidence, trigger=trigger, rng=np.random.default_rng(0))


def test_a_tie_passes_a_drift_cycle_only_when_the_champion_is_shown_degraded() -> None:
    degraded, intact = judged("drift", 0.9), judged("drift", 0.8)

    assert degraded.passed, degraded.reason
    assert degraded.champion_degraded
    assert degraded.report["rule"]["name"] == "non-inferiority"
    assert degraded.report["degradation"]["degraded"] is True
    assert not intact.passed
    assert intact.report["rule"]["name"] == "strict"
    assert intact.report["degradation"]["degraded"] is False
    assert "judged by strict: no evidence the champion is degraded (trigger drift): drift, but" in (
        intact.reason
    )
