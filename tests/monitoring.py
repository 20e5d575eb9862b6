"""The monitor alone on a real nats-server, database and MLflow store: its reference given the
way a deployment gives it, and served batches published as the gateway does (shared by the
monitor's integration tests)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import numpy as np
import pandas as pd
from helpers import eventually

from driftloop.monitor.main import STATUS_SUBJECT
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import SPECS_BUCKET, Deployed, PredictionBatch
from driftloop.shared.profile import build_profile
from driftloop.shared.registry import configure_mlflow, experiment_id
from driftloop.shared.spec import parse_spec

MODEL = "churn"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def frame(rng: np.random.Generator, n: int, *, scale: float = 12.0) -> pd.DataFrame:
    return pd.DataFrame(
        {"tenure": rng.gamma(2.0, scale, n).round(1), "plan": rng.choice(["basic", "pro"], n)}
    )


async def start_monitor(
    settings: Settings, bus: Bus, running: Any, monitor_yaml: str, *, more_yaml: str = ""
) -> str:
    """Apply the spec (its `monitor:` section, then `more_yaml`'s top-level sections), give
    the monitor its reference the way a deployment does (a profile logged to the champion's
    run, then Deployed), and wait until it took it; returns the champion's run id."""
    spec = parse_spec(f"model: {MODEL}\ntarget: churned\nmonitor:\n{monitor_yaml}{more_yaml}")
    await (await bus.kv(SPECS_BUCKET)).put(MODEL, spec.to_json())
    client = configure_mlflow(settings)
    run = client.create_run(experiment_id(client, settings, MODEL))
    profile = build_profile(MODEL, frame(np.random.default_rng(0), 2000), ["tenure", "plan"])
    client.log_dict(run.info.run_id, profile.model_dump(mode="json"), "data/reference_profile.json")
    running(monitor(settings))
    await bus.publish(
        Deployed(
            model=MODEL,
            cycle_id="c1",
            version="1",
            previous_version=None,
            run_id=run.info.run_id,
        )
    )

    async def has_reference() -> bool:
        try:
            status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        except (TimeoutError, nats.errors.Error):  # not answering yet
            return False
        return bool(status.get("reference_version") == "1")

    await eventually(has_reference, timeout=30)
    return str(run.info.run_id)


async def predict(
    bus: Bus,
    rows: int,
    at: datetime,
    rng: np.random.Generator,
    *,
    version: str = "1",
    route: str = "champion",
    scale: float = 12.0,
) -> list[str]:
    """Publish one served batch as the gateway does; returns its ids."""
    ids = [str(uuid.uuid4()) for _ in range(rows)]
    batch = PredictionBatch(
        model=MODEL,
        version=version,
        route=route,
        ids=ids,
        instances=frame(rng, rows, scale=scale).to_dict(orient="records"),
        predictions=rng.integers(0, 2, rows).tolist(),
        latency_ms=2.0,
        at=at,
    )
    await bus.publish_record(f"driftloop.predictions.{MODEL}", batch, msg_id=batch.batch_id)
    return ids
