"""MLflow unavailable mid-cycle: the step that needs it fails with the reason, is retried with
backoff, and the cycle completes once MLflow is back: one version, one Deployed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import SPEC, churn, eventually, of_cycle, read_all_events, types
from loop import start_bootstrap, wait_for
from mlflow_server import MlflowServer

from driftloop.cli.supervisor import port_open
from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import EVENTS_STREAM, ROUTES_BUCKET, SPECS_BUCKET, RetrainRequested
from driftloop.shared.registry import CHAMPION
from driftloop.shared.routes import Routes
from driftloop.shared.spec import parse_spec
from driftloop.trainer.main import serve as trainer

pytestmark = pytest.mark.faults
SERVICES = {"trainer": trainer, "evaluator": evaluator, "deployer": deployer}


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    # Fail fast while it is away: the bus's redelivery backoff is the retry under test.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    # The server's job runner (huey consumers, five more processes importing mlflow at every
    # start) serves no request the services make; without it a (re)start costs a few seconds
    # of CPU less.
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    root = tmp_path / "mlflow"
    root.mkdir()
    server = MlflowServer(root)
    server.start()
    yield server
    server.stop()


async def first_version_deployed(
    settings: Settings, bus: Bus, running: Any, tmp_path: Path, mlflow_server: MlflowServer
) -> tuple[Settings, dict[str, asyncio.Task[Any]], str]:
    """Trainer, evaluator and deployer on the MLflow server, version 1 deployed, and a second
    data file uploaded (through MLflow: before any outage). Returns the services' settings,
    their tasks by name and the second file's URI."""

    async def up() -> bool:
        return mlflow_server.ready()

    await eventually(up, timeout=90)
    remote = settings.model_copy(update={"mlflow_tracking_uri": mlflow_server.uri})
    services = {name: running(serve(remote)) for name, serve in SERVICES.items()}
    # The second version is no better than the first: accept it within a wide margin, the
    # judging is not under test here.
    spec = parse_spec(SPEC.replace("min_delta: 0.0,", "min_delta: -1.0, non_inferiority: 1.0,"))
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
    churn(np.random.default_rng(1), 900).to_csv(tmp_path / "v1.csv", index=False)
    first = await start_bootstrap(remote, bus, "churn", tmp_path / "v1.csv")
    await wait_for(settings, first, "Deployed", timeout=150)
    churn(np.random.default_rng(2), 900).to_csv(tmp_path / "v2.csv", index=False)
    from driftloop.cli.main import _upload

    return remote, services, _upload(remote, "churn", tmp_path / "v2.csv")


async def retrain(bus: Bus, uri: str, reason: str) -> str:
    """Start a retraining on `uri`; returns its cycle."""
    cycle = str(uuid.uuid4())
    await bus.publish(
        RetrainRequested(
            model="churn",
            cycle_id=cycle,
            trigger="bootstrap",
            reason=reason,
            data_uri=uri,
            requested_at=datetime.now(UTC),
        )
    )
    return cycle


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_cycle_during_an_mlflow_outage_completes_once_mlflow_is_back(
    settings: Settings, bus: Bus, running: Any, tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    _, _, uri = await first_version_deployed(settings, bus, running, tmp_path, mlflow_server)
    mlflow_server.stop()
    since = await delivered(bus, "trainer-RetrainRequested")
    cycle = await retrain(bus, uri, "test: MLflow is away")

    await retried(bus, "trainer-RetrainRequested", since)  # tried, failed on MLflow, backed off
    nothing_yet = types(of_cycle(await read_all_events(settings.resolved_nats_url()), cycle))
    assert nothing_yet == ["RetrainRequested"], "no step is half-applied while MLflow is away"
    assert not port_open("127.0.0.1", mlflow_server.port)

    mlflow_server.start()
    seen = await wait_for(settings, cycle, "Deployed", timeout=240)  # fails naming the end

    assert seen == [
        "RetrainRequested",
        "ModelTrained",
        "EvaluationPassed",
        "RolloutAdvanced",
        "Deployed",
    ]
    from mlflow import MlflowClient

    versions = MlflowClient(mlflow_server.uri).search_model_versions("name='churn'")
    assert sorted(int(v.version) for v in versions) == [1, 2]  # one version for the cycle


async def delivered(bus: Bus, durable: str) -> int:
    """How many messages the service's consumer `durable` has delivered (redeliveries too)."""
    info = await bus.js.consumer_info(EVENTS_STREAM, durable)
    return int(info.delivered.consumer_seq if info.delivered else 0)


async def retried(bus: Bus, durable: str, since: int) -> None:
    """Wait until `durable` delivered twice more than `since`: its service took the message,
    failed on MLflow, and took it again after the backoff (the state the outage tests need,
    rather than a fixed sleep)."""

    async def again() -> bool:
        return await delivered(bus, durable) >= since + 2

    await eventually(again, timeout=60, interval=0.2)


async def champion_route(bus: Bus) -> str | None:
    entry = await (await bus.kv(ROUTES_BUCKET)).get("churn")
    routes = Routes.model_validate_json(entry.value or b"")
    return routes.champion.version if routes.champion else None


async def stop(task: asyncio.Task[Any]) -> None:
    """Stop a service started with `running` (cancelled until done: see tests/conftest.py)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("step", "before", "after"),
    [
        ("evaluator", "ModelTrained", "EvaluationPassed"),
        ("deployer", "EvaluationPassed", "Deployed"),
    ],
)
async def test_evaluation_or_promotion_during_an_mlflow_outage_waits_and_applies_once(
    settings: Settings,
    bus: Bus,
    running: Any,
    tmp_path: Path,
    mlflow_server: MlflowServer,
    step: str,
    before: str,
    after: str,
) -> None:
    """The service of `step` meets MLflow away when its message comes: it applies nothing
    (no event, no alias, no route) and takes the message again until MLflow is back; then the
    cycle ends with one of each effect."""

    remote, services, uri = await first_version_deployed(
        settings, bus, running, tmp_path, mlflow_server
    )
    await stop(services[step])  # its message will wait for it
    cycle = await retrain(bus, uri, f"test: MLflow away when the {step} works")
    await wait_for(settings, cycle, before, timeout=150)
    mlflow_server.stop()
    since = await delivered(bus, f"{step}-{before}")
    running(SERVICES[step](remote))

    await retried(bus, f"{step}-{before}", since)  # it takes the message, fails, backs off
    so_far = types(of_cycle(await read_all_events(settings.resolved_nats_url()), cycle))
    assert so_far[-1] == before, f"nothing half-applied while MLflow is away: {so_far}"
    assert await champion_route(bus) == "1"

    mlflow_server.start()
    seen = await wait_for(settings, cycle, "Deployed", timeout=240)

    assert seen.count(after) == 1
    assert seen.count("Deployed") == 1
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    assert client.get_model_version_by_alias("churn", CHAMPION).version == "2"
    assert await champion_route(bus) == "2"
