"""Progressive delivery end to end: the deployer's real `serve()` moves a challenger through
shadow and the canary steps from the monitor's live figures, over a real nats-server, a real
database, a real MLflow store and a live gateway answering real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import numpy as np
import pytest
from helpers import (
    ROWS_PER_STEP,
    SPEC,
    STAGED,
    churn,
    evaluation_passed,
    eventually,
    of_cycle,
    read_all_events,
    staged_spec,
    types,
)
from loop import predict_and_label, serving, start_bootstrap, wait_for

from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import (
    DEPLOYER_CONTROL,
    DEPLOYER_STATUS,
    ROUTES_BUCKET,
    SPECS_BUCKET,
    TERMINAL_TYPES,
)
from driftloop.shared.registry import (
    CHAMPION,
    configure_mlflow,
    experiment_id,
    record_artifact_digest,
    version_by_alias,
)
from driftloop.shared.routes import Routes
from driftloop.shared.spec import parse_spec
from driftloop.trainer.main import serve as trainer


async def release_second_version(
    settings: Settings, bus: Bus, tmp_path: Path, spec_text: str
) -> str:
    """Version 1 from the old customers (promoted at once: nothing served before), then a
    version 2 trained on the changed customers; returns the cycle of version 2."""
    spec = parse_spec(spec_text)
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
    churn(np.random.default_rng(1), 1200).to_csv(tmp_path / "v1.csv", index=False)
    await wait_for(
        settings, await start_bootstrap(settings, bus, "churn", tmp_path / "v1.csv"), "Deployed"
    )
    churn(np.random.default_rng(9), 900, drifted=True).to_csv(tmp_path / "v2.csv", index=False)
    return await start_bootstrap(settings, bus, "churn", tmp_path / "v2.csv")


async def drive(
    settings: Settings,
    gateway: httpx.AsyncClient,
    cycle: str,
    *,
    drifted: bool,
    until: str | None = None,
    batches: int = 1200,
    canary_rows: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Labelled traffic, five customers a request, until the cycle ends (or `until` is among
    its events); returns the answers and the cycle's events.

    With `canary_rows`, traffic stops once the canary has answered that many rows, and the
    cycle must then end on what it has: how many rows a verdict takes, free of how fast
    this machine happens to be."""
    rng = np.random.default_rng(42)
    answers: list[dict[str, Any]] = []
    for i in range(batches):
        answers.append(await predict_and_label(gateway, churn(rng, 5, drifted=drifted)))
        if canary_rows is not None and served(answers, "canary") >= canary_rows:
            await wait_for_any(settings, cycle, TERMINAL_TYPES)
            events = of_cycle(await read_all_events(settings.resolved_nats_url(), "churn"), cycle)
            return answers, events
        if i % 10 == 9:
            events = of_cycle(await read_all_events(settings.resolved_nats_url(), "churn"), cycle)
            seen = types(events)
            if (until in seen) if until else (seen and seen[-1] in TERMINAL_TYPES):
                return answers, events
    status = await gateway.get("/v1/models/churn")
    raise AssertionError(
        f"cycle {cycle} did not get there: {types(events)}; rollout {status.json()['rollout']}"
    )


def served(answers: list[dict[str, Any]], route: str) -> int:
    return sum(len(a["ids"]) for a in answers if a["route"] == route)


async def wait_for_any(settings: Settings, cycle: str, last: frozenset[str]) -> None:
    """Until the cycle's latest event is one of `last`."""

    async def ended() -> bool:
        seen = types(of_cycle(await read_all_events(settings.resolved_nats_url()), cycle))
        return bool(seen) and seen[-1] in last

    await eventually(ended, timeout=60)


def stages(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (e["envelope"]["data"]["stage"], e["envelope"]["data"]["weight"])
        for e in events
        if e["envelope"]["type"] == "RolloutAdvanced"
    ]


async def current_routes(bus: Bus) -> Routes:
    entry = await (await bus.kv(ROUTES_BUCKET)).get("churn")
    return Routes.model_validate_json(entry.value or b"")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: see the person test
