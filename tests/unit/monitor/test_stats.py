"""Drift statistics of two samples, checked against scipy on seeded and adversarial data."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

from driftloop.monitor.domain.drift import PSI_EPSILON
from driftloop.monitor.domain.stats import (
    benjamini_hochberg,
    drift_report,
    ks_pvalue,
    quantile_edges,
    smirnov_tail,
)
from driftloop.shared.profile import build_profile

FEATURE_KEYS = {
    "kind",
    "psi",
    "ks",
    "chi2",
    "jensen_shannon",
    "wasserstein",
    "missing",
    "drifted",
}


def textbook_psi(reference: np.ndarray, current: np.ndarray) -> float:
    """sum (c - r) ln(c / r) over shares floored at PSI_EPSILON and renormalised, by hand."""
    r = [max(x, PSI_EPSILON) for x in (reference / reference.sum()).tolist()]
    c = [max(x, PSI_EPSILON) for x in (current / current.sum()).tolist()]
    r = [x / sum(r) for x in r]
    c = [x / sum(c) for x in c]
    return sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))


def decile_counts(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts on the reference's deciles (duplicates dropped) with np.histogram, open ends."""
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, 11)[1:-1]))
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    return np.histogram(reference, edges)[0], np.histogram(current, edges)[0]


def one_feature(reference: Any, current: Any) -> dict[str, Any]:
    doc = drift_report(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))
    feature: dict[str, Any] = doc["features"]["x"]
    return feature


Sampler = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]

NUMERIC_CASES: list[tuple[Sampler, float]] = [
    (lambda g: (g.normal(0, 1, 5000), g.normal(0.1, 1.1, 3000)), 1e-9),
    (lambda g: (g.normal(0, 1, 4000), g.normal(0, 1, 4000)), 1e-9),
    (lambda g: (g.lognormal(0, 1, 2000), g.lognormal(0.3, 1, 777)), 1e-9),
    (lambda g: (g.standard_cauchy(6000), g.standard_cauchy(5000) * 1.5), 1e-9),
    (lambda g: (g.integers(0, 5, 3000) * 1.0, g.integers(0, 6, 2500) * 1.0), 1e-9),
    (lambda g: (g.normal(0, 1, 3000), g.normal(5, 0.1, 300)), 1e-9),  # current in one bin
    (lambda g: (g.normal(0, 1, 30_000), g.normal(0.05, 1, 20_000)), 1e-7),  # asymptotic KS
    (lambda g: (g.standard_cauchy(40_000), g.standard_cauchy(30_000) + 0.05), 1e-7),
    (lambda g: (g.normal(0, 1, 12_000), g.normal(0, 1, 11_000)), 1e-7),
    (lambda g: (g.normal(0, 1, 20_000), g.normal(0, 1, 7)), 1e-9),  # small m: kstwo itself
]
NUMERIC_IDS = [
    "normal-shift",
    "normal-same",
    "lognormal",
    "cauchy",
    "integer-ties",
    "empty-bins",
    "large-shift",
    "large-cauchy",
    "large-same",
    "unbalanced",
]


@pytest.mark.parametrize(("sample", "p_rel"), NUMERIC_CASES, ids=NUMERIC_IDS)
def test_numeric_statistics_agree_with_scipy(sample: Sampler, p_rel: float) -> None:
    reference, current = sample(np.random.default_rng(2024))

    f = one_feature(reference, current)

    ks = stats.ks_2samp(reference, current)
    ref_counts, cur_counts = decile_counts(reference, current)
    assert f["kind"] == "numeric"
    assert f["chi2"] is None
    assert f["ks"]["statistic"] == pytest.approx(ks.statistic, rel=1e-12, abs=1e-15)
    # p_rel 1e-7 where the tail is Smirnov's sum in log space instead of scipy's term by term
    assert f["ks"]["pvalue"] == pytest.approx(ks.pvalue, rel=p_rel, abs=1e-300)
    assert f["wasserstein"] == pytest.approx(
        stats.wasserstein_distance(reference, current) / np.std(reference), rel=1e-9
    )
    assert f["psi"] == pytest.approx(textbook_psi(ref_counts, cur_counts), rel=1e-9, abs=1e-12)
    assert f["jensen_shannon"] == pytest.approx(
        jensenshannon(ref_counts, cur_counts, base=2), rel=1e-9, abs=1e-12
    )


def test_bins_are_the_reference_profiles_bins() -> None:
    values = np.random.default_rng(3).gamma(2.0, 3.0, 5000)

    profile = build_profile("m", pd.DataFrame({"x": values}), ["x"])

    assert quantile_edges(values).tolist() == profile.features[0].edges


