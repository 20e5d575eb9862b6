"""Drift of a window of live inputs against the reference profile: pure numpy, no I/O.

A window is a fixed set of counters per feature (bins of the reference), so its memory does
not grow with traffic.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from driftloop.shared.events import FeatureDrift
from driftloop.shared.profile import FeatureProfile, ReferenceProfile, bin_counts
from driftloop.shared.spec import DriftPolicy, MonitorSpec

PSI_EPSILON = 1e-4  # floor of a bin's share, so an empty bin adds a large but finite term


def psi(reference: np.ndarray, current: np.ndarray, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of `current` vs `reference` (both shares per bin).

    sum((c - r) * ln(c / r)), with every share floored at `epsilon` (then renormalised);
    0 for identical distributions, symmetric, non-negative.
    """
    r = np.clip(np.asarray(reference, dtype=float), epsilon, None)
    c = np.clip(np.asarray(current, dtype=float), epsilon, None)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


class Window(BaseModel):
    """Counts of live inputs per reference bin since `start`."""

    model_config = ConfigDict(frozen=True)
    rows: int = 0
    start: datetime | None = None
    end: datetime | None = None
    counts: dict[str, list[int]] = {}
    missing: dict[str, int] = {}


def add_batch(
    window: Window, profile: ReferenceProfile, instances: list[dict[str, Any]], at: datetime
) -> Window:
    counts = dict(window.counts)
    missing = dict(window.missing)
    for fp in profile.features:
        binned, absent = _bin_counts(fp, [inst.get(fp.name) for inst in instances])
        prior = np.asarray(counts.get(fp.name, [0] * fp.bins), dtype=np.int64)
        counts[fp.name] = (prior + binned).tolist()
        missing[fp.name] = missing.get(fp.name, 0) + absent
    return Window(
        rows=window.rows + len(instances),
        start=window.start or at,
        end=at,
        counts=counts,
        missing=missing,
    )


def window_due(window: Window, spec: MonitorSpec, *, at: datetime) -> bool:
    """Whether the window closes (is judged) at `at`: it has `window` rows, or `window_time`
    has passed since its first row and it has at least `window_min_rows` (a smaller one stays
    open: too few rows to judge)."""
    if window.rows >= spec.window:
        return True
    if spec.window_time is None or window.start is None or window.rows < spec.window_min_rows:
        return False
    return at - window.start >= spec.window_time


def _bin_counts(fp: FeatureProfile, values: list[Any]) -> tuple[np.ndarray, int]:
    """`bin_counts`, vectorised for what a gateway sends almost always: a numeric feature of
    ints and floats only, a categorical one of strings only (anything else takes the general
    path, with the same result)."""
    if fp.kind == "numeric":
        if all(type(v) is float or type(v) is int for v in values):
            nums = np.asarray(values, dtype=float)
            absent = np.isnan(nums)
            idx = np.searchsorted(np.asarray(fp.edges), nums[~absent], side="right")
            return np.bincount(idx, minlength=fp.bins).astype(np.int64), int(absent.sum())
    elif all(type(v) is str for v in values):
        counts = np.zeros(fp.bins, dtype=np.int64)
        other = len(fp.categories)
        index = {c: i for i, c in enumerate(fp.categories)}
        for value, n in Counter(values).items():
            counts[index.get(value, other)] += n
        return counts, 0
    return bin_counts(fp, values)


@dataclass(frozen=True)
class DriftReport:
    rows: int
    start: datetime | None
    end: datetime | None
    features: list[FeatureDrift] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        """Features at or past the warn threshold."""
        return [f.feature for f in self.features if f.drifted]

    def past_retrain(self) -> list[str]:
        return [f.feature for f in self.features if f.psi >= f.retrain]


def drift_report(profile: ReferenceProfile, window: Window, policy: DriftPolicy) -> DriftReport:
    features = []
    for fp in profile.features:
        counts = np.asarray(window.counts.get(fp.name, [0] * fp.bins), dtype=float)
        value = 0.0 if counts.sum() == 0 else psi(np.asarray(fp.proportions), counts / counts.sum())
        features.append(
            FeatureDrift(
                feature=fp.name,
                kind=fp.kind,
                psi=round(value, 6),
                warn=policy.psi_warn,
                retrain=policy.psi_retrain,
                drifted=value >= policy.psi_warn,
                missing=window.missing.get(fp.name, 0),
            )
        )
    return DriftReport(window.rows, window.start, window.end, features)
