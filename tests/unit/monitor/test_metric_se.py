"""The standard error the monitor gives with a version's live metric (the deployer's canary
check weighs the drop against it), checked against scipy and against the spread of the metric
over repeated samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error

from driftloop.monitor.domain.performance import metric_standard_error


def test_accuracy_is_the_standard_error_of_right_and_wrong() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 500).tolist()
    answers = [t if rng.random() < 0.8 else 1 - t for t in truth]
    right = [float(t == a) for t, a in zip(truth, answers, strict=True)]

    assert metric_standard_error("accuracy", truth, answers) == pytest.approx(stats.sem(right))


def test_mae_is_the_standard_error_of_the_absolute_errors() -> None:
    rng = np.random.default_rng(2)
    truth = rng.normal(size=300)
    answers = truth + rng.normal(scale=0.5, size=300)

    se = metric_standard_error("mae", truth.tolist(), answers.tolist())

    assert se == pytest.approx(stats.sem(np.abs(answers - truth)))


@pytest.mark.parametrize(
    ("metric", "figure"),
    [
        ("accuracy", lambda t, p: float(np.mean(t == p))),
        ("mae", mean_absolute_error),
        ("rmse", lambda t, p: float(np.sqrt(mean_squared_error(t, p)))),
    ],
)
def test_the_standard_error_matches_the_spread_over_repeated_samples(
    metric: str, figure: object
) -> None:
    rng = np.random.default_rng(3)
    n = 400

    def sample() -> tuple[np.ndarray, np.ndarray]:
        if metric == "accuracy":
            t = rng.integers(0, 2, n)
            return t, np.where(rng.random(n) < 0.75, t, 1 - t)
        t = rng.normal(size=n)
        return t, t + rng.normal(scale=0.7, size=n)

    figures = []
    for _ in range(400):
        t, p = sample()
        figures.append(figure(t, p))  # type: ignore[operator]
    t, p = sample()
    se = metric_standard_error(metric, t.tolist(), p.tolist())

    assert se is not None
    assert se == pytest.approx(float(np.std(figures, ddof=1)), rel=0.2)


def test_fewer_than_two_rows_have_none() -> None:
    assert metric_standard_error("accuracy", [1], [1]) is None
    assert metric_standard_error("accuracy", [], []) is None
