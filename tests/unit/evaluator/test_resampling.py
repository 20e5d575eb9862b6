"""Metrics of weighted holdouts against scikit-learn: all weights 1 is the holdout itself,
integer weights are rows repeated."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from driftloop.evaluator.domain.resampling import Outputs, weighted_metric
from driftloop.shared.modeling import confusion, holdout_metrics

SKLEARN_BINARY = {
    "accuracy": lambda y, p, s: accuracy_score(y, p),
    "precision": lambda y, p, s: precision_score(y, p, pos_label="yes", zero_division=0),
    "recall": lambda y, p, s: recall_score(y, p, pos_label="yes", zero_division=0),
    "f1": lambda y, p, s: f1_score(y, p, pos_label="yes", zero_division=0),
    "roc_auc": lambda y, p, s: roc_auc_score(y == "yes", s[:, 1]),
}
SKLEARN_MULTI = {
    "accuracy": lambda y, p, s: accuracy_score(y, p),
    "precision": lambda y, p, s: precision_score(y, p, average="macro", zero_division=0),
    "recall": lambda y, p, s: recall_score(y, p, average="macro", zero_division=0),
    "f1": lambda y, p, s: f1_score(y, p, average="macro", zero_division=0),
    "roc_auc": lambda y, p, s: roc_auc_score(y, s, multi_class="ovr", labels=[0, 1, 2]),
}
SKLEARN_REGRESSION = {
    "rmse": lambda y, p: np.sqrt(mean_squared_error(y, p)),
    "mae": mean_absolute_error,
    "r2": r2_score,
}


def binary(n: int, seed: int) -> tuple[np.ndarray, Outputs]:
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.4, "yes", "no").astype(object)
    score = np.clip((y == "yes") * 0.3 + rng.random(n) * 0.7, 0, 1).round(2)  # ties on purpose
    predictions = np.where(score > 0.5, "yes", "no").astype(object)
    return y, Outputs(predictions, np.c_[1 - score, score])


def multiclass(n: int, seed: int) -> tuple[np.ndarray, Outputs]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, Outputs(proba.argmax(axis=1), proba)


def regression(n: int, seed: int) -> tuple[np.ndarray, Outputs]:
    rng = np.random.default_rng(seed)
    y = rng.normal(10, 3, n)
    return y, Outputs(y + rng.normal(0.5, 2, n))


@pytest.mark.parametrize("metric", sorted(SKLEARN_BINARY))
def test_binary_metrics_with_unit_weights_equal_sklearn(metric: str) -> None:
    y, out = binary(500, seed=1)

    [ours] = weighted_metric(metric, y, out, ["no", "yes"], np.ones((1, len(y))))

    assert ours == pytest.approx(SKLEARN_BINARY[metric](y, out.predictions, out.proba), abs=1e-12)


@pytest.mark.parametrize("metric", sorted(SKLEARN_MULTI))
def test_multiclass_macro_metrics_with_unit_weights_equal_sklearn(metric: str) -> None:
    y, out = multiclass(600, seed=2)

    [ours] = weighted_metric(metric, y, out, [0, 1, 2], np.ones((1, len(y))))

    assert ours == pytest.approx(SKLEARN_MULTI[metric](y, out.predictions, out.proba), abs=1e-12)


@pytest.mark.parametrize("metric", sorted(SKLEARN_REGRESSION))
def test_regression_metrics_with_unit_weights_equal_sklearn(metric: str) -> None:
    y, out = regression(400, seed=3)

    [ours] = weighted_metric(metric, y, out, None, np.ones((1, len(y))))

    assert ours == pytest.approx(SKLEARN_REGRESSION[metric](y, out.predictions), rel=1e-12)


@pytest.mark.parametrize(
    ("make", "metric", "classes"),
    [
        *((binary, m, ["no", "yes"]) for m in sorted(SKLEARN_BINARY)),
        *((multiclass, m, [0, 1, 2]) for m in sorted(SKLEARN_MULTI)),
        *((regression, m, None) for m in sorted(SKLEARN_REGRESSION)),
    ],
)
def test_integer_weights_equal_sklearn_on_the_repeated_rows(
    make: Any, metric: str, classes: list[Any] | None
) -> None:
    y, out = make(300, 4)
    counts = np.random.default_rng(5).multinomial(300, np.full(300, 1 / 300), size=3)
    reference = (
        SKLEARN_REGRESSION
        if classes is None
        else (SKLEARN_BINARY if classes == ["no", "yes"] else SKLEARN_MULTI)
    )

    ours = weighted_metric(metric, y, out, classes, counts.astype(float))

    for row, figure in zip(counts, ours, strict=True):
        rows = np.repeat(np.arange(len(y)), row)
        picked = Outputs(out.predictions[rows], None if out.proba is None else out.proba[rows])
        args = (y[rows], picked.predictions) + (() if classes is None else (picked.proba,))
        assert figure == pytest.approx(reference[metric](*args), abs=1e-12)


def test_auc_of_a_resample_with_one_class_is_nan() -> None:
    y = np.array(["no", "yes", "no"], dtype=object)
    out = Outputs(y.copy(), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))

    [auc] = weighted_metric("roc_auc", y, out, ["no", "yes"], np.array([[2.0, 0.0, 1.0]]))

    assert np.isnan(auc)


def test_r2_of_a_constant_target_follows_sklearn() -> None:
    y = np.full(5, 2.0)

    exact, off = (
        weighted_metric("r2", y, Outputs(p), None, np.ones((1, 5)))[0] for p in (y.copy(), y + 1)
    )

    assert (exact, off) == (r2_score(y, y), r2_score(y, y + 1))


def test_holdout_metrics_add_auc_and_log_loss_to_sklearn_figures() -> None:
    y, out = multiclass(300, seed=6)

    metrics = holdout_metrics("classification", y, out.predictions, out.proba, [0, 1, 2])

    assert metrics["log_loss"] == pytest.approx(log_loss(y, out.proba, labels=[0, 1, 2]))
    assert metrics["roc_auc"] == pytest.approx(
        roc_auc_score(y, out.proba, multi_class="ovr", labels=[0, 1, 2])
    )
    assert metrics["f1"] == pytest.approx(f1_score(y, out.predictions, average="macro"))


def test_confusion_rows_are_true_labels_columns_predicted() -> None:
    y = np.array([0, 0, 1, 1, 1])
    predicted = np.array([0, 1, 1, 1, 0])

    table = confusion(y, predicted, [np.int64(0), np.int64(1)])

    assert table == {"labels": [0, 1], "matrix": [[1, 1], [1, 2]]}
