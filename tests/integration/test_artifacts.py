"""A model artifact is loaded only if its files hash to the digest recorded when the trainer
registered it: a tampered file is refused by every loader, the gateway's included."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import pytest
from helpers import SPEC, churn
from loop import start_bootstrap, wait_for

from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.gateway.adapters.models import load_version
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import SPECS_BUCKET
from driftloop.shared.registry import (
    ARTIFACT_DIGEST,
    TamperedArtifactError,
    configure_mlflow,
    load_model,
)
from driftloop.shared.routes import Served
from driftloop.shared.spec import parse_spec
from driftloop.trainer.main import serve as trainer


def stored_model_file(settings: Settings, model: str, version: str) -> Path:
    """The pickled model inside the MLflow artifact store (not a downloaded copy)."""
    client = configure_mlflow(settings)
    source = client.get_model_version(model, version).source
    if source.startswith("models:/"):
        source = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
    root = Path(urlparse(source).path)
    [pickled] = list(root.rglob("model.pkl"))
    return pickled


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_tampered_model_file_is_refused_by_its_loaders(
    settings: Settings, bus: Bus, running: Any, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer):
        running(serve(settings))
    spec = parse_spec(SPEC)
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
    churn(np.random.default_rng(1), 900).to_csv(tmp_path / "v1.csv", index=False)
    await wait_for(
        settings, await start_bootstrap(settings, bus, "churn", tmp_path / "v1.csv"), "Deployed"
    )
    client = configure_mlflow(settings)
    version = await asyncio.to_thread(client.get_model_version, "churn", "1")
    served = Served(version="1", run_id=str(version.run_id))

    recorded = version.tags[ARTIFACT_DIGEST]
    loaded = await asyncio.to_thread(load_version, "churn", served)  # intact: it loads
    assert len(recorded) == 64
    assert loaded.version == "1"

    pickled = stored_model_file(settings, "churn", "1")
    pickled.write_bytes(pickled.read_bytes() + b"\x00")  # one byte more on disk

    with pytest.raises(TamperedArtifactError, match="recorded at registration"):
        await asyncio.to_thread(load_model, "churn", "1")
    with pytest.raises(TamperedArtifactError, match="refusing to load"):
        await asyncio.to_thread(load_version, "churn", served)
