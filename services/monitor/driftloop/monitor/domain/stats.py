"""Drift statistics of a current sample against a reference sample, feature by feature: pure.

What each figure means (every one is computed on the non-missing values of both samples):

- `psi`: population stability index over the reference's quantile bins (10 by default, the
  inner cut points deduplicated exactly as the reference profile does), each share floored
  at `PSI_EPSILON` and renormalised (see `psi`); categorical: over the union of
  the categories seen in either sample, so an unseen category weighs in heavily.
- `ks`: two-sample Kolmogorov-Smirnov statistic and two-sided p-value (numeric only). The
  statistic is computed once from a merge of the sorted samples; the p-value is scipy's
  `ks_2samp` with method "auto": exact for samples of at most 10,000 rows, otherwise
  `kstwo.sf(D, round(n*m/(n+m)))` (its slow tail summed as one vector: see `ks_pvalue`).
- `chi2`: Pearson chi-square test of homogeneity of the 2 x K table of reference vs current
  counts over the union of categories (categorical only), K - 1 degrees of freedom, without
  Yates' continuity correction (so 2 categories are treated like any other K); a single
  category has nothing to test: statistic 0, p-value 1.
- `jensen_shannon`: Jensen-Shannon distance, base 2 (in [0, 1]), over the same bins or
  categories as `psi`, unsmoothed (it is finite with empty bins).
- `wasserstein`: the 1-Wasserstein (earth mover's) distance divided by the standard
  deviation of the reference (ddof=0), so 0.1 means "moved a tenth of a standard deviation"
  on every scale (the normalisation of Evidently's `wasserstein_distance_norm`). A constant
  reference has no spread: the pooled standard deviation of both samples is used instead,
  and two equal constants are at distance 0 (numeric only).
- `missing`: entries of the current sample with no usable value: None, NaN, NA, and, for a
  numeric feature, +/-inf and values that are not numbers. A data-quality figure: it never
  fails a report, and it does not by itself mark a feature drifted.

A feature with no usable value in one of the samples has every statistic null and is not
drifted. P-values are combined across features with the Benjamini-Hochberg procedure
(false discovery rate `alpha`); a feature is drifted when its adjusted p-value is below
`alpha` or its PSI is at least `psi_threshold`. The dataset has drifted when the share of
drifted features is at least `drift_share` (0.5, as Evidently's DataDriftPreset). The
document reports raw p-values; `benjamini_hochberg` gives the adjusted ones. With samples of a
million rows a shift too small to matter still has a tiny p-value: PSI, Jensen-Shannon and
Wasserstein say how large it is.

Inputs are pandas frames (the columns' dtypes say numeric or categorical, as in the profile);
nothing here reads or writes anything. The monitor's live windows (`drift.drift_report`) compute
the same figures with these functions, from bin counts and bounded samples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats
from scipy.special import betaln, logsumexp, rel_entr

from driftloop.shared.profile import is_numeric

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_BINS = 10
PSI_THRESHOLD = 0.2
ALPHA = 0.05
DRIFT_SHARE = 0.5
EXACT_KS_MAX_ROWS = 10_000  # scipy's ks_2samp "auto": exact p-value up to this sample size
PSI_EPSILON = 1e-4  # floor of a bin's share, so an empty bin adds a large but finite term


@dataclass(frozen=True)
class FeatureStats:
    """One feature's figures, before the correction across features decides `drifted`."""

    kind: Literal["numeric", "categorical"]
    missing: int
    psi: float | None = None
    ks: tuple[float, float] | None = None  # statistic, p-value
    chi2: tuple[float, float] | None = None  # statistic, p-value
    jensen_shannon: float | None = None
    wasserstein: float | None = None

    @property
    def pvalue(self) -> float | None:
        test = self.ks or self.chi2
        return None if test is None else test[1]


# Samples -----------------------------------------------------------------------------------


