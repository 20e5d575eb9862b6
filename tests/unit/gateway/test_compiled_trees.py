"""Tree ensembles predicted by treelite answer exactly what scikit-learn answers, and are not
used where they would not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import treelite.sklearn
from helpers import churn, churn_requests
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression

from driftloop.gateway.adapters import trees as trees_module
from driftloop.gateway.adapters.models import LoadedModel, RowEncoder
from driftloop.gateway.adapters.trees import CompiledTrees, compile_trees
from driftloop.trainer.domain.training import make_pipeline

FEATURES = ["tenure", "monthly_charges", "plan"]
SCHEMA = {"tenure": "double", "monthly_charges": "double", "plan": "string"}


def fitted(estimator: Any, *, classes: int = 2) -> Any:
    frame = churn(np.random.default_rng(1), 1500)
    frame.loc[frame.index % 9 == 0, "tenure"] = np.nan  # the trees learn where missing goes
    target = frame["churned"]
    if classes == 3:
        target = np.digitize(frame["monthly_charges"], [50.0, 70.0]).astype(str)
    return make_pipeline(frame, FEATURES, estimator).fit(frame[FEATURES], target)


def width(pipeline: Any) -> int:
    encoder = RowEncoder.compile(pipeline, SCHEMA)
    assert encoder is not None
    return encoder.width


def served(pipeline: Any, *, compiled: bool) -> LoadedModel:
    encoder = RowEncoder.compile(pipeline, SCHEMA)
    assert encoder is not None
    trees = compile_trees(pipeline[-1], encoder.width) if compiled else None
    if compiled:
        assert trees is not None
    classes = list(pipeline.classes_)
    return LoadedModel("m", "1", "r", pipeline, SCHEMA, classes, encoder, True, trees)


@pytest.mark.parametrize(
    ("estimator", "classes"),
    [
        (RandomForestClassifier(n_estimators=30, min_samples_leaf=3, random_state=0), 2),
        (RandomForestClassifier(n_estimators=20, random_state=0), 3),
        (ExtraTreesClassifier(n_estimators=20, random_state=0), 2),
        (HistGradientBoostingClassifier(max_iter=40, random_state=0), 2),
        (HistGradientBoostingClassifier(max_iter=20, random_state=0), 3),
    ],
    ids=["forest", "forest-3-classes", "extra-trees", "hgb", "hgb-3-classes"],
)
def test_compiled_trees_answer_what_scikit_learn_answers(estimator: Any, classes: int) -> None:
    pipeline = fitted(estimator, classes=classes)
    compiled = served(pipeline, compiled=True)
    rows = churn_requests(2000, FEATURES)

    assert compiled.predictor == "treelite"
    labels, proba = compiled.predict(rows)
    expected_labels, expected_proba = served(pipeline, compiled=False).predict(rows)
    assert labels == expected_labels
    assert proba is not None
    assert expected_proba is not None
    assert np.max(np.abs(np.array(proba) - np.array(expected_proba))) <= 1e-6
    # and scikit-learn's own pipeline, from a DataFrame, agrees with both
    assert labels == [str(x) if classes == 3 else x for x in pipeline.predict(frame_of(rows))]


def frame_of(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=FEATURES).astype(
        {"tenure": float, "monthly_charges": float, "plan": object}
    )


def test_a_forest_compares_the_row_cast_to_float32_as_scikit_learn_does() -> None:
    """scikit-learn's forest compares the row cast to float32 with a float64 threshold, so a
    value next to a threshold can go the other way than in float64 (just above it yet rounded
    onto or below it, or just below it yet rounded above); the compiled forest goes
    scikit-learn's way."""
    x = np.random.default_rng(0).integers(-16, 16, size=(400, 2)) / 8  # thresholds: k/16
    y = (x[:, 0] > 0.1).astype(int)
    stump = RandomForestClassifier(
        n_estimators=1, max_depth=1, bootstrap=False, max_features=None, random_state=0
    ).fit(x, y)
    t = stump.estimators_[0].tree_.threshold[0]
    row = np.array([[np.nextafter(t, np.inf), 0.0], [np.nextafter(t, -np.inf), 0.0]])
    expected = stump.predict_proba(row)

    compiled = compile_trees(stump, 2)
    assert compiled is not None
    assert compiled.float32
    np.testing.assert_array_equal(compiled.predict_proba(row), expected)
    # what the probes guard against: the same trees compared in float64 differ on that row
    in_float64 = CompiledTrees(compiled.model, n_classes=2, float32=False)
    assert not np.array_equal(in_float64.predict_proba(row), expected)


def test_trees_that_disagree_with_scikit_learn_are_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = fitted(RandomForestClassifier(n_estimators=10, random_state=0))
    other = fitted(RandomForestClassifier(n_estimators=10, random_state=1))
    real = treelite.sklearn.import_model
    monkeypatch.setattr(treelite.sklearn, "import_model", lambda _est: real(other[-1]))
    encoder = RowEncoder.compile(pipeline, SCHEMA)
    assert encoder is not None

    assert compile_trees(pipeline[-1], encoder.width) is None


def test_estimators_treelite_is_not_used_for_keep_scikit_learn() -> None:
    logistic = fitted(LogisticRegression(max_iter=500))
    x = np.random.default_rng(0).normal(size=(300, 2))
    x[:, 1] = np.random.default_rng(1).integers(0, 4, 300)
    categorical = HistGradientBoostingClassifier(max_iter=5, categorical_features=[1])
    categorical.fit(x, (x[:, 0] > 0).astype(int))

    assert compile_trees(logistic[-1], width(logistic)) is None
    assert compile_trees(categorical, 2) is None
    assert served(logistic, compiled=False).predictor == "scikit-learn rows"


def test_an_import_that_fails_keeps_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = fitted(HistGradientBoostingClassifier(max_iter=5, random_state=0))

    def refuse(_estimator: Any) -> Any:
        raise NotImplementedError("not this one")

    assert compile_trees(pipeline[-1], width(pipeline)) is not None
    monkeypatch.setattr(treelite.sklearn, "import_model", refuse)
    assert compile_trees(pipeline[-1], width(pipeline)) is None


def test_missing_values_are_refused_where_scikit_learn_refuses_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An estimator that does not accept missing values is checked on complete rows only, and
    its compiled trees refuse a row with one, as scikit-learn's predict does (the request gets
    its error, not an answer scikit-learn would not give)."""
    pipeline = fitted(RandomForestClassifier(n_estimators=10, random_state=0))
    monkeypatch.setattr(trees_module, "_accepts_missing", lambda _estimator: False)
    encoder = RowEncoder.compile(pipeline, SCHEMA)
    assert encoder is not None

    compiled = compile_trees(pipeline[-1], encoder.width)

    assert compiled is not None
    assert not compiled.missing
    complete = encoder.encode([{"tenure": 3.0, "monthly_charges": 50.0, "plan": "pro"}])
    np.testing.assert_array_equal(
        compiled.predict_proba(complete), pipeline[-1].predict_proba(complete)
    )
    with pytest.raises(ValueError, match="NaN"):
        compiled.predict_proba(encoder.encode([{"tenure": None, "monthly_charges": 50.0}]))


def test_the_ensembles_used_here_accept_missing_values() -> None:
    for estimator in (
        RandomForestClassifier(n_estimators=3),
        ExtraTreesClassifier(n_estimators=3),
        HistGradientBoostingClassifier(max_iter=3),
    ):
        pipeline = fitted(estimator)
        compiled = compile_trees(pipeline[-1], width(pipeline))
        assert compiled is not None
        assert compiled.missing
