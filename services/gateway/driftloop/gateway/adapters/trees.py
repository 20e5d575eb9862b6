"""Tree-ensemble classifiers predicted by treelite's GTIL rather than scikit-learn's predict.

scikit-learn predicts a forest tree by tree in Python (about 40-80 microseconds a tree, so
2-4 ms for 50 trees, whether one row or 32); treelite's GTIL walks every tree in one C++ call:
tens of microseconds for a row, a fraction of a millisecond for a batch (docs/benchmarks.md,
"Compiled tree ensembles"). treelite (Apache-2.0, the importer behind RAPIDS FIL) reads the
fitted scikit-learn object directly; ONNX Runtime was measured and not chosen: skl2onnx did not
convert HistGradientBoosting, and its forests ignored missing values and compared in float32,
so it disagreed with scikit-learn on thousands of rows in 20,000.

A compiled ensemble serves only after it gave scikit-learn's own answers on probe rows built
from its split thresholds (domain/probes.py); anything else (an estimator treelite cannot read,
categorical splits, a disagreement, an exception) leaves scikit-learn's predict in place, with
the reason in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import numpy as np
import numpy.typing as npt

from driftloop.gateway.domain.probes import PROBE_ROWS, disagreement, probe_matrix

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
PROBE_SEED = 20261207  # probe rows are the same on every load of the same version


@dataclass(frozen=True)
class CompiledTrees:
    """A fitted classifier's trees in treelite's form; `predict_proba` answers what the
    estimator's own predict_proba answers (checked on load)."""

    model: Any  # treelite.Model
    n_classes: int
    float32: bool  # scikit-learn's `tree_` compares the row cast to float32
    missing: bool = True  # the estimator accepts missing values (NaN) in its rows

    def predict_proba(self, x: FloatArray) -> FloatArray:
        if not self.missing and np.isnan(x).any():  # refused as scikit-learn refuses it
            raise ValueError(f"Input X contains NaN; {type(self).__name__} does not accept it")
        rows = x.astype(np.float32) if self.float32 else x
        out = np.asarray(_gtil()(self.model, rows), dtype=np.float64)
        proba = out.reshape(len(x), -1)
        if proba.shape[1] == 1 and self.n_classes == 2:  # binary boosting: P(second class)
            proba = np.column_stack([1.0 - proba[:, 0], proba[:, 0]])
        return proba


@cache
def _gtil() -> Callable[[Any, npt.NDArray[Any]], Any]:
    """GTIL's predict on one thread. `treelite.gtil.predict` parses a new JSON config on every
    call (more than half of a one-row call's time: 0.103 ms with it, 0.039 without); with the
    pinned treelite, its `_predict_impl` takes one parsed once. Another treelite falls back to
    the public call."""
    from treelite import gtil

    try:
        from treelite.gtil.gtil import GTILConfig, _predict_impl

        config = GTILConfig(predict_type="default", nthread=1)
    except (ImportError, TypeError):  # pragma: no cover - another treelite version
        return partial(gtil.predict, nthread=1)
    return partial(_predict_impl, config=config)


def compile_trees(estimator: Any, width: int) -> CompiledTrees | None:
    """The estimator's trees in treelite's form when they give its own answers on probe rows;
    None (logged with the reason) otherwise. `width` is the number of encoded columns."""
    reason = _unsupported(estimator)
    if reason is not None:
        logger.info("trees not compiled", extra={"reason": reason})
        return None
    try:
        import treelite.sklearn

        compiled = CompiledTrees(
            treelite.sklearn.import_model(estimator),
            n_classes=len(estimator.classes_),
            float32=hasattr(estimator, "estimators_"),
            missing=_accepts_missing(estimator),
        )
        probes = probe_matrix(
            _thresholds(estimator, width),
            rows=PROBE_ROWS,
            rng=np.random.default_rng(PROBE_SEED),
            missing=compiled.missing,
        )
        proba = compiled.predict_proba(probes)
        reason = disagreement(
            list(estimator.predict(probes)),
            estimator.predict_proba(probes),
            list(estimator.classes_[np.argmax(proba, axis=1)]),
            proba,
        )
    except Exception as exc:  # any surprise: scikit-learn's own predict is always right
        logger.warning("trees not compiled", extra={"reason": f"{type(exc).__name__}: {exc}"})
        return None
    if reason is not None:
        logger.warning("trees not compiled: not scikit-learn's answers", extra={"reason": reason})
        return None
    return compiled


def _unsupported(estimator: Any) -> str | None:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )

    supported = (RandomForestClassifier, ExtraTreesClassifier, HistGradientBoostingClassifier)
    if type(estimator) not in supported:
        return f"{type(estimator).__name__} is not a tree ensemble treelite is used for"
    if getattr(estimator, "n_outputs_", 1) != 1:
        return "more than one output"
    categorical = getattr(estimator, "is_categorical_", None)
    if categorical is not None and np.any(categorical):
        return "categorical splits"
    return None


def _accepts_missing(estimator: Any) -> bool:
    """Whether scikit-learn predicts rows with missing values for this fitted estimator (its
    `allow_nan` tag) rather than refusing them."""
    from sklearn.utils import get_tags

    try:
        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:
        return False


def _thresholds(estimator: Any, width: int) -> list[FloatArray]:
    """Every split threshold of the ensemble, per encoded column."""
    found: list[list[FloatArray]] = [[] for _ in range(width)]
    if hasattr(estimator, "estimators_"):  # forests: scikit-learn's Tree objects
        for tree in estimator.estimators_:
            split = tree.tree_.feature >= 0
            _collect(found, tree.tree_.feature[split], tree.tree_.threshold[split])
    else:  # HistGradientBoosting: its predictors' node arrays
        for iteration in estimator._predictors:
            for predictor in iteration:
                nodes = predictor.nodes[predictor.nodes["is_leaf"] == 0]
                _collect(found, nodes["feature_idx"], nodes["num_threshold"])
    return [np.concatenate(f) if f else np.empty(0) for f in found]


def _collect(found: list[list[FloatArray]], features: Any, thresholds: Any) -> None:
    for j in np.unique(features):
        found[int(j)].append(np.asarray(thresholds[features == j], dtype=np.float64))
