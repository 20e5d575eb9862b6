"""Training on the new regime: the wait rule, the candidate training sets and the choice among
them (validated on post-onset rows, never the holdout)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from driftloop.shared.spec import EvaluatorSpec, ModelSpec, Recipe, TrainerSpec
from driftloop.trainer.adapters.registry import profiled_rows
from driftloop.trainer.domain.candidates import (
    CandidateScore,
    choose,
    recency_weights,
    standard_error,
)
from driftloop.trainer.domain.dataset import assemble
from driftloop.trainer.domain.regime import LabelWait, rows_needed
from driftloop.trainer.domain.training import fit

ONSET = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


# the wait rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trainer", "onset", "needed"),
    [
        (TrainerSpec(), ONSET, 2500),
        (TrainerSpec(), None, 500),
        (TrainerSpec(onset_holdout_rows=40, holdout=0.2, min_rows=100), ONSET, 200),
        (TrainerSpec(onset_holdout_rows=40, holdout=0.2, min_rows=300), ONSET, 300),
        (TrainerSpec(onset_holdout_rows=500, holdout=0.25, max_rows=1200), ONSET, 1200),
        (TrainerSpec(onset_holdout_rows=50, holdout=0.3, min_rows=10), ONSET, 167),
    ],
    ids=["defaults", "no-onset-min-rows", "holdout-rule", "min-rows-wins", "max-rows-caps", "ceil"],
)
def test_a_cycle_with_an_onset_needs_enough_post_onset_rows_for_its_holdout(
    trainer: TrainerSpec, onset: datetime | None, needed: int
) -> None:
    assert rows_needed(trainer, onset=onset) == needed


@pytest.mark.parametrize(
    ("have", "waited", "outcome"),
    [(2500, 0, "train"), (812, 60, "wait"), (812, 1801, "fail"), (2600, 9999, "train")],
    ids=["enough", "waiting", "waited-too-long", "enough-late"],
)
def test_the_wait_trains_waits_or_fails_by_rows_and_time(
    have: int, waited: int, outcome: str
) -> None:
    wait = LabelWait(have, 2500, ONSET, timedelta(seconds=waited), timedelta(minutes=30))

    assert wait.outcome == outcome


def test_the_wait_names_the_onset_and_its_figures() -> None:
    wait = LabelWait(812, 2500, ONSET, timedelta(minutes=31), timedelta(minutes=30))

    assert (
        wait.progress() == "waiting for labels after the onset 2026-12-05T12:00:00+00:00: 812/2500"
    )
    assert "only 812 labelled rows served after the onset" in wait.failure()
    assert "2500 needed" in wait.failure()
    assert "0:31:00" in wait.failure()
    assert wait.report()["needed"] == 2500
    assert wait.report()["labelled_rows"] == 812


# weights and the choice --------------------------------------------------------------------


@pytest.mark.parametrize(("recent", "older"), [(100, 1000), (300, 300), (500, 100), (10, 0)])
def test_post_onset_rows_weigh_at_least_as_much_as_the_older_rows(recent: int, older: int) -> None:
    w = recency_weights(recent, older)

    assert len(w) == recent + older
    assert w[:recent].sum() >= w[recent:].sum()
    assert w.min() >= 1.0
    assert (w[recent:] == 1.0).all()


def scored(**scores: float | None) -> list[CandidateScore]:
    return [CandidateScore(n.replace("_", "+"), 10, 10, s) for n, s in scores.items()]


@pytest.mark.parametrize(
    ("scores", "metric", "chosen"),
    [
        (scored(recent=0.9, recent_reference=0.8, weighted=0.85), "accuracy", "recent"),
        (scored(weighted=0.9, recent=0.9, recent_reference=0.9), "f1", "recent+reference"),
        (scored(weighted=0.9, recent=0.9), "f1", "recent"),
        (scored(recent=2.0, recent_reference=3.0, weighted=1.5), "rmse", "weighted"),
        (scored(recent=None, weighted=None), "f1", "recent"),
        (scored(recent=None, weighted=0.1), "f1", "weighted"),
    ],
    ids=["best", "tie-simplest", "tie-recent-before-weighted", "lower-is-better", "none", "one"],
)
def test_the_best_validation_score_wins_and_ties_go_to_the_simplest(
    scores: list[CandidateScore], metric: str, chosen: str
) -> None:
    assert choose(scores, metric) == chosen


def test_a_lead_within_one_standard_error_goes_to_the_simplest_candidate() -> None:
    # mc's first cycle: weighted led by 0.007 on 410 validation rows (SE about 0.024)
    scores = scored(recent=0.529, recent_reference=0.578, weighted=0.585)

    assert choose(scores, "accuracy", rows=410) == "recent+reference"
    assert choose(scores, "accuracy") == "weighted"  # no rows given: the plain best


def test_a_lead_beyond_one_standard_error_wins() -> None:
    scores = scored(recent=0.90, recent_reference=0.86, weighted=0.88)  # SE 0.015 at 400

    assert choose(scores, "accuracy", rows=400) == "recent"
    assert choose(scores, "f1", rows=40) == "recent+reference"  # SE 0.047: within it


def test_the_standard_error_is_a_proportions() -> None:
    assert standard_error("accuracy", 0.8, 400) == pytest.approx(stats.binom.std(400, 0.8) / 400)
    assert standard_error("rmse", 3.0, 400) == 0.0  # unknown from the score: the plain best
    assert standard_error("accuracy", 0.8, 0) == 0.0


# selection inside the fit ------------------------------------------------------------------

SPEC = ModelSpec(
    model="m",
    target="y",
    features=["x", "z"],
    recipe=Recipe(estimator="sklearn.linear_model.LogisticRegression"),
    trainer=TrainerSpec(max_rows=5000, min_rows=10, holdout=0.2),
    evaluator=EvaluatorSpec(metric="accuracy"),
)


def stream(n: int, *, flipped: bool, seed: int, noise: float = 0.5) -> pd.DataFrame:
    """y = x > 0 (with label noise from z), or its opposite after a concept change."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    z = rng.normal(0, 1, n)
    y = (x + noise * z + rng.normal(0, 0.3, n) > 0).astype(int)
    return pd.DataFrame({"x": x, "z": z, "y": 1 - y if flipped else y, "part": "x"})


