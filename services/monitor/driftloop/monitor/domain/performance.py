"""The live metric of a version on its labelled traffic, and when it dropped. Pure."""

from __future__ import annotations

import math
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
        return prediction_metrics("regression", y_true, y_pred)[metric]
    return prediction_metrics("classification", [str(v) for v in y_true], [str(v) for v in y_pred])[
        metric
    ]


# The change point is kept when the drop it marks is significant at this level; otherwise
# the drop began before the rows judged and the onset is the earliest of them.
CHANGE_ALPHA = 0.05


def row_scores(metric: str, y_true: list[Any], y_pred: list[Any]) -> list[float]:
    """Each row's part in `metric`, higher better: right (1) or wrong (0) for a classifier
    whatever its metric; minus the squared error (rmse, r2) or the absolute error (mae)."""
    if metric in REGRESSION:
        errors = [float(p) - float(t) for t, p in zip(y_true, y_pred, strict=True)]
        if metric == "mae":
            return [-abs(e) for e in errors]
        return [-(e * e) for e in errors]
    return [1.0 if str(t) == str(p) else 0.0 for t, p in zip(y_true, y_pred, strict=True)]


def change_point(scores: list[float], *, alpha: float = CHANGE_ALPHA) -> int:
    """Where the scores (in time order) dropped: the index of the first row after the drop,
    0 when no drop within them is significant.

    The CUSUM estimate of a change in mean: k maximises S_k = sum_{i<k} (x_i - mean), the
    point with the most better-than-average past behind it. Kept when S_k / (sd * sqrt(n))
    exceeds b with exp(-2 b^2) = alpha, the one-sided tail of a Brownian bridge's maximum
    (under no change, the scaled CUSUM tends to one)."""
    n = len(scores)
    if n < 2:
        return 0
    x = np.asarray(scores, dtype=float)
    sd = float(x.std())
    if sd == 0.0:
        return 0
    cusum = np.concatenate([[0.0], np.cumsum(x - x.mean())[:-1]])
    k = int(np.argmax(cusum))
    critical = math.sqrt(-math.log(alpha) / 2.0)
    return k if cusum[k] / (sd * math.sqrt(n)) > critical else 0


def onset_of_drop(
    metric: str, rows: list[tuple[datetime, Any, Any]], *, alpha: float = CHANGE_ALPHA
) -> datetime:
    """When the drop began among labelled rows (predicted at, label, prediction): the
    prediction time of the first row after the change point in `metric`'s row scores, taken
    in prediction order; the earliest row's when the drop began before them all."""
    ordered = sorted(rows, key=lambda r: r[0])
    scores = row_scores(metric, [r[1] for r in ordered], [r[2] for r in ordered])
    return ordered[change_point(scores, alpha=alpha)][0]
