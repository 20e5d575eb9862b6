"""One whole retraining cycle through the CLI and the REST API, with real processes:
`driftloop up --detach`, apply, train, drifted traffic with delayed labels, a new champion
released through shadow and canary steps, then rolled back by hand."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import (
    churn,
    cli_env,
    eventually,
    of_cycle,
    read_all_events,
    run_cli,
    staged_spec,
    types,
)

from driftloop.cli.supervisor import free_port, pid_alive
from driftloop.shared.events import TERMINAL_TYPES
from driftloop.shared.telemetry import trace_id_of


def cycle_events(champion_degraded: bool) -> list[str]:
    """A released cycle: shadow, the canary's steps, champion. Over a champion the evaluation
    showed degraded, the canary's degraded_steps (50 %, 100 %); otherwise its steps (10 %,
    50 %, 100 %)."""
    steps = 2 if champion_degraded else 3
    return [
        "RetrainRequested",
        "ModelTrained",
        "EvaluationPassed",
        *["RolloutAdvanced"] * (steps + 2),
        "Deployed",
    ]


class Cli:
    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.env = cli_env(home, port)
        self.gateway = f"http://127.0.0.1:{port}"

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env, *args, timeout=timeout)

    @property
    def nats_url(self) -> str:
        return (self.home / "run" / "nats.url").read_text().strip()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path / "home", free_port())
    up = cli("up", "--detach")
    assert up.returncode == 0, up.stderr
    pids = {p.stem: int(p.read_text()) for p in (cli.home / "run").glob("*.pid")}
    yield cli
    down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not [name for name, pid in pids.items() if pid_alive(pid)], "down left processes"


@pytest.mark.e2e
@pytest.mark.timeout(600)  # a bound on a hang: `up`, a whole cycle and `down` on a busy machine
async def test_drift_cycle_end_to_end_through_cli_and_rest(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "churn.yaml").write_text(staged_spec())
    churn(np.random.default_rng(3), 1200).to_csv(tmp_path / "churn.csv", index=False)

    applied = cli("apply", str(tmp_path / "churn.yaml"))
    trained = cli("train", "churn", "--data", str(tmp_path / "churn.csv"))
    status = json.loads(cli("status", "--json").stdout)

    assert applied.returncode == 0, applied.stderr
    assert trained.returncode == 0, trained.stderr
    assert "deployed churn version 1" in trained.stdout
    assert set(status) == {"home", "nats_url", "gateway_url", "services", "metrics", "models"}
    assert status["services"] == dict.fromkeys(
        ["gateway", "monitor", "trainer", "evaluator", "deployer"], "running"
    )
    async with httpx.AsyncClient(timeout=10) as scraper:
        for service, url in status["metrics"].items():  # each on its own port, from status
            scraped = await scraper.get(url)
            assert scraped.status_code == 200, (service, url)
            assert "driftloop_" in scraped.text, service
    assert len(set(status["metrics"].values())) == 5
    assert status["models"][0]["champion"]["version"] == "1"

    rng = np.random.default_rng(4)

    async def drift_cycle_ended() -> list[dict[str, Any]] | None:
        events = await read_all_events(cli.nats_url, "churn")
        started = [
            e
            for e in events
            if e["envelope"]["type"] == "RetrainRequested"
            and e["envelope"]["data"]["trigger"] == "drift"
        ]
        if not started:
            return None
        last = of_cycle(events, started[0]["envelope"]["data"]["cycle_id"])[-1]
        return events if last["envelope"]["type"] in TERMINAL_TYPES else None

    async with httpx.AsyncClient(base_url=cli.gateway, timeout=30) as http:
        for i in range(300):  # until the cycle ends: the canary steps need labelled traffic
            frame = churn(rng, 50, drifted=True)
            resp = await http.post(
                "/v1/models/churn/predict",
                json={"instances": frame.drop(columns="churned").to_dict(orient="records")},
            )
            assert resp.status_code == 200, resp.text
            body = resp.json()
            labels = [
                {"id": k, "label": int(y)}
                for k, y in zip(body["ids"], frame["churned"], strict=True)
            ]
            assert (
                await http.post("/v1/models/churn/feedback", json={"labels": labels})
            ).status_code == 202
            if i % 5 == 4 and await drift_cycle_ended():
                break
            await asyncio.sleep(0.25 if i < 20 else 0.1)

    events = await eventually(drift_cycle_ended, timeout=150)
    drift = [
        e
        for e in events
        if e["envelope"]["type"] == "RetrainRequested"
        and e["envelope"]["data"]["trigger"] == "drift"
    ]
    assert len(drift) == 1
    cycle_id = drift[0]["envelope"]["data"]["cycle_id"]
    cycle = of_cycle(events, cycle_id)
    verdict = next(e for e in cycle if e["envelope"]["type"] == "EvaluationPassed")
    degraded = verdict["envelope"]["data"]["champion_degraded"]
    assert types(cycle) == cycle_events(degraded)
    weights = [
        e["envelope"]["data"]["weight"]
        for e in cycle
        if e["envelope"]["type"] == "RolloutAdvanced" and e["envelope"]["data"]["stage"] == "canary"
    ]
    assert weights == ([50, 100] if degraded else [10, 50, 100])
    trace_ids = {trace_id_of(e["headers"].get("traceparent")) for e in cycle}
    assert len(trace_ids) == 1
    assert None not in trace_ids
    assert cycle[-1]["envelope"]["data"]["previous_version"] == "1"

    async def serves_v2() -> bool:
        async with httpx.AsyncClient(base_url=cli.gateway, timeout=30) as http:
            resp = await http.post(
                "/v1/models/churn/predict",
                json={"instances": churn(rng, 1).drop(columns="churned").to_dict(orient="records")},
            )
        return resp.json()["version"] == "2"

    await eventually(serves_v2)

    listed = cli("events", "churn", "--json")
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    shown = cli("status", "churn", "--json")

    assert listed.returncode == 0
    assert [e["type"] for e in lines if e["data"].get("cycle_id") == cycle_id] == cycle_events(
        degraded
    )
    assert all(e["specversion"] == "1.0" and e["source"].startswith("/services/") for e in lines)
    assert json.loads(shown.stdout)["champion"]["version"] == "2"
    assert json.loads(shown.stdout)["last_drift"]["drifted_features"]
    assert json.loads(shown.stdout)["last_verdict"]["version"] == "2"
    assert json.loads(shown.stdout)["last_verdict"]["verdict"] == "passed"

    lineage = json.loads(cli("lineage", "churn", "2", "--json", "--verify").stdout)
    assert lineage["dataset_verified"].endswith(f"hash to {lineage['dataset_version']}")
    assert len(lineage["artifact_sha256"]) == 64
    assert lineage["recipe"]["estimator"].startswith("sklearn.")
    assert lineage["cycle_id"] == cycle_id
    assert lineage["trigger"] == "drift"
    assert lineage["parent_version"] == "1"
    assert lineage["dataset_version"] == cycle[1]["envelope"]["data"]["dataset_version"]
    assert lineage["verdict"] == "passed"
    assert "champion" in lineage["aliases"]

    async def traced() -> str | None:
        result = cli("trace", cycle_id)
        return (
            result.stdout
            if result.returncode == 0 and "process driftloop.events.churn.Deployed" in result.stdout
            else None
        )

    tree = await eventually(traced, timeout=30)
    assert "process driftloop.events.churn.ModelTrained" in tree
    assert "driftloop-trainer" in tree

    # A person rolls the release back from the command line: version 1 serves again.
    nothing_to_approve = cli("approve", "churn", "2")
    rolled = cli("rollback", "churn", "--reason", "end-to-end test")
    again = cli("status", "churn", "--json")

    assert nothing_to_approve.returncode == 1
    assert "no rollout of churn is running" in nothing_to_approve.stderr
    assert rolled.returncode == 0, rolled.stderr
    assert "churn version 2: rolled_back - end-to-end test" in rolled.stdout
    assert json.loads(again.stdout)["champion"]["version"] == "1"
    history = cli("events", "churn")
    assert "RolledBack" in history.stdout
    assert "end-to-end test" in history.stdout


@pytest.mark.e2e
async def test_a_crashed_service_is_restarted(cli: Cli) -> None:
    pidfile = cli.home / "run" / "trainer.pid"
    first = int(pidfile.read_text())

    os.kill(first, signal.SIGKILL)

    async def restarted_and_answering() -> bool:
        pid = int(pidfile.read_text())
        states = json.loads(cli("status", "--json").stdout)["services"]
        return pid != first and pid_alive(pid) and states["trainer"] == "running"

    await eventually(restarted_and_answering, timeout=60)