def test_after_a_concept_change_the_recent_rows_alone_win() -> None:
    recent = stream(300, flipped=True, seed=1).assign(part="recent")
    older = stream(2000, flipped=False, seed=2).assign(part="older")
    frame = pd.concat([recent, older], ignore_index=True)

    fitted = fit(frame, ["x", "z"], SPEC, recent_rows=len(recent), select=True)

    assert fitted.selection is not None
    assert fitted.selection.chosen == "recent"
    scores = {c.name: c.score for c in fitted.selection.scores}
    assert set(scores) == {"recent", "recent+reference", "weighted"}
    assert scores["recent"] is not None
    assert scores["recent+reference"] is not None
    assert scores["recent"] > scores["recent+reference"] + 0.2
    assert set(fitted.train["part"]) == {"recent"}
    assert set(fitted.holdout["part"]) == {"recent"}
    assert fitted.metrics["accuracy"] > 0.8


def test_on_a_stable_stream_the_older_rows_are_kept() -> None:
    recent = stream(60, flipped=False, seed=3, noise=1.5).assign(part="recent")
    older = stream(2000, flipped=False, seed=4, noise=1.5).assign(part="older")
    frame = pd.concat([recent, older], ignore_index=True)

    fitted = fit(frame, ["x", "z"], SPEC, recent_rows=len(recent), select=True)

    assert fitted.selection is not None
    scores = {c.name: c.score for c in fitted.selection.scores}
    assert scores["recent+reference"] is not None
    assert scores["recent"] is not None
    assert scores["recent+reference"] >= scores["recent"]
    assert fitted.selection.chosen == "recent+reference"
    assert (fitted.train["part"] == "older").sum() == 2000
    assert set(fitted.holdout["part"]) == {"recent"}


def test_validation_rows_come_from_the_post_onset_training_rows_not_the_holdout() -> None:
    recent = stream(200, flipped=True, seed=5)
    older = stream(400, flipped=False, seed=6)
    frame = pd.concat([recent, older], ignore_index=True)

    fitted = fit(frame, ["x", "z"], SPEC, recent_rows=len(recent), select=True)

    assert fitted.selection is not None
    assert len(fitted.holdout) == 40
    assert fitted.selection.validation_rows == 32  # 0.2 of the 160 training rows
    assert {c.recent_rows for c in fitted.selection.scores} == {128}
    assert {c.name: c.older_rows for c in fitted.selection.scores} == {
        "recent": 0,
        "recent+reference": 400,
        "weighted": 400,
    }


def test_an_estimator_without_sample_weight_skips_the_weighted_candidate_saying_why() -> None:
    spec = SPEC.model_copy(
        update={"recipe": Recipe(estimator="sklearn.neighbors.KNeighborsClassifier")}
    )
    frame = pd.concat([stream(200, flipped=True, seed=7), stream(400, flipped=False, seed=8)])

    fitted = fit(frame.reset_index(drop=True), ["x", "z"], spec, recent_rows=200, select=True)

    assert fitted.selection is not None
    weighted = next(c for c in fitted.selection.scores if c.name == "weighted")
    assert weighted.score is None
    assert "sample_weight" in weighted.note
    assert fitted.selection.chosen in {"recent", "recent+reference"}


def test_without_older_rows_only_the_recent_rows_are_scored() -> None:
    fitted = fit(stream(200, flipped=False, seed=9), ["x", "z"], SPEC, recent_rows=200, select=True)

    assert fitted.selection is not None
    assert fitted.selection.chosen == "recent"
    notes = {c.name: c.note for c in fitted.selection.scores}
    assert notes["recent+reference"] == notes["weighted"] == "no older rows"


def test_too_few_post_onset_rows_to_validate_keep_todays_training_set() -> None:
    frame = pd.concat([stream(30, flipped=True, seed=10), stream(300, flipped=False, seed=11)])

    fitted = fit(frame.reset_index(drop=True), ["x", "z"], SPEC, recent_rows=30, select=True)

    assert fitted.selection is not None
    assert fitted.selection.chosen == "recent+reference"
    assert fitted.selection.scores == ()
    assert "too few" in fitted.selection.note
    assert len(fitted.train) == 24 + 300


def test_without_an_onset_nothing_is_selected() -> None:
    frame = pd.concat([stream(200, flipped=True, seed=12), stream(300, flipped=False, seed=13)])

    fitted = fit(frame.reset_index(drop=True), ["x", "z"], SPEC, recent_rows=200)

    assert fitted.selection is None
    assert len(fitted.train) == 160 + 300


def test_the_reference_profile_describes_the_post_onset_rows_when_only_they_trained() -> None:
    recent = stream(300, flipped=True, seed=14)
    older = stream(1000, flipped=False, seed=15)
    ts = assemble(recent, None, SPEC, older=older)
    chosen = fit(ts.frame, ts.features, SPEC, recent_rows=ts.recent_rows, select=True)
    kept = fit(ts.frame, ts.features, SPEC, recent_rows=ts.recent_rows)

    assert chosen.selection is not None
    assert chosen.selection.chosen == "recent"
    assert len(profiled_rows(ts, chosen)) == 300
    assert len(profiled_rows(ts, kept)) == 1300
