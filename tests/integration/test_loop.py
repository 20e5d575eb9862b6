"""The whole loop in one process, each service's real `serve()` on a real nats-server, a real
database and a real MLflow store, the gateway over real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from helpers import churn, eventually, types
from loop import (
    bootstrap,
    ended_cycle,
    predict_and_label,
    serving,
    start_bootstrap,
    wait_for,
    without_drift_trigger,
)

from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import ROUTES_BUCKET, SPECS_BUCKET
from driftloop.shared.registry import CHAMPION, configure_mlflow, version_by_alias
from driftloop.shared.routes import Routes, Served
from driftloop.shared.spec import parse_spec
from driftloop.trainer.main import serve as trainer

BOOTSTRAP_TYPES = [
    "RetrainRequested",
    "ModelTrained",
    "EvaluationPassed",
    "RolloutAdvanced",
    "Deployed",
]


async def test_bootstrap_cycle_promotes_the_first_version(
    settings: Settings, bus: Bus, running: Any, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))

    cycle = await bootstrap(settings, bus, tmp_path)
    seen = await wait_for(settings, cycle, "Deployed")

    assert seen == BOOTSTRAP_TYPES
    client = configure_mlflow(settings)
    champion = version_by_alias(client, "churn", CHAMPION)
    assert champion is not None
    assert champion.version == "1"
    entry = await (await bus.kv(ROUTES_BUCKET)).get("churn")
    routes = Routes.model_validate_json(entry.value or b"")
    assert routes.champion is not None
    assert routes.champion.version == "1"
    assert routes.rollout is not None
    assert routes.rollout["state"] == "promoted"

    async def monitor_has_reference() -> bool:
        status = await bus.request("driftloop.rpc.monitor.status", {"model": "churn"})
        return status.get("reference_version") == "1"

    await eventually(monitor_has_reference)


GOOD = {"tenure": 12.0, "monthly_charges": 70.5, "plan": "pro", "autopay": True}


async def test_gateway_answers_and_refuses_bad_input_naming_the_field(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer):
        running(serve(settings))
    unknown = await gateway.post("/v1/models/churn/predict", json={"instances": [GOOD]})

    cycle = await bootstrap(settings, bus, tmp_path, rows=600)

    async def no_champion_yet() -> bool:
        resp = await gateway.post("/v1/models/churn/predict", json={"instances": [GOOD]})
        return resp.status_code in (503, 200)

    await eventually(no_champion_yet)
    await wait_for(settings, cycle, "Deployed")

    async def serving() -> httpx.Response | None:
        resp = await gateway.post(
            "/v1/models/churn/predict", json={"instances": [GOOD, GOOD], "ids": ["a", "b"]}
        )
        return resp if resp.status_code == 200 else None

    answer = (await eventually(serving)).json()
    assert unknown.status_code == 404
    assert answer["version"] == "1"
    assert answer["route"] == "champion"
    assert answer["ids"] == ["a", "b"]
    assert sorted(answer["classes"]) == [0, 1]
    assert len(answer["probabilities"]) == 2
    assert abs(sum(answer["probabilities"][0]) - 1) < 1e-6

    missing = await gateway.post(
        "/v1/models/churn/predict", json={"instances": [{"tenure": 3, "plan": "pro"}]}
    )
    wrong_type = await gateway.post(
        "/v1/models/churn/predict", json={"instances": [{**GOOD, "tenure": "long"}]}
    )
    malformed = await gateway.post(
        "/v1/models/churn/predict",
        content=b'{"instances": [',
        headers={"content-type": "application/json"},
    )
    not_a_list = await gateway.post("/v1/models/churn/predict", json={"instances": 5})
    extra = await gateway.post("/v1/models/churn/predict", json={"instances": [GOOD], "x": 1})
    ids_mismatch = await gateway.post(
        "/v1/models/churn/predict", json={"instances": [GOOD], "ids": ["a", "b"]}
    )
    feedback_unknown = await gateway.post(
        "/v1/models/nope/feedback", json={"labels": [{"id": "a", "label": 1}]}
    )
    feedback_bad = await gateway.post("/v1/models/churn/feedback", json={"labels": [{"id": 1}]})
    status_unknown = await gateway.get("/v1/models/nope")

    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "instances", 0, "monthly_charges"]
    assert wrong_type.status_code == 422
    assert "tenure" in wrong_type.json()["detail"][0]["msg"]
    assert malformed.status_code == 422
    assert not_a_list.status_code == 422
    assert not_a_list.json()["detail"][0]["loc"][:2] == ["body", "instances"]
    assert extra.status_code == 422
    assert ids_mismatch.status_code == 422
    assert feedback_unknown.status_code == 404
    assert feedback_bad.status_code == 422
    assert status_unknown.status_code == 404
    metadata = await gateway.get("/v2/models/churn")
    inferred = await gateway.post(
        "/v2/models/churn/versions/1/infer",
        json={
            "id": "r1",
            "inputs": [
                {"name": "tenure", "shape": [2], "datatype": "FP64", "data": [3.0, 40.0]},
                {
                    "name": "monthly_charges",
                    "shape": [2, 1],
                    "datatype": "FP64",
                    "data": [90.0, 50.0],
                },
                {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "max"]},
                {"name": "autopay", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            ],
        },
    )
    oip_missing = await gateway.post(
        "/v2/models/churn/infer",
        json={"inputs": [{"name": "tenure", "shape": [1], "datatype": "FP64", "data": [3.0]}]},
    )
    assert (await gateway.get("/v2/health/ready")).status_code == 200
    assert metadata.json()["versions"] == ["1"]
    assert {i["name"] for i in metadata.json()["inputs"]} == set(GOOD)
    assert inferred.status_code == 200, inferred.text
    outputs = {o["name"]: o for o in inferred.json()["outputs"]}
    assert inferred.json()["model_version"] == "1"
    assert outputs["predict"]["shape"] == [2]
    assert outputs["predict_proba"]["shape"] == [2, 2]
    assert oip_missing.status_code == 422
    assert "monthly_charges" in oip_missing.json()["error"]
    assert (await gateway.get("/v2/models/churn/versions/9/ready")).status_code == 404
    metrics = (await gateway.get("/metrics")).text
    assert 'driftloop_requests_total{model="churn",route="champion",version="1"}' in metrics


async def test_drift_retrains_and_the_gateway_serves_the_new_version(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    await wait_for(settings, await bootstrap(settings, bus, tmp_path), "Deployed")

    async def serving_v1() -> bool:
        champion = (await gateway.get("/v1/models/churn")).json()["champion"] or {}
        return champion.get("version") == "1"

    await eventually(serving_v1)
    rng = np.random.default_rng(2)
    for _ in range(60):
        body = await predict_and_label(gateway, churn(rng, 50, drifted=True))
        if body["version"] == "2":
            break
        await asyncio.sleep(0.2)

    events, cycle_events = await ended_cycle(settings, "drift")
    drift_cycles = [
        e
        for e in events
        if e["envelope"]["type"] == "RetrainRequested"
        and e["envelope"]["data"]["trigger"] == "drift"
    ]
    assert "DriftDetected" in types(events)
    assert len(drift_cycles) == 1, "a persisting drift starts one cycle, not a storm"
    [drift, *_] = [e for e in events if e["envelope"]["type"] == "DriftDetected"]
    figures = {f["feature"]: f for f in drift["envelope"]["data"]["features"]}
    for numeric in ("tenure", "monthly_charges"):
        assert 0 < figures[numeric]["ks_statistic"] <= 1, figures[numeric]
        assert figures[numeric]["ks_pvalue"] is not None
        assert figures[numeric]["wasserstein"] > 0
        assert figures[numeric]["chi2_pvalue"] is None
    for categorical in ("plan", "autopay"):
        assert figures[categorical]["chi2_statistic"] is not None, figures[categorical]
        assert figures[categorical]["chi2_pvalue"] is not None
        assert figures[categorical]["ks_statistic"] is None
    assert types(cycle_events) == BOOTSTRAP_TYPES, cycle_events[-1]["envelope"]["data"]
    await serving(gateway, "2")
    status = (await gateway.get("/v1/models/churn")).json()
    assert status["champion"] == {"version": "2", "predictor": "treelite"}
    assert status["last_drift"]["drifted_features"]


async def test_falling_accuracy_without_input_drift_triggers_a_performance_cycle(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    await wait_for(settings, await bootstrap(settings, bus, tmp_path), "Deployed")
    spec = without_drift_trigger("performance: {metric: accuracy, min: 0.7, min_labels: 200}")
    await (await bus.kv(SPECS_BUCKET)).put("churn", spec.to_json())
    rng = np.random.default_rng(5)

    for _ in range(150):  # same customers, but those on paid plans churn the other way now
        frame = churn(rng, 50)
        flipped = frame["churned"].where(frame["plan"] == "basic", 1 - frame["churned"])
        body = await predict_and_label(gateway, frame, flipped)
        if body["version"] != "1":
            break
        await asyncio.sleep(0.2)

    events, cycle = await ended_cycle(settings, "performance")
    degraded = [e for e in events if e["envelope"]["type"] == "PerformanceDegraded"]
    started = [
        e
        for e in events
        if e["envelope"]["type"] == "RetrainRequested"
        and e["envelope"]["data"]["trigger"] == "performance"
    ]
    assert degraded
    assert degraded[0]["envelope"]["data"]["figure"] < 0.7
    assert "DriftDetected" not in types(events)
    assert len(started) == 1
    assert started[0]["envelope"]["data"]["cause_id"] == degraded[0]["envelope"]["id"]
    assert types(cycle) == BOOTSTRAP_TYPES, cycle[-1]["envelope"]["data"]
    await serving(gateway, "2")
    history = (await gateway.get("/v1/models/churn")).json()["monitor"]["performance_history"]
    low = [h for h in history if h["version"] == "1" and h["figure"] < 0.7]  # the console's chart
    assert low
    assert {(h["metric"], h["floor"]) for h in low} == {("accuracy", 0.7)}
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)


async def test_a_regression_model_on_public_data_is_trained_judged_and_served(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    from sklearn.datasets import load_diabetes

    for serve in (trainer, evaluator, deployer):
        running(serve(settings))
    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame["sex"] = frame["sex"].map({1.0: "F", 2.0: "M"})  # a categorical column, as published
    frame.to_csv(tmp_path / "diabetes.csv", index=False)
    spec = parse_spec(
        "model: diabetes\ntask: regression\ntarget: target\n"
        "recipe: {estimator: sklearn.linear_model.Ridge, params: {alpha: 1.0}}\n"
        "trainer: {min_rows: 100}\nevaluator: {max_p95_ms: 200}\n"
    )
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())

    cycle = await start_bootstrap(settings, bus, "diabetes", tmp_path / "diabetes.csv")
    seen = await wait_for(settings, cycle, "Deployed")

    assert spec.evaluator.metric == "rmse"
    assert seen == BOOTSTRAP_TYPES
    row = frame.drop(columns="target").iloc[0].to_dict()

    async def answered() -> dict[str, Any] | None:
        resp = await gateway.post("/v1/models/diabetes/predict", json={"instances": [row]})
        return resp.json() if resp.status_code == 200 else None

    answer = await eventually(answered)
    assert isinstance(answer["predictions"][0], float)
    assert answer["classes"] is None
    assert answer["probabilities"] is None


async def test_shadow_is_mirrored_off_the_request_path_and_measured_per_version(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    await wait_for(settings, await bootstrap(settings, bus, tmp_path), "Deployed")
    churn(np.random.default_rng(9), 900, drifted=True).to_csv(tmp_path / "v2.csv", index=False)
    second = await start_bootstrap(settings, bus, "churn", tmp_path / "v2.csv")
    await wait_for(settings, second, "Deployed")
    kv = await bus.kv(ROUTES_BUCKET)
    routes = Routes.model_validate_json((await kv.get("churn")).value or b"")
    assert routes.champion is not None
    # Acting as the deployer's shadow stage: version 1 watches version 2's traffic.
    client = configure_mlflow(settings)
    v1 = await asyncio.to_thread(client.get_model_version, "churn", "1")
    shadowed = routes.model_copy(
        update={
            "shadow": Served(version="1", run_id=str(v1.run_id)),
            "revision": routes.revision + 1,
        }
    )
    await kv.put("churn", shadowed.to_json())

    async def shadow_loaded() -> bool:
        return (await gateway.get("/v1/models/churn")).json()["shadow"] == {"version": "1"}

    await eventually(shadow_loaded)
    rng = np.random.default_rng(10)
    answered_by = set()
    for _ in range(10):
        body = await predict_and_label(gateway, churn(rng, 40, drifted=True))
        answered_by.add((body["version"], body["route"]))

    async def measured() -> dict[str, Any] | None:
        shadow = await bus.request(
            "driftloop.rpc.monitor.version", {"model": "churn", "version": "1"}
        )
        champion = await bus.request(
            "driftloop.rpc.monitor.version", {"model": "churn", "version": "2"}
        )
        done = shadow["routes"].get("shadow", {}).get("rows") == 400 and (
            champion["metric"]["labels"] == 300  # the newest `monitor.window` labels
        )
        return {"shadow": shadow, "champion": champion} if done else None

    stats = await eventually(measured)
    assert answered_by == {("2", "champion")}, "a shadow never answers"
    shadow = stats["shadow"]["routes"]["shadow"]
    assert shadow["compared"] == 400
    assert 0 <= shadow["disagreement"] <= 1
    assert shadow["error_rate"] == 0
    assert shadow["latency_ms"]["p95"] is not None
    served = stats["champion"]["routes"]["champion"]
    assert served["requests"] >= 10
    assert 0 <= stats["champion"]["metric"]["figure"] <= 1


async def test_enough_new_labels_trigger_a_volume_cycle_once(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    await wait_for(settings, await bootstrap(settings, bus, tmp_path), "Deployed")
    spec = without_drift_trigger("min_new_labels: 400")
    await (await bus.kv(SPECS_BUCKET)).put("churn", spec.to_json())
    rng = np.random.default_rng(11)

    for _ in range(12):  # 600 labels: past min_new_labels once
        await predict_and_label(gateway, churn(rng, 50))

    events, _cycle = await ended_cycle(settings, "volume")
    started = [
        e
        for e in events
        if e["envelope"]["type"] == "RetrainRequested"
        and e["envelope"]["data"]["trigger"] == "volume"
    ]
    assert len(started) == 1
    assert "min_new_labels 400" in started[0]["envelope"]["data"]["reason"]