CATEGORICAL_CASES = [
    (["a"] * 50 + ["b"] * 30 + ["c"] * 20, ["a"] * 40 + ["b"] * 40 + ["c"] * 20),
    (["a"] * 50 + ["b"] * 50, ["a"] * 30 + ["b"] * 50 + ["new"] * 20),  # unseen category
    (["a"] * 50 + ["b"] * 45 + ["gone"] * 5, ["a"] * 60 + ["b"] * 40),  # vanished category
    (["a"] * 50 + ["b"] * 50, ["a"] * 34 + ["b"] * 66),  # two: no Yates correction
    ([True] * 70 + [False] * 30, [True] * 55 + [False] * 45),  # booleans are categories
]
CATEGORICAL_IDS = ["three", "unseen", "vanished", "two", "boolean"]


@pytest.mark.parametrize(("reference", "current"), CATEGORICAL_CASES, ids=CATEGORICAL_IDS)
def test_categorical_statistics_agree_with_scipy(reference: list[Any], current: list[Any]) -> None:
    categories = sorted({str(v) for v in reference + current})
    ref_counts = np.array([sum(str(v) == c for v in reference) for c in categories])
    cur_counts = np.array([sum(str(v) == c for v in current) for c in categories])

    f = one_feature(reference, current)

    chi2 = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
    assert f["kind"] == "categorical"
    assert f["ks"] is None
    assert f["wasserstein"] is None
    assert f["chi2"]["statistic"] == pytest.approx(chi2.statistic, rel=1e-9)
    assert f["chi2"]["pvalue"] == pytest.approx(chi2.pvalue, rel=1e-9)
    assert f["psi"] == pytest.approx(textbook_psi(ref_counts, cur_counts), rel=1e-9)
    assert f["jensen_shannon"] == pytest.approx(
        jensenshannon(ref_counts, cur_counts, base=2), rel=1e-9
    )


def test_categorical_statistics_agree_with_scipy_on_random_counts() -> None:
    rng = np.random.default_rng(8)
    names = np.array([f"k{i}" for i in range(12)])
    reference = rng.choice(names, 20_000, p=rng.dirichlet(np.ones(12)))
    current = rng.choice(names[:10], 15_000, p=rng.dirichlet(np.ones(10)))
    ref_counts = np.array([(reference == n).sum() for n in names])
    cur_counts = np.array([(current == n).sum() for n in names])

    f = one_feature(reference, current)

    chi2 = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
    assert f["chi2"]["statistic"] == pytest.approx(chi2.statistic, rel=1e-9)
    assert f["chi2"]["pvalue"] == pytest.approx(chi2.pvalue, rel=1e-9, abs=1e-300)
    assert f["psi"] == pytest.approx(textbook_psi(ref_counts, cur_counts), rel=1e-9)
    assert f["jensen_shannon"] == pytest.approx(
        jensenshannon(ref_counts, cur_counts, base=2), rel=1e-9
    )


# Invariants --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).normal(0, 1, 3000),
        np.random.default_rng(2).standard_cauchy(20_000),
        np.full(500, 7.5),
        np.random.default_rng(3).choice(["x", "y", "z"], 2000),
        np.array(["only"] * 300),
    ],
    ids=["normal", "cauchy-large", "constant", "categories", "one-category"],
)
def test_identical_samples_show_no_drift(values: np.ndarray) -> None:
    f = one_feature(values, values.copy())

    assert f["psi"] == pytest.approx(0.0, abs=1e-12)
    assert f["jensen_shannon"] == pytest.approx(0.0, abs=1e-12)
    test = f["ks"] or f["chi2"]
    assert test["statistic"] == pytest.approx(0.0, abs=1e-12)
    assert test["pvalue"] == pytest.approx(1.0)
    if f["kind"] == "numeric":
        assert f["wasserstein"] == 0.0
    assert f["drifted"] is False


def test_larger_shifts_give_larger_figures() -> None:
    rng = np.random.default_rng(5)
    reference = rng.normal(0, 1, 5000)
    noise = rng.normal(0, 1, 5000)

    figures = [one_feature(reference, noise + shift) for shift in (0.1, 0.3, 0.6, 1.2)]

    for key in ("psi", "jensen_shannon", "wasserstein"):
        values = [f[key] for f in figures]
        assert values == sorted(values), key
    assert figures[-1]["wasserstein"] == pytest.approx(1.2, rel=0.05)  # in standard deviations


def test_wasserstein_means_the_same_on_every_scale() -> None:
    rng = np.random.default_rng(6)
    reference, current = rng.normal(0, 1, 4000), rng.normal(0.4, 1, 4000)

    unit = one_feature(reference, current)["wasserstein"]
    scaled = one_feature(reference * 1e6 + 3, current * 1e6 + 3)["wasserstein"]

    assert scaled == pytest.approx(unit, rel=1e-9)


