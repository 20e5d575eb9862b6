"""Loaded model versions and the route table kept in step with the KV bucket."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import mlflow
import pandas as pd
from nats.js.kv import KeyValue

from driftloop.gateway.domain.validation import NUMERIC_TYPES
from driftloop.shared.modeling import prepare
from driftloop.shared.registry import load_model
from driftloop.shared.routes import Routes, Served

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: str
    version: str
    run_id: str
    pipeline: Any
    schema: dict[str, str]  # feature -> MLflow type name
    classes: list[Any] | None

    @property
    def features(self) -> list[str]:
        return list(self.schema)

    def predict(
        self, instances: list[dict[str, Any]]
    ) -> tuple[list[Any], list[list[float]] | None]:
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


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def load_version(model: str, served: Served) -> LoadedModel:
    """Load a registered version with its signature (blocking: call in a thread)."""
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
    return LoadedModel(model, served.version, served.run_id, pipeline, schema, classes)


@dataclass
class Serving:
    """What one model serves right now; replaced whole, never mutated."""

    routes: Routes
    champion: LoadedModel | None
    canary: LoadedModel | None
    shadow: LoadedModel | None = None


@dataclass
class RouteTable:
    serving: dict[str, Serving] = field(default_factory=dict)
    specs: set[str] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _cache: dict[tuple[str, str], LoadedModel] = field(default_factory=dict)

    def known(self, model: str) -> bool:
        return model in self.serving or model in self.specs

    async def _load(self, model: str, served: Served | None) -> LoadedModel | None:
        if served is None:
            return None
        key = (model, served.version)
        if key not in self._cache:
            self._cache[key] = await asyncio.to_thread(load_version, model, served)
        return self._cache[key]

    async def apply(self, routes: Routes) -> None:
        """Load what the routes name, then swap in one assignment: a request in flight keeps
        the Serving it started with."""
        current = self.serving.get(routes.model)
        if current is not None and current.routes.revision > routes.revision:
            return
        champion = await self._load(routes.model, routes.champion)
        canary = await self._load(routes.model, routes.canary)
        shadow = await self._load(routes.model, routes.shadow)
        self.serving[routes.model] = Serving(routes, champion, canary, shadow)
        keep = {(routes.model, m.version) for m in (champion, canary, shadow) if m}
        for key in [k for k in self._cache if k[0] == routes.model and k not in keep]:
            del self._cache[key]
        logger.info(
            "routes applied",
            extra={
                "model": routes.model,
                "revision": routes.revision,
                "champion": champion.version if champion else None,
                "canary": canary.version if canary else None,
                "shadow": shadow.version if shadow else None,
            },
        )

    async def watch_routes(self, kv: KeyValue) -> None:
        watcher = await kv.watchall()
        async for entry in watcher:
            if entry is None:  # the initial values are all delivered
                self.ready.set()
                continue
            if entry.value is None or entry.operation in ("DEL", "PURGE"):
                self.serving.pop(entry.key, None)
                continue
            try:
                await self.apply(Routes.model_validate_json(entry.value))
            except Exception:
                logger.exception("cannot apply routes", extra={"model": entry.key})

    async def watch_specs(self, kv: KeyValue) -> None:
        watcher = await kv.watchall()
        async for entry in watcher:
            if entry is None:
                continue
            if entry.value is None or entry.operation in ("DEL", "PURGE"):
                self.specs.discard(entry.key)
            else:
                self.specs.add(entry.key)
