"""Loaded model versions and the route table kept in step with the KV bucket."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
from nats.js.kv import KeyValue

from driftloop.gateway.adapters.trees import CompiledTrees
from driftloop.gateway.adapters.trees import compile_trees as compile_trees_of
from driftloop.gateway.domain.validation import NUMERIC_TYPES
from driftloop.shared.modeling import prepare
from driftloop.shared.registry import load_model
from driftloop.shared.routes import Routes, Served

logger = logging.getLogger(__name__)


FloatArray = npt.NDArray[np.float64]
PROBE = "\x00driftloop-unseen"  # a category no model was trained on


@dataclass(frozen=True)
class _Column:
    """One block of the transformed matrix: a one-hot feature or a number."""

    feature: str
    kind: Literal["onehot", "number"]
    categories: dict[str, int] = field(default_factory=dict)  # onehot: category -> position
    fill: float = float("nan")  # number: what a missing value becomes


@dataclass(frozen=True)
class RowEncoder:
    """The trainer's preprocessing (one-hot strings, numbers passed through or imputed) in
    plain Python: one-row requests skip pandas and the ColumnTransformer, the slow part of a
    small predict. Built only for the pipelines it can reproduce, and kept only when it gives
    the very matrix the pipeline's own transform gives on probe rows."""

    columns: tuple[_Column, ...]
    width: int

    def encode(self, instances: list[dict[str, Any]]) -> FloatArray:
        x = np.zeros((len(instances), self.width))
        for r, inst in enumerate(instances):
            at = 0
            for col in self.columns:
                value = inst.get(col.feature)
                if col.kind == "number":
                    x[r, at] = col.fill if value is None else float(value)
                    at += 1
                    continue
                if value is not None:
                    hit = col.categories.get(str(value))
                    if hit is not None:
                        x[r, at + hit] = 1.0
                at += len(col.categories)
        return x

    @classmethod
    def compile(cls, pipeline: Any, schema: dict[str, str]) -> RowEncoder | None:
        """The encoder of a Pipeline(ColumnTransformer, estimator) made of one-hot encoders,
        passthrough and mean/median imputers; None for anything else or any mismatch."""
        try:
            columns = _columns(pipeline, schema)
            if columns is None:
                return None
            width = sum(len(c.categories) if c.kind == "onehot" else 1 for c in columns)
            encoder = cls(tuple(columns), width)
            probes = _probe_rows(encoder, schema)
            expected = pipeline[:-1].transform(
                prepare(
                    pd.DataFrame(probes, columns=list(schema)),
                    list(schema),
                    numeric={f for f, t in schema.items() if t in NUMERIC_TYPES},
                )
            )
            got = encoder.encode(probes)
            if np.shape(expected) != got.shape or not np.array_equal(
                np.asarray(expected, dtype=float), got, equal_nan=True
            ):
                logger.warning("row encoder differs from the pipeline; not used")
                return None
            return encoder
        except Exception:  # any surprise: the pipeline's own path is always right
            logger.exception("row encoder not built")
            return None


def _columns(pipeline: Any, schema: dict[str, str]) -> list[_Column] | None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    pre, estimator = pipeline[0], pipeline[-1]
    if not isinstance(pre, ColumnTransformer) or hasattr(estimator, "feature_names_in_"):
        return None
    if getattr(pre, "sparse_output_", False) or getattr(pre, "_sklearn_output_config", {}):
        return None
    columns: list[_Column] = []
    for _name, step, names in pre.transformers_:
        if step == "drop" or len(names) == 0:
            continue
        if not all(isinstance(n, str) and n in schema for n in names):
            return None
        numeric = all(schema[n] in NUMERIC_TYPES for n in names)
        if isinstance(step, OneHotEncoder) and not numeric:
            if (
                step.handle_unknown != "ignore"
                or step.drop is not None
                or step.sparse_output
                or step.min_frequency is not None
                or step.max_categories is not None
            ):
                return None
            for n, cats in zip(names, step.categories_, strict=True):
                if not all(isinstance(c, str) for c in cats):
                    return None  # missing values seen as a category: leave it to sklearn
                columns.append(_Column(n, "onehot", {c: i for i, c in enumerate(cats)}))
        elif numeric and (
            step == "passthrough" or (isinstance(step, FunctionTransformer) and step.func is None)
        ):
            columns.extend(_Column(n, "number") for n in names)
        elif (
            numeric
            and isinstance(step, SimpleImputer)
            and step.strategy in ("mean", "median")
            and not step.add_indicator
            and step.statistics_.shape == (len(names),)
        ):
            columns.extend(
                _Column(n, "number", fill=float(v))
                for n, v in zip(names, step.statistics_, strict=True)
            )
        else:
            return None
    return columns


