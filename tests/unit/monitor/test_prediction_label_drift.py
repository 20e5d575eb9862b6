"""Prediction and label drift: the champion's predictions in the input window, labels in a
window of their own, against the reference's predictions and labels; reported, not triggers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop.monitor.domain import reservoir
from driftloop.monitor.domain.drift import (
    Window,
    add_batch,
    add_labels,
    compact,
    compaction_due,
    drift_report,
    label_report,
)
from driftloop.shared.profile import ReferenceProfile, build_profile
from driftloop.shared.spec import DriftPolicy

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = DriftPolicy()


@pytest.fixture
def classifier() -> ReferenceProfile:
    """A churn classifier's reference: 80 % predicted 0, labels 70 % 0."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {"tenure": rng.gamma(2.0, 12.0, 2000), "churned": rng.choice([0, 1], 2000, p=[0.7, 0.3])}
    )
    predicted = rng.choice([0, 1], 2000, p=[0.8, 0.2])
    return build_profile("churn", frame, ["tenure"], predictions=predicted, target="churned")


@pytest.fixture
def regressor() -> ReferenceProfile:
    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"x": rng.normal(size=2000), "price": rng.normal(100, 10, 2000)})
    return build_profile(
        "houses",
        frame,
        ["x"],
        predictions=rng.normal(100, 10, 2000),
        target="price",
        task="regression",
    )


