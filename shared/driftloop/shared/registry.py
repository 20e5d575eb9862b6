"""MLflow, the shared store of runs, datasets, model versions and the `champion` alias.

Data that crosses services (holdout, training set, reference profile) travels as artifacts of
a run named in an event; nothing here reads another service's tables.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from driftloop.shared.config import Settings

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT_PREFIX = "driftloop"


def configure_mlflow(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store (a SQLite file under HOME by default)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri())
    mlflow.set_registry_uri(settings.tracking_uri())
    return MlflowClient(settings.tracking_uri(), settings.tracking_uri())


def experiment_id(client: MlflowClient, settings: Settings, model: str) -> str:
    """The model's experiment, created with its artifacts under HOME when new."""
    name = f"{EXPERIMENT_PREFIX}/{model}"
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(
            client.create_experiment(name, artifact_location=f"{settings.artifact_root()}/{model}")
        )
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another process created it first
        if found is None:
            raise
        return str(found.experiment_id)


@dataclass(frozen=True)
class VersionRef:
    model: str
    version: str
    run_id: str


def version_by_alias(client: MlflowClient, model: str, alias: str) -> VersionRef | None:
    try:
        mv = client.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None
    return VersionRef(model, str(mv.version), str(mv.run_id))


def version_ref(client: MlflowClient, model: str, version: str) -> VersionRef:
    mv = client.get_model_version(model, version)
    return VersionRef(model, str(mv.version), str(mv.run_id))


def load_model(model: str, version: str) -> Any:
    """The scikit-learn pipeline of a registered version."""
    return mlflow.sklearn.load_model(f"models:/{model}/{version}")


def download_artifact(client: MlflowClient, run_id: str, path: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dest)))


def read_parquet_artifact(client: MlflowClient, run_id: str, path: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(download_artifact(client, run_id, path, Path(tmp)))


def read_json_artifact(client: MlflowClient, run_id: str, path: str) -> Any:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(download_artifact(client, run_id, path, Path(tmp)).read_text())


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame; raises ValueError naming what is wrong."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if suffix in {".csv", ".txt", ".gz"}:
            return pd.read_csv(path)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read it ({exc})") from exc
    raise ValueError(f"{path}: expected a .csv or .parquet file")
