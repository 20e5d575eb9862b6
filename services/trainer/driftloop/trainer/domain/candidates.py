"""Candidate training sets of a cycle with an onset, and the choice among them.

Post-onset rows are the "recent" rows; older rows (labelled traffic served before the onset and
the champion's training set) may only train. The candidates (spec `trainer.candidates`):

- `recent`: the post-onset training rows alone;
- `recent+reference`: those and the older rows (the assembly of every other cycle);
- `weighted`: the same rows, post-onset ones weighted so their total weight is at least the
  older rows' (older rows weigh 1).

Each is fitted on the post-onset training rows less a validation split of them (never the holdout)
and scored on it with the evaluator's metric. The choice follows the one-standard-error rule
(Hastie, Tibshirani and Friedman, The Elements of Statistical Learning, 7.10): the simplest
candidate, in TIE_ORDER, whose score is within one standard error of the best. The validation
split is a few hundred rows, so the best score is partly luck; picking the plain maximum
favoured the more assumption-laden candidate on noise (on `mc` a weighted candidate that led
by 0.007 on 410 rows, about a third of a standard error, lost by 0.035 to the champion on the
holdout). TIE_ORDER: `recent+reference` (what every cycle without an onset trains on), then
`recent`, then `weighted` (the most assumptions). The standard error is that of a proportion
at the best score, sqrt(s (1 - s) / rows), for accuracy, precision, recall, F1 and ROC AUC (an
approximation for the last three); for rmse, mae and r2 a score alone gives none, and the best
is kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from driftloop.shared.modeling import HIGHER_IS_BETTER

TIE_ORDER = ("recent+reference", "recent", "weighted")
MIN_VALIDATION_ROWS = 10
"""Fewer post-onset rows to validate on and the choice is not made: `recent+reference` (or the
first listed candidate) is trained, and the lineage says why."""


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's validation: the rows it was fitted on and its score (None: skipped)."""

    name: str
    recent_rows: int  # post-onset training rows (the validation rows excluded)
    older_rows: int
    score: float | None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "recent_rows": self.recent_rows,
            "older_rows": self.older_rows,
            "score": self.score,
            "note": self.note,
        }


@dataclass(frozen=True)
class Selection:
    """Which candidate was trained, and every candidate's validation."""

    chosen: str
    metric: str
    validation_rows: int
    scores: tuple[CandidateScore, ...]
    note: str = ""


def uses_older(name: str) -> bool:
    """Whether a candidate trains on the older rows too."""
    return name != "recent"


def recency_weights(recent: int, older: int) -> npt.NDArray[np.float64]:
    """Sample weights of `recent` post-onset rows then `older` rows: older rows weigh 1,
    post-onset rows max(1, older / recent), so the post-onset rows' total is at least the
    older rows'."""
    each = max(1.0, older / recent) if recent else 1.0
    return np.concatenate([np.full(recent, each), np.ones(older)])


PROPORTIONS = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc"})


def standard_error(metric: str, score: float, rows: int) -> float:
    """The standard error of a validation `score` over `rows` rows: a proportion's for the
    classification metrics, 0 (unknown from the score alone) for rmse, mae and r2."""
    if metric not in PROPORTIONS or rows <= 0:
        return 0.0
    share = min(max(score, 0.0), 1.0)
    return math.sqrt(share * (1.0 - share) / rows)


def choose(scores: Sequence[CandidateScore], metric: str, *, rows: int = 0) -> str:
    """The simplest candidate (first in TIE_ORDER) scored within one standard error of the
    best by `metric` (lower is better for rmse and mae) over `rows` validation rows (0: the
    best, ties to the simplest); no score at all: the first in TIE_ORDER."""
    order = {name: i for i, name in enumerate(TIE_ORDER)}
    ranked = sorted(scores, key=lambda c: order.get(c.name, len(order)))
    scored = [c for c in ranked if c.score is not None and math.isfinite(c.score)]
    if not scored:
        return ranked[0].name
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    best = max(sign * float(c.score) for c in scored if c.score is not None)
    within = standard_error(metric, abs(best), rows) + 1e-12
    return next(c.name for c in scored if c.score is not None and sign * c.score >= best - within)


def fallback(candidates: Sequence[str]) -> str:
    """The candidate trained when none can be validated: the first of `candidates` in
    TIE_ORDER."""
    order = {name: i for i, name in enumerate(TIE_ORDER)}
    return min(candidates, key=lambda n: order.get(n, len(order)))
