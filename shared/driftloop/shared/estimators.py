"""Which estimator a model spec's recipe may name (`recipe.estimator`): a scikit-learn
estimator class (a BaseEstimator with `fit` and `predict`) of one of ESTIMATOR_MODULES.

The trainer calls the named class with the recipe's params, so a name is the power to call
something: a prefix check let a spec call any `sklearn.*` attribute (such as
`sklearn.datasets.clear_data_home`, which deletes a folder). The name is checked when a spec
is parsed (estimator_name_problem: no import); `driftloop apply` and the trainer also import
the class and check what it is (estimator_class)."""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

ESTIMATOR_MODULES: tuple[str, ...] = (
    "sklearn.discriminant_analysis",
    "sklearn.dummy",
    "sklearn.ensemble",
    "sklearn.gaussian_process",
    "sklearn.kernel_ridge",
    "sklearn.linear_model",
    "sklearn.naive_bayes",
    "sklearn.neighbors",
    "sklearn.neural_network",
    "sklearn.svm",
    "sklearn.tree",
)
"""The modules a recipe's estimator class may come from (README, "The model spec")."""

_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*$")


class EstimatorError(ValueError):
    """A recipe names no allowed estimator class; the message starts `recipe.estimator:`."""


def estimator_name_problem(dotted: str) -> str | None:
    """Why `dotted` cannot name an estimator class of an allowed module, judged by the name
    alone (None: it can)."""
    module, _, name = dotted.rpartition(".")
    if module in ESTIMATOR_MODULES and _CLASS_NAME.match(name):
        return None
    return (
        f"{dotted} is not an estimator class of an allowed module: name a class of one of "
        f"{', '.join(ESTIMATOR_MODULES)}"
    )


def estimator_class(dotted: str) -> type[Any]:
    """The class `dotted` names, once it is known to be an allowed estimator class; raises
    EstimatorError saying why not. Imports the module, calls nothing."""
    problem = estimator_name_problem(dotted)
    if problem:
        raise EstimatorError(f"recipe.estimator: {problem}")
    module_name, _, name = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EstimatorError(f"recipe.estimator: {dotted}: cannot import {module_name}") from exc
    public = getattr(module, "__all__", None)
    found = getattr(module, name, None) if public is None or name in public else None
    if found is None:
        raise EstimatorError(f"recipe.estimator: {dotted}: cannot import {name} from {module_name}")
    from sklearn.base import BaseEstimator  # here: parsing a spec needs no scikit-learn

    if not (
        inspect.isclass(found)
        and issubclass(found, BaseEstimator)
        and not inspect.isabstract(found)
        and callable(getattr(found, "fit", None))
        and callable(getattr(found, "predict", None))
    ):
        raise EstimatorError(
            f"recipe.estimator: {dotted} is not a scikit-learn estimator class "
            "(a BaseEstimator with fit and predict)"
        )
    return found
