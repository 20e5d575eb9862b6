"""The verdict: challenger vs champion on the same holdout, the uncertainty of the difference,
slices, the floor, the latency budget; the rule the cycle's trigger picks (strict, or
non-inferiority when the champion is known degraded)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from driftloop.evaluator.domain.degradation import Degradation
from driftloop.evaluator.domain.resampling import Outputs
from driftloop.evaluator.domain.uncertainty import paired_bootstrap
from driftloop.evaluator.domain.verdict import Evidence, Verdict, judge, p95_ms, rule_for
from driftloop.shared.events import Trigger
from driftloop.shared.spec import EvaluatorSpec, ModelSpec

DEGRADED: list[Trigger] = ["drift", "performance"]
UNDEGRADED: list[Trigger] = ["manual", "schedule", "volume", "bootstrap"]


def spec(**evaluator: Any) -> ModelSpec:
    defaults: dict[str, Any] = {"metric": "accuracy", "max_p95_ms": 50.0}
    chosen = EvaluatorSpec(**{**defaults, **evaluator})
    task = "regression" if chosen.metric in ("rmse", "mae", "r2") else "classification"
    return ModelSpec(model="churn", task=task, target="churned", evaluator=chosen)


def labels_with(n: int, right: int, *, start: int = 0) -> np.ndarray:
    """Predictions of an all-zero target: right on `right` rows from `start` (cyclic)."""
    predictions = np.ones(n, dtype=int)
    predictions[(start + np.arange(right)) % n] = 0
    return predictions


def evidence(
    ours: np.ndarray,
    theirs: np.ndarray | None,
    *,
    y: np.ndarray | None = None,
    latency: float = 10.0,
    columns: dict[str, np.ndarray] | None = None,
    trained: float | None = 0.99,
) -> Evidence:
    """`trained`: the champion's accuracy on its own holdout when it was trained (0.99: a drift
    trigger finds it degraded on these holdouts)."""
    truth = np.zeros(len(ours), dtype=int) if y is None else y
    return Evidence(
        y_true=truth,
        challenger=Outputs(ours),
        champion=None if theirs is None else Outputs(theirs),
        latency_p95_ms=latency,
        classes=[0, 1],
        columns=columns or {},
        champion_trained=None if trained is None else {"accuracy": trained},
    )


def run(model: ModelSpec, ev: Evidence, *, trigger: Trigger = "manual") -> Verdict:
    return judge(model, ev, trigger=trigger, rng=np.random.default_rng(0))


def check(verdict: Verdict, name: str) -> tuple[float | None, float | None, bool]:
    [found] = [c for c in verdict.checks if c.name == name]
    return found.figure, found.threshold, found.passed


@pytest.mark.parametrize(
    ("right", "passed"),
    [(1800, True), (1700, True), (1650, False), (1000, False)],
    ids=["well-above", "exactly-min-delta-above", "above-but-short-of-min-delta", "below"],
)
def test_challenger_must_beat_champion_by_min_delta(right: int, passed: bool) -> None:
    model = spec(min_delta=0.05, non_inferiority=1.0)  # only the point estimate binds here

    verdict = run(model, evidence(labels_with(2000, right), labels_with(2000, 1600)))

    delta = right / 2000 - 0.8
    assert verdict.passed is passed
    assert check(verdict, "accuracy_delta") == (pytest.approx(delta), 0.05, passed)
    assert (verdict.challenger_score, verdict.champion_score) == (right / 2000, 0.8)


def test_clear_improvement_passes_every_check() -> None:
    verdict = run(spec(), evidence(labels_with(1000, 900), labels_with(1000, 700)))

    assert verdict.passed
    assert all(c.passed for c in verdict.checks)
    assert [c.name for c in verdict.checks] == [
        "accuracy_delta",
        "accuracy_delta_lower_bound",
        "latency_p95_ms",
    ]
    assert "every check passed" in verdict.reason


def test_an_improvement_within_noise_fails_the_lower_bound_unless_a_margin_allows_it() -> None:
    # 505 vs 500 right of 1000, with 200 rows where they disagree: +0.005, well within noise.
    ours, theirs = labels_with(1000, 505, start=100), labels_with(1000, 500, start=0)

    strict = run(spec(), evidence(ours, theirs))
    lenient = run(spec(non_inferiority=0.05), evidence(ours, theirs))

    low, threshold, ok = check(strict, "accuracy_delta_lower_bound")
    assert check(strict, "accuracy_delta")[2]
    assert (threshold, ok) == (0.0, False)
    assert low is not None
    assert low < 0 < strict.report["difference"]["ci_high"]
    assert not strict.passed
    assert "accuracy_delta_lower_bound" in strict.reason
    assert lenient.passed
    assert check(lenient, "accuracy_delta_lower_bound")[1:] == (-0.05, True)


def test_lower_bound_is_the_bootstrap_quantile_at_the_confidence() -> None:
    ours, theirs = labels_with(500, 300, start=50), labels_with(500, 280)
    model = spec(confidence=0.9, bootstrap=300, min_delta=0.01, non_inferiority=0.02)

    verdict = run(model, evidence(ours, theirs))

    interval, _ = paired_bootstrap(
        "accuracy",
        np.zeros(500, dtype=int),
        Outputs(ours),
        Outputs(theirs),
        [0, 1],
        higher_is_better=True,
        confidence=0.9,
        resamples=300,
        rng=np.random.default_rng(0),
    )
    figure, threshold, _ = check(verdict, "accuracy_delta_lower_bound")
    assert figure == pytest.approx(interval.low, abs=1e-6)
    assert threshold == pytest.approx(-0.01)
    assert verdict.report["difference"]["ci_low"] == interval.low


@pytest.mark.parametrize(
    ("ours_right", "passed"), [(560, True), (520, False)], ids=["significant", "within-noise"]
)
def test_mcnemar_decides_when_chosen(ours_right: int, passed: bool) -> None:
    ours, theirs = labels_with(1000, ours_right, start=100), labels_with(1000, 500)

    verdict = run(spec(uncertainty="mcnemar"), evidence(ours, theirs))

    better = int(np.sum((ours == 0) & (theirs == 1)))
    worse = int(np.sum((ours == 1) & (theirs == 0)))
    p = stats.binomtest(better, better + worse, 0.5, alternative="greater").pvalue
    figure, threshold, ok = check(verdict, "accuracy_mcnemar_p")
    assert figure == pytest.approx(p, abs=1e-6)
    assert (threshold, ok, verdict.passed) == (0.05, passed, passed)
    assert not any(c.name == "accuracy_delta_lower_bound" for c in verdict.checks)


def sliced(n: int = 1000) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The challenger right everywhere but on plan=max (100 rows) and rare (10 rows), the
    champion right on 70% of every plan."""
    plan = np.array(["basic"] * 700 + ["max"] * 100 + ["pro"] * 190 + ["rare"] * 10, dtype=object)
    ours = np.where(np.isin(plan, ["max", "rare"]), 1, 0)
    theirs = np.ones(n, dtype=int)
    theirs[np.arange(n) % 10 < 7] = 0
    return ours, theirs, {"plan": plan, "tenure": np.arange(n, dtype=float)}


