"""The pieces of the whole loop the integration tests share: a connected bus, a live gateway
over real HTTP, a bootstrapped first version, traffic with labels, and waiting for cycles."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import pandas as pd
import pytest
import uvicorn
from helpers import SPEC, churn, eventually, of_cycle, read_all_events, types

from driftloop.cli.main import _upload
from driftloop.cli.supervisor import free_port
from driftloop.gateway.app import create_app
from driftloop.gateway.config import GatewaySettings
from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import SPECS_BUCKET, TERMINAL_TYPES, RetrainRequested
from driftloop.shared.spec import ModelSpec, parse_spec


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    async with connect_bus(settings, service="test") as connected:
        yield connected


@pytest.fixture
async def gateway(settings: Settings, running: Any) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    app = create_app(GatewaySettings(**settings.model_dump() | {"gateway_port": port}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    app.state.occupancy.watch(server)  # as main.serve does
    running(server.serve())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready)
        yield client
    server.should_exit = True


async def bootstrap(settings: Settings, bus: Bus, tmp_path: Path, rows: int = 1200) -> str:
    spec = parse_spec(SPEC)
    kv = await bus.kv(SPECS_BUCKET)
    # The services just started in this test's event loop: their start-up (migrations, the
    # MLflow store, worker processes) can hold the loop past the put's 5 s ack timeout on a
    # loaded 2-core machine. A put is idempotent (the same spec as a new revision): try again.
    for attempt in range(3):
        try:
            await kv.put(spec.model, spec.to_json())
            break
        except nats.errors.TimeoutError:
            if attempt == 2:
                raise
    data = tmp_path / "churn.csv"
    churn(np.random.default_rng(1), rows).to_csv(data, index=False)
    return await start_bootstrap(settings, bus, "churn", data)


async def start_bootstrap(settings: Settings, bus: Bus, model: str, data: Path) -> str:
    """Upload a training file and ask for a bootstrap cycle, as `driftloop train` does."""
    uri = await asyncio.to_thread(_upload, settings, model, data)
    cycle = str(uuid.uuid4())
    await bus.publish(
        RetrainRequested(
            model=model,
            cycle_id=cycle,
            trigger="bootstrap",
            reason=f"test: {data.name}",
            data_uri=uri,
            requested_at=datetime.now(UTC),
        )
    )
    return cycle


async def predict_and_label(
    gateway: httpx.AsyncClient, frame: pd.DataFrame, labels: pd.Series | None = None
) -> dict[str, Any]:
    """Predict a batch of customers, then send its labels (`churned`, or `labels`)."""

    async def answered() -> httpx.Response:
        resp = await gateway.post(
            "/v1/models/churn/predict",
            json={"instances": frame.drop(columns="churned").to_dict(orient="records")},
        )
        # Deployed is out once the routes are written; the gateway then loads the version.
        assert "no champion yet" not in resp.text, resp.text
        return resp

    resp = await eventually(answered, timeout=30, interval=0.1)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    truth = frame["churned"] if labels is None else labels
    feedback = await gateway.post(
        "/v1/models/churn/feedback",
        json={
            "labels": [{"id": k, "label": int(y)} for k, y in zip(body["ids"], truth, strict=True)]
        },
    )
    assert feedback.status_code == 202, feedback.text
    return body


async def wait_for(settings: Settings, cycle: str, last: str, timeout: float = 90) -> list[str]:
    async def ended() -> list[str] | None:
        events = of_cycle(await read_all_events(settings.resolved_nats_url()), cycle)
        seen = types(events)
        if last in seen:
            return seen
        if seen and seen[-1] in TERMINAL_TYPES:  # over, another way: say how, at once
            raise RuntimeError(f"cycle {cycle} ended with {seen}: {events[-1]['envelope']['data']}")
        raise AssertionError(f"cycle {cycle} so far: {seen}")  # the timeout's message

    return await eventually(ended, timeout=timeout)


async def ended_cycle(
    settings: Settings, trigger: str, timeout: float = 150
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All events, and those of the first cycle started by `trigger`, once that cycle ended."""

    async def ended() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        events = await read_all_events(settings.resolved_nats_url(), "churn")
        started = [
            e["envelope"]["data"]["cycle_id"]
            for e in events
            if e["envelope"]["type"] == "RetrainRequested"
            and e["envelope"]["data"]["trigger"] == trigger
        ]
        if not started:
            return None
        cycle = of_cycle(events, started[0])
        return (events, cycle) if cycle[-1]["envelope"]["type"] in TERMINAL_TYPES else None

    return await eventually(ended, timeout=timeout)


async def serving(gateway: httpx.AsyncClient, version: str) -> None:
    async def check() -> bool:
        champion = (await gateway.get("/v1/models/churn")).json()["champion"] or {}
        return champion.get("version") == version

    await eventually(check)


def without_drift_trigger(monitor_line: str) -> ModelSpec:
    """The test spec with drift thresholds out of reach and one more `monitor:` line, so only
    the trigger under test can start a cycle."""
    return parse_spec(
        SPEC.replace("psi_warn: 0.2, psi_retrain: 0.25", "psi_warn: 50, psi_retrain: 50").replace(
            "  cooldown: 10m\n", f"  cooldown: 10m\n  {monitor_line}\n"
        )
    )