def numeric_sample(column: pd.Series) -> tuple[FloatArray, int]:
    """The finite numbers of `column`, and how many entries were missing (None, NaN, NA,
    +/-inf, or not a number)."""
    if is_numeric(column):
        values = column.to_numpy(dtype=float, na_value=np.nan)
    else:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    usable = np.isfinite(values)
    return values[usable], int(values.size - np.count_nonzero(usable))


def category_counts(column: pd.Series) -> tuple[pd.Series, int]:
    """Count per category (as text, sorted), and how many entries were missing."""
    counts = column.value_counts(dropna=True)
    counts = counts[counts > 0]  # a pandas Categorical lists its unused categories too
    counts.index = counts.index.map(str)
    counts = counts.groupby(level=0, sort=True).sum()  # 1 and "1" are the same category
    return counts.astype(np.int64), int(column.isna().sum())


# Statistics on arrays ----------------------------------------------------------------------


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of `current` vs `reference` (both shares per bin).

    sum((c - r) * ln(c / r)), with every share floored at `epsilon` (then renormalised);
    0 for identical distributions, symmetric, non-negative.
    """
    r = np.clip(np.asarray(reference, dtype=float), epsilon, None)
    c = np.clip(np.asarray(current, dtype=float), epsilon, None)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(reference: FloatArray, bins: int = DEFAULT_BINS) -> FloatArray:
    """Inner cut points at the reference's quantiles, duplicates dropped (as the profile)."""
    if reference.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_counts_sorted(sorted_values: FloatArray, edges: FloatArray) -> IntArray:
    """Counts per bin of ascending `sorted_values`: bin i holds edges[i-1] <= v < edges[i]."""
    below = np.searchsorted(sorted_values, edges, side="left")
    return np.diff(np.concatenate(([0], below, [sorted_values.size]))).astype(np.int64)


def jensen_shannon(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """Jensen-Shannon distance in base 2 of two count or share vectors, in [0, 1]."""
    left = np.asarray(p, dtype=float)
    right = np.asarray(q, dtype=float)
    left, right = left / left.sum(), right / right.sum()
    middle = (left + right) / 2.0
    divergence = (np.sum(rel_entr(left, middle)) + np.sum(rel_entr(right, middle))) / math.log(2.0)
    return float(np.sqrt(max(divergence / 2.0, 0.0)))


def chi_square(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[float, float]:
    """Pearson chi-square statistic and p-value of the 2 x K table of counts per category
    (no continuity correction); categories absent from both samples are dropped."""
    table = np.vstack([np.asarray(reference, dtype=float), np.asarray(current, dtype=float)])
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or rows.min() == 0:
        return 0.0, 1.0
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, table.shape[1] - 1))


def ks_and_wasserstein(reference: FloatArray, current: FloatArray) -> tuple[float, float]:
    """Kolmogorov-Smirnov statistic and raw 1-Wasserstein distance of two ascending samples.

    Both are functionals of |F_ref - F_cur| on the merged sample: KS its maximum, Wasserstein
    its integral. The merge of two sorted runs is a linear pass for a stable sort, and the
    empirical CDFs are running counts, so this is cheaper than one searchsorted per sample.
    """
    merged = np.concatenate((reference, current))
    order = np.argsort(merged, kind="stable")
    values = merged[order]
    from_reference = np.cumsum(order < reference.size)
    cdf_gap = np.abs(
        from_reference / reference.size
        - (np.arange(1, values.size + 1) - from_reference) / current.size
    )
    # The CDFs are only right after the last of a run of ties.
    last_of_ties = np.ones(values.size, dtype=bool)
    np.not_equal(values[1:], values[:-1], out=last_of_ties[:-1])
    statistic = float(cdf_gap[last_of_ties].max())
    distance = float(np.sum(cdf_gap[:-1] * np.diff(values)))
    return statistic, distance


