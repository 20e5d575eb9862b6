"""Slices of the holdout the spec names: each value of a categorical column, or bins of a
numeric one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from driftloop.evaluator.domain.resampling import BoolArray
from driftloop.shared.spec import SliceSpec

DEFAULT_QUANTILE_BINS = 4


@dataclass(frozen=True)
class Slice:
    column: str
    label: str
    mask: BoolArray

    @property
    def name(self) -> str:
        return f"{self.column}={self.label}"


def is_numeric(values: npt.NDArray[Any]) -> bool:
    """Numbers (not booleans): binned; anything else is categorical."""
    return values.dtype.kind in "iuf"


def slices_of(values: npt.NDArray[Any], spec: SliceSpec) -> list[Slice]:
    """The slices of one column, in order; missing values form a slice `missing`.

    Numeric: `bins` cut points e1 < ... < ek give (-inf, e1], (e1, e2], ..., (ek, inf); a count
    q gives the holdout's q-quantiles as cut points (repeated ones merged); unset: 4 quantile
    bins. Categorical: one slice per value (as text), sorted."""
    if is_numeric(values):
        numbers = values.astype(float)
        missing = np.isnan(numbers)
        edges = _edges(numbers[~missing], spec.bins)
        bounds = [-np.inf, *edges, np.inf]
        place = np.searchsorted(np.asarray(edges, dtype=float), numbers, side="left")
        out = [
            Slice(
                spec.column, f"({_fmt(bounds[i])}, {_fmt(bounds[i + 1])}]", ~missing & (place == i)
            )
            for i in range(len(bounds) - 1)
        ]
    else:
        missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
        text = np.array([str(v) for v in values], dtype=object)
        out = [
            Slice(spec.column, label, ~missing & (text == label))
            for label in sorted(set(text[~missing].tolist()))
        ]
    if missing.any():
        out.append(Slice(spec.column, "missing", missing))
    return out


def _edges(numbers: npt.NDArray[np.float64], bins: list[float] | int | None) -> list[float]:
    if isinstance(bins, list):
        return [float(b) for b in bins]
    count = bins if isinstance(bins, int) else DEFAULT_QUANTILE_BINS
    if len(numbers) == 0:
        return []
    cuts = np.quantile(numbers, np.linspace(0, 1, count + 1)[1:-1])
    # A cut at the maximum would leave an empty last bin.
    return [float(c) for c in np.unique(cuts) if c < numbers.max()]


def _fmt(value: float) -> str:
    return "inf" if value == np.inf else "-inf" if value == -np.inf else f"{value:.6g}"
