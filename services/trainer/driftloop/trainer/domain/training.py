"""Fitting the spec's recipe inside the preprocessing its feature types need."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from driftloop.shared.modeling import prepare, score
from driftloop.shared.profile import is_numeric
from driftloop.shared.spec import ModelSpec


class RecipeError(ValueError):
    """The recipe names no usable estimator or gives it bad params."""


@dataclass(frozen=True)
class Fitted:
    pipeline: Pipeline
    train: pd.DataFrame
    holdout: pd.DataFrame
    metrics: dict[str, float]


def make_estimator(dotted: str, params: dict[str, Any]) -> BaseEstimator:
    module_name, _, class_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise RecipeError(f"recipe.estimator: cannot import {dotted}") from exc
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


def fit(
    frame: pd.DataFrame, features: list[str], spec: ModelSpec, *, recent_rows: int | None = None
) -> Fitted:
    """Split off the holdout, fit the recipe, score the holdout.

    The holdout is drawn from the first `recent_rows` rows (the recent labelled traffic) only:
    rows filled in from the champion's training set go to training, never to the holdout, or
    the champion would be judged on rows it was trained on.
    """
    estimator = make_estimator(spec.recipe.estimator, spec.recipe.params)
    recent_rows = len(frame) if recent_rows is None else recent_rows
    recent = frame.iloc[:recent_rows].dropna(subset=[spec.target])
    filled = frame.iloc[recent_rows:].dropna(subset=[spec.target])
    y = recent[spec.target]
    stratify = y if spec.task == "classification" and y.value_counts().min() >= 2 else None
    train, holdout = train_test_split(
        recent, test_size=spec.trainer.holdout, random_state=spec.trainer.seed, stratify=stratify
    )
    train = pd.concat([train, filled], ignore_index=True)
    x_train = prepare(train, features)
    pipeline = make_pipeline(x_train, features, estimator)
    try:
        pipeline.fit(x_train, train[spec.target])
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"fit failed: {exc}") from exc
    metrics = score(spec.task, holdout[spec.target], pipeline, prepare(holdout, features))
    return Fitted(
        pipeline=pipeline,
        train=train.reset_index(drop=True),
        holdout=holdout.reset_index(drop=True),
        metrics=metrics,
    )