def _probe_rows(encoder: RowEncoder, schema: dict[str, str]) -> list[dict[str, Any]]:
    """Every category, an unseen one and a missing one of each one-hot feature; numbers
    negative, fractional, large and missing."""
    numbers = [0.0, -1.5, 3.25, 1e6, None]
    values: dict[str, list[Any]] = {}
    for col in encoder.columns:
        if col.kind == "onehot":
            values[col.feature] = [*col.categories, PROBE, None]
        else:
            values[col.feature] = [
                v if v is None or schema[col.feature] not in ("integer", "long") else int(v)
                for v in numbers
            ]
    n = max((len(v) for v in values.values()), default=0)
    return [
        {f: values[f][i % len(values[f])] if f in values else None for f in schema}
        for i in range(n)
    ]


@dataclass(frozen=True)
class LoadedModel:
    model: str
    version: str
    run_id: str
    pipeline: Any
    schema: dict[str, str]  # feature -> MLflow type name
    classes: list[Any] | None
    rows: RowEncoder | None = None  # the preprocessing without pandas, when it is exact
    argmax: bool = False  # the estimator's predict is classes_[argmax(predict_proba)]
    trees: CompiledTrees | None = None  # the estimator's trees in treelite (adapters/trees.py)

    @property
    def features(self) -> list[str]:
        return list(self.schema)

    @property
    def predictor(self) -> str:
        """What predicts: "treelite" (the compiled trees), "scikit-learn rows" (the estimator
        on rows encoded without pandas) or "scikit-learn pipeline" (the whole pipeline)."""
        if self.trees is not None:
            return "treelite"
        return "scikit-learn rows" if self.rows is not None else "scikit-learn pipeline"

    def predict(
        self, instances: list[dict[str, Any]]
    ) -> tuple[list[Any], list[list[float]] | None]:
        if self.rows is not None:
            return self._predict_rows(self.rows.encode(instances))
        frame = prepare(
            pd.DataFrame(instances, columns=self.features),
            self.features,
            numeric={f for f, t in self.schema.items() if t in NUMERIC_TYPES},
        )
        predictions = self.pipeline.predict(frame)
        probabilities = None
        if self.classes is not None and hasattr(self.pipeline, "predict_proba"):
            probabilities = self.pipeline.predict_proba(frame).round(6).tolist()
        return [_plain(p) for p in predictions], probabilities

    def _predict_rows(self, x: FloatArray) -> tuple[list[Any], list[list[float]] | None]:
        """The final estimator on the encoded rows: what Pipeline.predict computes after its
        transform; one predict_proba serves both answers where predict is its argmax."""
        estimator = self.pipeline[-1]
        if self.classes is None or not hasattr(estimator, "predict_proba"):
            return [_plain(p) for p in estimator.predict(x)], None
        # the compiled trees (only where predict is the argmax) were checked on load to give
        # scikit-learn's answers, in microseconds
        proba = (self.trees or estimator).predict_proba(x)
        if self.argmax or self.trees is not None:
            predictions = estimator.classes_[np.argmax(proba, axis=1)]
        else:
            predictions = estimator.predict(x)
        return [_plain(p) for p in predictions], proba.round(6).tolist()


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def load_version(model: str, served: Served, *, compile_trees: bool = True) -> LoadedModel:
    """Load a registered version with its signature (blocking: call in a thread). With
    `compile_trees`, a tree-ensemble classifier behind an exact row encoder is predicted by
    treelite when it gives scikit-learn's answers (adapters/trees.py)."""
    uri = f"models:/{model}/{served.version}"
    info = mlflow.models.get_model_info(uri)
    if info.signature is None or info.signature.inputs is None:
        raise ValueError(f"{uri} has no input signature")
    inputs = info.signature.inputs
    schema = {
        name: getattr(dtype, "name", str(dtype))
        for name, dtype in zip(inputs.input_names(), inputs.input_types(), strict=True)
    }
    pipeline = load_model(model, served.version)
    classes = [_plain(c) for c in pipeline.classes_] if hasattr(pipeline, "classes_") else None
    rows = RowEncoder.compile(pipeline, schema)
    argmax = rows is not None and _predicts_argmax(pipeline[-1])
    trees = None
    if rows is not None and argmax and compile_trees:
        trees = compile_trees_of(pipeline[-1], rows.width)
    logger.info(
        "model loaded",
        extra={
            "model": model,
            "version": served.version,
            "row_encoder": rows is not None,
            "compiled_trees": trees is not None,
        },
    )
    return LoadedModel(
        model, served.version, served.run_id, pipeline, schema, classes, rows, argmax, trees
    )


