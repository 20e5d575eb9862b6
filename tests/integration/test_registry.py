"""The trainer's registration against a real MLflow store: one version per cycle whichever call
fails after the registration (the trainer's real `serve()` on a real nats-server and database,
the fault injected into the real MLflow client's calls), and where a new experiment keeps its
artifacts with a real `mlflow server`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import SPEC, churn, eventually, of_cycle, read_all_events, types
from loop import start_bootstrap, wait_for
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow_server import MlflowServer

from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import SPECS_BUCKET
from driftloop.shared.registry import (
    CHALLENGER,
    configure_mlflow,
    experiment_id,
    load_model,
    version_by_alias,
)
from driftloop.shared.spec import parse_spec
from driftloop.trainer.main import serve as trainer


@pytest.fixture
async def bus(settings: Settings, running: Any) -> AsyncIterator[Bus]:
    async with connect_bus(settings, service="test") as connected:
        running(trainer(settings))
        spec = parse_spec(SPEC)
        await (await connected.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
        yield connected


class FailOnce:
    """Makes the real MlflowClient's `method` raise on its first call (which never reaches
    the store); every later call goes through to the real store."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
        self.failed = 0
        real = getattr(MlflowClient, method)

        def flaky(client: MlflowClient, *args: Any, **kwargs: Any) -> Any:
            if self.failed:
                return real(client, *args, **kwargs)
            self.failed += 1
            raise MlflowException(f"injected: {method} failed once")

        monkeypatch.setattr(MlflowClient, method, flaky)


# Each is called once a version exists: inside the registering call right after the version is
# created (MLflow links it to its logged model), on the version's tags, on the alias.
AFTER_REGISTRATION = [
    "set_logged_model_tags",
    "set_model_version_tag",
    "set_registered_model_alias",
]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the store under test is MLflow's
@pytest.mark.parametrize("method", AFTER_REGISTRATION)
async def test_a_failure_after_registration_leaves_one_version_for_the_cycle(
    settings: Settings,
    bus: Bus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    churn(np.random.default_rng(1), 400).to_csv(tmp_path / "v1.csv", index=False)
    fault = FailOnce(monkeypatch, method)  # armed after the upload: it registers nothing

    cycle = await start_bootstrap(settings, bus, "churn", tmp_path / "v1.csv")
    await wait_for(settings, cycle, "ModelTrained", timeout=120)  # after the redelivery

    assert fault.failed == 1, f"{method} was never called: the fault was not injected"
    events = of_cycle(await read_all_events(settings.resolved_nats_url()), cycle)
    assert types(events) == ["RetrainRequested", "ModelTrained"]
    version = events[1]["envelope"]["data"]["version"]
    client = configure_mlflow(settings)
    versions = client.search_model_versions("name = 'churn'")
    assert [(str(v.version), v.tags.get("driftloop.cycle_id")) for v in versions] == [
        (version, cycle)
    ], "one version, tagged with its cycle"
    challenger = version_by_alias(client, "churn", CHALLENGER)
    assert challenger is not None
    assert challenger.version == version
    assert await asyncio.to_thread(load_model, "churn", version) is not None  # hash recorded


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no huey workers
    root = tmp_path / "mlflow"
    root.mkdir()
    server = MlflowServer(root, serve_artifacts=True)
    server.start()
    yield server
    server.stop()


async def test_with_an_mlflow_server_experiments_keep_artifacts_in_the_servers_store(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    await eventually(mlflow_server.ready, timeout=90)
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri=mlflow_server.uri)
    client = configure_mlflow(settings)

    created = experiment_id(client, settings, "churn")
    run = client.create_run(created)
    (tmp_path / "note.txt").write_text("written by one container, read by another")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))

    location = client.get_experiment(created).artifact_location
    assert location.startswith("mlflow-artifacts:"), location  # served by the server
    assert not (settings.home / "mlartifacts").exists()
    assert [p.name for p in mlflow_server.artifacts.rglob("note.txt")] == ["note.txt"]
