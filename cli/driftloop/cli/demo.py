"""`driftloop demo`: one whole cycle on synthetic churn data, shown as it happens.

A first champion is trained from a seeded file; traffic flows through the gateway with labels
arriving one batch late through /feedback; part-way, the customers change (distribution drift)
and so does what makes them churn (concept drift). The monitor notices, the trainer retrains on
recent labels, the evaluator judges, the deployer releases the new version through shadow
and canary steps (10, 50, 100 %; 50, 100 % when the evaluation showed the champion degraded)
analysed on live labelled traffic, and the gateway serves it: the demo ends once it is
champion.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console

from driftloop.cli.client import Received, cancel_and_wait, follow_waits, read_events
from driftloop.cli.supervisor import free_port, stop
from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import SPECS_BUCKET, TERMINAL_TYPES, RetrainRequested
from driftloop.shared.spec import parse_spec

SPEC = """\
model: churn
task: classification
target: churned
features: [tenure, monthly_charges, plan, support_calls]
recipe:
  estimator: sklearn.ensemble.HistGradientBoostingClassifier
  params: {max_iter: 100, random_state: 0}
monitor:
  window: 500
  drift: {psi_warn: 0.2, psi_retrain: 0.25, min_features: 1}
  cooldown: 10m
trainer: {max_rows: 1200, min_rows: 400, holdout: 0.25}
evaluator: {metric: accuracy, min_delta: 0.0, max_p95_ms: 100}
deployer:
  shadow: {rows: 300}
  canary: {steps: [10, 50, 100], rows_per_step: 150, min_labels: 30, label_wait: 10s}
  approval: auto