def test_a_slice_that_regresses_beyond_tolerance_fails_the_verdict_naming_it() -> None:
    ours, theirs, columns = sliced()
    model = spec(slices=[{"column": "plan"}, {"column": "tenure", "bins": 2}])

    verdict = run(model, evidence(ours, theirs, columns=columns))

    assert not verdict.passed
    assert [c.name for c in verdict.checks if not c.passed] == ["slice[plan=max].accuracy_delta"]
    assert check(verdict, "slice[plan=max].accuracy_delta") == (-0.7, -0.05, False)
    assert check(verdict, "slice[plan=basic].accuracy_delta") == (0.3, -0.05, True)
    assert check(verdict, "slice[tenure=(-inf, 499.5]].accuracy_delta")[2]
    assert "slice[plan=max]" in verdict.reason
    assert check(verdict, "accuracy_delta_lower_bound")[2], "better overall"


def test_a_slice_smaller_than_min_slice_rows_is_reported_not_judged() -> None:
    ours, theirs, columns = sliced()

    verdict = run(spec(slices=[{"column": "plan"}]), evidence(ours, theirs, columns=columns))

    [rare] = [s for s in verdict.report["slices"] if s["name"] == "plan=rare"]
    assert (rare["rows"], rare["judged"], rare["challenger"]) == (10, False, 0.0)
    assert rare["champion"] == pytest.approx(0.7)
    assert not any("rare" in c.name for c in verdict.checks)


