"""The poisoning gate tells drift from poison: covariate shift past the old training range, a
moved label balance and a changed concept pass every check; the same rows with 40 % of their
labels flipped fail label_issues with its figures; a hard but clean multiclass problem passes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.shared.events import CheckResult
from driftloop.shared.spec import ModelSpec, TrainerSpec
from driftloop.trainer.domain.dataset import assemble, validate
from driftloop.trainer.domain.labels import (
    LABEL_ISSUE_MAX_INCREASE,
    LABEL_ISSUE_MIN_ROWS,
    check_label_issues,
    label_issue_share,
)

FEATURES = ["tenure", "monthly_charges", "plan", "autopay"]
SPEC = ModelSpec(
    model="churn",
    target="churned",
    features=FEATURES,
    trainer=TrainerSpec(max_rows=5000, min_rows=100),
)


def customers(n: int, seed: int, *, drifted: bool = False, noise: float = 0.1) -> pd.DataFrame:
    """Old regime: churn when tenure is short and charges high (about 30 % churn). Drifted:
    tenure + 200 months, charges x 3, another plan mix, and a new concept (churn on high
    charges or the max plan, about 60 % churn)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.gamma(2.0, 12.0, n).round(1) + (200 if drifted else 0),
            "monthly_charges": (rng.normal(60, 15, n) * (3 if drifted else 1)).round(2),
            "plan": rng.choice(
                ["basic", "pro", "max"], n, p=[0.2, 0.3, 0.5] if drifted else [0.6, 0.3, 0.1]
            ),
            "autopay": rng.random(n) < 0.5,
        }
    )
    if drifted:
        rule = (frame["monthly_charges"] > 150) | (frame["plan"] == "max")
    else:
        rule = (frame["tenure"] < 20) & (frame["monthly_charges"] > 50)
    truth = rule.to_numpy().astype(int)
    frame["churned"] = np.where(rng.random(n) < noise, 1 - truth, truth)
    return frame


def flip(frame: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    flipped = np.random.default_rng(seed).random(len(frame)) < share
    return frame.assign(churned=np.where(flipped, 1 - frame["churned"], frame["churned"]))


def gate(
    recent: pd.DataFrame, reference: pd.DataFrame, served: pd.DataFrame, spec: ModelSpec = SPEC
) -> dict[str, CheckResult]:
    ts = assemble(recent, reference, spec)
    return {c.name: c for c in validate(ts, spec, reference=reference, served=served)}


REFERENCE = customers(2000, seed=1)
DRIFTED = customers(1500, seed=2, drifted=True)
SERVED = pd.concat([DRIFTED, customers(1500, seed=3, drifted=True)]).drop(columns="churned")


def test_covariate_shift_label_shift_and_a_new_concept_pass_every_check() -> None:
    checks = gate(DRIFTED, REFERENCE, SERVED)

    assert [c for c in checks.values() if not c.passed] == []
    assert (checks["label_shift"].figure or 0) > 0.2  # the balance moved, and it is reported
    issues = checks["label_issues"]
    assert issues.figure is not None
    assert issues.threshold is not None
    assert issues.figure <= issues.threshold


def test_forty_percent_flipped_labels_fail_label_issues_with_its_figures() -> None:
    checks = gate(flip(DRIFTED, 0.4, seed=4), REFERENCE, SERVED)

    assert {n for n, c in checks.items() if not c.passed} == {"label_issues"}
    issues = checks["label_issues"]
    assert issues.figure is not None
    assert issues.threshold is not None
    assert issues.figure > issues.threshold + 0.05
    assert issues.detail.startswith("churned: 0.")
    assert "of 1500 new rows have label issues vs 0." in issues.detail
    assert "of 1500 reference rows" in issues.detail
    assert f"max increase {LABEL_ISSUE_MAX_INCREASE}" in issues.detail


def hard(n: int, seed: int, *, drifted: bool = False) -> pd.DataFrame:
    """Three classes from a softmax of four numbers: about 60 % accuracy is achievable.
    Drifted: the numbers moved by 4 and the classes' weights changed."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    weights = np.array([[1.0, -1.0, 0.5, 0.0], [0.0, 1.0, -1.0, 0.5], [-1.0, 0.0, 1.0, 1.0]])
    if drifted:
        weights = weights[::-1] * np.array([1.0, -1.0, 1.0, -1.0])
    logits = x @ weights.T * 0.6
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    frame = pd.DataFrame(x + (4 if drifted else 0), columns=["a", "b", "c", "d"])
    return frame.assign(kind=np.array(["red", "green", "blue"])[y])


def test_a_hard_but_clean_multiclass_problem_passes() -> None:
    spec = SPEC.model_copy(update={"target": "kind", "features": ["a", "b", "c", "d"]})
    reference, recent = hard(2000, seed=5), hard(1500, seed=6, drifted=True)

    checks = gate(recent, reference, recent.drop(columns="kind"), spec)

    issues = checks["label_issues"]
    assert [c for c in checks.values() if not c.passed] == []
    assert (issues.figure or 0) > 0.2  # many "issues": the problem is hard, not poisoned


def test_the_share_counts_the_rows_it_judged_and_is_between_zero_and_one() -> None:
    share = label_issue_share(DRIFTED, FEATURES, "churned")

    assert share is not None
    assert share.rows == 1500
    assert 0.0 < share.share < 0.3


@pytest.mark.parametrize(
    ("recent", "reference", "task", "why"),
    [
        (DRIFTED.head(LABEL_ISSUE_MIN_ROWS - 1), REFERENCE, "classification", "fewer than"),
        (DRIFTED, None, "classification", "no reference to compare with (reported)"),
        (DRIFTED, REFERENCE, "regression", "classifiers only"),
    ],
    ids=["few-rows", "bootstrap", "regression"],
)
def test_the_label_check_reports_without_gating_when_it_cannot_compare(
    recent: pd.DataFrame, reference: pd.DataFrame | None, task: str, why: str
) -> None:
    result = check_label_issues(recent, reference, FEATURES, "churned", task=task)

    assert result.passed
    assert result.threshold is None
    assert why in result.detail
