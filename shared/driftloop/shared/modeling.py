"""Model I/O conventions every service shares: input types at the edges, holdout metrics."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    f1_score,
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


def score(task: str, y_true: Any, pipeline: Any, x: pd.DataFrame) -> dict[str, float]:
    """The holdout metrics of a fitted pipeline (classification or regression)."""
    pred = pipeline.predict(x)
    if task == "regression":
        return {
            "rmse": float(np.sqrt(mean_squared_error(y_true, pred))),
            "mae": float(mean_absolute_error(y_true, pred)),
            "r2": float(r2_score(y_true, pred)),
        }
    classes = list(pipeline.classes_)
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    pos = classes[-1] if binary else 1
    metrics = {
        "accuracy": float(accuracy_score(y_true, pred)),
        "f1": float(f1_score(y_true, pred, average=average, pos_label=pos, zero_division=0)),
        "precision": float(
            precision_score(y_true, pred, average=average, pos_label=pos, zero_division=0)
        ),
        "recall": float(
            recall_score(y_true, pred, average=average, pos_label=pos, zero_division=0)
        ),
    }
    if hasattr(pipeline, "predict_proba") and len(set(y_true)) > 1:
        proba = pipeline.predict_proba(x)
        with contextlib.suppress(ValueError):
            metrics["roc_auc"] = float(
                roc_auc_score(y_true, proba[:, 1])
                if binary
                else roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
            )
    return metrics
