"""MLflow, the shared store of runs, datasets, model versions and the `champion` alias.

Data that crosses services (holdout, training set, reference profile) travels as artifacts of
a run named in an event; nothing here reads another service's tables.
"""

from __future__ import annotations

import hashlib
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
from driftloop.shared.db import MIGRATION_LOCK

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT_PREFIX = "driftloop"


def configure_mlflow(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store (a SQLite file under HOME by default). Opening a
    new store migrates it with Alembic: under the process's migration lock."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with MIGRATION_LOCK:
        mlflow.set_tracking_uri(settings.tracking_uri())
        mlflow.set_registry_uri(settings.tracking_uri())
        return MlflowClient(settings.tracking_uri(), settings.tracking_uri())


# Tracking URIs of an MLflow server: its own artifact store (S3, MinIO, a volume) is where every
# container can read what another wrote.
REMOTE_SCHEMES = frozenset({"http", "https", "databricks"})


def artifact_location(tracking_uri: str, artifact_root: str, model: str) -> str | None:
    """Where a new experiment of `model` keeps its artifacts: None (the server's default
    artifact store) when `tracking_uri` is an MLflow server; a folder under `artifact_root`
    (HOME/mlartifacts) for a store this process opens itself (a SQLite file, a database, a
    folder), which has no artifact store of its own but the working directory."""
    if tracking_uri.split(":", 1)[0].lower() in REMOTE_SCHEMES:  # "databricks" has no colon
        return None
    return f"{artifact_root}/{model}"


def experiment_id(client: MlflowClient, settings: Settings, model: str) -> str:
    """The model's experiment, created when new: its artifacts under HOME with a local store,
    in the server's artifact store with a remote one (`artifact_location`)."""
    name = f"{EXPERIMENT_PREFIX}/{model}"
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = artifact_location(settings.tracking_uri(), settings.artifact_root(), model)
    try:
        return str(client.create_experiment(name, artifact_location=location))
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


def release_alias(client: MlflowClient, model: str, alias: str, version: str) -> bool:
    """Delete `model`'s `alias` if it still points at `version`; True when it did. An alias
    another version has taken since (a newer challenger) is left alone. MLflow has no
    compare-and-delete: a version given the alias between the read and the delete loses it."""
    current = version_by_alias(client, model, alias)
    if current is None or current.version != str(version):
        return False
    client.delete_registered_model_alias(model, alias)
    logger.info("alias released", extra={"model": model, "alias": alias, "version": version})
    return True


ARTIFACT_DIGEST = "driftloop.artifact_sha256"  # model version tag set at registration


class TamperedArtifactError(RuntimeError):
    """A model's files do not hash to what was recorded when it was registered."""


def artifact_digest(root: Path) -> str:
    """SHA-256 over a model directory: every file's relative path and content, in order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _download_model(model: str, version: str, dest: str) -> Path:
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model}/{version}", dst_path=dest
        )
    )


def record_artifact_digest(client: MlflowClient, model: str, version: str) -> str:
    """Hash a just-registered version's files and record it on the version (the trainer does
    this before anything can route traffic to it)."""
    with tempfile.TemporaryDirectory() as tmp:
        digest = artifact_digest(_download_model(model, version, tmp))
    client.set_model_version_tag(model, version, ARTIFACT_DIGEST, digest)
    return digest


def load_model(model: str, version: str) -> Any:
    """The scikit-learn pipeline of a registered version, loaded from the configured registry
    only after its files hash to the digest recorded at registration (what is checked is what
    is loaded: one download, verified, then unpickled). Raises TamperedArtifactError."""
    recorded = MlflowClient().get_model_version(model, version).tags.get(ARTIFACT_DIGEST)
    with tempfile.TemporaryDirectory() as tmp:
        local = _download_model(model, version, tmp)
        actual = artifact_digest(local)
        if recorded is None:
            raise TamperedArtifactError(
                f"{model} version {version} has no recorded artifact hash ({ARTIFACT_DIGEST}): "
                "refusing to load a model registered outside driftloop's trainer"
            )
        if actual != recorded:
            raise TamperedArtifactError(
                f"{model} version {version}: its files hash to {actual[:16]}..., not to "
                f"{recorded[:16]}... recorded at registration: refusing to load them"
            )
        return mlflow.sklearn.load_model(str(local))


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
