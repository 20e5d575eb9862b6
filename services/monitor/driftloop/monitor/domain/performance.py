"""The live metric of a version on its labelled traffic. Pure."""

from __future__ import annotations

from typing import Any

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
