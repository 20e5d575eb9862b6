"""The reference profile: quantile edges, category bins, and binning live values on them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from driftloop.shared.profile import (
    MAX_CATEGORIES,
    OTHER,
    REFERENCE_SAMPLE,
    FeatureProfile,
    ReferenceProfile,
    bin_counts,
    build_profile,
)


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "tenure": rng.normal(24.0, 6.0, size=1000),
            "plan": rng.choice(["basic", "plus", "pro"], size=1000, p=[0.5, 0.3, 0.2]),
        }
    )


def _feature(frame: pd.DataFrame, name: str, *, bins: int = 10) -> FeatureProfile:
    return build_profile("churn", frame, [name], bins=bins).features[0]


def test_numeric_edges_are_the_reference_deciles(frame: pd.DataFrame) -> None:
    expected = np.quantile(frame["tenure"], np.linspace(0, 1, 11)[1:-1])

    fp = _feature(frame, "tenure")

    assert fp.kind == "numeric"
    assert fp.edges == pytest.approx(expected.tolist(), abs=1e-12)
    assert fp.bins == 10


def test_numeric_reference_fills_each_quantile_bin_equally(frame: pd.DataFrame) -> None:
    fp = _feature(frame, "tenure")

    proportions = np.asarray(fp.proportions)

    assert proportions.sum() == pytest.approx(1.0)
    assert proportions == pytest.approx(np.full(10, 0.1), abs=0.002)


@pytest.mark.parametrize("column", ["tenure", "plan"], ids=["numeric", "categorical"])
def test_binning_the_reference_again_gives_its_proportions(
    frame: pd.DataFrame, column: str
) -> None:
    fp = _feature(frame, column)

    counts, missing = bin_counts(fp, frame[column].tolist())

    assert missing == 0
    assert (counts / counts.sum()).tolist() == pytest.approx(fp.proportions)
    assert sum(fp.proportions) == pytest.approx(1.0)


def test_profile_records_model_rows_and_features_in_order(frame: pd.DataFrame) -> None:
    features = ["plan", "tenure"]

    profile = build_profile("churn", frame, features)

    assert profile.model == "churn"
    assert profile.rows == 1000
    assert [fp.name for fp in profile.features] == features
    assert [fp.kind for fp in profile.features] == ["categorical", "numeric"]


def test_categorical_profile_has_sorted_categories_and_an_empty_other_bin(
    frame: pd.DataFrame,
) -> None:
    fp = _feature(frame, "plan")

    shares = dict(zip([*fp.categories, OTHER], fp.proportions, strict=True))

    assert fp.categories == ["basic", "plus", "pro"]
    assert shares[OTHER] == 0.0
    assert shares["basic"] == pytest.approx(0.5, abs=0.05)


def test_unseen_categories_go_to_the_other_bin(frame: pd.DataFrame) -> None:
    fp = _feature(frame, "plan")

    counts, missing = bin_counts(fp, ["basic", "enterprise", "pro", "free", 42])

    assert counts.tolist() == [1, 0, 1, 3]
    assert missing == 0


def test_categories_past_the_limit_are_counted_as_other() -> None:
    values = [f"v{i:03d}" for i in range(MAX_CATEGORIES + 10) for _ in range(2)]
    values += ["common"] * 10
    frame = pd.DataFrame({"city": values})

    fp = _feature(frame, "city")

    assert len(fp.categories) == MAX_CATEGORIES
    assert "common" in fp.categories
    assert fp.proportions[-1] == pytest.approx(11 * 2 / len(values))
    assert sum(fp.proportions) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("values", "expected_missing"),
    [
        ([None, float("nan"), np.nan], 3),
        (["abc", "", [1, 2], {"a": 1}, object()], 5),
        ([True, False], 2),
        ([pd.NA, pd.NaT, np.float32("nan")], 3),
        ([1.0, None, "12.5", "nan"], 2),
    ],
    ids=["none-and-nan", "wrong-types", "booleans", "pandas-missing-markers", "mixed"],
)
def test_numeric_missing_and_wrong_types_are_counted_not_fatal(
    frame: pd.DataFrame, values: list[Any], expected_missing: int
) -> None:
    fp = _feature(frame, "tenure")

    counts, missing = bin_counts(fp, values)

    assert missing == expected_missing
    assert int(counts.sum()) == len(values) - expected_missing


def test_categorical_none_and_nan_are_missing_not_other(frame: pd.DataFrame) -> None:
    fp = _feature(frame, "plan")

    counts, missing = bin_counts(fp, [None, float("nan"), "basic"])

    assert missing == 2
    assert counts.tolist() == [1, 0, 0, 0]


def test_categorical_pandas_missing_markers_are_missing(frame: pd.DataFrame) -> None:
    fp = _feature(frame, "plan")

    counts, missing = bin_counts(fp, [pd.NA, pd.NaT, np.float32("nan")])

    assert missing == 3
    assert int(counts.sum()) == 0


def test_missing_values_set_the_missing_rate_and_stay_out_of_the_proportions() -> None:
    frame = pd.DataFrame(
        {
            "tenure": [1.0, 2.0, None, 4.0, np.nan, 6.0, 7.0, 8.0, 9.0, 10.0],
            "plan": ["a", None, "b", "a", "b", "a", None, "a", "b", "a"],
        }
    )

    profile = build_profile("churn", frame, ["tenure", "plan"], bins=4)

    tenure, plan = profile.features
    assert tenure.missing_rate == pytest.approx(0.2)
    assert plan.missing_rate == pytest.approx(0.2)
    assert sum(tenure.proportions) == pytest.approx(1.0)
    assert plan.proportions == pytest.approx([5 / 8, 3 / 8, 0.0])


def test_constant_column_collapses_to_a_single_edge() -> None:
    frame = pd.DataFrame({"seats": [5] * 100})

    fp = _feature(frame, "seats")
    counts, _ = bin_counts(fp, [5, 5, 4, 6])

    assert fp.edges == [5.0]
    assert fp.proportions == [0.0, 1.0]
    assert counts.tolist() == [1, 3]


def test_all_missing_numeric_column_builds_without_edges() -> None:
    frame = pd.DataFrame({"tenure": [np.nan, np.nan, np.nan]})

    fp = _feature(frame, "tenure")
    counts, missing = bin_counts(fp, [1.0, None])

    assert fp.edges == []
    assert fp.missing_rate == 1.0
    assert counts.tolist() == [1]
    assert missing == 1


def test_boolean_column_is_categorical_and_matches_live_booleans() -> None:
    frame = pd.DataFrame({"active": [True, False, True, True]})

    fp = _feature(frame, "active")
    counts, missing = bin_counts(fp, [True, False, "True"])

    assert fp.kind == "categorical"
    assert fp.categories == ["False", "True"]
    assert fp.proportions == pytest.approx([0.25, 0.75, 0.0])
    assert counts.tolist() == [1, 2, 0]
    assert missing == 0


def test_values_beyond_the_reference_range_land_in_the_outer_bins(frame: pd.DataFrame) -> None:
    fp = _feature(frame, "tenure")

    counts, missing = bin_counts(fp, [-1e9, float("-inf"), 1e9, float("inf")])

    assert missing == 0
    assert counts[0] == 2
    assert counts[-1] == 2


# The reference sample ------------------------------------------------------------------------


def test_a_small_reference_keeps_every_finite_value_sorted() -> None:
    values = [3.0, None, 1.0, 2.0, 2.0, np.nan]
    frame = pd.DataFrame({"x": values, "plan": ["a"] * len(values)})

    x, plan = build_profile("churn", frame, ["x", "plan"]).features

    assert x.sample == [1.0, 2.0, 2.0, 3.0]
    assert x.sample_rows == 4
    assert (plan.sample, plan.sample_rows) == (None, None)


def test_a_large_reference_keeps_evenly_spaced_quantiles_of_its_values() -> None:
    values = np.random.default_rng(4).gamma(2.0, 12.0, 100_000).round(1)

    fp = _feature(pd.DataFrame({"x": values}), "x")

    assert fp.sample is not None
    assert len(fp.sample) == REFERENCE_SAMPLE
    assert fp.sample_rows == values.size
    assert fp.sample == sorted(fp.sample)
    assert np.isin(fp.sample, values).all()  # real values: ties stay ties
    assert stats.ks_2samp(fp.sample, values).statistic <= 1 / REFERENCE_SAMPLE + 1e-3


def test_a_profile_stored_before_the_sample_loads_without_one(frame: pd.DataFrame) -> None:
    stored = build_profile("churn", frame, ["tenure", "plan"]).model_dump(mode="json")
    for feature in stored["features"]:
        del feature["sample"], feature["sample_rows"]

    profile = ReferenceProfile.model_validate(stored)

    assert [(f.sample, f.sample_rows) for f in profile.features] == [(None, None)] * 2


# predictions and labels --------------------------------------------------------------------


def test_a_classifiers_predictions_and_labels_are_profiled_as_categories() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "churned": [0, 1, 1, None]})
    predicted = np.array([0, 1, 1, 1])  # what a pipeline returns

    profile = build_profile(
        "churn", frame, ["x"], predictions=predicted, target="churned", task="classification"
    )

    assert profile.prediction is not None
    assert profile.label is not None
    assert (profile.prediction.name, profile.prediction.kind) == ("prediction", "categorical")
    assert profile.prediction.categories == ["0", "1"]
    assert profile.prediction.proportions == [0.25, 0.75, 0.0]  # "0", "1", OTHER
    assert (profile.label.name, profile.label.kind) == ("churned", "categorical")
    assert profile.label.categories == ["0.0", "1.0"]  # the column is float (it has a NaN)
    assert profile.label.missing_rate == 0.25
    assert [f.name for f in profile.features] == ["x"]  # neither is a feature


def test_a_regressors_predictions_and_labels_are_numeric_with_a_sample() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=500), "price": rng.normal(10, 2, 500)})

    profile = build_profile(
        "houses",
        frame,
        ["x"],
        predictions=frame["price"].to_numpy() + 0.5,
        target="price",
        task="regression",
    )

    assert profile.prediction is not None
    assert profile.label is not None
    assert profile.prediction.kind == profile.label.kind == "numeric"
    assert len(profile.prediction.edges) == 9
    assert profile.label.sample == sorted(frame["price"].tolist())
    assert profile.prediction.sample_rows == 500


def test_predictions_must_be_one_per_row() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})

    with pytest.raises(ValueError, match="2 predictions for 3 rows"):
        build_profile("m", frame, ["x"], predictions=[1, 2])


def test_a_profile_stored_before_predictions_and_labels_loads_without_them(
    frame: pd.DataFrame,
) -> None:
    stored = build_profile("churn", frame, ["tenure", "plan"]).model_dump(mode="json")
    del stored["prediction"], stored["label"]

    profile = ReferenceProfile.model_validate(stored)

    assert (profile.prediction, profile.label) == (None, None)
