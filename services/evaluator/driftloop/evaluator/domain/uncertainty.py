"""How sure the holdout makes us of the difference between two models: a paired bootstrap
interval of any metric's difference, McNemar's exact test for accuracy."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from driftloop.evaluator.domain.resampling import BoolArray, FloatArray, Outputs, weighted_metric

# Resamples x rows per block: bounds memory (8 bytes each) whatever the holdout's size.
BLOCK_CELLS = 2_000_000


@dataclass(frozen=True)
class Interval:
    """Bootstrap distribution of the improvement d: `low` is its (1 - confidence) quantile
    (the one-sided lower confidence bound), `high` its `confidence` quantile; `valid` counts
    the resamples where the metric was defined for both models."""

    low: float
    high: float
    valid: int


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs: `worse` rows only the champion got right, `better` only the
    challenger; `p_value` of H0: accuracy improvement <= `bound` (one-sided, exact)."""

    worse: int
    better: int
    bound: float
    p_value: float


def resample_counts(rng: np.random.Generator, resamples: int, rows: int) -> FloatArray:
    """B x n counts of rows drawn with replacement, n draws per resample."""
    picks = rng.integers(0, rows, size=(resamples, rows))
    counts = np.empty((resamples, rows))
    for i, drawn in enumerate(picks):  # a bincount per row beats one over offset indices
        counts[i] = np.bincount(drawn, minlength=rows)
    return counts


def resample_blocks(rng: np.random.Generator, resamples: int, rows: int) -> Iterator[FloatArray]:
    """`resamples` resamples of `rows` rows as blocks of `resample_counts(rng, block, rows)`,
    block = min(resamples, BLOCK_CELLS // rows): memory bounded whatever the holdout's size,
    and a fixed seed gives fixed figures."""
    block = max(1, min(resamples, BLOCK_CELLS // max(rows, 1)))
    done = 0
    while done < resamples:
        counts = resample_counts(rng, min(block, resamples - done), rows)
        done += len(counts)
        yield counts


def paired_bootstrap(
    metric: str,
    y_true: npt.NDArray[Any],
    ours: Outputs,
    theirs: Outputs,
    classes: Sequence[Any] | None,
    *,
    higher_is_better: bool,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
    groups: Mapping[str, BoolArray] | None = None,
) -> tuple[Interval, dict[str, Interval]]:
    """Percentile interval of d = ours - theirs (theirs - ours when lower is better) over
    `resamples` resamples of the holdout rows, both models scored on the same rows of each;
    and of d within each group (a slice: the resample's rows that fall in it).

    Resamples are drawn by `resample_blocks`."""
    sign = 1.0 if higher_is_better else -1.0
    groups = groups or {}
    overall: list[FloatArray] = []
    per_group: dict[str, list[FloatArray]] = {name: [] for name in groups}
    for counts in resample_blocks(rng, resamples, len(y_true)):
        overall.append(_difference(metric, y_true, ours, theirs, classes, counts, sign))
        for name, mask in groups.items():
            sub = counts[:, mask]
            per_group[name].append(
                _difference(
                    metric, y_true[mask], ours.take(mask), theirs.take(mask), classes, sub, sign
                )
            )
    return _interval(np.concatenate(overall), confidence), {
        name: _interval(np.concatenate(parts), confidence) for name, parts in per_group.items()
    }


def bootstrap_interval(
    metric: str,
    y_true: npt.NDArray[Any],
    outputs: Outputs,
    classes: Sequence[Any] | None,
    *,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> Interval:
    """Percentile interval of one model's `metric` over `resamples` resamples of the holdout:
    `low` its (1 - confidence) quantile, `high` its `confidence` quantile (resamples drawn by
    `resample_blocks`)."""
    figures: list[FloatArray] = []
    for counts in resample_blocks(rng, resamples, len(y_true)):
        with np.errstate(divide="ignore", invalid="ignore"):
            figures.append(weighted_metric(metric, y_true, outputs, classes, counts))
    return _interval(np.concatenate(figures), confidence)


def _difference(
    metric: str,
    y_true: npt.NDArray[Any],
    ours: Outputs,
    theirs: Outputs,
    classes: Sequence[Any] | None,
    counts: FloatArray,
    sign: float,
) -> FloatArray:
    empty = counts.sum(axis=1) == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ours_m = weighted_metric(metric, y_true, ours, classes, counts)
        theirs_m = weighted_metric(metric, y_true, theirs, classes, counts)
    diff: FloatArray = sign * (ours_m - theirs_m)
    return np.where(empty, np.nan, diff)


def _interval(differences: FloatArray, confidence: float) -> Interval:
    finite = differences[np.isfinite(differences)]
    if len(finite) == 0:
        return Interval(float("nan"), float("nan"), 0)
    low, high = np.quantile(finite, [1.0 - confidence, confidence])
    return Interval(float(low), float(high), len(finite))


def mcnemar(
    y_true: npt.NDArray[Any],
    ours: npt.NDArray[Any],
    theirs: npt.NDArray[Any],
    *,
    bound: float = 0.0,
) -> McNemar:
    """McNemar's exact test, one-sided: is the challenger's accuracy better than the
    champion's by more than `bound` (negative: worse by less than -bound)?

    Given m discordant rows (share psi = m/n), the improvement is (better - worse)/n; at the
    boundary of H0 (improvement = bound) a discordant row favours the challenger with
    probability theta = (psi + bound) / (2 psi), so p = P(Binomial(m, theta) >= better).
    With bound 0, theta is 1/2: the classic exact McNemar test. psi is estimated from the
    holdout (a conditional test). No discordant rows: the improvement is exactly 0, and
    p is 0 when bound <= 0 (the improvement 0 clears it), else 1."""
    ours_right = ours == y_true
    theirs_right = theirs == y_true
    better = int(np.sum(ours_right & ~theirs_right))
    worse = int(np.sum(theirs_right & ~ours_right))
    discordant = better + worse
    if discordant == 0:
        return McNemar(worse, better, bound, 0.0 if bound <= 0 else 1.0)
    share = discordant / len(y_true)
    theta = min(1.0, max(0.0, (share + bound) / (2 * share)))
    p_value = float(stats.binom.sf(better - 1, discordant, theta))
    return McNemar(worse, better, bound, min(1.0, max(0.0, p_value)))