def test_a_slice_within_tolerance_passes() -> None:
    ours, theirs, columns = sliced()

    verdict = run(
        spec(slices=[{"column": "plan"}], slice_tolerance=0.8),
        evidence(ours, theirs, columns=columns),
    )

    assert verdict.passed


def test_a_slice_column_missing_from_the_holdout_fails_naming_it() -> None:
    verdict = run(
        spec(slices=[{"column": "region"}]), evidence(labels_with(100, 90), labels_with(100, 50))
    )

    assert check(verdict, "slice[region]") == (None, None, False)
    assert "region" in verdict.reason


@pytest.mark.parametrize(
    ("right", "passed"),
    [(750, True), (700, True), (650, False)],
    ids=["above-floor", "at-floor", "below-floor"],
)
def test_first_version_is_judged_against_the_min_score_floor_alone(
    right: int, passed: bool
) -> None:
    *_, columns = sliced()
    model = spec(min_score=0.7, slices=[{"column": "plan"}])

    verdict = run(model, evidence(labels_with(1000, right), None, columns=columns))

    assert verdict.passed is passed
    assert verdict.champion_score is None
    assert check(verdict, "accuracy_floor") == (right / 1000, 0.7, passed)
    assert [c.name for c in verdict.checks] == ["accuracy_floor", "latency_p95_ms"]
    assert {s["name"] for s in verdict.report["slices"]} >= {"plan=max", "plan=basic"}
    assert verdict.report["champion"] is None
    if passed:
        assert "first version" in verdict.reason


@pytest.mark.parametrize(
    ("latency", "passed"),
    [(49.0, True), (50.0, True), (50.5, False), (400.0, False)],
    ids=["under-budget", "at-budget", "just-over-budget", "far-over-budget"],
)
def test_latency_over_budget_fails(latency: float, passed: bool) -> None:
    verdict = run(spec(), evidence(labels_with(1000, 900), labels_with(1000, 500), latency=latency))

    assert verdict.passed is passed
    assert check(verdict, "latency_p95_ms") == (latency, 50.0, passed)
    if not passed:
        assert "latency_p95_ms" in verdict.reason


@pytest.mark.parametrize(
    ("noise", "passed"), [(0.5, True), (2.0, False)], ids=["lower-rmse", "higher-rmse"]
)
def test_lower_is_better_metric_flips_the_sign_of_the_difference(
    noise: float, passed: bool
) -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    ours, theirs = y + rng.normal(0, noise, 500), y + rng.normal(0, 1.0, 500)
    ev = Evidence(y, Outputs(ours), Outputs(theirs), latency_p95_ms=1.0)

    verdict = run(spec(metric="rmse"), ev)

    rmse = lambda p: float(np.sqrt(np.mean((p - y) ** 2)))  # noqa: E731
    figure, _, ok = check(verdict, "rmse_delta")
    assert figure == pytest.approx(rmse(theirs) - rmse(ours), abs=1e-6)
    assert (ok, verdict.passed) == (passed, passed)
    assert verdict.report["champion"]["metrics"]["r2"] == pytest.approx(
        1 - np.sum((theirs - y) ** 2) / np.sum((y - y.mean()) ** 2)
    )


def test_a_metric_the_outputs_do_not_define_fails_naming_it() -> None:
    verdict = run(spec(metric="roc_auc"), evidence(labels_with(100, 90), None))

    assert not verdict.passed
    assert check(verdict, "roc_auc_available") == (None, None, False)
    assert math.isnan(verdict.challenger_score)


def test_report_has_every_metric_confusion_matrices_and_is_json() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    proba = np.clip(0.3 * y + 0.7 * rng.random(400), 0, 1)
    ours = Outputs((proba > 0.5).astype(int), np.c_[1 - proba, proba])
    theirs = Outputs(np.where(rng.random(400) < 0.3, 1 - y, y))
    ev = Evidence(y, ours, theirs, latency_p95_ms=3.0, classes=[0, 1])

    verdict = run(spec(), ev)

    report = json.loads(json.dumps(verdict.report))
    assert set(report["challenger"]["metrics"]) == {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
    }
    assert set(report["champion"]["metrics"]) == {"accuracy", "precision", "recall", "f1"}
    assert np.sum(report["champion"]["confusion"]["matrix"]) == 400
    assert set(report["difference"]) >= {"estimate", "ci_low", "ci_high", "mcnemar"}
    assert [c["name"] for c in report["checks"]] == [c.name for c in verdict.checks]


