"""Fitting the recipe: the holdout comes from recent rows only, the preprocessing fits the
feature types, and a bad recipe is an error naming the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from driftloop.shared.modeling import prepare
from driftloop.shared.spec import ModelSpec, Recipe, SpecError, TrainerSpec, parse_spec
from driftloop.trainer.domain.training import RecipeError, fit, make_estimator, make_pipeline

SPEC = ModelSpec(
    model="churn",
    target="churned",
    features=["tenure", "plan", "autopay"],
    recipe=Recipe(estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 200}),
    trainer=TrainerSpec(max_rows=1000, min_rows=10, holdout=0.25),
)


def customers(n: int, *, source: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.gamma(2.0, 12.0, n).round(1)
    plan = rng.choice(["basic", "pro", "max"], n)
    churned = (rng.random(n) < 1 / (1 + np.exp(0.1 * (tenure - 24)))).astype(int)
    return pd.DataFrame(
        {
            "tenure": tenure,
            "plan": plan,
            "autopay": rng.random(n) < 0.5,
            "churned": churned,
            "source": source,
            "row": [f"{source}-{i}" for i in range(n)],
        }
    )


def test_holdout_is_drawn_only_from_the_recent_rows() -> None:
    recent = customers(200, source="recent", seed=1)
    frame = pd.concat([recent, customers(300, source="reference", seed=2)], ignore_index=True)

    fitted = fit(frame, SPEC.features or [], SPEC, recent_rows=200)

    assert set(fitted.holdout["source"]) == {"recent"}
    assert len(fitted.holdout) == 50
    assert set(fitted.holdout["row"]) <= set(recent["row"])
    assert set(fitted.train["source"]) == {"recent", "reference"}
    assert (fitted.train["source"] == "reference").sum() == 300
    assert set(fitted.train["row"]).isdisjoint(fitted.holdout["row"])
    assert len(fitted.train) + len(fitted.holdout) == 500


def test_classification_metrics_are_scored_on_the_holdout() -> None:
    frame = customers(400, source="recent", seed=3)

    fitted = fit(frame, SPEC.features or [], SPEC)

    assert {"accuracy", "f1", "precision", "recall", "roc_auc"} <= fitted.metrics.keys()
    predicted = fitted.pipeline.predict(prepare(fitted.holdout, SPEC.features or []))
    accuracy = float((predicted == fitted.holdout["churned"].to_numpy()).mean())
    assert fitted.metrics["accuracy"] == pytest.approx(accuracy)


def test_regression_returns_rmse_mae_and_r2() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 1.0, 300)
    frame = pd.DataFrame(
        {"x": x, "kind": rng.choice(["a", "b"], 300), "y": 3.0 * x + rng.normal(0, 0.1, 300)}
    )
    spec = ModelSpec(
        model="load",
        task="regression",
        target="y",
        features=["x", "kind"],
        recipe=Recipe(estimator="sklearn.linear_model.LinearRegression"),
        trainer=TrainerSpec(holdout=0.2, min_rows=10),
    )

    fitted = fit(frame, ["x", "kind"], spec)

    assert set(fitted.metrics) == {"rmse", "mae", "r2"}
    y_true = fitted.holdout["y"]
    y_pred = fitted.pipeline.predict(prepare(fitted.holdout, ["x", "kind"]))
    assert fitted.metrics["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y_true, y_pred)))
    assert fitted.metrics["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred))
    assert fitted.metrics["r2"] == pytest.approx(r2_score(y_true, y_pred))
    assert fitted.metrics["r2"] > 0.95


@pytest.mark.parametrize(
    ("recipe", "field"),
    [
        (Recipe(estimator="sklearn.linear_model.NoSuchModel"), "recipe.estimator"),
        (  # past spec validation (a spec stored by an older version): refused here too
            Recipe.model_construct(estimator="sklearn.no_such_module.Model", params={}),
            "recipe.estimator",
        ),
        (
            Recipe(estimator="sklearn.linear_model.LogisticRegression", params={"bogus": 1}),
            "recipe.params",
        ),
    ],
    ids=["unknown-class", "unknown-module", "unknown-param"],
)
def test_a_bad_recipe_raises_recipe_error_naming_the_field(recipe: Recipe, field: str) -> None:
    spec = SPEC.model_copy(update={"recipe": recipe})
    frame = customers(100, source="recent", seed=5)

    with pytest.raises(RecipeError, match=field):
        fit(frame, SPEC.features or [], spec)


@pytest.mark.parametrize(
    "dotted",
    [
        "sklearn.datasets.clear_data_home",
        "sklearn.linear_model.enet_path",
        "sklearn.neighbors.KDTree",
        "sklearn.ensemble.BaseEnsemble",
        "builtins.print",
    ],
    ids=["function-deleting-a-folder", "function", "not-an-estimator", "abstract", "builtins"],
)
def test_make_estimator_calls_nothing_but_an_allowed_estimator_class(
    tmp_path: Path, dotted: str
) -> None:
    data_home = tmp_path / "data_home"
    (data_home / "kept").mkdir(parents=True)

    with pytest.raises(RecipeError, match=r"recipe\.estimator"):
        make_estimator(dotted, {"data_home": str(data_home)})

    assert (data_home / "kept").is_dir()


def test_pipeline_one_hot_encodes_strings_and_bools_and_passes_numbers_through() -> None:
    frame = customers(60, source="recent", seed=6)[["tenure", "plan", "autopay"]]
    pipeline = make_pipeline(frame, ["tenure", "plan", "autopay"], LogisticRegression())

    pre = pipeline.named_steps["preprocess"].fit(frame)
    out = pre.transform(frame)

    assert list(pre.get_feature_names_out()) == [
        "plan_basic",
        "plan_max",
        "plan_pro",
        "autopay_False",
        "autopay_True",
        "tenure",
    ]
    assert set(np.unique(out[:, :5])) == {0.0, 1.0}
    assert (out[:, :3].sum(axis=1) == 1).all()
    assert (out[:, 3:5].sum(axis=1) == 1).all()
    assert out[:, 5].tolist() == frame["tenure"].tolist()


def test_pipeline_ignores_unseen_categories_at_prediction_time() -> None:
    frame = customers(80, source="recent", seed=7)
    features = ["tenure", "plan", "autopay"]
    pipeline = make_pipeline(frame, features, LogisticRegression(max_iter=200))
    pipeline.fit(frame[features], frame["churned"])

    unseen = frame[features].head(3).assign(plan="enterprise")

    assert len(pipeline.predict(unseen)) == 3


# the trainer's spec fields -----------------------------------------------------------------


def test_the_trainer_spec_defaults_to_rows_only_deduplicated_with_a_ten_minute_limit() -> None:
    trainer = parse_spec("model: churn\ntarget: churned\n").trainer

    assert trainer.window is None
    assert trainer.deduplicate is True
    assert trainer.time_limit == timedelta(minutes=10)


def test_window_and_time_limit_are_durations_that_read_back_from_json() -> None:
    spec = parse_spec("model: churn\ntarget: churned\ntrainer: {window: 7d, time_limit: 90s}\n")

    again = parse_spec(spec.to_json())

    assert (again.trainer.window, again.trainer.time_limit) == (
        timedelta(days=7),
        timedelta(seconds=90),
    )


@pytest.mark.parametrize("field", ["window", "time_limit"])
def test_a_zero_duration_is_refused_naming_the_field(field: str) -> None:
    with pytest.raises(SpecError, match=f"trainer.{field}"):
        parse_spec(f"model: churn\ntarget: churned\ntrainer: {{{field}: 0s}}\n")


def test_refit_scores_the_holdout_first_then_learns_from_every_row() -> None:
    frame = customers(400, source="file", seed=7)

    split = fit(frame, SPEC.features or [], SPEC)
    refitted = fit(frame, SPEC.features or [], SPEC, refit=True)

    assert refitted.refit
    assert not split.refit
    assert refitted.metrics == split.metrics  # the honest estimate, taken before the refit
    assert len(split.train) == 300
    assert len(refitted.train) == 400
    assert set(refitted.train["row"]) == set(frame["row"])
    assert set(refitted.holdout["row"]) == set(split.holdout["row"])
    x = prepare(frame, SPEC.features or [])
    assert not np.array_equal(refitted.pipeline.predict_proba(x), split.pipeline.predict_proba(x))
