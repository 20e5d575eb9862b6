"""Model I/O conventions every service shares: input types at the edges, holdout metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from driftloop.shared.profile import is_numeric

HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "roc_auc": True,
    "r2": True,
    "rmse": False,
    "mae": False,
}


def prepare(
    frame: pd.DataFrame, features: list[str], numeric: set[str] | None = None
) -> pd.DataFrame:
    """Numbers as floats, everything else as strings (JSON inputs and Parquet rows alike).

    `numeric` names the numeric features (from the model's signature); by default the
    frame's dtypes decide.
    """
    out = frame[features].copy()
    for f in features:
        is_num = f in numeric if numeric is not None else is_numeric(out[f])
        if not is_num:
            out[f] = out[f].astype("string").astype(object).where(out[f].notna(), None)
        else:
            out[f] = out[f].astype(float)
    return out


def prediction_metrics(
    task: str,
    y_true: Any,
    y_pred: Any,
    classes: list[Any] | None = None,
    *,
    only: str | None = None,
) -> dict[str, float]:
    """Metrics of predictions against labels: accuracy, f1, precision, recall for a classifier
    (binary: the last of the sorted `classes` is positive; more classes: macro average), rmse,
    mae, r2 for a regressor; `only`: that one alone (the monitor judges one metric every few
    hundred labels, and each of scikit-learn's costs its input checks)."""
    if task == "regression":
        t = np.asarray(y_true, dtype=float)
        p = np.asarray(y_pred, dtype=float)
        regression: dict[str, Callable[[], float]] = {
            "rmse": lambda: float(np.sqrt(mean_squared_error(t, p))),
            "mae": lambda: float(mean_absolute_error(t, p)),
            "r2": lambda: float(r2_score(t, p)),
        }
        return _computed(regression, only)
    classes = classes if classes is not None else sorted(set(y_true) | set(y_pred))
    binary = len(classes) == 2
    kwargs: dict[str, Any] = {"average": "binary" if binary else "macro", "zero_division": 0}
    if binary:
        kwargs["pos_label"] = classes[-1]
    classification: dict[str, Callable[[], float]] = {
        "accuracy": lambda: float(accuracy_score(y_true, y_pred)),
        "f1": lambda: float(f1_score(y_true, y_pred, **kwargs)),
        "precision": lambda: float(precision_score(y_true, y_pred, **kwargs)),
        "recall": lambda: float(recall_score(y_true, y_pred, **kwargs)),
    }
    return _computed(classification, only)


def _computed(metrics: dict[str, Callable[[], float]], only: str | None) -> dict[str, float]:
    if only is not None:
        return {only: metrics[only]()}
    return {name: compute() for name, compute in metrics.items()}


def score(task: str, y_true: Any, pipeline: Any, x: pd.DataFrame) -> dict[str, float]:
    """The holdout metrics of a fitted pipeline (classification or regression), with ROC AUC
    from its probabilities where it has them."""
    pred = pipeline.predict(x)
    if task == "regression":
        return prediction_metrics(task, y_true, pred)
    classes = list(pipeline.classes_)
    metrics = prediction_metrics(task, y_true, pred, classes)
    if hasattr(pipeline, "predict_proba") and len(set(y_true)) > 1:
        proba = pipeline.predict_proba(x)
        with contextlib.suppress(ValueError):
            metrics["roc_auc"] = float(
                roc_auc_score(y_true, proba[:, 1])
                if len(classes) == 2
                else roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
            )
    return metrics


def holdout_metrics(
    task: str,
    y_true: Any,
    y_pred: Any,
    proba: Any = None,
    classes: list[Any] | None = None,
) -> dict[str, float]:
    """Every holdout metric from a model's outputs: `prediction_metrics`, plus for a classifier
    with probabilities (columns in `classes` order) ROC AUC (binary: of the last class;
    more classes: one-vs-rest macro average) and log loss, where the labels define them."""
    if task == "regression":
        return prediction_metrics(task, y_true, y_pred)
    metrics = prediction_metrics(task, y_true, y_pred, classes)
    if proba is None or classes is None:
        return metrics
    scores = np.asarray(proba, dtype=float)
    present = set(np.asarray(y_true).tolist())
    if len(present) > 1:
        with contextlib.suppress(ValueError):
            metrics["roc_auc"] = float(
                roc_auc_score(y_true, scores[:, -1])
                if len(classes) == 2
                else roc_auc_score(y_true, scores, multi_class="ovr", labels=classes)
            )
    if present <= set(classes):
        with contextlib.suppress(ValueError):
            metrics["log_loss"] = float(log_loss(y_true, scores, labels=classes))
    return metrics


def confusion(y_true: Any, y_pred: Any, classes: list[Any]) -> dict[str, Any]:
    """The confusion matrix as JSON: rows are true labels, columns predicted, in `labels` order."""
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    return {"labels": [_plain(c) for c in classes], "matrix": matrix.tolist()}


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value
