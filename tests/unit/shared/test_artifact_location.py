"""Where a new experiment keeps its artifacts: the server's store with a remote tracking server,
HOME with a store the process opens itself."""

from __future__ import annotations

import pytest

from driftloop.shared.registry import artifact_location

ROOT = "file:///srv/home/mlartifacts"


@pytest.mark.parametrize(
    "tracking_uri",
    ["http://mlflow:5000", "https://mlflow.example.org", "HTTP://127.0.0.1:5000", "databricks"],
    ids=["http", "https", "upper-case scheme", "databricks"],
)
def test_a_remote_tracking_server_keeps_artifacts_in_its_own_store(tracking_uri: str) -> None:
    assert artifact_location(tracking_uri, ROOT, "churn") is None


@pytest.mark.parametrize(
    "tracking_uri",
    [
        "sqlite:////srv/home/mlflow.db",
        "postgresql+psycopg2://mlflow@db/mlflow",
        "file:///srv/home/mlruns",
        "/srv/home/mlruns",
    ],
    ids=["sqlite", "database", "file uri", "plain path"],
)
def test_a_local_store_keeps_artifacts_under_home(tracking_uri: str) -> None:
    assert artifact_location(tracking_uri, ROOT, "churn") == f"{ROOT}/churn"
