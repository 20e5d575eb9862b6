"""Drift of a live window against the reference profile: PSI, bounded windows, the report."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy

from driftloop.monitor.domain.drift import PSI_EPSILON, Window, add_batch, drift_report, psi
from driftloop.shared.profile import FeatureProfile, ReferenceProfile, build_profile
from driftloop.shared.spec import DriftPolicy

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def textbook_psi(reference: list[float], current: list[float], epsilon: float) -> float:
    """sum over bins of (c - r) * ln(c / r), written out term by term, after flooring each
    share at `epsilon` and renormalising (as psi's docstring documents)."""
    r = [max(x, epsilon) for x in reference]
    c = [max(x, epsilon) for x in current]
    r = [x / sum(r) for x in r]
    c = [x / sum(c) for x in c]
    return sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))


def shares_on_reference_deciles(reference: np.ndarray, current: np.ndarray) -> tuple[Any, Any]:
    edges = np.quantile(reference, np.linspace(0, 1, 11))
    edges[0], edges[-1] = -np.inf, np.inf
    ref_counts, _ = np.histogram(reference, edges)
    cur_counts, _ = np.histogram(current, edges)
    return ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()


@pytest.fixture
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "tenure": rng.gamma(2.0, 12.0, 2000),
            "plan": rng.choice(["basic", "pro", "max"], 2000, p=[0.6, 0.3, 0.1]),
        }
    )
    return build_profile("churn", frame, ["tenure", "plan"])


