"""The gateway's pandas-free preprocessing answers exactly what the pipeline answers, and is
not used for a pipeline it cannot reproduce."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import churn, churn_requests
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from driftloop.gateway.adapters.models import LoadedModel, RowEncoder
from driftloop.trainer.domain.training import make_pipeline

FEATURES = ["tenure", "monthly_charges", "plan"]  # booleans keep the pandas path (below)
SCHEMA = {"tenure": "double", "monthly_charges": "double", "plan": "string", "autopay": "boolean"}


@pytest.mark.parametrize(
    ("estimator", "target"),
    [
        (HistGradientBoostingClassifier(max_iter=30, random_state=0), "churned"),
        (LogisticRegression(max_iter=500), "churned"),
        (RandomForestRegressor(n_estimators=20, random_state=0), "monthly_charges"),
    ],
    ids=["hgb", "logistic", "forest-regressor"],
)
def test_the_fast_path_answers_what_the_pipeline_answers(estimator: Any, target: str) -> None:
    frame = churn(np.random.default_rng(1), 600)
    features = [f for f in FEATURES if f != target]
    schema = {f: SCHEMA[f] for f in features}
    pipeline = make_pipeline(frame, features, estimator).fit(frame[features], frame[target])
    classes = list(pipeline.classes_) if hasattr(pipeline, "classes_") else None
    encoder = RowEncoder.compile(pipeline, schema)
    fast = LoadedModel("m", "1", "r", pipeline, schema, classes, rows=encoder)
    slow = LoadedModel("m", "1", "r", pipeline, schema, classes, rows=None)
    rows = [{f: r[f] for f in features} for r in churn_requests(300, FEATURES)]

    assert encoder is not None
    assert fast.predict(rows) == slow.predict(rows)


def test_a_pipeline_it_cannot_reproduce_keeps_the_pandas_path() -> None:
    frame = churn(np.random.default_rng(1), 300)
    custom = make_pipeline(frame, FEATURES, LogisticRegression(max_iter=500))
    custom.steps.insert(0, ("custom", FunctionTransformer(lambda x: x)))
    custom.fit(frame[FEATURES], frame["churned"])
    with_boolean = [*FEATURES, "autopay"]
    booleans = make_pipeline(frame, with_boolean, LogisticRegression(max_iter=500))
    booleans.fit(frame[with_boolean], frame["churned"])

    assert RowEncoder.compile(custom, SCHEMA) is None
    assert RowEncoder.compile(booleans, SCHEMA | {"autopay": "boolean"}) is None
