"""Label consistency judged among the new rows themselves: the poisoning guard that survives
label shift and concept change.

A quick model (HistGradientBoosting, 50 iterations, inside the same preprocessing as training)
predicts every row out of fold (cross-validation), so each row is judged by a model that never
saw its label, and confident learning (`cleanlab.filter.find_label_issues`) flags the rows
whose given label the out-of-fold probabilities contradict confidently.

The share of issues is measured the same way on the new rows and on an equally large sample of
the reference (the champion's training set). An inherently hard problem has many issues in
both; a concept change or a label shift moves the labels consistently, so a model of the new
rows learns the new concept and few of them are issues; poison (labels flipped at random)
cannot be learned, so its share rises far above the reference's. The check fails when the new
share exceeds the reference's by more than `LABEL_ISSUE_MAX_INCREASE` (measurements in
docs/decisions.md, "The poisoning gate: drift is not poison"). Labels flipped consistently (a
whole segment inverted) look like a concept change and pass here: the evaluator judges them.

Classifiers only. For a regressor the same idea with out-of-fold residuals (share beyond k
robust SDs) did not separate 40 % shuffled targets from clean ones (the poison inflates the
robust SD itself), so a regression target keeps only the schema, type and numeric-target checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from driftloop.shared.events import CheckResult
from driftloop.shared.modeling import prepare
from driftloop.trainer.domain.training import make_pipeline
from driftloop.trainer.domain.validation import UNSEEN_MAX_CARDINALITY

LABEL_ISSUE_MAX_INCREASE = 0.20
"""Fail when the share of label issues among the new rows exceeds the reference's share by
more than this (absolute). Measured (docs/decisions.md): a clean concept change with covariate
and label shift moves it by -0.10..+0.09 (+0.09 with half the new rows still from the old
concept, +0.08 when the new concept is twice as noisy); nannyml's `mc` stream, whose new
regime is genuinely harder (accuracy 0.78 -> 0.60), by +0.16 (0.33 vs 0.17: refused at 0.15,
which is why the bound is 0.20); 40 % of binary labels flipped raises it by +0.24..+0.43
(`synthetic_sample` with 40 % flipped: +0.34..+0.43). On a hard multiclass problem (45-60 %
accuracy) 40 % flipped raises it by only +0.07..+0.14: there the evaluator and the canary are
the gates."""

LABEL_ISSUE_MAX_ROWS = 5000
"""At most this many rows (the newest) are judged, and as many reference rows: the ten fits of
the quick model (one thread) took about a second at 4000 rows each."""

LABEL_ISSUE_MIN_ROWS = 100
"""Fewer labelled new rows than this say nothing: the check is skipped (reported)."""

LABEL_ISSUE_FOLDS = 5
"""Cross-validation folds of the out-of-fold predictions."""

LABEL_ISSUE_ITERATIONS = 50
"""Boosting iterations of the quick model (HistGradientBoosting's max_iter)."""


@dataclass(frozen=True)
class IssueShare:
    """Share of rows (0..1) whose label the out-of-fold model contradicts, of `rows` judged."""

    share: float
    rows: int


def _issues(x: pd.DataFrame, y: pd.Series, features: list[str], seed: int) -> int:
    counts = y.value_counts()
    keep = y.isin(counts[counts >= LABEL_ISSUE_FOLDS].index).to_numpy()
    x, y = x[keep], y[keep]
    if y.nunique() < 2:
        return 0
    codes = pd.factorize(y.astype(str), sort=True)[0]
    model = HistGradientBoostingClassifier(max_iter=LABEL_ISSUE_ITERATIONS, random_state=seed)
    folds = StratifiedKFold(LABEL_ISSUE_FOLDS, shuffle=True, random_state=seed)
    # one thread: OpenMP's spinning threads make the fits 10-40x slower on a busy machine
    with threadpool_limits(limits=1, user_api="openmp"):
        probs = cross_val_predict(
            make_pipeline(x, features, model), x, codes, cv=folds, method="predict_proba"
        )
    issues = find_label_issues(codes, probs, n_jobs=1)
    return int(np.count_nonzero(issues))


def label_issue_share(
    frame: pd.DataFrame, features: list[str], target: str, *, seed: int = 0
) -> IssueShare | None:
    """The share of a classifier's label issues among `frame`'s labelled rows (its first
    `LABEL_ISSUE_MAX_ROWS`), judged by out-of-fold predicted probabilities and confident
    learning; None with fewer than `LABEL_ISSUE_MIN_ROWS` rows. Features without any value
    among the rows (the schema checks report them) and identifier-like text features are left
    out."""
    rows = frame[frame[target].notna()].head(LABEL_ISSUE_MAX_ROWS)
    usable = [f for f in features if f in rows.columns and rows[f].notna().any()]
    if len(rows) < LABEL_ISSUE_MIN_ROWS or not usable:
        return None
    x = prepare(rows, usable).reset_index(drop=True)
    x = x.replace([np.inf, -np.inf], np.nan)  # impossible values fail their own check
    # identifier-like text (mostly distinct values) says nothing a model could learn, and
    # one-hot encoding it would cost seconds
    usable = [
        f
        for f in usable
        if x[f].dtype != object or x[f].nunique() <= UNSEEN_MAX_CARDINALITY * x[f].notna().sum()
    ]
    if not usable:
        return None
    x = x[usable]
    y = rows[target].reset_index(drop=True)
    return IssueShare(share=_issues(x, y, usable, seed) / len(rows), rows=len(rows))


def check_label_issues(
    recent: pd.DataFrame,
    reference: pd.DataFrame | None,
    features: list[str],
    target: str,
    *,
    task: str,
    seed: int = 0,
) -> CheckResult:
    """Label issues among the new rows vs among as many reference rows (sampled with `seed`).

    Classification only: a regressor's check is reported as skipped (see the module doc)."""

    def skipped(why: str) -> CheckResult:
        return CheckResult(
            name="label_issues", figure=None, threshold=None, passed=True, detail=f"skipped: {why}"
        )

    if task != "classification":
        return skipped("label consistency is judged for classifiers only")
    if target not in recent.columns:
        return skipped(f"no {target} column")
    try:
        new = label_issue_share(recent, features, target, seed=seed)
    except (ValueError, TypeError) as exc:  # data the schema checks report on their own
        return skipped(f"the out-of-fold model could not be fitted: {exc}")
    if new is None:
        labelled = int(recent[target].notna().sum())
        if labelled < LABEL_ISSUE_MIN_ROWS:
            return skipped(f"{labelled} labelled new rows, fewer than {LABEL_ISSUE_MIN_ROWS}")
        return skipped("no feature to judge the labels by")
    what = f"{target}: {new.share:.3f} of {new.rows} new rows have label issues"
    if reference is None or target not in reference.columns:
        return CheckResult(
            name="label_issues",
            figure=round(new.share, 4),
            threshold=None,
            passed=True,
            detail=f"{what}; no reference to compare with (reported)",
        )
    known = reference[reference[target].notna()]
    sample = known.sample(n=min(new.rows, len(known)), random_state=seed)
    try:
        before = label_issue_share(sample, features, target, seed=seed)
    except (ValueError, TypeError):  # the champion's own rows cannot be judged: say so below
        before = None
    if before is None:
        return CheckResult(
            name="label_issues",
            figure=round(new.share, 4),
            threshold=None,
            passed=True,
            detail=f"{what}; the reference's labels could not be judged (too few rows or"
            " features): reported",
        )
    limit = min(1.0, before.share + LABEL_ISSUE_MAX_INCREASE)
    return CheckResult(
        name="label_issues",
        figure=round(new.share, 4),
        threshold=round(limit, 4),
        passed=new.share <= limit,
        detail=f"{what} vs {before.share:.3f} of {before.rows} reference rows,"
        f" max increase {LABEL_ISSUE_MAX_INCREASE}",
    )
