"""The live metric of a version on its labelled traffic. Pure."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
)


def live_metric(metric: str, y_true: list[Any], y_pred: list[Any]) -> float:
    """`metric` of predictions against labels (labels and predictions compared as given;
    for binary F1/precision/recall the positive class is the larger label)."""
    if metric in ("rmse", "mae", "r2"):
        t = np.asarray(y_true, dtype=float)
        p = np.asarray(y_pred, dtype=float)
        if metric == "rmse":
            return float(np.sqrt(mean_squared_error(t, p)))
        if metric == "mae":
            return float(mean_absolute_error(t, p))
        return float(r2_score(t, p))
    t_str = [str(v) for v in y_true]
    p_str = [str(v) for v in y_pred]
    if metric == "accuracy":
        return float(accuracy_score(t_str, p_str))
    classes = sorted(set(t_str) | set(p_str))
    binary = len(classes) == 2
    kwargs: dict[str, Any] = {"zero_division": 0}
    if binary:
        kwargs |= {"average": "binary", "pos_label": classes[-1]}
    else:
        kwargs["average"] = "macro"
    scorer = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[metric]
    return float(scorer(t_str, p_str, **kwargs))
