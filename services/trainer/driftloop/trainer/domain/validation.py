"""The validation gate before any training: a poisoning guard that does not mistake drift for
poison.

Pure functions over DataFrames. Each check returns one `CheckResult` (figure, threshold, outcome)
whose detail names the columns and figures behind it. "Recent rows" are the newly labelled rows
of this cycle. A retrain is triggered by change, so the gate never asks the recent rows to look
like the old training set:

- schema and impossible values: columns present, extra columns, each column's kind (numeric or
  categorical) as in the reference (the champion's training set), no infinite numbers;
- representativeness: value ranges, unseen categories and missing-value rates of the recent rows
  are judged against what the gateway actually served over the same period (the trainer's
  samples, labelled or not), never against the old training range: drifted values that were
  served pass, while a labelled subset unlike the served traffic (values in other units, a
  category nobody was served, a column blanked) fails;
- duplicates: a replayed batch;
- labels: label consistency among the recent rows themselves (`labels.check_label_issues`,
  confident learning on out-of-fold predictions, compared with the same measure on the
  reference); the label balance's move from the reference (`label_shift`) is reported, not a
  gate, since a label shift is often exactly the change that triggered the retrain.

The reference- and served-based checks are skipped when there is no reference (bootstrap) or no
served rows. Every threshold is a module constant documented here; docs/decisions.md ("The
poisoning gate: drift is not poison") gives the rule and the measurements behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from driftloop.shared.events import CheckResult

Kind = Literal["numeric", "categorical"]

RANGE_QUANTILE = 0.001
"""The served values' range is [q(0.1%) - k*IQR, q(99.9%) + k*IQR]: robust to a few outliers."""

RANGE_IQR_FACTOR = 1.5
"""k above: how many interquartile ranges past the extreme quantiles a value may go."""

RANGE_MAX_SHARE = 0.02
"""Fail when more than this share of a numeric column's recent values is outside that range
(the recent rows are served rows, so only labels given to a subset unlike the traffic, or
values altered after serving, put many of them outside)."""

UNSEEN_MAX_SHARE = 0.10
"""Fail when more than this share of a categorical column's recent values was never served
(a new category is served before it is labelled; a broken encoding was not)."""

UNSEEN_MAX_CARDINALITY = 0.5
"""Categorical columns whose served values are mostly distinct (distinct/non-missing above
this) are identifier-like; unseen values are expected there and the column is skipped."""

MISSING_MAX_INCREASE = 0.10
"""Fail when a column's missing-value rate in the recent rows exceeds the served rows' by more
than this (absolute, 0.10 = ten percentage points)."""

DUPLICATE_MAX_SHARE = 0.30
"""Fail when the share of recent rows that exactly repeat an earlier recent row (features and
label) exceeds the reference's own duplicate share by more than this (a replayed batch)."""


def _round(x: float) -> float:
    return round(float(x), 4)


def _reported(name: str, figure: float, detail: str) -> CheckResult:
    """A figure the gate shows but does not judge: no threshold, always passed."""
    return CheckResult(name=name, figure=_round(figure), threshold=None, passed=True, detail=detail)


def _listing(items: dict[str, float], limit: int = 5) -> str:
    shown = sorted(items.items(), key=lambda kv: -kv[1])[:limit]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(f"{k}={v:.3f}" for k, v in shown) + more


def _worst_column(
    name: str,
    figures: dict[str, float],
    threshold: float,
    describe: Callable[[str, float], str],
    *,
    notes: list[str] | None = None,
    otherwise: str = "",
) -> CheckResult:
    """A check over per-column figures: it fails when any column's figure exceeds `threshold`;
    its figure is the worst column's, its detail names each failing column (worst first), then
    `notes`; with nothing to name, `otherwise`."""
    bad = {c: f for c, f in figures.items() if f > threshold}
    parts = [describe(c, f) for c, f in sorted(bad.items(), key=lambda kv: -kv[1])]
    parts += notes or []
    return CheckResult(
        name=name,
        figure=_round(max(figures.values(), default=0.0)),
        threshold=threshold,
        passed=not bad,
        detail="; ".join(parts) or otherwise,
    )


def value_kind(series: pd.Series) -> Kind | None:
    """numeric or categorical by the values (booleans are categorical); None when all missing."""
    values = series.dropna()
    if values.empty:
        return None
    if pd.api.types.is_bool_dtype(values):
        return "categorical"
    if pd.api.types.is_numeric_dtype(values):
        return "numeric"
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    numeric = {"integer", "floating", "mixed-integer-float", "decimal"}
    return "numeric" if inferred in numeric else "categorical"


def check_columns_present(recent: pd.DataFrame, columns: list[str]) -> CheckResult:
    """Every feature and the target exist and hold some value in the recent rows."""
    absent = [c for c in columns if c not in recent.columns or recent[c].isna().all()]
    return CheckResult(
        name="columns_present",
        figure=float(len(absent)),
        threshold=0,
        passed=not absent,
        detail=f"missing columns: {absent}" if absent else "",
    )


