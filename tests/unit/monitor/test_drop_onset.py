"""When the champion's live metric dropped: the CUSUM change point among the judged labelled
rows, kept only when the drop is significant (otherwise it began before them all)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats

from driftloop.monitor.domain.performance import (
    CHANGE_ALPHA,
    change_point,
    onset_of_drop,
    row_scores,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def right_or_wrong(rng: np.random.Generator, *accuracies: tuple[int, float]) -> list[float]:
    """Rows right (1) or wrong (0): `n` rows at accuracy `p` for each (n, p) in turn."""
    return [float(v) for n, p in accuracies for v in rng.random(n) < p]


@pytest.mark.parametrize("seed", range(5))
def test_a_drop_within_the_rows_is_placed_where_it_happened(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = right_or_wrong(rng, (1200, 0.93), (800, 0.80))

    assert abs(change_point(scores) - 1200) <= 150


def test_rows_all_after_the_drop_place_it_before_them() -> None:
    rng = np.random.default_rng(0)

    assert change_point(right_or_wrong(rng, (2000, 0.80))) == 0


def test_stable_rows_rarely_show_a_drop_about_alpha_of_the_time() -> None:
    rng = np.random.default_rng(1)
    found = [change_point(right_or_wrong(rng, (1000, 0.85))) for _ in range(400)]

    false_alarms = np.mean([k > 0 for k in found])
    assert false_alarms <= CHANGE_ALPHA + 0.03  # asymptotically alpha; a little under at n=1000


def test_the_critical_value_is_the_brownian_bridge_maximums_tail() -> None:
    # P(max of a Brownian bridge > b) = exp(-2 b^2); scipy's kstwobign is the two-sided
    # max |B|, whose tail is 2 exp(-2 b^2) less terms of order exp(-8 b^2).
    b = math.sqrt(-math.log(CHANGE_ALPHA) / 2)

    assert stats.kstwobign.sf(b) / 2 == pytest.approx(CHANGE_ALPHA, rel=1e-3)


def test_a_rise_is_not_a_drop() -> None:
    rng = np.random.default_rng(2)

    assert change_point(right_or_wrong(rng, (1000, 0.75), (1000, 0.95))) == 0


def test_a_regression_error_that_grows_is_a_drop() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=1000)
    predicted = y + np.r_[rng.normal(0, 0.5, 600), rng.normal(0, 1.5, 400)]

    for metric in ("rmse", "mae", "r2"):
        assert abs(change_point(row_scores(metric, list(y), list(predicted))) - 600) <= 60


def test_row_scores_are_each_rows_part_of_the_metric() -> None:
    assert row_scores("accuracy", [1, "a", 0], ["1", "a", 1]) == [1.0, 1.0, 0.0]
    assert row_scores("f1", [1, 0], [1, 1]) == [1.0, 0.0]
    assert row_scores("rmse", [1.0, 2.0], [1.5, 0.0]) == [-0.25, -4.0]
    assert row_scores("mae", [1.0, 2.0], [1.5, 0.0]) == [-0.5, -2.0]


def test_constant_or_tiny_rows_have_no_change_point() -> None:
    assert change_point([]) == 0
    assert change_point([1.0]) == 0
    assert change_point([1.0] * 50) == 0


def test_the_onset_is_the_prediction_time_of_the_first_row_after_the_drop() -> None:
    rng = np.random.default_rng(4)
    right = right_or_wrong(rng, (1000, 0.95), (1000, 0.70))
    rows = [(T0 + timedelta(seconds=i), 1, 1 if ok else 0) for i, ok in enumerate(right)]
    shuffled = [rows[i] for i in rng.permutation(len(rows))]  # as labels arrive: any order

    onset = onset_of_drop("accuracy", shuffled)

    assert abs((onset - T0).total_seconds() - 1000) <= 100
    assert onset in {r[0] for r in rows}
