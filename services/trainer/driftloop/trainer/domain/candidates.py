"""Candidate training sets of a cycle with an onset, and the choice among them.

Post-onset rows are the "recent" rows; older rows (labelled traffic served before the onset and
the champion's training set) may only train. The candidates (spec `trainer.candidates`):

- `recent`: the post-onset training rows alone;
- `recent+reference`: those and the older rows (the assembly of every other cycle);
- `weighted`: the same rows, post-onset ones weighted so their total weight is at least the
  older rows' (older rows weigh 1).

Each is fitted on the post-onset training rows less a validation split of them (never the holdout)
and scored on it with the evaluator's metric; the best is kept. Ties go to the simplest, in
TIE_ORDER: `recent+reference` (what every cycle without an onset trains on), then `recent`,
then `weighted` (the most assumptions).
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


def choose(scores: Sequence[CandidateScore], metric: str) -> str:
    """The best scored candidate by `metric` (lower is better for rmse and mae); ties, and no
    score at all, go to the first in TIE_ORDER."""
    order = {name: i for i, name in enumerate(TIE_ORDER)}
    ranked = sorted(scores, key=lambda c: order.get(c.name, len(order)))
    scored = [c for c in ranked if c.score is not None and math.isfinite(c.score)]
    if not scored:
        return ranked[0].name
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    best = max(sign * float(c.score) for c in scored if c.score is not None)
    return next(c.name for c in scored if c.score is not None and sign * c.score >= best - 1e-12)


def fallback(candidates: Sequence[str]) -> str:
    """The candidate trained when none can be validated: the first of `candidates` in
    TIE_ORDER."""
    order = {name: i for i, name in enumerate(TIE_ORDER)}
    return min(candidates, key=lambda n: order.get(n, len(order)))