def check_extra_columns(
    source_columns: Sequence[str],
    columns: list[str],
    *,
    features_listed: bool,
    reference: pd.DataFrame | None,
) -> CheckResult:
    """Columns the data brings beyond the schema.

    With features listed in the spec, other columns are ignored (a file's id column): reported,
    passed. Without, every column is a feature, so a column the reference lacks would silently
    change what the model reads: that fails.
    """
    if features_listed or reference is None:
        extra = [c for c in source_columns if c not in columns]
        return CheckResult(
            name="extra_columns",
            figure=float(len(extra)),
            threshold=None,
            passed=True,
            detail=f"ignored columns not in the spec: {extra}" if extra else "",
        )
    new = [c for c in source_columns if c not in reference.columns]
    return CheckResult(
        name="extra_columns",
        figure=float(len(new)),
        threshold=0,
        passed=not new,
        detail=f"columns not in the reference: {new}" if new else "",
    )


def check_types(recent: pd.DataFrame, reference: pd.DataFrame, columns: list[str]) -> CheckResult:
    """Each column is numeric or categorical in the recent rows as it is in the reference."""
    changed = {}
    for c in columns:
        if c not in recent.columns or c not in reference.columns:
            continue
        now, before = value_kind(recent[c]), value_kind(reference[c])
        if now and before and now != before:
            changed[c] = f"{before} -> {now}"
    return CheckResult(
        name="column_types",
        figure=float(len(changed)),
        threshold=0,
        passed=not changed,
        detail="; ".join(f"{c}: {k}" for c, k in changed.items()),
    )


def _common(
    recent: pd.DataFrame, reference: pd.DataFrame, columns: list[str], kind: Kind
) -> list[str]:
    return [
        c
        for c in columns
        if c in recent.columns
        and c in reference.columns
        and value_kind(recent[c]) == kind
        and value_kind(reference[c]) == kind
    ]


def reference_range(values: pd.Series) -> tuple[float, float]:
    """[q(0.1%) - k*IQR, q(99.9%) + k*IQR] of the given (served) values."""
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    low, q1, q3, high = np.quantile(v, [RANGE_QUANTILE, 0.25, 0.75, 1 - RANGE_QUANTILE])
    iqr = q3 - q1
    return float(low - RANGE_IQR_FACTOR * iqr), float(high + RANGE_IQR_FACTOR * iqr)


def check_value_ranges(
    recent: pd.DataFrame, served: pd.DataFrame, columns: list[str]
) -> CheckResult:
    """Share of each numeric column's recent values outside the range of the served values."""
    shares: dict[str, float] = {}
    bounds: dict[str, tuple[float, float]] = {}
    for c in _common(recent, served, columns, "numeric"):
        values = pd.to_numeric(recent[c], errors="coerce").dropna()
        if values.empty:
            continue
        low, high = reference_range(served[c])
        shares[c] = float(((values < low) | (values > high)).mean())
        bounds[c] = (low, high)
    return _worst_column(
        "value_range",
        shares,
        RANGE_MAX_SHARE,
        lambda c, s: (
            f"{c}: {s:.3f} of rows outside the served range"
            f" [{bounds[c][0]:.4g}, {bounds[c][1]:.4g}] ({len(served)} served rows)"
        ),
        otherwise=f"share outside the served range per column: {_listing(shares)}"
        f" ({len(served)} served rows)"
        if shares
        else "",
    )


def check_unseen_categories(
    recent: pd.DataFrame, served: pd.DataFrame, columns: list[str]
) -> CheckResult:
    """Share of each categorical column's recent values that were never served."""
    shares: dict[str, float] = {}
    unseen_values: dict[str, list[str]] = {}
    skipped = []
    for c in _common(recent, served, columns, "categorical"):
        known = served[c].dropna().astype(str)
        if known.nunique() > UNSEEN_MAX_CARDINALITY * len(known):
            skipped.append(c)
            continue
        values = recent[c].dropna().astype(str)
        if values.empty:
            continue
        unseen = ~values.isin(set(known))
        shares[c] = float(unseen.mean())
        unseen_values[c] = sorted(values[unseen].unique())[:5]
    return _worst_column(
        "unseen_categories",
        shares,
        UNSEEN_MAX_SHARE,
        lambda c, s: f"{c}: {s:.3f} of rows never served (e.g. {unseen_values[c]})",
        notes=[f"identifier-like, skipped: {skipped}"] if skipped else [],
    )


def check_missing_rates(
    recent: pd.DataFrame, served: pd.DataFrame, columns: list[str]
) -> CheckResult:
    """Increase of each column's missing-value rate over the served rows' (absolute)."""
    rises: dict[str, float] = {}
    rates: dict[str, tuple[float, float]] = {}
    for c in columns:
        if c not in recent.columns or c not in served.columns or recent.empty or served.empty:
            continue
        now, before = float(recent[c].isna().mean()), float(served[c].isna().mean())
        rises[c] = now - before
        rates[c] = (before, now)
    return _worst_column(
        "missing_rate",
        rises,
        MISSING_MAX_INCREASE,
        lambda c, _r: f"{c}: missing {rates[c][1]:.3f} of recent rows vs {rates[c][0]:.3f} served",
    )


