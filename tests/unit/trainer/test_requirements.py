"""The pip requirements a version is logged with: given, pinned to what is installed, with the
recipe's own package (MLflow's inference would load the model again in a subprocess)."""

from __future__ import annotations

import importlib.metadata

import cloudpickle
import numpy
import pandas
import scipy
import sklearn

from driftloop.trainer.adapters.registry import pip_requirements

BASE = {
    f"scikit-learn=={sklearn.__version__}",
    f"cloudpickle=={cloudpickle.__version__}",
    f"numpy=={numpy.__version__}",
    f"pandas=={pandas.__version__}",
    f"scipy=={scipy.__version__}",
}


def test_a_scikit_learn_recipe_needs_its_stack_pinned_to_what_is_installed() -> None:
    assert set(pip_requirements("sklearn.ensemble.HistGradientBoostingClassifier")) == BASE


def test_a_recipe_from_another_package_adds_that_package() -> None:
    found = set(pip_requirements("pydantic.BaseModel"))  # any installed package will do

    assert found == BASE | {f"pydantic=={importlib.metadata.version('pydantic')}"}


def test_an_unknown_module_adds_nothing_it_cannot_pin() -> None:
    assert set(pip_requirements("no_such_package.Estimator")) == BASE
