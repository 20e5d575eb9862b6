"""Fitting the spec's recipe inside the preprocessing its feature types need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import has_fit_parameter

from driftloop.shared.estimators import EstimatorError, estimator_class
from driftloop.shared.modeling import prepare, score
from driftloop.shared.profile import is_numeric
from driftloop.shared.spec import ModelSpec
from driftloop.trainer.domain.candidates import (
    MIN_VALIDATION_ROWS,
    CandidateScore,
    Selection,
    choose,
    fallback,
    recency_weights,
    uses_older,
)


class RecipeError(ValueError):
    """The recipe names no usable estimator or gives it bad params."""


@dataclass(frozen=True)
class Fitted:
    pipeline: Pipeline
    train: pd.DataFrame
    holdout: pd.DataFrame
    metrics: dict[str, float]
    selection: Selection | None = None  # cycles with an onset: the candidates and the choice
    refit: bool = False  # refitted on every row, holdout included, after `metrics` were taken


def make_estimator(dotted: str, params: dict[str, Any]) -> BaseEstimator:
    """An instance of the estimator class `dotted` with `params`. Checked again here, not
    only when the spec was parsed: nothing but an allowed estimator class is ever called."""
    try:
        cls = estimator_class(dotted)
    except EstimatorError as exc:
        raise RecipeError(str(exc)) from exc
    try:
        estimator: BaseEstimator = cls(**params)
    except TypeError as exc:
        raise RecipeError(f"recipe.params: {exc}") from exc
    return estimator


def _allows_nan(estimator: BaseEstimator) -> bool:
    try:
        return bool(estimator.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:  # an estimator without sklearn's tags: assume it needs numbers
        return False


def make_pipeline(frame: pd.DataFrame, features: list[str], estimator: BaseEstimator) -> Pipeline:
    """One-hot for strings, categories and booleans (0/1), numbers as they are.

    Numbers are median-imputed only for an estimator that cannot take NaN itself (such as
    LogisticRegression); one that can (HistGradientBoosting) keeps missing values as a signal.
    """
    numeric = [f for f in features if is_numeric(frame[f])]
    categorical = [f for f in features if f not in numeric]
    steps = []
    if categorical:
        steps.append(
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", drop=None, sparse_output=False),
                categorical,
            )
        )
    if numeric:
        numbers: Any = (
            "passthrough"
            if _allows_nan(estimator)
            else SimpleImputer(strategy="median", keep_empty_features=True)
        )
        steps.append(("numeric", numbers, numeric))
    pre = ColumnTransformer(steps, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", pre), ("estimator", estimator)])


def _split(rows: pd.DataFrame, spec: ModelSpec, *, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`rows` minus a `trainer.holdout` share of them, and that share (stratified by class
    where every class has two rows)."""
    y = rows[spec.target]
    stratify = y if spec.task == "classification" and y.value_counts().min() >= 2 else None
    kept, out = train_test_split(
        rows, test_size=spec.trainer.holdout, random_state=seed, stratify=stratify
    )
    return kept, out


def _fit_rows(
    recent: pd.DataFrame,
    older: pd.DataFrame,
    features: list[str],
    spec: ModelSpec,
    *,
    weighted: bool = False,
) -> tuple[Pipeline, pd.DataFrame]:
    """The recipe fitted on `recent` then `older` rows (recency-weighted when asked)."""
    estimator = make_estimator(spec.recipe.estimator, spec.recipe.params)
    rows = pd.concat([recent, older], ignore_index=True) if len(older) else recent
    x = prepare(rows, features)
    pipeline = make_pipeline(x, features, estimator)
    params: dict[str, Any] = {}
    if weighted:
        params["estimator__sample_weight"] = recency_weights(len(recent), len(older))
    try:
        pipeline.fit(x, rows[spec.target], **params)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"fit failed: {exc}") from exc
    return pipeline, rows.reset_index(drop=True)


