"""The verdict: challenger vs champion on the same holdout, the floor, the latency budget."""

from __future__ import annotations

import math

import pytest

from driftloop.evaluator.domain.verdict import Verdict, judge, p95_ms
from driftloop.shared.spec import EvaluatorSpec, ModelSpec


def spec(**evaluator: object) -> ModelSpec:
    defaults: dict[str, object] = {"metric": "f1", "min_delta": 0.125, "max_p95_ms": 50.0}
    chosen = EvaluatorSpec(**{**defaults, **evaluator})
    task = "regression" if chosen.metric in ("rmse", "mae", "r2") else "classification"
    return ModelSpec(model="churn", task=task, target="churned", evaluator=chosen)


def check(verdict: Verdict, name: str) -> tuple[float | None, float | None, bool]:
    [found] = [c for c in verdict.checks if c.name == name]
    return found.figure, found.threshold, found.passed


@pytest.mark.parametrize(
    ("challenger", "passed"),
    [(0.75, True), (0.625, True), (0.5625, False), (0.25, False)],
    ids=["well-above", "exactly-min-delta-above", "above-but-short-of-min-delta", "below"],
)
def test_challenger_must_beat_champion_by_min_delta(challenger: float, passed: bool) -> None:
    verdict = judge(spec(), challenger={"f1": challenger}, champion={"f1": 0.5}, latency_p95_ms=10)

    assert verdict.passed is passed
    assert check(verdict, "f1_delta") == (challenger - 0.5, 0.125, passed)
    assert (verdict.challenger_score, verdict.champion_score) == (challenger, 0.5)


def test_a_failed_comparison_names_the_check_and_its_figures() -> None:
    verdict = judge(spec(), challenger={"f1": 0.5625}, champion={"f1": 0.5}, latency_p95_ms=10)

    assert not verdict.passed
    assert [c.name for c in verdict.checks if not c.passed] == ["f1_delta"]
    assert "f1_delta" in verdict.reason
    assert "0.0625" in verdict.reason
    assert "0.125" in verdict.reason
    [delta] = [c for c in verdict.checks if c.name == "f1_delta"]
    assert "0.5625" in delta.detail
    assert "0.5000" in delta.detail


@pytest.mark.parametrize(
    ("challenger", "passed"),
    [(0.75, True), (0.7, True), (0.65, False)],
    ids=["above-floor", "at-floor", "below-floor"],
)
def test_first_version_is_judged_against_the_min_score_floor(
    challenger: float, passed: bool
) -> None:
    verdict = judge(
        spec(min_score=0.7), challenger={"f1": challenger}, champion=None, latency_p95_ms=10
    )

    assert verdict.passed is passed
    assert verdict.champion_score is None
    assert check(verdict, "f1_floor") == (challenger, 0.7, passed)
    assert not any(c.name == "f1_delta" for c in verdict.checks)


def test_first_version_passes_reason_says_it_is_the_first() -> None:
    verdict = judge(spec(min_score=0.7), challenger={"f1": 0.8}, champion=None, latency_p95_ms=10)

    assert verdict.passed
    assert "first version" in verdict.reason


@pytest.mark.parametrize(
    ("latency", "passed"),
    [(49.0, True), (50.0, True), (50.5, False), (400.0, False)],
    ids=["under-budget", "at-budget", "just-over-budget", "far-over-budget"],
)
def test_latency_over_budget_fails(latency: float, passed: bool) -> None:
    verdict = judge(spec(), challenger={"f1": 0.9}, champion={"f1": 0.5}, latency_p95_ms=latency)

    assert verdict.passed is passed
    assert check(verdict, "latency_p95_ms") == (latency, 50.0, passed)
    if not passed:
        assert "latency_p95_ms" in verdict.reason


@pytest.mark.parametrize(
    ("challenger", "champion", "passed", "delta"),
    [(1.0, 1.5, True, 0.5), (1.4, 1.5, False, 0.1), (2.0, 1.5, False, -0.5)],
    ids=["lower-rmse-by-enough", "lower-rmse-by-too-little", "higher-rmse"],
)
def test_lower_is_better_metric_flips_the_sign_of_the_difference(
    challenger: float, champion: float, passed: bool, delta: float
) -> None:
    verdict = judge(
        spec(metric="rmse", min_delta=0.25),
        challenger={"rmse": challenger, "r2": 0.5},
        champion={"rmse": champion, "r2": 0.9},
        latency_p95_ms=10,
    )

    assert verdict.passed is passed
    figure, threshold, ok = check(verdict, "rmse_delta")
    assert figure == pytest.approx(delta)
    assert (threshold, ok) == (0.25, passed)


@pytest.mark.parametrize(
    ("challenger", "passed"), [(1.5, True), (2.5, False)], ids=["under-ceiling", "over-ceiling"]
)
def test_lower_is_better_floor_is_a_ceiling(challenger: float, passed: bool) -> None:
    verdict = judge(
        spec(metric="rmse", min_score=2.0),
        challenger={"rmse": challenger},
        champion=None,
        latency_p95_ms=10,
    )

    assert verdict.passed is passed
    assert check(verdict, "rmse_floor") == (challenger, 2.0, passed)


def test_a_metric_the_task_does_not_define_fails_naming_it() -> None:
    verdict = judge(
        spec(metric="roc_auc"), challenger={"f1": 0.9}, champion=None, latency_p95_ms=10
    )

    assert not verdict.passed
    assert check(verdict, "roc_auc_available") == (None, None, False)
    assert math.isnan(verdict.challenger_score)


def test_p95_is_in_milliseconds() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms

    assert p95_ms(latencies) == pytest.approx(95.05)