def test_same_seed_same_verdict() -> None:
    ours, theirs = labels_with(800, 420, start=30), labels_with(800, 400)

    first, second = (run(spec(), evidence(ours, theirs)) for _ in range(2))

    assert first.report == second.report


def test_p95_is_in_milliseconds() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms

    assert p95_ms(latencies) == pytest.approx(95.05)


def test_multiclass_roc_auc_is_compared_with_its_interval() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 600)

    def model(strength: float) -> Outputs:
        logits = rng.normal(size=(600, 3)) + strength * np.eye(3)[y]
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return Outputs(proba.argmax(axis=1), proba)

    ev = Evidence(y, model(2.0), model(0.5), latency_p95_ms=1.0, classes=[0, 1, 2])

    verdict = run(spec(metric="roc_auc"), ev)

    low, _, _ = check(verdict, "roc_auc_delta_lower_bound")
    delta, _, _ = check(verdict, "roc_auc_delta")
    assert verdict.passed
    assert low is not None
    assert delta is not None
    assert 0 < low < delta
    assert len(verdict.report["challenger"]["confusion"]["matrix"]) == 3


def test_an_undefined_metric_fails_and_the_report_stays_strict_json() -> None:
    y = np.zeros(50, dtype=int)  # one class: ROC AUC is not defined
    proba = np.full((50, 2), 0.5)
    ev = Evidence(
        y, Outputs(y.copy(), proba), Outputs(y.copy(), proba), latency_p95_ms=1.0, classes=[0, 1]
    )

    verdict = run(spec(metric="roc_auc"), ev)

    assert not verdict.passed
    json.dumps(verdict.report, allow_nan=False)


# The rule by trigger. 1000 rows, the champion right on 800: the challenger right on the same
# rows shifted by 5, so the two disagree on few rows and the difference is small and noisy.
NOT_SIGNIFICANT = {
    "tie": (labels_with(1000, 800, start=5), labels_with(1000, 800)),  # d = 0
    "slightly-better": (labels_with(1000, 803, start=5), labels_with(1000, 800)),  # d = +0.003
}


@pytest.mark.parametrize("uncertainty", ["bootstrap", "mcnemar"])
@pytest.mark.parametrize("case", list(NOT_SIGNIFICANT), ids=list(NOT_SIGNIFICANT))
@pytest.mark.parametrize("trigger", DEGRADED + UNDEGRADED)
def test_a_not_worse_challenger_passes_only_when_the_champion_is_known_degraded(
    trigger: Trigger, case: str, uncertainty: str
) -> None:
    ours, theirs = NOT_SIGNIFICANT[case]

    verdict = run(spec(uncertainty=uncertainty), evidence(ours, theirs), trigger=trigger)

    degraded = trigger in DEGRADED
    bound = "accuracy_mcnemar_p" if uncertainty == "mcnemar" else "accuracy_delta_lower_bound"
    assert verdict.passed is degraded, verdict.reason
    assert check(verdict, "accuracy_delta")[1:] == (0.0, True)
    assert check(verdict, bound)[2] is degraded
    assert verdict.report["rule"]["name"] == ("non-inferiority" if degraded else "strict")
    assert verdict.report["rule"]["trigger"] == trigger


@pytest.mark.parametrize("uncertainty", ["bootstrap", "mcnemar"])
@pytest.mark.parametrize("trigger", DEGRADED + UNDEGRADED)
def test_a_clearly_worse_challenger_fails_under_every_trigger(
    trigger: Trigger, uncertainty: str
) -> None:
    ours, theirs = labels_with(1000, 760, start=50), labels_with(1000, 800)  # d = -0.04

    verdict = run(spec(uncertainty=uncertainty), evidence(ours, theirs), trigger=trigger)

    bound = "accuracy_mcnemar_p" if uncertainty == "mcnemar" else "accuracy_delta_lower_bound"
    assert not verdict.passed
    assert check(verdict, "accuracy_delta")[0] == pytest.approx(-0.04)
    assert not check(verdict, "accuracy_delta")[2]
    assert not check(verdict, bound)[2]


