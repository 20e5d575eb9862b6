"""The probe rows a compiled tree ensemble must pass, and the rule it is held to."""

from __future__ import annotations

import numpy as np

from driftloop.gateway.domain.probes import disagreement, feature_values, probe_matrix


def test_a_features_values_sit_on_and_either_side_of_each_threshold() -> None:
    t = 0.1  # not a float32: its float32 neighbours differ from its float64 ones
    values = feature_values(np.array([t, t, 2.5, np.nan]))

    for v in (t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), 2.5):
        assert v in values
    t32 = np.float32(t)
    for v in (t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))):
        assert float(v) in values
    assert values.min() < t
    assert values.max() > 2.5
    assert np.all(np.isfinite(values))
    assert np.all(np.diff(values) > 0)


def test_a_feature_never_split_on_still_gets_values() -> None:
    assert list(feature_values(np.empty(0))) == [-1.0, 0.0, 1.0]


def test_every_value_appears_and_missing_ones_only_when_asked() -> None:
    per_feature = [np.array([0.5, 1.5]), np.empty(0), np.linspace(0, 1, 40)]
    rng = np.random.default_rng(0)

    full = probe_matrix(per_feature, rows=300, rng=rng, missing=False)
    assert full.shape == (300, 3)
    assert not np.isnan(full).any()
    for j, thresholds in enumerate(per_feature):
        assert set(feature_values(thresholds)) == set(full[:, j])

    holed = probe_matrix(per_feature, rows=2000, rng=rng, missing=True)
    share = np.isnan(holed).mean()
    assert 0.02 < share < 0.08


def test_the_same_answers_pass_and_any_difference_is_named() -> None:
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    labels = ["yes", "no"]

    assert disagreement(labels, proba, labels, proba + 4e-7) is None
    assert "1 of 2 probe rows predicted differently" in str(
        disagreement(labels, proba, ["yes", "yes"], proba)
    )
    assert "probabilities up to 0.01" in str(disagreement(labels, proba, labels, proba + 0.01))
    nan = proba.copy()
    nan[0, 0] = np.nan
    assert "probabilities" in str(disagreement(labels, proba, labels, nan))
    assert "shape" in str(disagreement(labels, proba, labels, proba[:, :1]))