def ks_pvalue(
    statistic: float, reference: FloatArray, current: FloatArray, *, reference_rows: int = 0
) -> float:
    """Two-sided p-value of the KS statistic, as scipy's ks_2samp (method "auto") gives it.

    Past 10,000 rows that is `kstwo.sf(D, round(n*m/(n+m)))`, whose tail (n*D^2 in
    [2.2, 370)) is twice Smirnov's one-sided probability; scipy sums that one term at a time,
    about half a second at a million rows, so it is summed here as one vector instead.
    `reference_rows` larger than `reference.size` says `reference` summarises that many rows
    (the profile's quantile sample): then n is `reference_rows` and the p-value is the
    `kstwo` one whatever the sizes (the exact one needs the rows themselves).
    """
    n, m = max(reference.size, reference_rows), current.size
    if n == reference.size and max(n, m) <= EXACT_KS_MAX_ROWS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # exact may fall back to asymptotic
            return float(stats.ks_2samp(reference, current).pvalue)
    big, small = float(max(n, m)), float(min(n, m))
    en = float(np.round(big * small / (big + small)))
    if en > EXACT_KS_MAX_ROWS and 0 < statistic < 0.5 and 2.2 <= en * statistic**2 < 370:
        return float(np.clip(2.0 * smirnov_tail(int(en), statistic), 0.0, 1.0))
    return float(np.clip(stats.kstwo.sf(statistic, en), 0.0, 1.0))


