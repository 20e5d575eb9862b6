"""The reference profile: what the training set of a version looked like, feature by feature.

The trainer writes it as an artifact of the run; the monitor bins live traffic on the same
edges and categories, so a window is a fixed number of counters however much traffic flows.
A numeric feature also keeps a bounded sample of its reference values (every value up to
`REFERENCE_SAMPLE` of them, else that many evenly spaced quantiles), which the monitor's
Kolmogorov-Smirnov and Wasserstein figures compare a window's own sample against; a profile
written before the sample existed has none, and those figures are then null.

Beside the features, a profile describes the model's predictions on the same rows
(`prediction`: the predicted class as a categorical, a regression's prediction as numeric) and
the target column (`label`), so the monitor can report prediction and label drift; a profile
written before they existed has neither (None).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

OTHER = "__other__"
MAX_CATEGORIES = 50
REFERENCE_SAMPLE = 2_000  # reference values kept per numeric feature
PREDICTION = "prediction"  # the name of the predictions' profile (apart from the features)


class FeatureProfile(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    kind: Literal["numeric", "categorical"]
    edges: list[float] = []  # numeric: inner cut points (quantiles of the reference)
    categories: list[str] = []  # categorical: known values; anything else counts as OTHER
    proportions: list[float]  # reference share per bin (numeric) or category (+ OTHER)
    missing_rate: float = 0.0
    # numeric: the finite reference values, ascending, or REFERENCE_SAMPLE quantiles of them
    sample: list[float] | None = None
    sample_rows: int | None = None  # how many finite reference values `sample` stands for

    @property
    def bins(self) -> int:
        return len(self.proportions)


class ReferenceProfile(BaseModel):
    model_config = ConfigDict(frozen=True)
    model: str
    rows: int
    features: list[FeatureProfile]
    prediction: FeatureProfile | None = None  # the model's predictions on the reference rows
    label: FeatureProfile | None = None  # the target column of the reference rows


def is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series)) and not pd.api.types.is_bool_dtype(series)


def build_profile(
    model: str,
    frame: pd.DataFrame,
    features: list[str],
    *,
    bins: int = 10,
    predictions: Any = None,
    target: str | None = None,
    task: Literal["classification", "regression"] = "classification",
) -> ReferenceProfile:
    """The profile of `frame`'s `features`; with `predictions` (one per row of `frame`) and
    `target`, also of the model's predictions and of the labels: categorical for a
    classification `task`, numeric for a regression."""
    kind: Literal["numeric", "categorical"] = "numeric" if task == "regression" else "categorical"
    prediction = None
    if predictions is not None:
        listed = np.asarray(predictions).tolist()
        if len(listed) != len(frame):
            raise ValueError(f"{len(listed)} predictions for {len(frame)} rows")
        values = pd.Series(listed, index=frame.index)
        prediction = profile_column(PREDICTION, values, bins=bins, kind=kind)
    label = None
    if target is not None:
        label = profile_column(target, frame[target], bins=bins, kind=kind)
    return ReferenceProfile(
        model=model,
        rows=len(frame),
        features=[profile_column(name, frame[name], bins=bins) for name in features],
        prediction=prediction,
        label=label,
    )


def profile_column(
    name: str,
    col: pd.Series,
    *,
    bins: int = 10,
    kind: Literal["numeric", "categorical"] | None = None,
) -> FeatureProfile:
    """One column's profile; its kind from its dtype unless given."""
    missing = float(col.isna().mean()) if len(col) else 0.0
    if kind == "numeric" or (kind is None and is_numeric(col)):
        values = pd.to_numeric(col, errors="coerce").dropna().to_numpy(dtype=float)
        quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]) if len(values) else []
        edges = sorted({float(q) for q in quantiles})
        usable = np.sort(values[np.isfinite(values)])
        fp = FeatureProfile(
            name=name,
            kind="numeric",
            edges=edges,
            proportions=[0.0] * (len(edges) + 1),
            missing_rate=missing,
            sample=reference_sample(usable).tolist(),
            sample_rows=int(usable.size),
        )
    else:
        counts = col.dropna().astype(str).value_counts()
        cats = sorted(str(c) for c in counts.index[:MAX_CATEGORIES])
        fp = FeatureProfile(
            name=name,
            kind="categorical",
            categories=cats,
            proportions=[0.0] * (len(cats) + 1),
            missing_rate=missing,
        )
    counts_arr, _ = bin_counts(fp, col.tolist())
    total = counts_arr.sum()
    props = (counts_arr / total).tolist() if total else fp.proportions
    return fp.model_copy(update={"proportions": props})


def reference_sample(ascending: np.ndarray, size: int = REFERENCE_SAMPLE) -> np.ndarray:
    """Every value of an ascending array of `size` values or fewer; otherwise the `size`
    order statistics at the mid-quantiles (i + 1/2) / size: real values (ties stay ties), and
    an empirical distribution within 1/size of the full one (Kolmogorov distance)."""
    if ascending.size <= size:
        return ascending
    ranks = ((np.arange(size) + 0.5) * (ascending.size / size)).astype(np.int64)
    return ascending[ranks]


def numeric_values(values: list[Any]) -> tuple[np.ndarray, int]:
    """The numbers among `values` (as floats, in order; +/-inf kept), and how many were
    missing: None, NaN, booleans, and what float() refuses."""
    nums = []
    missing = 0
    for v in values:
        if isinstance(v, bool) or v is None:
            missing += 1
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            missing += 1
            continue
        if np.isnan(f):
            missing += 1
        else:
            nums.append(f)
    return np.asarray(nums, dtype=float), missing


def bin_counts(fp: FeatureProfile, values: list[Any]) -> tuple[np.ndarray, int]:
    """Counts of `values` per bin of `fp`, and how many were missing (None, NaN, bad type)."""
    counts = np.zeros(fp.bins, dtype=np.int64)
    missing = 0
    if fp.kind == "numeric":
        nums, missing = numeric_values(values)
        if nums.size:
            idx = np.searchsorted(np.asarray(fp.edges), nums, side="right")
            counts += np.bincount(idx, minlength=fp.bins)
    else:
        index = {c: i for i, c in enumerate(fp.categories)}
        other = len(fp.categories)
        for v in values:
            if v is None or (pd.api.types.is_scalar(v) and bool(pd.isna(v))):
                missing += 1
                continue
            counts[index.get(str(v), other)] += 1
    return counts, missing
