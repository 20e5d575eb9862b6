"""Metrics of weighted holdouts, vectorised over resamples.

A bootstrap resample of n rows is a row of counts (how often each holdout row was drawn), so
a block of B resamples is a B x n matrix and each metric a few matrix products over it, not B
calls of a metric function. With all counts 1 the figures equal scikit-learn's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
RESAMPLABLE = frozenset({"accuracy", "f1", "precision", "recall", "roc_auc", "rmse", "mae", "r2"})


@dataclass(frozen=True)
class Outputs:
    """One model's answers on the holdout: predicted labels (or values) and, for a classifier
    with `predict_proba`, one probability column per class of the evaluation's `classes`."""

    predictions: npt.NDArray[Any]
    proba: FloatArray | None = None

    def take(self, mask: BoolArray) -> Outputs:
        return Outputs(self.predictions[mask], None if self.proba is None else self.proba[mask])


def weighted_metric(
    metric: str,
    y_true: npt.NDArray[Any],
    outputs: Outputs,
    classes: Sequence[Any] | None,
    counts: FloatArray,
) -> FloatArray:
    """`metric` of each row of `counts` (B x n weights of the n holdout rows): shape (B,).

    Classification: binary when `classes` has two (the last is positive), else macro averages
    over `classes`; ROC AUC needs probabilities. NaN where a resample leaves it undefined
    (ROC AUC with one class). Regression: rmse, mae, r2 (r2 of a constant target: 1 if
    predicted exactly, else 0, as scikit-learn)."""
    total = counts.sum(axis=1)
    if metric in ("rmse", "mae", "r2"):
        return _regression(metric, y_true.astype(float), outputs, counts, total)
    labels = list(classes) if classes is not None else sorted(set(y_true.tolist()))
    if metric == "accuracy":
        result: FloatArray = counts @ (outputs.predictions == y_true).astype(float) / total
        return result
    if metric in ("precision", "recall", "f1"):
        return _precision_recall_f1(metric, y_true, outputs.predictions, labels, counts)
    if metric == "roc_auc":
        if outputs.proba is None:
            return np.full(len(counts), np.nan)
        return _roc_auc(y_true, outputs.proba, labels, counts)
    raise ValueError(f"{metric} cannot be resampled (one of {', '.join(sorted(RESAMPLABLE))})")


def _regression(
    metric: str, y: FloatArray, outputs: Outputs, counts: FloatArray, total: FloatArray
) -> FloatArray:
    error = outputs.predictions.astype(float) - y
    sse: FloatArray = counts @ (error**2)
    if metric == "rmse":
        return np.sqrt(sse / total)
    if metric == "mae":
        mae: FloatArray = counts @ np.abs(error) / total
        return mae
    sum_y = counts @ y
    sst = counts @ (y**2) - sum_y**2 / total
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - sse / sst
    constant = sst <= 1e-12 * np.maximum(1.0, counts @ (y**2))
    return np.where(constant, np.where(sse <= 1e-12, 1.0, 0.0), r2)


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(num, dtype=float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _precision_recall_f1(
    metric: str,
    y_true: npt.NDArray[Any],
    predictions: npt.NDArray[Any],
    labels: list[Any],
    counts: FloatArray,
) -> FloatArray:
    chosen = [labels[-1]] if len(labels) == 2 else labels  # binary: the positive class alone
    wanted = np.empty(len(chosen), dtype=object)
    wanted[:] = chosen
    actual = (y_true[:, None] == wanted[None, :]).astype(float)
    predicted = (predictions[:, None] == wanted[None, :]).astype(float)
    tp = counts @ (actual * predicted)
    n_pred = counts @ predicted
    n_true = counts @ actual
    if metric == "precision":
        per_class = _ratio(tp, n_pred)
    elif metric == "recall":
        per_class = _ratio(tp, n_true)
    else:
        per_class = _ratio(2 * tp, n_pred + n_true)
    mean: FloatArray = per_class.mean(axis=1)
    return mean


def _roc_auc(
    y_true: npt.NDArray[Any], proba: FloatArray, labels: list[Any], counts: FloatArray
) -> FloatArray:
    if len(labels) == 2:
        return _binary_auc(y_true == labels[-1], proba[:, -1], counts)
    per_class = [
        _binary_auc(y_true == label, proba[:, k], counts) for k, label in enumerate(labels)
    ]
    present = [auc for auc, label in zip(per_class, labels, strict=True) if (y_true == label).any()]
    if not present:
        return np.full(len(counts), np.nan)
    mean: FloatArray = np.mean(present, axis=0)  # NaN when a resample misses a class
    return mean


def _binary_auc(positive: BoolArray, scores: FloatArray, counts: FloatArray) -> FloatArray:
    """Weighted Mann-Whitney AUC: P(score of a positive > score of a negative), ties 1/2."""
    order = np.argsort(scores, kind="mergesort")
    ranked = scores[order]
    pos = positive[order].astype(float)
    weights = counts[:, order]
    neg_weights = weights * (1.0 - pos)
    below = np.cumsum(neg_weights, axis=1)  # negative weight at or below each position
    starts_group = np.r_[True, ranked[1:] != ranked[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(ranked)] - 1
    before = np.where(starts > 0, below[:, np.maximum(starts - 1, 0)], 0.0)
    tied = below[:, ends] - before
    credit = before[:, group] + 0.5 * tied[:, group]
    pos_weights = weights * pos
    denominator = pos_weights.sum(axis=1) * neg_weights.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc: FloatArray = (pos_weights * credit).sum(axis=1) / denominator
    return np.where(denominator > 0, auc, np.nan)
