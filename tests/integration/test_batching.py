"""Adaptive batching: concurrent requests for the same version are predicted together (fewer
model calls than requests, counted by driftloop_batch_rows), each answered exactly as when
predicted alone, each with its own prediction record; a bad request among them fails alone.
A real gateway over HTTP, a real nats-server; the model's predict is slowed by a hook in its
pipeline, and the requests are sent from threads of their own, so that those sent while a
predict holds the event loop are all waiting when it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from helpers import eventually
from serving import ROW, Gateway, register, start_gateway

from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import ROUTES_BUCKET, SPECS_BUCKET, PredictionBatch
from driftloop.shared.routes import Routes
from driftloop.shared.spec import parse_spec

SPEC = "model: churn\ntarget: churned\nfeatures: [tenure, monthly_charges, plan, autopay]\n"
BAD_TENURE = -1.0


def _slow_and_refusing_bad_rows() -> Callable[[Any], Any]:
    def hook(x: Any) -> Any:  # a local function: pickled by value, with the model
        time.sleep(0.1)  # a slow model: what arrives during a call waits for the next one
        if (x["tenure"] == BAD_TENURE).any():
            raise ValueError("a poisoned row")
        return x

    return hook


@pytest.fixture
def db_url() -> None:
    """No service here uses a database."""
    return None


async def serve_slow_champion(settings: Settings, bus: Bus) -> None:
    champion = await asyncio.to_thread(register, settings, hook=_slow_and_refusing_bad_rows())
    await (await bus.kv(SPECS_BUCKET)).put("churn", parse_spec(SPEC).to_json())
    routes = Routes(model="churn", champion=champion, revision=1)
    await (await bus.kv(ROUTES_BUCKET)).put("churn", routes.to_json())


def bodies(count: int) -> list[dict[str, Any]]:
    """Requests of 1 to 3 rows, each row its own."""
    out = []
    for i in range(count):
        rows = [
            ROW | {"tenure": float(3 * i + j), "plan": ("basic", "pro", "max")[(i + j) % 3]}
            for j in range(1 + i % 3)
        ]
        out.append({"instances": rows, "ids": [f"r{i}-{j}" for j in range(len(rows))]})
    return out


def at_once(base_url: str, requests: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """POST each (path, body) from a thread of its own, all at once (blocking)."""

    def post(request: tuple[str, dict[str, Any]]) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            return client.post(request[0], json=request[1])

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(post, requests))


async def model_calls(gateway: Gateway) -> float:
    return float(await gateway.counter("driftloop_batch_rows_count", model="churn"))


async def test_concurrent_requests_are_predicted_together_each_as_if_alone(
    settings: Settings, bus: Bus, running: Any, records: list[PredictionBatch]
) -> None:
    await serve_slow_champion(settings, bus)
    gateway = await start_gateway(settings, running)
    sent = bodies(12)
    alone = []
    for body in sent:
        answer = await gateway.client.post("/v1/models/churn/predict", json=body)
        alone.append(answer.json())
    oip = {"inputs": [{"name": "tenure", "shape": [1], "datatype": "FP64", "data": [7.5]}]}
    oip["inputs"] += [
        {"name": f, "shape": [1], "datatype": t, "data": [ROW[f]]}
        for f, t in (("monthly_charges", "FP64"), ("plan", "BYTES"), ("autopay", "BOOL"))
    ]
    oip_alone = (await gateway.client.post("/v2/models/churn/infer", json=oip)).json()
    calls_before = await model_calls(gateway)
    records.clear()

    together = await asyncio.to_thread(
        at_once,
        str(gateway.client.base_url),
        [("/v1/models/churn/predict", body) for body in sent] + [("/v2/models/churn/infer", oip)],
    )

    calls = await model_calls(gateway) - calls_before
    assert [a.status_code for a in together] == [200] * (len(sent) + 1)
    assert calls < len(sent) + 1
    for got, expected in zip(together, alone, strict=False):
        answer = got.json()
        assert answer["ids"] == expected["ids"]
        assert answer["predictions"] == expected["predictions"]
        for row, alone_row in zip(answer["probabilities"], expected["probabilities"], strict=True):
            assert row == pytest.approx(alone_row, abs=1e-6)
    assert together[-1].json()["outputs"][0]["data"] == oip_alone["outputs"][0]["data"]

    async def every_request_recorded() -> bool:
        return {tuple(body["ids"]) for body in sent} <= {tuple(r.ids) for r in records}

    await eventually(every_request_recorded, timeout=10)
    by_ids = {tuple(r.ids): r for r in records}
    for body, expected in zip(sent, alone, strict=True):
        record = by_ids[tuple(body["ids"])]
        assert record.predictions == expected["predictions"]
        assert len(record.instances) == len(body["instances"])
        assert record.latency_ms is not None
        assert record.latency_ms > 0


async def test_a_bad_request_fails_alone_and_its_batch_mates_are_answered(
    settings: Settings, bus: Bus, running: Any, records: list[PredictionBatch]
) -> None:
    await serve_slow_champion(settings, bus)
    gateway = await start_gateway(settings, running)
    sent = bodies(8)
    sent[5]["instances"][0]["tenure"] = BAD_TENURE
    alone = [
        (await gateway.client.post("/v1/models/churn/predict", json=body)).json()
        for body in sent[:5]
    ]
    errors_before = await gateway.counter("driftloop_errors_total", status="500")
    records.clear()

    together = await asyncio.to_thread(
        at_once,
        str(gateway.client.base_url),
        [("/v1/models/churn/predict", body) for body in sent],
    )

    assert [a.status_code for a in together] == [200] * 5 + [500] + [200] * 2
    assert "ValueError" in together[5].json()["detail"]
    for got, expected in zip(together[:5], alone, strict=True):
        assert got.json()["predictions"] == expected["predictions"]
    assert await gateway.counter("driftloop_errors_total", status="500") == errors_before + 1

    async def every_request_recorded() -> bool:
        return {tuple(body["ids"]) for body in sent} <= {tuple(r.ids) for r in records}

    await eventually(every_request_recorded, timeout=10)
    failed = [r for r in records if r.error]
    assert [r.ids for r in failed] == [sent[5]["ids"]]
    assert "poisoned" in str(failed[0].error)