# Adversarial data --------------------------------------------------------------------------


def test_a_constant_reference_is_normalised_by_the_pooled_spread() -> None:
    f = one_feature(np.zeros(100), np.ones(100))

    # W = 1, the pooled standard deviation of 100 zeros and 100 ones is 0.5
    assert f["wasserstein"] == pytest.approx(2.0)
    assert f["ks"]["statistic"] == 1.0
    assert f["drifted"] is True


@pytest.mark.parametrize(
    ("reference", "current", "missing"),
    [
        ([1.0, 2.0, 3.0], [], 0),
        ([1.0, 2.0, 3.0], [np.nan, np.nan], 2),
        ([1.0, 2.0, 3.0], [None, None, None], 3),
        ([np.nan, np.nan], [1.0, 2.0], 0),
        (["a", "b"], [None, np.nan], 2),
        (["a", "b"], [], 0),
    ],
    ids=["empty", "all-nan", "all-none", "reference-all-nan", "no-categories", "no-rows"],
)
def test_a_sample_with_no_values_has_null_figures_and_is_not_drifted(
    reference: list[Any], current: list[Any], missing: int
) -> None:
    ref = pd.Series(reference, dtype=float if isinstance(reference[0], float) else object)
    cur = pd.Series(current, dtype=ref.dtype)

    f = one_feature(ref, cur)

    assert f["psi"] is None
    assert f["ks"] is None
    assert f["chi2"] is None
    assert f["jensen_shannon"] is None
    assert f["wasserstein"] is None
    assert f["missing"] == missing
    assert f["drifted"] is False


def test_missing_values_are_counted_and_left_out_of_the_statistics() -> None:
    rng = np.random.default_rng(9)
    reference = rng.normal(0, 1, 1000)
    clean = rng.normal(0, 1, 800)
    current = pd.Series([*clean.tolist(), None, np.nan, np.inf, -np.inf, "n/a"], dtype=object)

    f = one_feature(reference, current)

    assert f["missing"] == 5
    assert f["ks"]["statistic"] == pytest.approx(stats.ks_2samp(reference, clean).statistic)


def test_missing_categories_are_counted_not_made_a_category() -> None:
    f = one_feature(["a", "b", None], pd.Series(["a", None, np.nan, pd.NA, "b"], dtype=object))

    assert f["missing"] == 3
    assert f["chi2"]["statistic"] == pytest.approx(0.0)


def test_a_single_category_has_nothing_to_test() -> None:
    f = one_feature(["a"] * 10, ["a"] * 3)

    assert f["chi2"] == {"statistic": 0.0, "pvalue": 1.0}
    assert f["psi"] == 0.0


def test_huge_values_give_a_json_document_not_a_crash() -> None:
    reference = np.array([-1e308, 1e308, 0.0, 1.0])
    current = np.array([1e308, 1e308, -1e308, 5.0])

    doc = drift_report(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))

    json.dumps(doc, allow_nan=False)
    assert doc["features"]["x"]["ks"]["statistic"] == pytest.approx(
        stats.ks_2samp(reference, current).statistic
    )


# Smirnov's tail ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10_001, 150_001])
@pytest.mark.parametrize("n_d_squared", [2.2, 5.0, 30.0, 300.0])
def test_smirnov_tail_agrees_with_scipy(n: int, n_d_squared: float) -> None:
    d = math.sqrt(n_d_squared / n)

    assert smirnov_tail(n, d) == pytest.approx(special.smirnov(n, d), rel=1e-8)


def test_ks_pvalue_agrees_with_ks_2samp_in_the_asymptotic_regime() -> None:
    rng = np.random.default_rng(10)
    reference, current = np.sort(rng.normal(0, 1, 50_000)), np.sort(rng.normal(0.03, 1, 40_000))
    d = stats.ks_2samp(reference, current).statistic

    value = ks_pvalue(d, reference, current)

    assert value == pytest.approx(stats.ks_2samp(reference, current).pvalue, rel=1e-8)


# Multiple testing and the verdict ----------------------------------------------------------


@pytest.mark.parametrize(
    "pvalues",
    [
        np.random.default_rng(11).uniform(0, 1, 25),
        np.random.default_rng(12).uniform(0, 0.1, 25),
        np.array([0.01, 0.01, 0.04, 0.04, 0.5, 1.0]),
        np.array([0.3]),
    ],
    ids=["uniform", "small", "ties", "one"],
)
def test_benjamini_hochberg_agrees_with_scipy(pvalues: np.ndarray) -> None:
    adjusted = benjamini_hochberg(pvalues)

    expected = stats.false_discovery_control(pvalues, method="bh")
    np.testing.assert_allclose(adjusted, expected, rtol=1e-12)


