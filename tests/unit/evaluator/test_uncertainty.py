"""The paired bootstrap and McNemar's test against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, mean_absolute_error

from driftloop.evaluator.domain.resampling import Outputs
from driftloop.evaluator.domain.uncertainty import mcnemar, paired_bootstrap, resample_counts


def pair(n: int, seed: int, *, flip: float = 0.2) -> tuple[np.ndarray, Outputs, Outputs]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    ours = np.where(rng.random(n) < flip, 1 - y, y)
    theirs = np.where(rng.random(n) < flip + 0.05, 1 - y, y)
    return y, Outputs(ours), Outputs(theirs)


def test_bootstrap_interval_equals_a_loop_of_sklearn_over_the_same_resamples() -> None:
    y, ours, theirs = pair(300, seed=1)
    resamples = 120
    groups = {"first-half": np.arange(300) < 150}

    overall, per_group = paired_bootstrap(
        "f1",
        y,
        ours,
        theirs,
        [0, 1],
        higher_is_better=True,
        confidence=0.9,
        resamples=resamples,
        rng=np.random.default_rng(7),
        groups=groups,
    )

    picks = np.random.default_rng(7).integers(0, 300, size=(resamples, 300))
    diffs, group_diffs = [], []
    for rows in picks:
        diffs.append(
            f1_score(y[rows], ours.predictions[rows]) - f1_score(y[rows], theirs.predictions[rows])
        )
        kept = rows[rows < 150]
        group_diffs.append(
            f1_score(y[kept], ours.predictions[kept]) - f1_score(y[kept], theirs.predictions[kept])
        )
    low, high = np.quantile(diffs, [0.1, 0.9])
    g_low, g_high = np.quantile(group_diffs, [0.1, 0.9])
    assert (overall.low, overall.high, overall.valid) == (
        pytest.approx(low, abs=1e-12),
        pytest.approx(high, abs=1e-12),
        resamples,
    )
    assert (per_group["first-half"].low, per_group["first-half"].high) == (
        pytest.approx(g_low, abs=1e-12),
        pytest.approx(g_high, abs=1e-12),
    )


def test_lower_is_better_metric_counts_a_drop_as_improvement() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    ours, theirs = Outputs(y + rng.normal(0, 0.5, 200)), Outputs(y + rng.normal(0, 1.0, 200))

    interval, _ = paired_bootstrap(
        "mae",
        y,
        ours,
        theirs,
        None,
        higher_is_better=False,
        confidence=0.95,
        resamples=300,
        rng=np.random.default_rng(0),
    )

    point = mean_absolute_error(y, theirs.predictions) - mean_absolute_error(y, ours.predictions)
    assert 0 < interval.low < point < interval.high


def test_identical_models_have_a_zero_width_interval() -> None:
    y, ours, _ = pair(200, seed=2)

    interval, _ = paired_bootstrap(
        "accuracy",
        y,
        ours,
        ours,
        [0, 1],
        higher_is_better=True,
        confidence=0.95,
        resamples=200,
        rng=np.random.default_rng(0),
    )

    assert (interval.low, interval.high) == (0.0, 0.0)


def test_interval_covers_the_truth_at_about_its_confidence() -> None:
    rng = np.random.default_rng(11)
    covered = 0
    trials = 200
    for _ in range(trials):  # true accuracy improvement: 0.25 - 0.20 = 0.05
        y, ours, theirs = pair(400, seed=int(rng.integers(1 << 30)))
        interval, _ = paired_bootstrap(
            "accuracy",
            y,
            ours,
            theirs,
            [0, 1],
            higher_is_better=True,
            confidence=0.9,
            resamples=200,
            rng=rng,
        )
        covered += interval.low <= 0.05
    assert covered / trials == pytest.approx(0.9, abs=0.06)


def test_resample_counts_draw_n_rows_per_resample() -> None:
    counts = resample_counts(np.random.default_rng(0), 50, 30)

    assert counts.shape == (50, 30)
    assert (counts.sum(axis=1) == 30).all()


def exact_tail(successes: int, trials: int, p: float) -> float:
    return sum(
        math.comb(trials, k) * p**k * (1 - p) ** (trials - k) for k in range(successes, trials + 1)
    )


@pytest.mark.parametrize(
    ("better", "worse", "bound"),
    [(30, 12, 0.0), (12, 30, 0.0), (20, 20, 0.0), (25, 15, -0.02), (25, 15, 0.01), (5, 0, 0.0)],
    ids=[
        "challenger-better",
        "challenger-worse",
        "tie",
        "non-inferiority",
        "superiority-margin",
        "one-sided-all",
    ],
)
def test_mcnemar_p_value_is_the_exact_binomial_tail(better: int, worse: int, bound: float) -> None:
    n = 400
    y = np.zeros(n, dtype=int)
    ours = np.zeros(n, dtype=int)
    theirs = np.zeros(n, dtype=int)
    theirs[:better] = 1  # only the challenger right on these rows
    ours[better : better + worse] = 1  # only the champion right on these

    test = mcnemar(y, ours, theirs, bound=bound)

    share = (better + worse) / n
    theta = (share + bound) / (2 * share)
    assert (test.better, test.worse) == (better, worse)
    assert test.p_value == pytest.approx(exact_tail(better, better + worse, theta), rel=1e-9)
    if bound == 0:
        classic = stats.binomtest(better, better + worse, 0.5, alternative="greater").pvalue
        assert test.p_value == pytest.approx(classic, rel=1e-9)


@pytest.mark.parametrize(("bound", "p"), [(0.0, 0.0), (-0.01, 0.0), (0.01, 1.0)])
def test_mcnemar_without_discordant_rows_knows_the_difference_is_zero(
    bound: float, p: float
) -> None:
    y = np.array([0, 1, 1, 0])

    assert mcnemar(y, y.copy(), y.copy(), bound=bound).p_value == p
