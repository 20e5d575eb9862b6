"""The shadow version runs on a copy of served requests, off the request path, in a worker
process of the gateway: its answers are recorded, never returned; a slow shadow is
dropped and counted, not waited for; a killed worker is restarted; a new shadow version
reaches the worker; a tampered one is refused; the gateway's shutdown leaves no worker.
Real nats-server, real MLflow store, real HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import mlflow
import pytest
import uvicorn
from fastapi import FastAPI
from helpers import eventually
from serving import register
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from driftloop.cli.supervisor import free_port, start_nats
from driftloop.gateway.app import create_app
from driftloop.gateway.config import GatewaySettings
from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import ROUTES_BUCKET, SPECS_BUCKET, PredictionBatch
from driftloop.shared.registry import configure_mlflow
from driftloop.shared.routes import Routes, Served
from driftloop.shared.spec import parse_spec

FEATURES = ["tenure", "monthly_charges", "plan", "autopay"]
ROW = {"tenure": 3.0, "monthly_charges": 70.0, "plan": "basic", "autopay": True}
SPEC = "model: churn\ntarget: churned\nfeatures: [tenure, monthly_charges, plan, autopay]\n"


def _sleeping(seconds: float) -> Callable[[Any], Any]:
    return lambda x: (time.sleep(seconds), x)[1]  # pickled by value, with the model


def _raising_on_negative_tenure() -> Callable[[Any], Any]:
    def hook(x: Any) -> Any:  # a local function: pickled by value, with the model
        if (x["tenure"] < 0).any():
            raise ValueError("negative tenure")
        return x

    return hook


def stored_model_file(settings: Settings, version: str) -> Path:
    """The pickled model in the artifact store (as in test_artifacts, which pytest's import
    mode does not let another test module import)."""
    source = configure_mlflow(settings).get_model_version("churn", version).source
    if source.startswith("models:/"):
        source = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
    [pickled] = list(Path(urlparse(source).path).rglob("model.pkl"))
    return pickled


@dataclass
class Gateway:
    client: httpx.AsyncClient
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[Any]

    @property
    def shadow(self) -> Any:
        return self.app.state.shadow

    async def counter(self, name: str, **labels: str) -> float:
        text = (await self.client.get("/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def predict(self, tenure: float = 3.0) -> dict[str, Any]:
        resp = await self.client.post(
            "/v1/models/churn/predict", json={"instances": [ROW | {"tenure": tenure}]}
        )
        assert resp.status_code == 200, resp.text
        answer: dict[str, Any] = resp.json()
        return answer


@pytest.fixture
def start_gateway(settings: Settings, running: Any) -> Callable[..., Any]:
    started: list[Gateway] = []

    async def start(capacity: int = 256, **update: Any) -> Gateway:
        port = free_port()
        own = GatewaySettings(
            **settings.model_dump() | {"gateway_port": port, "shadow_capacity": capacity} | update
        )
        app = create_app(own)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
        task = running(server.serve())
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)

        async def ready() -> bool:
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready)
        gateway = Gateway(client, app, server, task)
        await eventually(lambda: gateway.shadow.pid)  # its worker is up
        started.append(gateway)
        return gateway

    return start


async def route(bus: Bus, champion: Served, shadow: Served | None, revision: int) -> None:
    kv = await bus.kv(SPECS_BUCKET)
    await kv.put("churn", parse_spec(SPEC).to_json())
    routes = Routes(model="churn", champion=champion, shadow=shadow, revision=revision)
    await (await bus.kv(ROUTES_BUCKET)).put("churn", routes.to_json())


def shadows_of(seen: list[PredictionBatch], version: str) -> list[PredictionBatch]:
    return [r for r in seen if r.route == "shadow" and r.version == version]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_shadow_answers_are_recorded_never_returned(
    settings: Settings, bus: Bus, start_gateway: Any, records: list[PredictionBatch]
) -> None:
    champion = await asyncio.to_thread(register, settings, HistGradientBoostingClassifier())
    shadow = await asyncio.to_thread(register, settings, LogisticRegression(max_iter=500))
    await route(bus, champion, shadow, 1)
    gateway = await start_gateway()

    answers = [await gateway.predict() for _ in range(5)]

    assert {(a["version"], a["route"]) for a in answers} == {(champion.version, "champion")}
    ids = {a["ids"][0] for a in answers}
    recorded = await eventually(
        lambda: len({i for r in shadows_of(records, shadow.version) for i in r.ids}) == 5
    )
    assert recorded
    assert all(r.error is None and len(r.predictions) == 1 for r in shadows_of(records, "2"))
    assert {i for r in shadows_of(records, shadow.version) for i in r.ids} == ids


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_slow_shadow_is_dropped_and_counted_while_every_request_is_answered(
    settings: Settings, bus: Bus, start_gateway: Any, records: list[PredictionBatch]
) -> None:
    champion = await asyncio.to_thread(register, settings, HistGradientBoostingClassifier())
    slow = await asyncio.to_thread(
        register, settings, HistGradientBoostingClassifier(), _sleeping(2.0)
    )
    await route(bus, champion, slow, 1)
    gateway = await start_gateway(capacity=2)

    answers = [await gateway.predict() for _ in range(20)]

    assert [a["route"] for a in answers] == ["champion"] * 20
    assert await gateway.counter("driftloop_shadow_dropped_total", version=slow.version) >= 1

    async def accounted() -> bool:  # each mirrored request is recorded or counted as dropped
        dropped = await gateway.counter("driftloop_shadow_dropped_total", version=slow.version)
        return len(shadows_of(records, slow.version)) + dropped == 20

    assert await eventually(accounted)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_shadow_that_raises_is_a_recorded_error(
    settings: Settings, bus: Bus, start_gateway: Any, records: list[PredictionBatch]
) -> None:
    champion = await asyncio.to_thread(register, settings, HistGradientBoostingClassifier())
    failing = await asyncio.to_thread(
        register, settings, HistGradientBoostingClassifier(), _raising_on_negative_tenure()
    )
    await route(bus, champion, failing, 1)
    gateway = await start_gateway()

    answer = await gateway.predict(tenure=-1.0)

    assert answer["route"] == "champion"
    [record] = await eventually(lambda: shadows_of(records, failing.version))
    assert record.ids == answer["ids"]
    assert record.predictions == []
    assert "negative tenure" in str(record.error)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_killed_worker_is_restarted_and_its_jobs_counted_as_dropped(
    settings: Settings, bus: Bus, start_gateway: Any, records: list[PredictionBatch]
) -> None:
    champion = await asyncio.to_thread(register, settings, HistGradientBoostingClassifier())
    slow = await asyncio.to_thread(
        register, settings, HistGradientBoostingClassifier(), _sleeping(30.0)
    )
    await route(bus, champion, slow, 1)
    gateway = await start_gateway()
    first = await eventually(lambda: gateway.shadow.pid)
    for _ in range(3):
        await gateway.predict()  # held by a worker that sleeps

    os.kill(first, signal.SIGKILL)

    second = await eventually(lambda: gateway.shadow.pid not in (None, first))
    assert second
    assert await gateway.counter("driftloop_shadow_dropped_total", version=slow.version) == 3
    assert gateway.shadow.restarts == 1
    assert await gateway.predict()  # the new worker takes jobs (and sleeps on them)
    assert gateway.shadow.in_flight


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_shadow_version_change_reaches_the_worker(
    settings: Settings, bus: Bus, start_gateway: Any, records: list[PredictionBatch]
) -> None:
    champion = await asyncio.to_thread(register, settings, HistGradientBoostingClassifier())
    two = await asyncio.to_thread(register, settings, LogisticRegression(max_iter=500))
    three = await asyncio.to_thread(register, settings, LogisticRegression(C=0.1, max_iter=500))
    await route(bus, champion, two, 1)
    gateway = await start_gateway()
    await gateway.predict()
    await eventually(lambda: shadows_of(records, two.version))

    await route(bus, champion, three, 2)
    await eventually(lambda: gateway.shadow.shadows["churn"].version == three.version)
    answer = await gateway.predict()

    [record] = await eventually(lambda: shadows_of(records, three.version))
    assert record.ids == answer["ids"]
    await route(bus, champion, None, 3)
    await eventually(lambda: "churn" not in gateway.shadow.shadows)
    await gateway.predict()
    assert len(shadows_of(records, two.version)) == 1
    assert len(shadows_of(records, three.version)) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_tampered_shadow_is_refused_by_the_worker(
    settings: Settings, bus: Bus, start_gateway: Any, records: list[PredictionBatch]
) -> None:
    champion = await asyncio.to_thread(register, settings, HistGradientBoostingClassifier())
    shadow = await asyncio.to_thread(register, settings, LogisticRegression(max_iter=500))
    pickled = stored_model_file(settings, shadow.version)
    pickled.write_bytes(pickled.read_bytes() + b"\x00")
    await route(bus, champion, shadow, 1)
    gateway = await start_gateway()

    await eventually(lambda: gateway.shadow.refused.get("churn") == shadow.version)
    answer = await gateway.predict()

    assert answer["route"] == "champion"
    assert await gateway.counter("driftloop_shadow_dropped_total", version=shadow.version) == 1
    assert shadows_of(records, shadow.version) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gateway_shutdown_stops_its_worker(
    settings: Settings, bus: Bus, start_gateway: Any
) -> None:
    champion = await asyncio.to_thread(register, settings, HistGradientBoostingClassifier())
    await route(bus, champion, champion, 1)
    gateway = await start_gateway()
    pid = await eventually(lambda: gateway.shadow.pid)

    gateway.server.should_exit = True
    await asyncio.wait_for(gateway.task, 30)

    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_refusals_are_counted_by_endpoint_and_reason(
    settings: Settings, tmp_path: Path, start_gateway: Any
) -> None:
    proc, url = start_nats(tmp_path / "nats-own", tmp_path / "nats-own.log")  # ours to stop
    try:
        async with connect_bus(
            settings.model_copy(update={"nats_url": url}), service="test"
        ) as own:
            await (await own.kv(SPECS_BUCKET)).put("churn", parse_spec(SPEC).to_json())
        gateway = await start_gateway(nats_url=url)
        await eventually(lambda: gateway.app.state.shadow is not None)
        no_champion = await gateway.client.post(
            "/v1/models/churn/predict", json={"instances": [ROW]}
        )
        proc.kill()  # the gateway's bus goes away
        proc.wait(10)

        feedback = await gateway.client.post(
            "/v1/models/churn/feedback", json={"labels": [{"id": "a", "label": 1}]}
        )

        assert (no_champion.status_code, feedback.status_code) == (503, 503)
        refused = [
            await gateway.counter("driftloop_refused_total", endpoint=e, reason=r)
            for e, r in (("predict", "no_champion"), ("feedback", "bus_unavailable"))
        ]
        assert refused == [1, 1]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_full_record_spool_refuses_with_503_and_counts_it(
    settings: Settings, tmp_path: Path, start_gateway: Any
) -> None:
    champion = await asyncio.to_thread(register, settings, HistGradientBoostingClassifier())
    proc, url = start_nats(tmp_path / "nats-own", tmp_path / "nats-own.log")  # ours to stop
    try:
        async with connect_bus(
            settings.model_copy(update={"nats_url": url}), service="test"
        ) as own:
            await route(own, champion, None, 1)
        gateway = await start_gateway(nats_url=url, record_spool_capacity=3)
        await eventually(gateway.predict)  # the champion is loaded

        async def delivered() -> bool:
            return bool(gateway.app.state.records.pending == 0)

        await eventually(delivered)  # that answer's record went out: the spool is empty
        proc.kill()  # records can no longer leave: they wait in the spool
        proc.wait(10)
        kept = [
            (await gateway.client.post("/v1/models/churn/predict", json={"instances": [ROW]}))
            for _ in range(4)
        ]

        assert [r.status_code for r in kept] == [200, 200, 200, 503]
        assert "records" in kept[-1].json()["detail"]
        assert gateway.app.state.records.pending == 3  # none answered without its record
        full = await gateway.counter(
            "driftloop_refused_total", endpoint="predict", reason="records_full"
        )
        assert full == 1
    finally:
        if proc.poll() is None:
            proc.kill()
