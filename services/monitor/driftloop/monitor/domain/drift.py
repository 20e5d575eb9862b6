"""Drift of a window of live inputs against the reference profile: pure numpy, no I/O.

A window is a fixed set of counters per feature (bins of the reference) plus, per numeric
feature, a uniform reservoir sample of at most `reservoir.CAPACITY` of its values, so its
memory does not grow with traffic. From them a closed window gets the offline report's figures
(`stats`): PSI and Jensen-Shannon from the counts, chi-square from the counts against the
reference's, Kolmogorov-Smirnov and Wasserstein from the window's sample against the
profile's. `drifted` (and so the retrain decision) is PSI at or past `psi_warn`, as before.

The champion's predictions join the same window in a window of their own (`Window.prediction`,
binned on the profile's `prediction`), and labels, which come late and in other batches, fill
a separate window (`add_labels`, on the profile's `label`); both get the same figures
(`DriftReport.prediction`, `label_report`) but are reported only, never a retrain trigger.
What each figure means, and how close the sampled ones come: docs/drift.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from driftloop.monitor.domain import reservoir
from driftloop.monitor.domain.stats import (
    PSI_EPSILON,
    FloatArray,
    benjamini_hochberg,
    chi_square,
    finite,
    jensen_shannon,
    ks_and_wasserstein,
    ks_pvalue,
    psi,
    wasserstein_scale,
)
from driftloop.shared.events import FeatureDrift
from driftloop.shared.profile import (
    FeatureProfile,
    ReferenceProfile,
    bin_counts,
    numeric_values,
)
from driftloop.shared.spec import DriftPolicy, MonitorSpec

__all__ = [
    "PSI_EPSILON",
    "DriftReport",
    "Window",
    "add_batch",
    "add_labels",
    "compact",
    "compaction_due",
    "drift_report",
    "label_report",
    "pending_window",
    "psi",
    "window_due",
]


class Window(BaseModel):
    """Counts of live inputs per reference bin since `start`; per numeric feature a reservoir
    sample of its finite values (`reservoir` segments), how many values it was drawn from
    (`seen`) and how many replacements its segments hold (`replaced`, see `compact`).

    The store keeps `samples` apart, appending the segments each batch adds: a window loaded
    without them gets only the new ones from `add_batch`, and is given them all to be judged
    or compacted."""

    model_config = ConfigDict(frozen=True)
    rows: int = 0
    start: datetime | None = None
    end: datetime | None = None
    counts: dict[str, list[int]] = {}
    missing: dict[str, int] = {}
    seen: dict[str, int] = {}
    samples: dict[str, list[str]] = {}
    replaced: dict[str, int] = {}
    # the champion's predictions in the same rows, keyed by the profile's prediction name
    prediction: Window | None = None


def add_batch(
    window: Window,
    profile: ReferenceProfile,
    instances: list[dict[str, Any]],
    at: datetime,
    *,
    predictions: list[Any] | None = None,
    capacity: int = reservoir.CAPACITY,
    seed: int = reservoir.SEED,
    first_at: datetime | None = None,
) -> Window:
    """The window with `instances` added, and their `predictions` (one per instance) when
    the profile has a prediction. The reservoirs' draws come from a generator seeded with
    (`seed`, rows before this batch): the same batches give the same samples. Several records
    added at once: `first_at` the first's time (an empty window starts there), `at` the last's
    (where it ends)."""
    if window.start is None and first_at is not None:
        window = window.model_copy(update={"start": first_at})
    added = _add(
        window,
        [(fp, [inst.get(fp.name) for inst in instances]) for fp in profile.features],
        len(instances),
        at,
        capacity=capacity,
        rng_seed=(seed, window.rows),
    )
    if profile.prediction is None or predictions is None or len(predictions) != len(instances):
        return added
    prediction = _add(
        window.prediction or Window(start=first_at),
        [(profile.prediction, predictions)],
        len(predictions),
        at,
        capacity=capacity,
        rng_seed=(seed, window.rows, 1),
    )
    return added.model_copy(update={"prediction": prediction})


def add_labels(
    window: Window,
    profile: ReferenceProfile,
    labels: list[Any],
    at: datetime,
    *,
    capacity: int = reservoir.CAPACITY,
    seed: int = reservoir.SEED,
) -> Window:
    """The label window (binned on the profile's `label`) with `labels` added; unchanged
    when the profile has no label."""
    if profile.label is None:
        return window
    return _add(
        window,
        [(profile.label, labels)],
        len(labels),
        at,
        capacity=capacity,
        rng_seed=(seed, window.rows, 2),
    )


def _add(
    window: Window,
    columns: list[tuple[FeatureProfile, list[Any]]],
    rows: int,
    at: datetime,
    *,
    capacity: int,
    rng_seed: tuple[int, ...],
) -> Window:
    counts = dict(window.counts)
    missing = dict(window.missing)
    seen = dict(window.seen)
    samples = dict(window.samples)
    replaced = dict(window.replaced)
    rng: np.random.Generator | None = None
    for fp, column in columns:
        binned, absent, values = _bin_counts(fp, column)
        prior = np.asarray(counts.get(fp.name, [0] * fp.bins), dtype=np.int64)
        counts[fp.name] = (prior + binned).tolist()
        missing[fp.name] = missing.get(fp.name, 0) + absent
        if values is None or values.size == 0 or not fp.sample:
            continue  # nothing to sample, or no reference sample to compare it with
        before = seen.get(fp.name, 0)
        if rng is None and before + values.size > capacity:  # only a full reservoir draws
            rng = np.random.default_rng(rng_seed)
        added = reservoir.extend(before, values, capacity=capacity, rng=rng)
        samples[fp.name] = [*samples.get(fp.name, []), *added]
        replaced[fp.name] = replaced.get(fp.name, 0) + reservoir.replacements(added)
        seen[fp.name] = before + int(values.size)
    return Window(
        rows=window.rows + rows,
        start=window.start or at,
        end=at,
        counts=counts,
        missing=missing,
        seen=seen,
        samples=samples,
        replaced=replaced,
        prediction=window.prediction,
    )


def compaction_due(window: Window, *, capacity: int = reservoir.CAPACITY) -> bool:
    """Whether a feature's (or the prediction's) stored replacements outnumber the reservoir
    (then `compact`)."""
    if window.prediction is not None and compaction_due(window.prediction, capacity=capacity):
        return True
    return any(n > capacity for n in window.replaced.values())


def compact(window: Window, *, capacity: int = reservoir.CAPACITY) -> Window:
    """The window with each feature past `compaction_due` folded to one segment; `window`
    must hold all its segments. Keeps what is stored under about 3 x capacity values."""
    samples = dict(window.samples)
    replaced = dict(window.replaced)
    for name, count in window.replaced.items():
        if count > capacity:
            samples[name] = reservoir.fold(samples.get(name, []))
            replaced[name] = 0
    prediction = window.prediction
    if prediction is not None:
        prediction = compact(prediction, capacity=capacity)
    return window.model_copy(
        update={"samples": samples, "replaced": replaced, "prediction": prediction}
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


def pending_window(window: Window, rows: int, first_at: datetime) -> Window:
    """How `window` stands for `window_due` once `rows` rows, the first at `first_at`, joined
    it (only its size and start: nothing is added)."""
    return Window(rows=window.rows + rows, start=window.start or first_at)


def _bin_counts(fp: FeatureProfile, values: list[Any]) -> tuple[np.ndarray, int, FloatArray | None]:
    """`bin_counts`, vectorised for what a gateway sends almost always: a numeric feature of
    ints and floats only, a categorical one of strings only (anything else takes the general
    path, with the same result); and for a numeric feature its finite values, in order."""
    if fp.kind == "numeric":
        if all(type(v) is float or type(v) is int for v in values):
            nums = np.asarray(values, dtype=float)
            absent = np.isnan(nums)
            idx = np.searchsorted(np.asarray(fp.edges), nums[~absent], side="right")
            binned = np.bincount(idx, minlength=fp.bins).astype(np.int64)
            return binned, int(absent.sum()), nums[np.isfinite(nums)]
        counts, missing = bin_counts(fp, values)
        nums, _ = numeric_values(values)
        return counts, missing, nums[np.isfinite(nums)]
    if all(type(v) is str or type(v) is int for v in values):  # predicted classes: often ints
        counts = np.zeros(fp.bins, dtype=np.int64)
        other = len(fp.categories)
        index = {c: i for i, c in enumerate(fp.categories)}
        for value, n in Counter(values).items():
            counts[index.get(str(value), other)] += n
        return counts, 0, None
    counts, missing = bin_counts(fp, values)
    return counts, missing, None


@dataclass(frozen=True)
class DriftReport:
    rows: int
    start: datetime | None
    end: datetime | None
    features: list[FeatureDrift] = field(default_factory=list)
    prediction: FeatureDrift | None = None  # reported, not part of `drifted`
    # the window's rows per reference bin of each feature (what the console draws)
    counts: dict[str, list[int]] = field(default_factory=dict)

    @property
    def drifted(self) -> list[str]:
        """Features at or past the warn threshold."""
        return [f.feature for f in self.features if f.drifted]

    def past_retrain(self) -> list[str]:
        return [f.feature for f in self.features if f.psi >= f.retrain]


def drift_report(profile: ReferenceProfile, window: Window, policy: DriftPolicy) -> DriftReport:
    """Every feature's figures for a closed window; p-values adjusted with Benjamini-Hochberg
    across the features that have one. Figures that cannot be computed (an empty window, a
    reference without a sample, a statistic of the other kind) are None."""
    figures = [_figures(profile, fp, window) for fp in profile.features]
    pvalues = [f.get("ks_pvalue", f.get("chi2_pvalue")) for f in figures]
    tested = [(i, float(p)) for i, p in enumerate(pvalues) if p is not None]
    adjusted = benjamini_hochberg([p for _, p in tested])
    for (i, _), p in zip(tested, adjusted, strict=True):
        figures[i]["pvalue_adjusted"] = float(p)
    features = []
    for fp, f in zip(profile.features, figures, strict=True):
        value = f.pop("psi")
        features.append(
            FeatureDrift(
                feature=fp.name,
                kind=fp.kind,
                psi=round(value, 6),
                warn=policy.psi_warn,
                retrain=policy.psi_retrain,
                drifted=value >= policy.psi_warn,
                missing=window.missing.get(fp.name, 0),
                **f,
            )
        )
    prediction = None
    if profile.prediction is not None:
        prediction = _column_drift(profile, profile.prediction, window.prediction, policy)
    counts = {fp.name: list(window.counts.get(fp.name, [])) for fp in profile.features}
    return DriftReport(window.rows, window.start, window.end, features, prediction, counts)


def label_report(
    profile: ReferenceProfile, window: Window, policy: DriftPolicy
) -> FeatureDrift | None:
    """The label window's figures against the profile's labels (None without them)."""
    if profile.label is None:
        return None
    return _column_drift(profile, profile.label, window, policy)


def _column_drift(
    profile: ReferenceProfile, fp: FeatureProfile, window: Window | None, policy: DriftPolicy
) -> FeatureDrift:
    """One column's figures, on its own (its p-value is its own: one test, nothing to adjust)."""
    window = window or Window()
    f = _figures(profile, fp, window)
    value = f.pop("psi")
    pvalue = f.get("ks_pvalue", f.get("chi2_pvalue"))
    return FeatureDrift(
        feature=fp.name,
        kind=fp.kind,
        psi=round(value, 6),
        warn=policy.psi_warn,
        retrain=policy.psi_retrain,
        drifted=value >= policy.psi_warn,
        missing=window.missing.get(fp.name, 0),
        pvalue_adjusted=pvalue,
        **f,
    )


