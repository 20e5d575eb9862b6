"""Which estimator classes a recipe may name: classes with fit and predict from an allow-list
of modules, so a spec cannot make the trainer call anything else."""

from __future__ import annotations

import pytest

from driftloop.shared.estimators import (
    ESTIMATOR_MODULES,
    EstimatorError,
    estimator_class,
    estimator_name_problem,
)

# Every estimator the README, the demo, the benches and the tests name.
NAMED = [
    "sklearn.ensemble.HistGradientBoostingClassifier",
    "sklearn.ensemble.HistGradientBoostingRegressor",
    "sklearn.ensemble.RandomForestRegressor",
    "sklearn.linear_model.LogisticRegression",
    "sklearn.linear_model.LinearRegression",
    "sklearn.linear_model.Ridge",
    "sklearn.neighbors.KNeighborsClassifier",
]


@pytest.mark.parametrize("dotted", NAMED)
def test_the_estimators_in_use_are_allowed(dotted: str) -> None:
    cls = estimator_class(dotted)

    assert cls.__name__ == dotted.rpartition(".")[2]
    assert estimator_name_problem(dotted) is None


@pytest.mark.parametrize("module", ESTIMATOR_MODULES)
def test_every_allowed_module_offers_an_estimator(module: str) -> None:
    imported = pytest.importorskip(module)

    usable = []
    for name in getattr(imported, "__all__", None) or dir(imported):
        try:
            usable.append(estimator_class(f"{module}.{name}"))
        except EstimatorError:
            continue

    assert usable, module


@pytest.mark.parametrize(
    ("dotted", "says"),
    [
        ("sklearn.datasets.clear_data_home", "not an estimator class of an allowed module"),
        ("sklearn.linear_model.enet_path", "not an estimator class of an allowed module"),
        ("sklearn.linear_model._base.LinearModel", "not an estimator class of an allowed module"),
        ("sklearn.neighbors.KDTree", "is not a scikit-learn estimator"),
        ("sklearn.ensemble.BaseEnsemble", "is not a scikit-learn estimator"),
        ("sklearn.linear_model.NoSuchModel", "cannot import"),
    ],
    ids=["function", "function-of-allowed-module", "private-module", "not-an-estimator",
         "abstract", "unknown"],
)  # fmt: skip
def test_anything_else_is_refused_naming_recipe_estimator(dotted: str, says: str) -> None:
    with pytest.raises(EstimatorError) as refused:
        estimator_class(dotted)

    assert str(refused.value).startswith(f"recipe.estimator: {dotted}")
    assert says in str(refused.value)