def _instances(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    return [
        {"tenure": float(t), "plan": str(p)}
        for t, p in zip(
            rng.gamma(2.0, 12.0, n), rng.choice(["basic", "pro", "max"], n), strict=True
        )
    ]


def _categorical(proportions: list[float]) -> ReferenceProfile:
    fp = FeatureProfile(
        name="plan",
        kind="categorical",
        categories=[f"c{i}" for i in range(len(proportions) - 1)],
        proportions=proportions,
    )
    return ReferenceProfile(model="churn", rows=1000, features=[fp])


# psi ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3], ids=["seed0", "seed1", "seed2", "seed3"])
def test_psi_matches_the_textbook_formula_on_random_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference, current = shares_on_reference_deciles(
        rng.normal(0.0, 1.0, 5000), rng.normal(0.3, 1.2, 3000)
    )

    value = psi(reference, current)

    expected = textbook_psi(reference.tolist(), current.tolist(), PSI_EPSILON)
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_psi_is_the_symmetrised_kl_divergence_scipy_computes() -> None:
    rng = np.random.default_rng(42)
    reference, current = shares_on_reference_deciles(
        rng.lognormal(0.0, 0.5, 4000), rng.lognormal(0.2, 0.6, 4000)
    )

    value = psi(reference, current)

    # With no empty bins flooring does nothing, and PSI = KL(c || r) + KL(r || c).
    assert reference.min() > PSI_EPSILON
    assert current.min() > PSI_EPSILON
    assert value == pytest.approx(
        entropy(current, reference) + entropy(reference, current), rel=1e-9
    )


def test_psi_of_a_worked_example() -> None:
    value = psi(np.array([0.5, 0.5]), np.array([0.9, 0.1]))

    # (0.9 - 0.5) ln(0.9/0.5) + (0.1 - 0.5) ln(0.1/0.5) = 0.4 ln 9
    assert value == pytest.approx(0.4 * math.log(9), rel=1e-12)


def test_psi_floors_empty_bins_at_epsilon_so_the_value_is_finite() -> None:
    reference = [1 / 3, 1 / 3, 1 / 3, 0.0]
    current = [0.5, 0.5, 0.0, 0.0]

    value = psi(np.array(reference), np.array(current))

    assert math.isfinite(value)
    assert value == pytest.approx(textbook_psi(reference, current, PSI_EPSILON), rel=1e-9)


@pytest.mark.parametrize(
    "shares",
    [
        [0.1] * 10,
        [0.7, 0.2, 0.1],
        [0.5, 0.5, 0.0],
        [1.0],
        np.random.default_rng(5).dirichlet(np.ones(12)).tolist(),
    ],
    ids=["uniform", "skewed", "empty-bin", "one-bin", "random"],
)
def test_psi_of_identical_distributions_is_zero(shares: list[float]) -> None:
    value = psi(np.array(shares), np.array(shares))

    assert value == pytest.approx(0.0, abs=1e-12)


def test_psi_is_symmetric_and_non_negative_on_random_pairs() -> None:
    rng = np.random.default_rng(7)
    pairs = [(rng.dirichlet(np.ones(8)), rng.dirichlet(np.ones(8) * 0.5)) for _ in range(200)]

    forward = [psi(a, b) for a, b in pairs]
    backward = [psi(b, a) for a, b in pairs]

    assert forward == pytest.approx(backward, rel=1e-12, abs=1e-15)
    assert min(forward) >= 0.0


def test_a_larger_shift_gives_a_larger_psi() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(0.0, 1.0, 20_000)
    noise = rng.normal(0.0, 1.0, 20_000)

    values = [
        psi(*shares_on_reference_deciles(reference, noise + shift))
        for shift in (0.0, 0.25, 0.5, 1.0, 2.0)
    ]

    assert values == sorted(values)
    assert len(set(values)) == len(values)
    assert values[0] < 0.01
    assert values[-1] > 1.0


# windows -----------------------------------------------------------------------------------


def test_window_size_does_not_grow_with_rows(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(0)

    small = add_batch(Window(), profile, _instances(rng, 10), T0)
    large = Window()
    for i in range(10):
        large = add_batch(large, profile, _instances(rng, 1000), T0 + timedelta(seconds=i))

    assert large.rows == 10_000
    assert small.rows == 10
    assert large.counts.keys() == small.counts.keys() == {"tenure", "plan"}
    for fp in profile.features:
        assert len(large.counts[fp.name]) == len(small.counts[fp.name]) == fp.bins
        assert sum(large.counts[fp.name]) == 10_000
    assert large.missing == small.missing == {"tenure": 0, "plan": 0}


def test_window_spans_from_its_first_batch_to_its_last(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(0)

    window = add_batch(Window(), profile, _instances(rng, 5), T0)
    window = add_batch(window, profile, _instances(rng, 5), T0 + timedelta(minutes=3))

    assert window.start == T0
    assert window.end == T0 + timedelta(minutes=3)
    assert window.rows == 10


def test_missing_none_and_wrongly_typed_values_are_counted_as_missing(
    profile: ReferenceProfile,
) -> None:
    instances: list[dict[str, Any]] = [
        {"plan": "basic"},  # tenure absent
        {"tenure": None, "plan": None},
        {"tenure": "abc", "plan": "pro"},
        {"tenure": True, "plan": "max"},
        {"tenure": [1, 2], "plan": float("nan")},
        {"tenure": 12.0},  # plan absent
    ]

    window = add_batch(Window(), profile, instances, T0)

    assert window.rows == 6
    assert window.missing == {"tenure": 5, "plan": 3}
    assert sum(window.counts["tenure"]) == 1
    assert sum(window.counts["plan"]) == 3


# report ------------------------------------------------------------------------------------


def test_report_of_a_window_like_the_reference_flags_nothing() -> None:
    profile = _categorical([0.5, 0.5, 0.0])
    window = Window(rows=100, start=T0, end=T0, counts={"plan": [50, 50, 0]})

    report = drift_report(profile, window, DriftPolicy(psi_warn=0.2, psi_retrain=0.25))

    assert report.drifted == []
    assert report.features[0].psi == pytest.approx(0.0, abs=1e-9)
    assert report.past_retrain() == []


@pytest.mark.parametrize(
    ("warn_offset", "drifted"),
    [(-0.01, True), (0.0, True), (0.01, False)],
    ids=["warn-below-psi", "warn-equal-to-psi", "warn-above-psi"],
)
def test_report_flags_a_feature_drifted_at_psi_at_or_past_psi_warn(
    warn_offset: float, drifted: bool
) -> None:
    profile = _categorical([0.5, 0.5, 0.0])
    window = Window(rows=100, start=T0, end=T0 + timedelta(minutes=1), counts={"plan": [90, 10, 0]})
    value = psi(np.array([0.5, 0.5, 0.0]), np.array([0.9, 0.1, 0.0]))
    policy = DriftPolicy(psi_warn=value + warn_offset, psi_retrain=10.0)

    report = drift_report(profile, window, policy)

    [feature] = report.features
    assert feature.drifted is drifted
    assert report.drifted == (["plan"] if drifted else [])
    assert feature.psi == pytest.approx(value, abs=1e-6)
    assert feature.warn == policy.psi_warn
    assert feature.retrain == 10.0
    assert (report.rows, report.start, report.end) == (100, T0, T0 + timedelta(minutes=1))


def test_report_carries_missing_counts_and_retrain_crossings() -> None:
    profile = _categorical([0.5, 0.5, 0.0])
    window = Window(rows=110, counts={"plan": [10, 90, 0]}, missing={"plan": 10})

    report = drift_report(profile, window, DriftPolicy(psi_warn=0.2, psi_retrain=0.25))

    assert report.features[0].missing == 10
    assert report.drifted == ["plan"]
    assert report.past_retrain() == ["plan"]
    assert report.counts == {"plan": [10, 90, 0]}  # what the console draws per bin


def test_report_of_an_empty_window_has_zero_psi() -> None:
    profile = _categorical([0.5, 0.5, 0.0])

    report = drift_report(profile, Window(), DriftPolicy())

    assert report.features[0].psi == 0.0
    assert report.drifted == []