async def test_a_better_challenger_walks_shadow_and_every_canary_step_to_champion(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    cycle = await release_second_version(settings, bus, tmp_path, staged_spec())

    answers, events = await drive(settings, gateway, cycle, drifted=True)

    assert types(events)[-1] == "Deployed", events[-1]["envelope"]["data"]
    assert stages(events) == [
        ("shadow", 0),
        ("canary", 10),
        ("canary", 50),
        ("canary", 100),
        ("champion", 100),
    ]
    passed = [e for e in events if e["envelope"]["type"] == "RolloutAdvanced"][1:]
    for advanced in passed:  # each move names the analysis of the stage it left
        checks = {c["name"]: c for c in advanced["envelope"]["data"]["checks"]}
        assert checks["rows"]["figure"] >= checks["rows"]["threshold"]
        assert all(c["passed"] for c in checks.values())
    served_by = {(a["version"], a["route"]) for a in answers}
    assert {("1", "champion"), ("2", "canary")} <= served_by
    assert ("2", "champion") not in served_by or answers[-1]["version"] == "2"
    await serving(gateway, "2")
    client = configure_mlflow(settings)
    assert (await asyncio.to_thread(version_by_alias, client, "churn", CHAMPION)).version == "2"
    routes = await current_routes(bus)
    assert routes.canary is None
    assert routes.shadow is None
    assert routes.rollout is not None
    assert routes.rollout["state"] == "promoted"
    status = (await gateway.get("/v1/models/churn")).json()
    assert status["rollout"]["state"] == "promoted"
    assert status["last_verdict"]["verdict"] == "passed"
    assert (status["last_verdict"]["version"], status["last_verdict"]["cycle_id"]) == ("2", cycle)
    assert status["last_verdict"]["failed_checks"] == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: see the person test
async def test_a_worse_challenger_is_rolled_back_in_the_first_canary_step(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    cycle = await release_second_version(settings, bus, tmp_path, staged_spec())

    # Version 2 learnt the changed customers; live traffic is still the old ones.
    answers, events = await drive(
        settings, gateway, cycle, drifted=False, canary_rows=ROWS_PER_STEP
    )

    assert types(events)[-1] == "RolledBack", events[-1]["envelope"]["data"]
    assert stages(events) == [("shadow", 0), ("canary", 10)]
    rolled = events[-1]["envelope"]["data"]
    assert rolled["check"]["name"] == "accuracy_drop"
    assert rolled["check"]["figure"] > rolled["check"]["threshold"] == 0.05
    assert (rolled["version"], rolled["restored_version"]) == ("2", "1")
    # The first step's rows were enough: no client traffic went to the canary after them
    # (a request holds five rows, so the last one may overshoot by four).
    assert ROWS_PER_STEP <= served(answers, "canary") < ROWS_PER_STEP + 5
    routes = await current_routes(bus)
    assert routes.champion is not None
    assert routes.champion.version == "1"
    assert routes.canary is None
    client = configure_mlflow(settings)
    assert (await asyncio.to_thread(version_by_alias, client, "churn", CHAMPION)).version == "1"

    async def only_champion() -> bool:
        body = await predict_and_label(gateway, churn(np.random.default_rng(5), 5))
        return body["route"] == "champion" and body["version"] == "1"

    for _ in range(20):
        assert await only_champion()


def register_broken_version(settings: Settings) -> tuple[str, str]:
    """A version with version 1's signature whose every prediction raises (a pipeline that
    inverts its input matrix): the challenger that answers errors. Returns (version, run)."""
    import mlflow
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    client = configure_mlflow(settings)
    signature = mlflow.models.get_model_info("models:/churn/1").signature
    fitted = DummyClassifier().fit(np.zeros((4, 1)), [0, 1, 0, 1])
    broken = Pipeline([("boom", FunctionTransformer(np.linalg.inv)), ("clf", fitted)])
    experiment = experiment_id(client, settings, "churn")
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(
            broken,
            name="model",
            signature=signature,
            registered_model_name="churn",
            serialization_format="cloudpickle",  # as the trainer logs them
        )
    version = str(info.registered_model_version)
    record_artifact_digest(client, "churn", version)  # as the trainer records it
    return version, run.info.run_id


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: see the person test
async def test_a_challenger_that_answers_errors_is_rolled_back_and_no_client_sees_one(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    spec = parse_spec(staged_spec(STAGED.replace("shadow: {rows: 100}", "shadow: {rows: 0}")))
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
    churn(np.random.default_rng(1), 1200).to_csv(tmp_path / "v1.csv", index=False)
    await wait_for(
        settings, await start_bootstrap(settings, bus, "churn", tmp_path / "v1.csv"), "Deployed"
    )
    version, run_id = await asyncio.to_thread(register_broken_version, settings)
    cycle = "cycle-broken"
    await bus.publish(  # acting as the evaluator: the deployer is under test
        evaluation_passed(
            version,
            run_id,
            cycle_id=cycle,
            metric="accuracy",
            reason="test: a challenger that cannot answer",
        )
    )
    await wait_for(settings, cycle, "RolloutAdvanced")

    answers, events = await drive(settings, gateway, cycle, drifted=False)

    assert types(events) == ["EvaluationPassed", "RolloutAdvanced", "RolledBack"]
    rolled = events[-1]["envelope"]["data"]
    assert rolled["check"]["name"] == "error_rate"
    assert rolled["check"]["figure"] == 1.0
    assert {(a["version"], a["route"]) for a in answers} == {("1", "champion")}
    metrics = (await gateway.get("/metrics")).text
    failed = [
        line
        for line in metrics.splitlines()
        if line.startswith("driftloop_errors_total{")
        and f'version="{version}"' in line
        and 'route="canary"' in line
    ]
    assert failed
    assert float(failed[0].rsplit(" ", 1)[1]) >= 1


async def control(bus: Bus, action: str, **fields: Any) -> dict[str, Any]:
    return await bus.request(
        DEPLOYER_CONTROL, {"action": action, "model": "churn", "actor": "ana", **fields}, timeout=30
    )


async def test_a_person_approves_pauses_rolls_back_promotes_and_restores(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    manual = staged_spec("deployer: {shadow: {rows: 0}, approval: manual}\n")
    cycle = await release_second_version(settings, bus, tmp_path, manual)
    waiting = await wait_for(settings, cycle, "ApprovalRequired")
    assert waiting[-2:] == ["RolloutAdvanced", "ApprovalRequired"]

    refused = await control(bus, "approve", version="7")
    paused = await control(bus, "pause")
    approved = await control(bus, "approve", version="2")
    rolled = await control(bus, "rollback", reason="not this week")
    nothing = await control(bus, "approve", version="2")

    assert refused == {"ok": False, "error": "the running rollout of churn is version 2, not 7"}
    assert paused["rollout"]["paused"] is True
    assert (approved["rollout"]["state"], approved["rollout"]["weight"]) == ("canary", 10)
    assert approved["rollout"]["paused"] is False
    assert rolled["rollout"]["state"] == "rolled_back"
    assert nothing == {"ok": False, "error": "no rollout of churn is running"}
    seen = await wait_for(settings, cycle, "RolledBack")
    assert seen[-3:] == ["Approved", "RolloutAdvanced", "RolledBack"]
    events = of_cycle(await read_all_events(settings.resolved_nats_url(), "churn"), cycle)
    ended = events[-1]["envelope"]["data"]
    assert (ended["by"], ended["reason"], ended["restored_version"]) == (
        "ana",
        "not this week",
        "1",
    )
    await serving(gateway, "1")

    # No rollout running: promote any registered version, then roll back to the one before.
    promoted = await control(bus, "promote", version="2")
    assert promoted["ok"], promoted
    assert promoted["rollout"]["state"] == "promoted"
    await serving(gateway, "2")
    restored = await control(bus, "rollback")
    assert restored["ok"], restored
    await serving(gateway, "1")
    client = configure_mlflow(settings)
    assert (await asyncio.to_thread(version_by_alias, client, "churn", CHAMPION)).version == "1"
    restore_cycle = restored["rollout"]["cycle_id"]
    last = of_cycle(await read_all_events(settings.resolved_nats_url(), "churn"), restore_cycle)
    assert types(last) == ["RolledBack"]
    assert last[0]["envelope"]["data"]["restored_version"] == "1"

    async def monitor_reference() -> str | None:
        answer = await bus.request("driftloop.rpc.monitor.status", {"model": "churn"})
        return "1" if answer.get("reference_version") == "1" else None

    await eventually(monitor_reference)  # the monitor compares against version 1 again
    status = await bus.request(DEPLOYER_STATUS, {"model": "churn"})
    by_ana = [h for h in status["history"] if h["actor"] == "ana"]
    assert [h["to_stage"] for h in reversed(by_ana)] == [
        "awaiting_approval (paused)",
        "canary 10%",
        "rolled_back",
        "promoted",
        "rolled_back",
    ]
    assert all(h["at"] and h["reason"] for h in by_ana)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: see the person test
async def test_the_deployer_killed_mid_rollout_resumes_where_it_was(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, monitor):
        running(serve(settings))
    first = running(deployer(settings))
    steps = staged_spec(
        "deployer:\n  shadow: {rows: 0}\n"
        f"  canary: {{steps: [50, 100], rows_per_step: {ROWS_PER_STEP}, min_labels: 20,"
        " label_wait: 5s, max_metric_drop: 0.05, max_latency_ratio: 1000}\n"
    )
    cycle = await release_second_version(settings, bus, tmp_path, steps)
    await drive(settings, gateway, cycle, drifted=True, until="RolloutAdvanced")
    while not first.done():  # killed in the canary at 50 %
        first.cancel()
        await asyncio.wait([first], timeout=1.0)

    half_way = (await current_routes(bus)).canary
    assert half_way is not None
    assert half_way.weight == 50
    running(deployer(settings))
    _answers, events = await drive(settings, gateway, cycle, drifted=True)

    assert types(events)[-1] == "Deployed"
    assert stages(events) == [("canary", 50), ("canary", 100), ("champion", 100)]
    assert types(events).count("Deployed") == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: see the person test
async def test_a_newer_release_supersedes_a_canary_in_one_step_and_walks_to_champion(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Version 3 passes its evaluation while version 2 is in its canary: version 2 is rolled
    back (superseded) and version 3 started in the same transaction, so its rollout row exists
    and its canary walks on. Once the start's transaction failed as a repeat of the rollback's:
    version 3's routes were out but its rollout lost, and nothing ever moved it."""
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    steps = staged_spec(
        "deployer:\n  shadow: {rows: 0}\n"
        f"  canary: {{steps: [50, 100], rows_per_step: {ROWS_PER_STEP}, min_labels: 20,"
        " label_wait: 5s, max_metric_drop: 0.05, max_latency_ratio: 1000}\n"
    )
    first = await release_second_version(settings, bus, tmp_path, steps)
    await wait_for(settings, first, "RolloutAdvanced")  # version 2 in the canary at 50 %
    churn(np.random.default_rng(10), 900, drifted=True).to_csv(tmp_path / "v3.csv", index=False)

    second = await start_bootstrap(settings, bus, "churn", tmp_path / "v3.csv")

    await wait_for(settings, second, "RolloutAdvanced")
    ended = of_cycle(await read_all_events(settings.resolved_nats_url(), "churn"), first)
    assert types(ended)[-1] == "RolledBack"
    assert ended[-1]["envelope"]["data"]["reason"].startswith("superseded by version 3")
    rollout = (await bus.request(DEPLOYER_STATUS, {"model": "churn"}))["rollout"]
    routes = await current_routes(bus)
    assert (rollout["cycle_id"], rollout["version"], rollout["state"]) == (second, "3", "canary")
    assert routes.champion is not None
    assert routes.champion.version == "1"
    assert routes.canary is not None
    assert (routes.canary.version, routes.canary.weight) == ("3", rollout["weight"])
    assert routes.rollout is not None
    assert routes.rollout["cycle_id"] == second
    _answers, events = await drive(settings, gateway, second, drifted=True)
    assert types(events)[-1] == "Deployed"
    assert stages(events) == [("canary", 50), ("canary", 100), ("champion", 100)]
    final = await current_routes(bus)
    assert final.champion is not None
    assert (final.champion.version, final.canary) == ("3", None)
    await serving(gateway, "3")


async def test_a_release_over_a_degraded_champion_walks_the_degraded_steps_across_a_restart(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, monitor):
        running(serve(settings))
    judge, first = running(evaluator(settings)), running(deployer(settings))
    steps = staged_spec(
        "deployer:\n  shadow: {rows: 0}\n"
        f"  canary: {{steps: [10, 50, 100], degraded_steps: [50, 100], rows_per_step:"
        f" {ROWS_PER_STEP}, min_labels: 20, label_wait: 5s, max_metric_drop: 0.05,"
        " max_latency_ratio: 1000}\n"
    )
    spec = parse_spec(steps)
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
    churn(np.random.default_rng(1), 1200).to_csv(tmp_path / "v1.csv", index=False)
    await wait_for(
        settings, await start_bootstrap(settings, bus, "churn", tmp_path / "v1.csv"), "Deployed"
    )
    while not judge.done():  # the test judges version 2 itself
        judge.cancel()
        await asyncio.wait([judge], timeout=1.0)
    churn(np.random.default_rng(9), 900, drifted=True).to_csv(tmp_path / "v2.csv", index=False)
    cycle = await start_bootstrap(settings, bus, "churn", tmp_path / "v2.csv")
    await wait_for(settings, cycle, "ModelTrained")
    trained = next(
        e["envelope"]["data"]
        for e in of_cycle(await read_all_events(settings.resolved_nats_url(), "churn"), cycle)
        if e["envelope"]["type"] == "ModelTrained"
    )
    verdict = evaluation_passed(
        trained["version"], trained["run_id"], cycle_id=cycle, metric="accuracy"
    ).model_copy(update={"champion_degraded": True})
    await bus.publish(verdict)  # as the evaluator does when the champion was shown degraded
    await drive(settings, gateway, cycle, drifted=True, until="RolloutAdvanced")
    while not first.done():  # killed in the canary's first step
        first.cancel()
        await asyncio.wait([first], timeout=1.0)

    at_first_step = (await current_routes(bus)).canary
    running(deployer(settings))
    _answers, events = await drive(settings, gateway, cycle, drifted=True)

    assert at_first_step is not None
    assert at_first_step.weight == 50  # not steps' 10
    assert types(events)[-1] == "Deployed"
    assert stages(events) == [("canary", 50), ("canary", 100), ("champion", 100)]


@pytest.mark.parametrize(("token", "accepted"), [(None, False), ("wrong", False), ("s3cret", True)])
async def test_commands_need_a_token_when_tokens_are_set(
    settings: Settings, bus: Bus, running: Any, token: str | None, accepted: bool
) -> None:
    running(deployer(settings.model_copy(update={"api_tokens": "other, s3cret"})))

    async def ready() -> dict[str, Any] | None:
        try:
            return await bus.request("driftloop.rpc.ping.deployer")
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return None  # the deployer is still starting

    await eventually(ready)
    spec = parse_spec(SPEC)
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())

    answer = await control(bus, "pause", token=token)

    if accepted:  # past the door: refused for what it asks, not for who asks
        assert answer == {"ok": False, "error": "no rollout of churn is running"}
    else:
        assert answer["ok"] is False
        assert "token" in answer["error"]
        assert "s3cret" not in answer["error"]