def _tenures(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    return [{"tenure": float(t)} for t in rng.gamma(2.0, 12.0, n)]


def test_predicted_classes_in_the_reference_mix_do_not_drift(
    classifier: ReferenceProfile,
) -> None:
    rng = np.random.default_rng(1)
    predictions = rng.choice([0, 1], 1000, p=[0.8, 0.2]).tolist()

    window = add_batch(Window(), classifier, _tenures(rng, 1000), T0, predictions=predictions)
    report = drift_report(classifier, window, POLICY)

    assert report.prediction is not None
    assert (report.prediction.feature, report.prediction.kind) == ("prediction", "categorical")
    assert not report.prediction.drifted
    assert report.prediction.chi2_pvalue is not None
    assert report.prediction.chi2_pvalue > 0.01


def test_a_shifted_mix_of_predicted_classes_drifts_but_is_no_feature(
    classifier: ReferenceProfile,
) -> None:
    rng = np.random.default_rng(2)
    predictions = rng.choice([0, 1], 1000, p=[0.3, 0.7]).tolist()

    window = add_batch(Window(), classifier, _tenures(rng, 1000), T0, predictions=predictions)
    report = drift_report(classifier, window, POLICY)

    assert report.prediction is not None
    assert report.prediction.drifted
    assert report.prediction.psi >= POLICY.psi_retrain
    assert report.prediction.chi2_pvalue is not None
    assert report.prediction.chi2_pvalue < 1e-6
    assert report.prediction.jensen_shannon is not None
    assert report.prediction.jensen_shannon > 0.2
    # the trigger still reads the inputs only, and they did not move
    assert [f.feature for f in report.features] == ["tenure"]
    assert report.drifted == []
    assert report.past_retrain() == []


def test_a_regressors_shifted_predictions_get_the_numeric_figures(
    regressor: ReferenceProfile,
) -> None:
    rng = np.random.default_rng(3)
    inputs = [{"x": float(x)} for x in rng.normal(size=1000)]
    same = add_batch(
        Window(), regressor, inputs, T0, predictions=rng.normal(100, 10, 1000).tolist()
    )
    moved = add_batch(
        Window(), regressor, inputs, T0, predictions=rng.normal(115, 10, 1000).tolist()
    )

    calm = drift_report(regressor, same, POLICY).prediction
    shifted = drift_report(regressor, moved, POLICY).prediction

    assert calm is not None
    assert shifted is not None
    assert not calm.drifted
    assert shifted.drifted
    assert calm.ks_pvalue is not None
    assert calm.ks_pvalue > 0.01
    assert shifted.ks_pvalue is not None
    assert shifted.ks_pvalue < 1e-6
    assert shifted.wasserstein == pytest.approx(1.5, abs=0.2)  # 15 in sds of 10


def test_predictions_fill_the_window_batch_by_batch_and_survive_its_stored_row(
    classifier: ReferenceProfile,
) -> None:
    rng = np.random.default_rng(4)
    window = Window()
    for _ in range(4):
        stored = window.model_dump(mode="json")
        window = add_batch(
            Window.model_validate(stored), classifier, _tenures(rng, 50), T0, predictions=[1] * 50
        )

    assert window.rows == 200
    assert window.prediction is not None
    assert window.prediction.counts == {"prediction": [0, 200, 0]}  # "0", "1", OTHER
    assert "prediction" not in window.counts  # a feature of that name could not clash


def test_a_batch_without_matching_predictions_leaves_the_prediction_window_alone(
    classifier: ReferenceProfile,
) -> None:
    rng = np.random.default_rng(5)

    window = add_batch(Window(), classifier, _tenures(rng, 10), T0, predictions=[0, 1])

    assert window.rows == 10
    assert window.prediction is None


def test_the_prediction_reservoir_stays_bounded(regressor: ReferenceProfile) -> None:
    rng = np.random.default_rng(8)
    window = Window()
    for _ in range(10):
        inputs = [{"x": 0.0}] * 100
        window = add_batch(
            window,
            regressor,
            inputs,
            T0,
            predictions=rng.normal(100, 10, 100).tolist(),
            capacity=50,
        )
        if compaction_due(window, capacity=50):
            window = compact(window, capacity=50)

    assert window.prediction is not None
    kept = reservoir.sample(window.prediction.samples["prediction"])
    assert kept.size == 50
    assert window.prediction.replaced["prediction"] <= 50


def test_a_profile_without_predictions_reports_none(classifier: ReferenceProfile) -> None:
    old = ReferenceProfile.model_validate(
        classifier.model_dump(mode="json", exclude={"prediction", "label"})
    )
    rng = np.random.default_rng(9)

    window = add_batch(Window(), old, _tenures(rng, 100), T0, predictions=[1] * 100)

    assert window.prediction is None
    assert drift_report(old, window, POLICY).prediction is None
    assert add_labels(Window(), old, [1, 0], T0) == Window()
    assert label_report(old, Window(), POLICY) is None


# labels -------------------------------------------------------------------------------------


def test_labels_in_the_reference_mix_do_not_drift_and_shifted_ones_do(
    classifier: ReferenceProfile,
) -> None:
    rng = np.random.default_rng(10)
    calm = Window()
    moved = Window()
    for _ in range(10):  # labels come in their own, smaller batches
        calm = add_labels(calm, classifier, rng.choice([0, 1], 100, p=[0.7, 0.3]).tolist(), T0)
        moved = add_labels(moved, classifier, rng.choice([0, 1], 100, p=[0.3, 0.7]).tolist(), T0)

    same = label_report(classifier, calm, POLICY)
    shifted = label_report(classifier, moved, POLICY)

    assert calm.rows == moved.rows == 1000
    assert same is not None
    assert shifted is not None
    assert same.feature == "churned"
    assert not same.drifted
    assert shifted.drifted
    assert shifted.chi2_pvalue is not None
    assert shifted.chi2_pvalue < 1e-6


def test_a_regressors_labels_get_a_reservoir_and_the_numeric_figures(
    regressor: ReferenceProfile,
) -> None:
    rng = np.random.default_rng(11)

    window = add_labels(Window(), regressor, rng.normal(80, 10, 500).tolist(), T0)
    figures = label_report(regressor, window, POLICY)

    assert figures is not None
    assert figures.drifted
    assert figures.ks_statistic is not None
    assert figures.ks_statistic > 0.5
    assert window.seen == {"price": 500}