def _two_by_two(extra_null_features: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    # a: raw chi-square p = 0.0219, PSI 0.106 (below 0.2); the others identical (p = 1)
    reference = {"a": ["x"] * 50 + ["y"] * 50}
    current = {"a": ["x"] * 34 + ["y"] * 66}
    for i in range(extra_null_features):
        reference[f"same{i}"] = ["u", "v"] * 50
        current[f"same{i}"] = ["u", "v"] * 50
    return pd.DataFrame(reference), pd.DataFrame(current)


def test_one_small_pvalue_alone_is_drift() -> None:
    doc = drift_report(*_two_by_two(0))

    assert doc["features"]["a"]["chi2"]["pvalue"] == pytest.approx(0.021889893660666064)
    assert doc["drifted_features"] == ["a"]


def test_the_correction_across_features_keeps_one_small_pvalue_among_ten_from_drifting() -> None:
    doc = drift_report(*_two_by_two(9))

    # BH: 0.0219 * 10 / 1 = 0.219 >= alpha; the raw p-value is reported unadjusted
    assert doc["features"]["a"]["chi2"]["pvalue"] == pytest.approx(0.021889893660666064)
    assert doc["drifted_features"] == []
    assert doc["dataset_drift"] is False


def test_psi_past_its_threshold_is_drift_whatever_the_pvalue() -> None:
    reference = pd.DataFrame({"a": ["x"] * 5 + ["y"] * 5})
    current = pd.DataFrame({"a": ["x"] * 1 + ["y"] * 9})

    doc = drift_report(reference, current, psi_threshold=0.2)

    assert doc["features"]["a"]["chi2"]["pvalue"] > 0.05
    assert doc["features"]["a"]["psi"] >= 0.2
    assert doc["drifted_features"] == ["a"]


@pytest.mark.parametrize(
    ("drifting", "share", "expected"),
    [(2, 0.5, True), (1, 0.5, False), (1, 0.25, True), (4, 1.0, True), (0, 0.5, False)],
    ids=["half", "quarter", "quarter-low-bar", "all", "none"],
)
def test_dataset_drift_is_the_share_of_drifted_features(
    drifting: int, share: float, expected: bool
) -> None:
    rng = np.random.default_rng(13)
    reference = pd.DataFrame({f"f{i}": rng.normal(0, 1, 2000) for i in range(4)})
    current = pd.DataFrame(
        {f"f{i}": rng.normal(3.0 if i < drifting else 0.0, 1, 2000) for i in range(4)}
    )

    doc = drift_report(reference, current, drift_share=share)

    assert doc["drifted_features"] == [f"f{i}" for i in range(drifting)]
    assert doc["dataset_drift"] is expected


# The document ------------------------------------------------------------------------------


def test_the_document_has_the_documented_shape_and_is_strict_json() -> None:
    rng = np.random.default_rng(14)
    reference = pd.DataFrame(
        {"age": rng.normal(40, 10, 300), "plan": rng.choice(["a", "b"], 300), "y": [0, 1] * 150}
    )
    current = pd.DataFrame(
        {"age": rng.normal(45, 10, 200), "plan": rng.choice(["a", "c"], 200), "y": [1] * 200}
    )

    doc = drift_report(reference, current, None, target="y")

    assert set(doc) == {"rows", "features", "drifted_features", "dataset_drift"}
    assert doc["rows"] == {"reference": 300, "current": 200}
    assert list(doc["features"]) == ["age", "plan"]
    for f in doc["features"].values():
        assert set(f) == FEATURE_KEYS
    assert doc["features"]["age"]["chi2"] is None
    assert set(doc["features"]["age"]["ks"]) == {"statistic", "pvalue"}
    assert doc["features"]["plan"]["ks"] is None
    assert doc["features"]["plan"]["wasserstein"] is None
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


def test_features_default_to_the_shared_columns_and_never_the_target() -> None:
    reference = pd.DataFrame({"a": [1.0, 2.0], "b": [1.0, 2.0], "y": [0, 1], "only_ref": [1, 2]})
    current = pd.DataFrame({"b": [1.0, 2.0], "a": [1.0, 2.0], "y": [0, 1], "only_cur": [1, 2]})

    assert list(drift_report(reference, current, target="y")["features"]) == ["a", "b"]
    assert list(drift_report(reference, current, ["b", "y"], target="y")["features"]) == ["b"]


def test_a_named_feature_a_sample_lacks_is_refused_by_name() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})

    with pytest.raises(ValueError, match="current data has no column"):
        drift_report(frame, frame.rename(columns={"a": "b"}), ["a"])