def smirnov_tail(n: int, d: float) -> float:
    """P(D+_n >= d), the exact one-sided Kolmogorov-Smirnov tail (Birnbaum & Tingey 1951):
    d * sum_j C(n, j) (1 - d - j/n)^(n-j) (d + j/n)^(j-1), j = 0 .. floor(n(1 - d)), summed
    in log space (what scipy.special.smirnov computes, to about 1e-9 relative)."""
    j = np.arange(0, math.floor(n * (1 - d)) + 1, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_terms = (
            -math.log(n + 1)
            - betaln(n - j + 1, j + 1)  # log C(n, j), accurate for large n
            + (n - j) * np.log1p(-(d + j / n))
            + (j - 1) * np.log(d + j / n)
        )
    log_terms = np.where(np.isnan(log_terms), -np.inf, log_terms)
    return float(d * math.exp(float(logsumexp(log_terms))))


def wasserstein_scale(reference: FloatArray, current: FloatArray) -> float:
    """What a Wasserstein distance is divided by: the reference's standard deviation, or the
    pooled one when the reference is constant (1 when both are constant and equal)."""
    with np.errstate(over="ignore", invalid="ignore"):
        for sample in (reference, np.concatenate((reference, current))):
            spread = float(np.std(sample))
            if spread > 0 and math.isfinite(spread):
                return spread
    return 1.0


def benjamini_hochberg(pvalues: Sequence[float] | FloatArray) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the input's order."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.clip(adjusted, 0.0, 1.0)
    return out


# Per feature -------------------------------------------------------------------------------


def numeric_stats(
    reference: FloatArray, current: FloatArray, *, missing: int = 0, bins: int = DEFAULT_BINS
) -> FeatureStats:
    """Every numeric figure of two samples of finite numbers (any order)."""
    if reference.size == 0 or current.size == 0:
        return FeatureStats(kind="numeric", missing=missing)
    ref = np.sort(reference)
    cur = np.sort(current)
    edges = quantile_edges(ref, bins)
    ref_counts = bin_counts_sorted(ref, edges)
    cur_counts = bin_counts_sorted(cur, edges)
    with np.errstate(over="ignore", invalid="ignore"):  # values near 1e308: null, not a crash
        statistic, distance = ks_and_wasserstein(ref, cur)
        normalised = distance / wasserstein_scale(ref, cur)
    return FeatureStats(
        kind="numeric",
        missing=missing,
        psi=psi(ref_counts / ref.size, cur_counts / cur.size),
        ks=(statistic, ks_pvalue(statistic, ref, cur)),
        jensen_shannon=jensen_shannon(ref_counts, cur_counts),
        wasserstein=finite(normalised),
    )


def categorical_stats(
    reference: pd.Series, current: pd.Series, *, missing: int = 0
) -> FeatureStats:
    """Every categorical figure of two count-per-category series (index: category)."""
    if int(reference.sum()) == 0 or int(current.sum()) == 0:
        return FeatureStats(kind="categorical", missing=missing)
    categories = reference.index.union(current.index)
    ref = reference.reindex(categories, fill_value=0).to_numpy(dtype=float)
    cur = current.reindex(categories, fill_value=0).to_numpy(dtype=float)
    return FeatureStats(
        kind="categorical",
        missing=missing,
        psi=psi(ref / ref.sum(), cur / cur.sum()),
        chi2=chi_square(ref, cur),
        jensen_shannon=jensen_shannon(ref, cur),
    )


def feature_stats(
    reference: pd.Series, current: pd.Series, *, bins: int = DEFAULT_BINS
) -> FeatureStats:
    """The figures of one column: numeric when the reference column holds numbers."""
    if is_numeric(reference):
        ref_values, _ = numeric_sample(reference)
        cur_values, missing = numeric_sample(current)
        return numeric_stats(ref_values, cur_values, missing=missing, bins=bins)
    ref_counts, _ = category_counts(reference)
    cur_counts, missing = category_counts(current)
    return categorical_stats(ref_counts, cur_counts, missing=missing)


# The report --------------------------------------------------------------------------------


def select_features(
    reference: pd.DataFrame, current: pd.DataFrame, features: list[str] | None, target: str | None
) -> list[str]:
    """The named features (every column both frames share when None), minus the target;
    raises ValueError naming any column a frame lacks."""
    if features is None:
        shared = set(current.columns)
        return [c for c in reference.columns if c in shared and c != target]
    for label, frame in (("reference", reference), ("current", current)):
        absent = [f for f in features if f not in frame.columns]
        if absent:
            raise ValueError(f"the {label} data has no column(s) {', '.join(map(str, absent))}")
    return [f for f in dict.fromkeys(features) if f != target]


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str] | None = None,
    *,
    target: str | None = None,
    psi_threshold: float = PSI_THRESHOLD,
    alpha: float = ALPHA,
    drift_share: float = DRIFT_SHARE,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The drift document of `current` vs `reference` (see the module docstring):
    {"rows": {"reference", "current"}, "features": {name: {...}}, "drifted_features": [...],
    "dataset_drift": bool}. Raises ValueError for a column a frame lacks or a bad threshold."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if not 0 < drift_share <= 1:
        raise ValueError(f"drift_share must be in (0, 1], not {drift_share}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    names = select_features(reference, current, features, target)
    figures = {name: feature_stats(reference[name], current[name], bins=bins) for name in names}
    raw = {name: f.pvalue for name, f in figures.items() if f.pvalue is not None}
    adjusted = dict(zip(raw, benjamini_hochberg(list(raw.values())), strict=True))
    document: dict[str, Any] = {}
    for name, f in figures.items():
        drifted = bool(
            (name in adjusted and adjusted[name] < alpha)
            or (f.psi is not None and f.psi >= psi_threshold)
        )
        document[str(name)] = _feature_document(f, drifted)
    drifted_features = [name for name, doc in document.items() if doc["drifted"]]
    return {
        "rows": {"reference": len(reference), "current": len(current)},
        "features": document,
        "drifted_features": drifted_features,
        "dataset_drift": bool(names) and len(drifted_features) / len(names) >= drift_share,
    }


def _feature_document(f: FeatureStats, drifted: bool) -> dict[str, Any]:
    def test(pair: tuple[float, float] | None) -> dict[str, float | None] | None:
        return None if pair is None else {"statistic": finite(pair[0]), "pvalue": pair[1]}

    return {
        "kind": f.kind,
        "psi": finite(f.psi),
        "ks": test(f.ks),
        "chi2": test(f.chi2),
        "jensen_shannon": finite(f.jensen_shannon),
        "wasserstein": finite(f.wasserstein),
        "missing": f.missing,
        "drifted": drifted,
    }


def finite(value: float | None) -> float | None:
    """A JSON-safe float: None for a figure that could not be computed or overflowed."""
    return None if value is None or not math.isfinite(value) else float(value)