"""
BATCH = 50
BEFORE_DRIFT = 1500  # rows served before the customers change
MAX_ROWS = 30_000  # the demo fails if no new champion serves by then
AFTER_PROMOTION = 1000  # rows served by the new champion once Deployed


def customers(rng: np.random.Generator, n: int, *, drifted: bool) -> pd.DataFrame:
    """Synthetic customers; `drifted` ones are newer, pay more, and churn for other reasons."""
    if drifted:
        tenure = rng.gamma(1.2, 8.0, n).clip(0, 72)
        monthly = rng.normal(105, 12, n)
        plan = rng.choice(["basic", "standard", "premium"], n, p=[0.2, 0.3, 0.5])
        calls = rng.poisson(3.0, n)
        effect = pd.Series(plan).map({"basic": -0.8, "standard": 0.0, "premium": 1.2}).to_numpy()
        logit = -0.5 - 0.02 * tenure - 0.08 * (monthly - 105) - 0.5 * (calls - 3) + effect
    else:
        tenure = rng.gamma(2.0, 12.0, n).clip(0, 72)
        monthly = rng.normal(65, 15, n)
        plan = rng.choice(["basic", "standard", "premium"], n, p=[0.5, 0.35, 0.15])
        calls = rng.poisson(1.5, n)
        effect = pd.Series(plan).map({"basic": 0.4, "standard": 0.0, "premium": -0.6}).to_numpy()
        logit = 1.2 - 0.06 * tenure + 0.03 * (monthly - 65) + 0.5 * calls + effect
    churned = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * logit))
    return pd.DataFrame(
        {
            "tenure": tenure.round(1),
            "monthly_charges": monthly.round(2),
            "plan": plan,
            "support_calls": calls,
            "churned": churned.astype(int),
        }
    )


@dataclass
class Phase:
    name: str
    right: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else float("nan")


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    first_champion_s: float | None = None
    drift_started_row: int | None = None
    drift_detected_row: int | None = None
    retrain_requested_at: float | None = None
    deployed_at: float | None = None
    cycle_id: str | None = None
    new_version: str | None = None
    rows_served: int = 0
    ended: str | None = None  # the terminal event of the drift cycle
    last_drift: tuple[str, ...] = ()


def run_demo(settings: Settings, *, console: Console, keep: bool = False) -> int:
    home = settings.home / "demo"
    if home.exists():
        stop(settings.model_copy(update={"home": home}))
        shutil.rmtree(home)
    home.mkdir(parents=True)
    port = free_port()
    demo_settings = settings.model_copy(
        update={"home": home, "gateway_port": port, "nats_url": None, "mlflow_tracking_uri": None}
    )
    env = {**os.environ, "DRIFTLOOP_HOME": str(home), "DRIFTLOOP_GATEWAY_PORT": str(port)}
    for var in (
        "DRIFTLOOP_NATS_URL",
        "DRIFTLOOP_DATABASE_URL",
        "MLFLOW_TRACKING_URI",
        "DRIFTLOOP_MLFLOW_TRACKING_URI",
    ):
        env.pop(var, None)
    console.rule("[bold]driftloop demo")
    console.print(f"home {home}\nstarting NATS and the five services ...")
    started = time.monotonic()
    up = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "up", "--detach"], env=env, check=False
    )
    if up.returncode != 0:
        console.print("[red]driftloop up failed[/red]")
        return 1
    console.print(f"up in {time.monotonic() - started:.1f}s")
    try:
        return asyncio.run(_demo(demo_settings, home, console, Timeline(started=started)))
    finally:
        if not keep:
            stop(demo_settings)
            console.print("driftloop stopped (run `driftloop demo --keep` to leave it up)")


async def _demo(settings: Settings, home: Path, console: Console, timeline: Timeline) -> int:
    rng = np.random.default_rng(7)
    data = home / "data"
    data.mkdir()
    customers(rng, 3000, drifted=False).to_csv(data / "churn.csv", index=False)
    (data / "churn.yaml").write_text(SPEC)
    spec = parse_spec(SPEC)
    async with connect_bus(settings, service="cli") as bus:
        kv = await bus.kv(SPECS_BUCKET)
        await kv.put(spec.model, spec.to_json())
        console.print(f"applied {data / 'churn.yaml'}")
        follower = asyncio.create_task(_follow(bus, console, timeline))
        waits = asyncio.create_task(  # the trainer's wait for post-onset labels, as it counts
            follow_waits(
                bus,
                spec.model,
                lambda wait: console.print(f"  [cyan]{'trainer':<18}[/] {wait['progress']}"),
                every=2.0,
            )
        )
        try:
            if not await _bootstrap(settings, bus, data / "churn.csv", console, timeline):
                return 1
            return await _traffic(settings, rng, console, timeline)
        finally:
            await cancel_and_wait(waits)
            await cancel_and_wait(follower)


async def _bootstrap(
    settings: Settings, bus: Bus, csv: Path, console: Console, timeline: Timeline
) -> bool:
    from driftloop.cli.main import _upload

    uri = await asyncio.to_thread(_upload, settings, "churn", csv)
    cycle = str(uuid.uuid4())
    started = time.monotonic()
    await bus.publish(
        RetrainRequested(
            model="churn",
            cycle_id=cycle,
            trigger="bootstrap",
            reason="demo bootstrap (3000 rows)",
            data_uri=uri,
            requested_at=datetime.now(UTC),
        )
    )
    async with httpx.AsyncClient(base_url=settings.gateway_url(), timeout=10) as http:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            resp = await http.get("/v1/models/churn")
            if resp.status_code == 200 and resp.json().get("champion"):
                timeline.first_champion_s = time.monotonic() - started
                console.print(
                    f"[green]first champion serving[/green] after {timeline.first_champion_s:.1f}s"
                )
                return True
            await asyncio.sleep(0.25)
    console.print("[red]no first champion within 120s[/red]")
    return False


async def _follow(bus: Bus, console: Console, timeline: Timeline) -> None:
    with contextlib.suppress(Exception):  # the connection closes under us when the demo ends
        async for received in read_events(bus, "churn", follow=True):
            _on_event(received, console, timeline)


def _on_event(received: Received, console: Console, timeline: Timeline) -> None:
    from driftloop.shared.eventlog import describe

    t, d = received.type, received.data
    if t == "DriftDetected":
        drifted = tuple(d.get("drifted_features", []))
        if drifted == timeline.last_drift:
            return  # the same drift, window after window: shown once
        timeline.last_drift = drifted
    elif t == "Deployed":
        timeline.last_drift = ()
    colour = {
        "DriftDetected": "yellow",
        "RetrainRequested": "cyan",
        "Deployed": "green",
        "EvaluationFailed": "red",
        "TrainingFailed": "red",
        "DataRejected": "red",
    }
    console.print(f"  [{colour.get(t, 'white')}]{t:<18}[/] {describe(received)}")
    if (
        t == "DriftDetected"
        and timeline.drift_detected_row is None
        and (timeline.drift_started_row is not None)
    ):
        timeline.drift_detected_row = timeline.rows_served
    if t == "RetrainRequested" and d.get("trigger") == "drift" and timeline.cycle_id is None:
        timeline.cycle_id = str(d.get("cycle_id"))
        timeline.retrain_requested_at = time.monotonic()
    if d.get("cycle_id") == timeline.cycle_id and t in TERMINAL_TYPES:
        timeline.ended = t
        if t == "Deployed":
            timeline.deployed_at = time.monotonic()
            timeline.new_version = str(d.get("version"))


async def _traffic(
    settings: Settings, rng: np.random.Generator, console: Console, timeline: Timeline
) -> int:
    phases = {
        "before": Phase("before drift"),
        "after": Phase("after drift, old champion"),
        "new": Phase("after drift, new version"),
    }
    pending: list[tuple[list[str], list[Any], list[int], str]] = []
    first_version: str | None = None
    served_new = 0
    console.print(
        f"streaming traffic in batches of {BATCH}; labels arrive one batch late; "
        f"the customers change after {BEFORE_DRIFT} rows"
    )
    async with httpx.AsyncClient(base_url=settings.gateway_url(), timeout=30) as http:
        while timeline.rows_served < MAX_ROWS:
            drifted = timeline.rows_served >= BEFORE_DRIFT
            if drifted and timeline.drift_started_row is None:
                timeline.drift_started_row = timeline.rows_served
                console.print("[bold yellow]-- the customers change now --[/]")
            frame = customers(rng, BATCH, drifted=drifted)
            ids = [str(uuid.uuid4()) for _ in range(BATCH)]
            resp = await http.post(
                "/v1/models/churn/predict",
                json={
                    "instances": frame.drop(columns="churned").to_dict(orient="records"),
                    "ids": ids,
                },
            )
            if resp.status_code != 200:
                console.print(f"[red]predict failed: {resp.status_code} {resp.text}[/]")
                return 1
            body = resp.json()
            first_version = first_version or body["version"]
            labels = frame["churned"].tolist()
            phase = "new" if body["version"] != first_version else "after" if drifted else "before"
            right = sum(int(p == y) for p, y in zip(body["predictions"], labels, strict=True))
            phases[phase].right += right
            phases[phase].total += BATCH
            timeline.rows_served += BATCH
            if phase == "new" and timeline.deployed_at is not None:
                served_new += BATCH
            pending.append((ids, body["predictions"], labels, body["version"]))
            if len(pending) > 1:  # the label of a batch arrives with the next one
                old_ids, _, old_labels, _ = pending.pop(0)
                fb = await http.post(
                    "/v1/models/churn/feedback",
                    json={
                        "labels": [
                            {"id": i, "label": y} for i, y in zip(old_ids, old_labels, strict=True)
                        ]
                    },
                )
                if fb.status_code != 202:
                    console.print(f"[red]feedback refused: {fb.status_code} {fb.text}[/]")
                    return 1
            if timeline.rows_served % 500 == 0:
                console.print(
                    f"  served {timeline.rows_served:>6} rows   accuracy "
                    + "  ".join(f"{p.name}: {p.accuracy:.3f}" for p in phases.values() if p.total)
                )
            if served_new >= AFTER_PROMOTION:
                break
            if timeline.ended not in (None, "Deployed"):
                console.print(
                    f"[red]the retraining cycle ended with {timeline.ended}; "
                    "see `driftloop events churn`[/red]"
                )
                return 1
            await asyncio.sleep(0.05)  # a pace a person can follow
    if served_new < AFTER_PROMOTION:
        console.print(f"[red]no new champion served within {MAX_ROWS} rows[/red]")
        return 1
    _summary(console, settings, timeline, phases)
    return 0


def _summary(
    console: Console, settings: Settings, timeline: Timeline, phases: dict[str, Phase]
) -> None:
    console.rule("[bold]summary")
    console.print(f"time to first champion         {timeline.first_champion_s:.1f}s")
    if timeline.drift_detected_row is not None and timeline.drift_started_row is not None:
        console.print(
            f"drift detected after           "
            f"{timeline.drift_detected_row - timeline.drift_started_row} "
            f"drifted predictions"
        )
    if timeline.retrain_requested_at and timeline.deployed_at:
        console.print(
            f"RetrainRequested -> Deployed   "
            f"{timeline.deployed_at - timeline.retrain_requested_at:.1f}s"
        )
    for p in phases.values():
        console.print(f"accuracy {p.name:<27} {p.accuracy:.3f} ({p.total} rows)")
    console.print(f"total demo time                {time.monotonic() - timeline.started:.1f}s")
    console.rule()
    home = settings.home
    console.print(
        f"trace of the cycle:   DRIFTLOOP_HOME={home} driftloop trace {timeline.cycle_id}"
    )
    console.print(
        f"events:               DRIFTLOOP_HOME={home} driftloop events churn "
        "(needs `driftloop up` on that home)"
    )
    console.print(f"MLflow runs:          mlflow ui --backend-store-uri sqlite:///{home}/mlflow.db")
