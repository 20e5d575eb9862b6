"""A gateway serving a registered champion of `churn` over real HTTP, without the trainer:
a version registered as the trainer registers one (signature, artifact digest), routed through
the KV buckets as the deployer routes it (shared by the gateway's record and OIP tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import mlflow
import numpy as np
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from helpers import churn, eventually
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from driftloop.cli.supervisor import free_port
from driftloop.gateway.app import create_app
from driftloop.gateway.config import GatewaySettings
from driftloop.monitor.adapters.store import samples
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.db import make_engine
from driftloop.shared.events import ROUTES_BUCKET, SPECS_BUCKET
from driftloop.shared.modeling import prepare
from driftloop.shared.registry import configure_mlflow, experiment_id, record_artifact_digest
from driftloop.shared.routes import Routes, Served
from driftloop.shared.spec import parse_spec
from driftloop.trainer.domain.training import make_pipeline

FEATURES = ["tenure", "monthly_charges", "plan", "autopay"]
ROW = {"tenure": 3.0, "monthly_charges": 70.0, "plan": "basic", "autopay": True}
SPEC = "model: churn\ntarget: churned\nfeatures: [tenure, monthly_charges, plan, autopay]\n"


def register(
    settings: Settings, estimator: Any = None, hook: Callable[[Any], Any] | None = None
) -> Served:
    """A version of `churn` as the trainer registers one (signature, artifact digest): a
    LogisticRegression unless `estimator` is given, its predict first passing the rows through
    `hook` when one is (a slow or failing shadow)."""
    frame = churn(np.random.default_rng(3), 400)
    client = configure_mlflow(settings)
    chosen = LogisticRegression(max_iter=500) if estimator is None else estimator
    model: Any = make_pipeline(frame, FEATURES, chosen)
    if hook is not None:
        model = Pipeline([("hook", FunctionTransformer(hook)), ("model", model)])
    x = prepare(frame, FEATURES)
    model.fit(x, frame["churned"])
    with mlflow.start_run(experiment_id=experiment_id(client, settings, "churn")) as run:
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(frame[FEATURES].head(20), model.predict(x.head(20))),
            registered_model_name="churn",
            serialization_format="cloudpickle",
        )
    version = str(info.registered_model_version)
    record_artifact_digest(client, "churn", version)
    return Served(version=version, run_id=str(run.info.run_id))


async def serve_champion(settings: Settings, bus: Bus) -> Served:
    """Register a champion and route `churn` to it (the spec applied too)."""
    champion = await asyncio.to_thread(register, settings)
    await (await bus.kv(SPECS_BUCKET)).put("churn", parse_spec(SPEC).to_json())
    routes = Routes(model="churn", champion=champion, revision=1)
    await (await bus.kv(ROUTES_BUCKET)).put("churn", routes.to_json())
    return champion


@dataclass
class Gateway:
    client: httpx.AsyncClient
    app: FastAPI
    server: uvicorn.Server

    @property
    def records(self) -> Any:
        """The gateway's RecordPublisher."""
        return self.app.state.records

    async def counter(self, name: str, **labels: str) -> float:
        text = (await self.client.get("/metrics")).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items())
        )


async def start_gateway(settings: Settings, running: Any, **update: Any) -> Gateway:
    """A gateway over real HTTP on a free port, once its champion answers."""
    port = free_port()
    own = GatewaySettings(**settings.model_dump() | {"gateway_port": port} | update)
    app = create_app(own)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    app.state.occupancy.watch(server)  # as main.serve does
    running(server.serve())
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60)

    async def answers() -> bool:
        try:
            answer = await client.post("/v1/models/churn/predict", json={"instances": [ROW]})
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    await eventually(answers, timeout=60)
    return Gateway(client, app, server)


def monitor_samples(settings: Settings) -> dict[str, Any]:
    """The monitor's stored samples of `churn`: id -> (prediction, label)."""
    engine = make_engine(settings.database_url_for("monitor"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(samples.c.id, samples.c.prediction, samples.c.label).where(
                    samples.c.model == "churn"
                )
            )
            return {r.id: (r.prediction, r.label) for r in rows}
    except sa.exc.OperationalError:  # the monitor has not made its tables yet
        return {}
    finally:
        engine.dispose()
