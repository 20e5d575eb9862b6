"""Slices of the holdout: categorical values, numeric bins by edges or quantiles."""

from __future__ import annotations

import numpy as np

from driftloop.evaluator.domain.slices import slices_of
from driftloop.shared.spec import SliceSpec


def test_categorical_column_gives_one_slice_per_value_and_one_for_missing() -> None:
    values = np.array(["pro", "basic", None, "pro", "max"], dtype=object)

    found = slices_of(values, SliceSpec(column="plan"))

    assert [s.name for s in found] == ["plan=basic", "plan=max", "plan=pro", "plan=missing"]
    assert [s.mask.tolist() for s in found] == [
        [False, True, False, False, False],
        [False, False, False, False, True],
        [True, False, False, True, False],
        [False, False, True, False, False],
    ]


def test_booleans_are_categories() -> None:
    found = slices_of(np.array([True, False, True]), SliceSpec(column="autopay"))

    assert [(s.label, int(s.mask.sum())) for s in found] == [("False", 1), ("True", 2)]


def test_numeric_edges_give_right_closed_bins_with_open_ends() -> None:
    values = np.array([1.0, 10.0, 10.5, 30.0, 99.0, np.nan])

    found = slices_of(values, SliceSpec(column="tenure", bins=[10, 30]))

    assert [(s.label, s.mask.nonzero()[0].tolist()) for s in found] == [
        ("(-inf, 10]", [0, 1]),
        ("(10, 30]", [2, 3]),
        ("(30, inf]", [4]),
        ("missing", [5]),
    ]


def test_quantile_bins_split_the_holdout_evenly_and_cover_every_row() -> None:
    values = np.random.default_rng(0).gamma(2.0, 12.0, 1000)

    found = slices_of(values, SliceSpec(column="tenure", bins=4))

    sizes = [int(s.mask.sum()) for s in found]
    assert len(found) == 4
    assert sum(sizes) == 1000
    assert all(abs(size - 250) <= 1 for size in sizes)


def test_quantile_bins_of_a_few_distinct_values_merge_repeated_cuts() -> None:
    values = np.array([1.0] * 90 + [2.0] * 10)

    found = slices_of(values, SliceSpec(column="x", bins=4))

    assert [(s.label, int(s.mask.sum())) for s in found] == [("(-inf, 1]", 90), ("(1, inf]", 10)]
