"""When the champion's live metric dropped: the CUSUM change point among the judged labelled
rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftloop.monitor.domain.performance import change_point, onset_of_drop, row_scores

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def right_or_wrong(rng: np.random.Generator, *accuracies: tuple[int, float]) -> list[float]:
    """Rows right (1) or wrong (0): `n` rows at accuracy `p` for each (n, p) in turn."""
    return [float(v) for n, p in accuracies for v in rng.random(n) < p]


@pytest.mark.parametrize("seed", range(5))
def test_a_drop_within_the_rows_is_placed_where_it_happened(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = right_or_wrong(rng, (1200, 0.93), (800, 0.80))

    assert abs(change_point(scores) - 1200) <= 150


def test_a_small_drop_like_a_real_streams_is_placed_near_it() -> None:
    # synthetic_sample's: accuracy 0.945 -> 0.917 half-way through the 1,000 rows judged
    rng = np.random.default_rng(7)
    found = np.array(
        [change_point(right_or_wrong(rng, (500, 0.945), (500, 0.917))) for _ in range(200)]
    )

    assert np.median(np.abs(found - 500)) <= 120
    assert np.mean(found < 300) <= 0.15  # too early: the old regime in the training rows


def test_the_estimate_is_the_argmax_of_the_cusum() -> None:
    rng = np.random.default_rng(8)
    scores = right_or_wrong(rng, (300, 0.9), (200, 0.6))
    mean = sum(scores) / len(scores)
    # by definition, one sum per candidate k: the better-than-average past before row k
    cusum = [sum(x - mean for x in scores[:k]) for k in range(len(scores))]

    assert change_point(scores) == int(np.argmax(cusum))


@pytest.mark.parametrize("seed", range(5))
def test_a_rise_is_not_a_drop_the_rows_are_taken_from_the_first(seed: int) -> None:
    rng = np.random.default_rng(seed)

    # the CUSUM falls from the start: at most a few rows of noise before it does
    assert change_point(right_or_wrong(rng, (1000, 0.75), (1000, 0.95))) <= 30


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
