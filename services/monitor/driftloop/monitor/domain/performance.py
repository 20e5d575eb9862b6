"""The live metric of a version on its labelled traffic, and when it dropped. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from driftloop.shared.modeling import prediction_metrics

REGRESSION = frozenset({"rmse", "mae", "r2"})


def live_metric(metric: str, y_true: list[Any], y_pred: list[Any]) -> float:
    """`metric` of predictions against labels. Labels arrive as JSON, so a classifier's labels
    and predictions are compared as text (1 and "1" agree); binary F1/precision/recall take
    the larger label as positive."""
    if metric in REGRESSION:
        return prediction_metrics("regression", y_true, y_pred, only=metric)[metric]
    truth, predicted = [str(v) for v in y_true], [str(v) for v in y_pred]
    return prediction_metrics("classification", truth, predicted, only=metric)[metric]


def metric_standard_error(metric: str, y_true: list[Any], y_pred: list[Any]) -> float | None:
    """The standard error of `metric` on these rows, for the deployer's canary check (None
    below two rows). Accuracy: the standard error of the mean of right/wrong (scipy's `sem`);
    mae: of the absolute errors; rmse and r2 by the delta method from the squared errors'
    (SE(mse) / (2 rmse), SE(mse) / var(y)). F1, precision, recall and ROC AUC have no closed
    form from the rows alone: they take accuracy's, an approximation that errs low (so the
    check leans towards judging, as it did before it had any)."""
    n = len(y_true)
    if n < 2:
        return None
    scores = np.asarray(row_scores(metric, y_true, y_pred), dtype=float)
    se = float(np.std(scores, ddof=1) / np.sqrt(n))
    if metric == "rmse":
        rmse = float(np.sqrt(-scores.mean()))
        return se / (2 * rmse) if rmse > 0 else 0.0
    if metric == "r2":
        variance = float(np.var(np.asarray(y_true, dtype=float)))
        return se / variance if variance > 0 else None
    return se


def row_scores(metric: str, y_true: list[Any], y_pred: list[Any]) -> list[float]:
    """Each row's part in `metric`, higher better: right (1) or wrong (0) for a classifier
    whatever its metric; minus the squared error (rmse, r2) or the absolute error (mae)."""
    if metric in REGRESSION:
        errors = [float(p) - float(t) for t, p in zip(y_true, y_pred, strict=True)]
        if metric == "mae":
            return [-abs(e) for e in errors]
        return [-(e * e) for e in errors]
    return [1.0 if str(t) == str(p) else 0.0 for t, p in zip(y_true, y_pred, strict=True)]


# The least peak of the CUSUM, in standard deviations of the scores times sqrt(rows), that
# counts as a drop: low (noise alone peaks above it in most windows), it only keeps a CUSUM
# that never rose from peaking on its last rows.
CUSUM_FLOOR = 0.3


def change_point(scores: list[float]) -> int:
    """Where the scores (in time order) dropped: the index of the first row after the drop,
    0 when they show none (no better-than-average stretch before a worse one).

    The CUSUM estimate of one change in mean: k maximises S_k = sum_{i<k} (x_i - mean), the
    point with the most better-than-average past behind it. It is an estimate, not a test: the
    monitor judges the live metric every `min_labels` labels, so the first window below the
    floor usually holds the drop, and there the estimate is close (on a 0.945 -> 0.917 drop
    half-way through 1,000 rows, off by about 110 rows on average, where a 5 % significance
    gate would fall back to the first row more often than not). If the drop came before
    every row judged, the estimate falls anywhere among them: too late, which costs the
    trainer a wait for labels after it; too early would train and judge on the old regime."""
    n = len(scores)
    if n < 2:
        return 0
    x = np.asarray(scores, dtype=float)
    cusum = np.concatenate([[0.0], np.cumsum(x - x.mean())[:-1]])
    k = int(np.argmax(cusum))
    # a CUSUM that never rose (a rise, or no change) ends near 0 and may peak on its last rows
    # by a hair: such a peak is not a drop
    return k if cusum[k] > CUSUM_FLOOR * float(x.std()) * np.sqrt(n) else 0


def onset_of_drop(metric: str, rows: list[tuple[datetime, Any, Any]]) -> datetime:
    """When the drop began among labelled rows (predicted at, label, prediction): the
    prediction time of the first row after the change point in `metric`'s row scores, taken
    in prediction order; the earliest row's when they show no drop."""
    ordered = sorted(rows, key=lambda r: r[0])
    scores = row_scores(metric, [r[1] for r in ordered], [r[2] for r in ordered])
    return ordered[change_point(scores)][0]


HISTORY_KEPT = 200  # evaluations of the live metric kept per model (the console's chart)


def with_evaluation(
    history: list[dict[str, Any]] | None, evaluation: dict[str, Any], *, kept: int = HISTORY_KEPT
) -> list[dict[str, Any]]:
    """The model's evaluations of its live metric, oldest first, with `evaluation` added and
    only the newest `kept` left."""
    return [*(history or []), evaluation][-kept:]