@pytest.mark.parametrize("trigger", DEGRADED)
def test_a_challenger_worse_on_the_holdout_fails_even_within_the_margin(trigger: Trigger) -> None:
    # d = -0.002: its lower bound clears -0.01, but the point estimate must not be worse.
    ours, theirs = labels_with(1000, 798, start=5), labels_with(1000, 800)

    verdict = run(spec(), evidence(ours, theirs), trigger=trigger)

    assert not verdict.passed
    assert check(verdict, "accuracy_delta") == (pytest.approx(-0.002), 0.0, False)
    assert check(verdict, "accuracy_delta_lower_bound")[1:] == (-0.01, True)


def test_the_degraded_margin_is_the_lower_bound_threshold() -> None:
    ours, theirs = labels_with(500, 400, start=4), labels_with(500, 400)  # d = 0, 8 disagree

    wide = run(spec(degraded_margin=0.01), evidence(ours, theirs), trigger="drift")
    narrow = run(spec(degraded_margin=0.005), evidence(ours, theirs), trigger="drift")

    low, threshold, ok = check(wide, "accuracy_delta_lower_bound")
    assert (threshold, ok, wide.passed) == (-0.01, True, True)
    assert low is not None
    assert -0.01 <= low < -0.005
    assert check(narrow, "accuracy_delta_lower_bound")[1:] == (-0.005, False)
    assert not narrow.passed


def test_the_mcnemar_variant_tests_against_the_degraded_margin() -> None:
    ours, theirs = NOT_SIGNIFICANT["slightly-better"]

    verdict = run(spec(uncertainty="mcnemar"), evidence(ours, theirs), trigger="performance")

    better = int(np.sum((ours == 0) & (theirs == 1)))
    worse = int(np.sum((ours == 1) & (theirs == 0)))
    share = (better + worse) / len(ours)
    theta = (share - 0.01) / (2 * share)  # a discordant row's odds at the boundary d = -0.01
    p = stats.binomtest(better, better + worse, theta, alternative="greater").pvalue
    assert check(verdict, "accuracy_mcnemar_p") == (pytest.approx(p, abs=1e-6), 0.05, True)
    assert verdict.report["difference"]["mcnemar"]["bound"] == -0.01
    assert verdict.passed


@pytest.mark.parametrize(
    ("trigger", "label"),
    [
        ("drift", "non-inferiority: the champion is degraded (trigger drift)"),
        ("performance", "non-inferiority: the champion is degraded (trigger performance)"),
        ("manual", "strict: no evidence the champion is degraded (trigger manual)"),
        ("schedule", "strict: no evidence the champion is degraded (trigger schedule)"),
    ],
    ids=["drift", "performance", "manual", "schedule"],
)
def test_the_rule_is_named_in_the_checks_the_reason_and_the_report(
    trigger: Trigger, label: str
) -> None:
    ours, theirs = NOT_SIGNIFICANT["tie"]

    verdict = run(spec(), evidence(ours, theirs), trigger=trigger)

    compared = [c for c in verdict.checks if c.name.startswith("accuracy_delta")]
    assert len(compared) == 2
    assert all(c.detail is not None and c.detail.startswith(label) for c in compared)
    assert f"judged by {label}: " in verdict.reason
    assert verdict.report["rule"]["label"] == label
    json.dumps(verdict.report, allow_nan=False)


def test_the_first_version_names_no_rule() -> None:
    verdict = run(spec(min_score=0.5), evidence(labels_with(100, 90), None), trigger="drift")

    assert verdict.passed
    assert "rule" not in verdict.report
    assert "judged by" not in verdict.reason


