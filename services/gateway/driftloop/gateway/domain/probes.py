"""Rows that put a compiled tree ensemble to the test before it serves, and the rule it must
pass: every answer scikit-learn's own predict gives, probabilities to within a millionth.

A tree's answer changes only where a feature crosses one of its split thresholds, so the rows
that can tell two implementations apart sit on and beside the thresholds: the threshold itself
(`x <= t` goes left), the next number up and down in float64, and the float32 numbers either
side of it (scikit-learn's `tree_` compares the row cast to float32, so a float64 value just
above a threshold can still go left). Missing values go wherever the tree sends them; values
beyond every threshold reach the outermost leaves. Rows combine these per feature at random,
so they reach many leaves of every tree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

PROBE_ROWS = 2000
"""Rows a compiled ensemble is checked on before it serves (scikit-learn predicts them in
tens of milliseconds for a forest of 50 trees: once per loaded version)."""
PROBABILITY_TOLERANCE = 1e-6
"""How far a compiled probability may be from scikit-learn's: the gateway answers them rounded
to six decimals."""
MISSING_SHARE = 0.05
"""Share of probe values that are missing (NaN), for models that accept missing values."""


def feature_values(thresholds: FloatArray) -> FloatArray:
    """The values that can tell two implementations of one feature's splits apart: each
    threshold, its float64 and float32 neighbours, and values beyond all of them (0.0 and
    +-1.0 when the feature is never split on)."""
    t = np.unique(thresholds[np.isfinite(thresholds)])
    if t.size == 0:
        return np.array([-1.0, 0.0, 1.0])
    t32 = t.astype(np.float32)
    values = np.concatenate(
        [
            t,
            np.nextafter(t, np.inf),
            np.nextafter(t, -np.inf),
            t32.astype(np.float64),
            np.nextafter(t32, np.float32(np.inf)).astype(np.float64),
            np.nextafter(t32, np.float32(-np.inf)).astype(np.float64),
            [t[0] - 1.0 - abs(t[0]), t[-1] + 1.0 + abs(t[-1])],
        ]
    )
    return np.unique(values[np.isfinite(values)])


def probe_matrix(
    per_feature: Sequence[FloatArray],
    *,
    rows: int,
    rng: np.random.Generator,
    missing: bool,
) -> FloatArray:
    """`rows` rows whose column j draws from `feature_values(per_feature[j])`; with `missing`,
    about MISSING_SHARE of the values are NaN. The first rows walk each column's values in
    order, so every value appears at least once when there are fewer than `rows`."""
    columns = []
    for thresholds in per_feature:
        values = feature_values(thresholds)
        order = np.arange(rows) % values.size
        tail = rng.integers(0, values.size, size=rows)
        pick = np.where(np.arange(rows) < values.size, order, tail)
        column = values[pick]
        if missing:
            column = np.where(rng.random(rows) < MISSING_SHARE, np.nan, column)
        columns.append(column)
    if not columns:
        return np.zeros((rows, 0))
    return np.column_stack(columns)


def disagreement(
    expected_labels: Sequence[object],
    expected_proba: FloatArray,
    labels: Sequence[object],
    proba: FloatArray,
    *,
    tolerance: float = PROBABILITY_TOLERANCE,
) -> str | None:
    """None when the compiled answers are scikit-learn's (every label equal, every probability
    within `tolerance`); else what differs, for the log."""
    if np.shape(expected_proba) != np.shape(proba):
        return f"probabilities of shape {np.shape(proba)}, expected {np.shape(expected_proba)}"
    differ = [i for i, (a, b) in enumerate(zip(expected_labels, labels, strict=True)) if a != b]
    if differ:
        i = differ[0]
        return (
            f"{len(differ)} of {len(labels)} probe rows predicted differently "
            f"(row {i}: {labels[i]!r}, expected {expected_labels[i]!r})"
        )
    gap = float(np.max(np.abs(expected_proba - proba), initial=0.0))
    if not gap <= tolerance:  # NaN too
        return f"probabilities up to {gap:.3g} away (at most {tolerance:g})"
    return None