def _figures(profile: ReferenceProfile, fp: FeatureProfile, window: Window) -> dict[str, Any]:
    """One feature's figures (psi 0.0 for an empty window, as before; the rest None)."""
    counts = np.asarray(window.counts.get(fp.name, [0] * fp.bins), dtype=float)
    shares = np.asarray(fp.proportions, dtype=float)
    out: dict[str, Any] = {"psi": 0.0}
    if counts.sum() == 0:
        return out
    out["psi"] = psi(shares, counts / counts.sum())
    if shares.sum() <= 0:
        return out  # a reference with no value of this feature: nothing to compare against
    out["jensen_shannon"] = finite(jensen_shannon(shares, counts))
    if fp.kind == "categorical":
        # the reference's counts: its rows with a value, spread as its proportions
        present = round(profile.rows * (1.0 - fp.missing_rate))
        statistic, pvalue = chi_square(shares * present, counts)
        out["chi2_statistic"], out["chi2_pvalue"] = finite(statistic), pvalue
        return out
    if not fp.sample or fp.name not in window.samples:
        return out  # a profile from before the sample, or no finite value in the window
    ref = np.sort(np.asarray(fp.sample, dtype=float))
    cur = np.sort(reservoir.sample(window.samples[fp.name]))
    if cur.size == 0:
        return out
    with np.errstate(over="ignore", invalid="ignore"):  # values near 1e308: null, not a crash
        statistic, distance = ks_and_wasserstein(ref, cur)
        normalised = distance / wasserstein_scale(ref, cur)
    out["ks_statistic"] = finite(statistic)
    out["ks_pvalue"] = ks_pvalue(statistic, ref, cur, reference_rows=fp.sample_rows or 0)
    out["wasserstein"] = finite(normalised)
    return out
