"""The reference profile: what the training set of a version looked like, feature by feature.

The trainer writes it as an artifact of the run; the monitor bins live traffic on the same
edges and categories, so a window is a fixed number of counters however much traffic flows.
A numeric feature also keeps a bounded sample of its reference values (every value up to
`REFERENCE_SAMPLE` of them, else that many evenly spaced quantiles), which the monitor's
Kolmogorov-Smirnov and Wasserstein figures compare a window's own sample against; a profile
written before the sample existed has none, and those figures are then null.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

OTHER = "__other__"
MAX_CATEGORIES = 50
REFERENCE_SAMPLE = 2_000  # reference values kept per numeric feature


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


def is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series)) and not pd.api.types.is_bool_dtype(series)


def build_profile(
    model: str, frame: pd.DataFrame, features: list[str], *, bins: int = 10
) -> ReferenceProfile:
    profiles = []
    for name in features:
        col = frame[name]
        missing = float(col.isna().mean()) if len(col) else 0.0
        if is_numeric(col):
            values = col.dropna().to_numpy(dtype=float)
            quantiles = (
                np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]) if len(values) else []
            )
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
        profiles.append(fp.model_copy(update={"proportions": props}))
    return ReferenceProfile(model=model, rows=len(frame), features=profiles)


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