def total_variation(a: pd.Series, b: pd.Series) -> float:
    """Half the L1 distance between the value shares of `a` and `b` (0 same, 1 disjoint)."""
    pa = a.dropna().value_counts(normalize=True).to_dict()
    pb = b.dropna().value_counts(normalize=True).to_dict()
    return 0.5 * float(sum(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in {*pa, *pb}))


def check_label_shift(
    labels: pd.Series, reference_labels: pd.Series, *, task: str, target: str
) -> CheckResult:
    """Classification: TVD of label shares; regression: mean shift in reference std units.

    Reported, never a gate: a label shift is often the very change that triggered the retrain;
    poisoned labels are judged by `labels.check_label_issues` instead."""
    labels, reference_labels = labels.dropna(), reference_labels.dropna()
    if task == "classification":
        tvd = total_variation(labels, reference_labels)
        shares = labels.value_counts(normalize=True).round(3).to_dict()
        before = reference_labels.value_counts(normalize=True).round(3).to_dict()
        return _reported(
            "label_shift",
            tvd,
            f"{target} shares {before} -> {shares} (total variation {tvd:.3f});"
            " reported, not a gate",
        )
    now = pd.to_numeric(labels, errors="coerce").dropna()
    before = pd.to_numeric(reference_labels, errors="coerce").dropna()
    if now.empty or len(before) < 2:
        return CheckResult(
            name="label_shift",
            figure=None,
            threshold=None,
            passed=True,
            detail="skipped: too few numeric labels",
        )
    std = float(before.std()) or 1.0
    shift = abs(float(now.mean()) - float(before.mean())) / std
    return _reported(
        "label_shift",
        shift,
        f"{target} mean {before.mean():.4g} -> {now.mean():.4g} (reference std {std:.4g},"
        f" shift {shift:.3f} std); reported, not a gate",
    )


def duplicated(frame: pd.DataFrame) -> pd.Series:
    """Whether each row exactly repeats an earlier row (compared as text, so values JSON cannot
    hash, such as lists, still compare)."""
    return frame.astype(str).duplicated()


def duplicate_share(frame: pd.DataFrame) -> float:
    """Share of rows that exactly repeat an earlier row."""
    if frame.empty:
        return 0.0
    return float(duplicated(frame).mean())


def check_duplicates(recent: pd.DataFrame, reference: pd.DataFrame | None) -> CheckResult:
    """Share of exact duplicate rows among the recent rows, beyond the reference's own. With
    no reference (the first version's file) it is reported, not judged: there is no baseline,
    and rows of coarse features legitimately repeat (census data repeats 35 %)."""
    share = duplicate_share(recent)
    repeats = round(share * len(recent))
    if reference is None:
        return _reported(
            "duplicates",
            share,
            f"{repeats} of {len(recent)} rows ({share:.3f}) repeat an earlier one; "
            "reported: no reference to compare with",
        )
    baseline = duplicate_share(reference)
    threshold = min(1.0, baseline + DUPLICATE_MAX_SHARE)
    return CheckResult(
        name="duplicates",
        figure=_round(share),
        threshold=_round(threshold),
        passed=share <= threshold,
        detail=f"{repeats} of {len(recent)} recent rows ({share:.3f}) repeat an earlier one;"
        f" the reference has {baseline:.3f}",
    )


def check_finite(recent: pd.DataFrame, columns: list[str]) -> CheckResult:
    """Impossible values: infinite numbers in a numeric feature or target (no model reads them,
    and no gateway served them: JSON has no infinity)."""
    counts: dict[str, int] = {}
    for c in columns:
        if c in recent.columns and value_kind(recent[c]) == "numeric":
            values = pd.to_numeric(recent[c], errors="coerce").to_numpy(dtype=float)
            if n := int(np.isinf(values).sum()):
                counts[c] = n
    return CheckResult(
        name="finite_values",
        figure=float(sum(counts.values())),
        threshold=0,
        passed=not counts,
        detail="; ".join(f"{c}: {n} infinite values" for c, n in counts.items()),
    )


def reference_checks(
    recent: pd.DataFrame,
    reference: pd.DataFrame,
    features: list[str],
    target: str,
    *,
    task: str,
) -> list[CheckResult]:
    """The checks against the champion's training set (skipped at bootstrap): each column's kind,
    and the label balance's move (reported, not a gate)."""
    return [
        check_types(recent, reference, [*features, target]),
        check_label_shift(
            recent[target] if target in recent.columns else pd.Series(dtype=object),
            reference[target] if target in reference.columns else pd.Series(dtype=object),
            task=task,
            target=target,
        ),
    ]


def served_checks(
    recent: pd.DataFrame, served: pd.DataFrame, features: list[str]
) -> list[CheckResult]:
    """The recent (labelled) rows against what the gateway served over the same period: value
    ranges, unseen categories, missing-value rates."""
    return [
        check_value_ranges(recent, served, features),
        check_unseen_categories(recent, served, features),
        check_missing_rates(recent, served, features),
    ]