def select_candidate(
    recent: pd.DataFrame, older: pd.DataFrame, features: list[str], spec: ModelSpec
) -> Selection:
    """Validate each of `trainer.candidates` on a split of the post-onset training rows
    `recent` (never the holdout) and choose one (domain.candidates)."""
    names = list(dict.fromkeys(spec.trainer.candidates))
    metric = spec.evaluator.metric
    fit_part, validation = _split(recent, spec, seed=spec.trainer.seed + 1)
    if min(len(validation), len(fit_part)) < MIN_VALIDATION_ROWS:
        return Selection(
            chosen=fallback(names),
            metric=metric,
            validation_rows=0,
            scores=(),
            note=f"too few post-onset rows to validate on ({len(recent)})",
        )
    accepts_weights = has_fit_parameter(
        make_estimator(spec.recipe.estimator, spec.recipe.params), "sample_weight"
    )
    scores = []
    for name in names:
        older_part = older if uses_older(name) else older.iloc[0:0]
        counts = {"recent_rows": len(fit_part), "older_rows": len(older_part)}
        if name != "recent" and not len(older):
            scores.append(CandidateScore(name, **counts, score=None, note="no older rows"))
            continue
        if name == "weighted" and not accepts_weights:
            note = f"{spec.recipe.estimator} takes no sample_weight"
            scores.append(CandidateScore(name, **counts, score=None, note=note))
            continue
        try:
            pipeline, _ = _fit_rows(
                fit_part, older_part, features, spec, weighted=name == "weighted"
            )
            figures = score(
                spec.task, validation[spec.target], pipeline, prepare(validation, features)
            )
        except (RecipeError, ValueError) as exc:
            scores.append(CandidateScore(name, **counts, score=None, note=str(exc)[:200]))
            continue
        value = figures.get(metric)
        note = "" if value is not None else f"{metric} undefined on the validation rows"
        scores.append(CandidateScore(name, **counts, score=value, note=note))
    return Selection(
        chosen=choose(scores, metric, rows=len(validation)),
        metric=metric,
        validation_rows=len(validation),
        scores=tuple(scores),
    )


def fit(
    frame: pd.DataFrame,
    features: list[str],
    spec: ModelSpec,
    *,
    recent_rows: int | None = None,
    select: bool = False,
    refit: bool = False,
) -> Fitted:
    """Split off the holdout, fit the recipe, score the holdout.

    The holdout is drawn from the first `recent_rows` rows (the recent labelled traffic: on a
    cycle with an onset, the rows served after it) only: the rows after them (older labelled
    traffic, the champion's training set) go to training, never to the holdout, or the
    champion would be judged on rows it was trained on or on the past. With `select` (a cycle
    with an onset) the training set is the candidate that validates best on post-onset rows
    (`select_candidate`), refitted on all its rows; otherwise recent and older rows together.
    With `refit` (the first version, which no champion is compared with) the holdout is scored
    first, then the recipe is fitted again on every row, holdout included: the version served
    learns from the whole file, and `metrics` stay an honest estimate of it.
    """
    make_estimator(spec.recipe.estimator, spec.recipe.params)  # a bad recipe fails first
    recent_rows = len(frame) if recent_rows is None else recent_rows
    recent = frame.iloc[:recent_rows].dropna(subset=[spec.target])
    older = frame.iloc[recent_rows:].dropna(subset=[spec.target])
    train, holdout = _split(recent, spec, seed=spec.trainer.seed)
    selection = select_candidate(train, older, features, spec) if select else None
    chosen = selection.chosen if selection else "recent+reference"
    pipeline, rows = _fit_rows(
        train,
        older if uses_older(chosen) else older.iloc[0:0],
        features,
        spec,
        weighted=chosen == "weighted",
    )
    metrics = score(spec.task, holdout[spec.target], pipeline, prepare(holdout, features))
    if refit:  # every row in the order given: the model a user would fit once on the file
        pipeline, rows = _fit_rows(recent, older, features, spec)
    return Fitted(
        pipeline=pipeline,
        train=rows,
        holdout=holdout.reset_index(drop=True),
        metrics=metrics,
        selection=selection,
        refit=refit,
    )