def _predicts_argmax(estimator: Any) -> bool:
    """Whether scikit-learn's own predict of this exact class is classes_[argmax(proba)]."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )

    exact = (HistGradientBoostingClassifier, RandomForestClassifier, ExtraTreesClassifier)
    return type(estimator) in exact and getattr(estimator, "n_outputs_", 1) == 1


@dataclass
class Serving:
    """What one model serves right now; replaced whole, never mutated."""

    routes: Routes
    champion: LoadedModel | None
    canary: LoadedModel | None


@dataclass
class RouteTable:
    """What each model serves, kept in step with the routes bucket. The shadow is not loaded
    here (a worker process runs it: adapters/shadow.py): `on_shadow` is told of every model's
    shadow (None: none) as routes are applied or deleted."""

    serving: dict[str, Serving] = field(default_factory=dict)
    specs: set[str] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    on_shadow: Callable[[str, Served | None], None] | None = None
    compile_trees: bool = True  # GatewaySettings.compiled_trees
    _cache: dict[tuple[str, str], LoadedModel] = field(default_factory=dict)

    def known(self, model: str) -> bool:
        return model in self.serving or model in self.specs

    async def _load(self, model: str, served: Served | None) -> LoadedModel | None:
        if served is None:
            return None
        key = (model, served.version)
        if key not in self._cache:
            self._cache[key] = await asyncio.to_thread(
                load_version, model, served, compile_trees=self.compile_trees
            )
            gc.freeze()  # the model is long-lived: see freeze_heap in app.py
        return self._cache[key]

    async def apply(self, routes: Routes) -> None:
        """Load what the routes name, then swap in one assignment: a request in flight keeps
        the Serving it started with."""
        current = self.serving.get(routes.model)
        if current is not None and current.routes.revision > routes.revision:
            return
        champion = await self._load(routes.model, routes.champion)
        canary = await self._load(routes.model, routes.canary)
        self.serving[routes.model] = Serving(routes, champion, canary)
        if self.on_shadow is not None:
            self.on_shadow(routes.model, routes.shadow)
        keep = {(routes.model, m.version) for m in (champion, canary) if m}
        for key in [k for k in self._cache if k[0] == routes.model and k not in keep]:
            del self._cache[key]
        logger.info(
            "routes applied",
            extra={
                "model": routes.model,
                "revision": routes.revision,
                "champion": champion.version if champion else None,
                "canary": canary.version if canary else None,
                "shadow": routes.shadow.version if routes.shadow else None,
            },
        )

    async def watch_routes(self, kv: KeyValue, initial: Collection[str]) -> None:
        """Apply every change of the routes bucket; ready once each of `initial` (the keys
        the bucket held before the watch began: shared/buckets.py) is applied. The watcher's
        own "initial values delivered" marker can come before them (nats-io/nats.py#842)."""
        waiting = set(initial)
        if not waiting:
            self.ready.set()
        watcher = await kv.watchall()
        async for entry in watcher:
            if entry is None:
                continue
            if entry.value is None or entry.operation in ("DEL", "PURGE"):
                self.serving.pop(entry.key, None)
                if self.on_shadow is not None:
                    self.on_shadow(entry.key, None)
            else:
                try:
                    await self.apply(Routes.model_validate_json(entry.value))
                except Exception:
                    logger.exception("cannot apply routes", extra={"model": entry.key})
            if waiting:
                waiting.discard(entry.key)
                if not waiting:
                    self.ready.set()

    async def watch_specs(self, kv: KeyValue) -> None:
        watcher = await kv.watchall()
        async for entry in watcher:
            if entry is None:
                continue
            if entry.value is None or entry.operation in ("DEL", "PURGE"):
                self.specs.discard(entry.key)
            else:
                self.specs.add(entry.key)
