"""The progress deadline with the deployer's real `serve()`, a real nats-server, database and
MLflow store: a canary that gets no traffic, or whose monitor answers nothing, is rolled back
once `deployer.progress_deadline` passed without progress, the reason in its RolledBack."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import evaluation_passed, of_cycle, read_all_events, staged_spec
from loop import wait_for

from driftloop.deployer.main import serve as deployer
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import ROUTES_BUCKET, SPECS_BUCKET
from driftloop.shared.registry import CHAMPION, configure_mlflow, experiment_id, version_by_alias
from driftloop.shared.routes import Routes, Served
from driftloop.shared.spec import parse_spec

DEADLINE = 2  # seconds
STUCK = (
    "deployer:\n"
    "  shadow: {rows: 0}\n"
    "  canary: {steps: [10, 100], rows_per_step: 50, label_wait: 1s}\n"
    f"  progress_deadline: {DEADLINE}s\n"
)


def register_two_versions(settings: Settings) -> dict[str, str]:
    """Versions 1 and 2 of `churn` in the MLflow registry (no gateway serves them here: only
    the deployer's alias needs them); returns version -> run id."""
    client = configure_mlflow(settings)
    experiment = experiment_id(client, settings, "churn")
    client.create_registered_model("churn")
    runs = {}
    for _ in range(2):
        run = client.create_run(experiment)
        registered = client.create_model_version(
            "churn", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
        runs[str(registered.version)] = run.info.run_id
    return runs


@pytest.mark.parametrize("monitor_runs", [True, False], ids=["no-traffic", "no-monitor"])
async def test_a_canary_without_progress_is_rolled_back_past_the_deadline(
    settings: Settings, bus: Bus, running: Any, monitor_runs: bool
) -> None:
    runs = await asyncio.to_thread(register_two_versions, settings)
    spec = parse_spec(staged_spec(STUCK))
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
    champion = Routes(model="churn", champion=Served(version="1", run_id=runs["1"]), revision=1)
    await (await bus.kv(ROUTES_BUCKET)).put("churn", champion.to_json())
    if monitor_runs:  # it answers, with no rows: nobody sends traffic
        running(monitor(settings))
    running(deployer(settings))
    cycle = "cycle-stuck"

    await bus.publish(  # acting as the evaluator: the deployer is under test
        evaluation_passed("2", runs["2"], cycle_id=cycle, metric="accuracy")
    )
    seen = await wait_for(settings, cycle, "RolledBack", timeout=60)

    assert seen == ["EvaluationPassed", "RolloutAdvanced", "RolledBack"]
    events = of_cycle(await read_all_events(settings.resolved_nats_url(), "churn"), cycle)
    advanced, rolled = (e["envelope"]["data"] for e in events[1:])
    assert (advanced["stage"], advanced["weight"]) == ("canary", 10)
    assert (rolled["version"], rolled["restored_version"], rolled["by"]) == ("2", "1", "deployer")
    assert rolled["reason"].startswith("no progress for ")
    assert rolled["reason"].split(": ", 1)[1].startswith("canary 10%: ")
    if monitor_runs:
        assert rolled["reason"].endswith("0 of 50 rows answered")
    else:
        assert "the monitor did not answer" in rolled["reason"]
    check = rolled["check"]
    assert (check["name"], check["passed"], check["threshold"]) == (
        "progress_deadline",
        False,
        DEADLINE,
    )
    assert check["figure"] > DEADLINE
    routes = Routes.model_validate_json(
        (await (await bus.kv(ROUTES_BUCKET)).get("churn")).value or b""
    )
    assert routes.champion is not None
    assert routes.champion.version == "1"
    assert routes.canary is None
    client = configure_mlflow(settings)
    assert (await asyncio.to_thread(version_by_alias, client, "churn", CHAMPION)).version == "1"