@pytest.mark.parametrize(
    ("evaluator", "point", "bound"),
    [
        ({}, 0.0, -0.01),
        ({"min_delta": 0.02, "non_inferiority": 0.0}, 0.0, -0.01),
        ({"min_delta": -0.01, "non_inferiority": 0.0}, -0.01, -0.01),
        ({"min_delta": -0.05, "non_inferiority": 0.05}, -0.05, -0.1),
        ({"degraded_margin": 0.03}, 0.0, -0.03),
    ],
    ids=[
        "defaults",
        "strict-min-delta-waived",
        "negative-min-delta-kept",
        "looser-strict-kept",
        "wider-margin",
    ],
)
def test_the_degraded_rule_is_never_stricter_than_the_strict_one(
    evaluator: dict[str, Any], point: float, bound: float
) -> None:
    ev = EvaluatorSpec(metric="accuracy", **evaluator)

    degraded = rule_for(ev, "drift", Degradation(True, "shown"))
    strict = rule_for(ev, "manual", Degradation(False, "not shown"))

    assert (degraded.min_delta, degraded.min_bound) == (pytest.approx(point), pytest.approx(bound))
    assert (strict.min_delta, strict.min_bound) == (
        pytest.approx(ev.min_delta),
        pytest.approx(ev.min_delta - ev.non_inferiority),
    )
    assert degraded.min_delta <= strict.min_delta
    assert degraded.min_bound <= strict.min_bound


@pytest.mark.parametrize("trigger", DEGRADED)
def test_slices_floor_and_latency_still_bind_when_the_champion_is_degraded(
    trigger: Trigger,
) -> None:
    ours, theirs, columns = sliced()
    sliced_spec = spec(slices=[{"column": "plan"}])
    tie = NOT_SIGNIFICANT["tie"]

    by_slice = run(sliced_spec, evidence(ours, theirs, columns=columns), trigger=trigger)
    by_floor = run(spec(min_score=0.9), evidence(*tie), trigger=trigger)
    by_latency = run(spec(), evidence(*tie, latency=80.0), trigger=trigger)

    assert [c.name for c in by_slice.checks if not c.passed] == ["slice[plan=max].accuracy_delta"]
    assert [c.name for c in by_floor.checks if not c.passed] == ["accuracy_floor"]
    assert [c.name for c in by_latency.checks if not c.passed] == ["latency_p95_ms"]
    assert [by_slice.passed, by_floor.passed, by_latency.passed] == [False, False, False]


def test_a_lower_is_better_metric_uses_the_degraded_rule_in_its_units() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=500)
    theirs = y + rng.normal(0, 1.0, 500)
    ours = theirs + rng.normal(0, 0.01, 500)  # almost the champion: rmse within a hair of it
    ev = Evidence(
        y, Outputs(ours), Outputs(theirs), latency_p95_ms=1.0, champion_trained={"rmse": 0.5}
    )

    drift = run(spec(metric="rmse"), ev, trigger="drift")
    manual = run(spec(metric="rmse"), ev, trigger="manual")

    low, threshold, ok = check(drift, "rmse_delta_lower_bound")
    delta = check(drift, "rmse_delta")[0]
    assert delta is not None
    assert low is not None
    assert -0.01 < low < 0 <= delta < 0.001  # a hair better, not significantly
    assert (threshold, ok, drift.passed) == (-0.01, True, True)
    assert check(manual, "rmse_delta_lower_bound")[1:] == (0.0, False)
    assert not manual.passed


def test_a_refitted_first_version_is_floored_on_the_trainers_holdout_score() -> None:
    # its outputs here have seen the holdout (90 % right); the trainer measured 0.6 before
    # refitting on it, and that is the figure the floor judges
    refitted = evidence(labels_with(100, 90), None)
    measured = Evidence(**{**refitted.__dict__, "measured": {"accuracy": 0.6, "rows": 5.0}})

    verdict = run(spec(min_score=0.7), measured, trigger="bootstrap")

    assert check(verdict, "accuracy_floor") == (0.6, 0.7, False)
    assert verdict.challenger_score == 0.6
    assert run(spec(min_score=0.7), refitted, trigger="bootstrap").passed


def test_measured_figures_never_replace_a_comparison_with_the_champion() -> None:
    both = evidence(labels_with(1000, 900), labels_with(1000, 800))
    measured = Evidence(**{**both.__dict__, "measured": {"accuracy": 0.1}})

    verdict = run(spec(), measured)

    assert verdict.challenger_score == 0.9
    assert verdict.passed
