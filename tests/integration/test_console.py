"""The web console at /ui in a real headless Chromium, against the real services over a real
nats-server, database and MLflow store, with API tokens set: the model list after bootstrap,
a drift cycle appearing live in the open page (server-sent events) while the test drives
drifted traffic through the REST API, one chart per feature on the drift page, approve on a
manual-approval rollout, and a control refused without the token."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from browser import DESKTOP, PHONE, Page, page
from helpers import SPEC, churn, eventually, staged_spec
from loop import start_bootstrap, wait_for

from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import SPECS_BUCKET, RolloutAdvanced
from driftloop.shared.spec import parse_spec
from driftloop.trainer.main import serve as trainer

__all__ = ["page"]
TOKEN = "console-test-token"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with write tokens: the console's controls must ask for one."""
    return settings.model_copy(update={"api_tokens": TOKEN, "api_token": TOKEN})


async def release_second_version(settings: Settings, bus: Bus, tmp_path: Path, spec: str) -> str:
    """Version 1 promoted at once, then version 2 from changed customers under `spec` (as in
    test_rollout.py); returns the cycle of version 2."""
    await (await bus.kv(SPECS_BUCKET)).put("churn", parse_spec(spec).to_json())
    churn(np.random.default_rng(1), 1200).to_csv(tmp_path / "v1.csv", index=False)
    first = await start_bootstrap(settings, bus, "churn", tmp_path / "v1.csv")
    await wait_for(settings, first, "Deployed")
    churn(np.random.default_rng(9), 900, drifted=True).to_csv(tmp_path / "v2.csv", index=False)
    return await start_bootstrap(settings, bus, "churn", tmp_path / "v2.csv")


def url(gateway: httpx.AsyncClient, path: str) -> str:
    return f"{gateway.base_url}{path}"


async def test_the_console_lists_a_model_and_shows_a_drift_cycle_live(
    settings: Settings,
    bus: Bus,
    running: Any,
    gateway: httpx.AsyncClient,
    page: Page,
    tmp_path: Path,
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    await (await bus.kv(SPECS_BUCKET)).put("churn", parse_spec(SPEC).to_json())
    churn(np.random.default_rng(1), 1200).to_csv(tmp_path / "v1.csv", index=False)
    await wait_for(
        settings, await start_bootstrap(settings, bus, "churn", tmp_path / "v1.csv"), "Deployed"
    )

    await page.open(url(gateway, "/ui/models"))
    listed = await page.texts("#models tbody tr[data-model] td:first-child")
    await page.shot("console-models.png")
    await page.open(url(gateway, "/ui/models/churn"))
    before = await page.texts("#timeline tbody tr td:nth-child(2)")
    await eventually(lambda: page.texts("#live-state"), timeout=10)
    rng = np.random.default_rng(7)
    for _ in range(8):  # 400 drifted customers: past the spec's 300-row window
        rows = churn(rng, 50, drifted=True).drop(columns="churned").to_dict(orient="records")
        resp = await gateway.post("/v1/models/churn/predict", json={"instances": rows})
        assert resp.status_code == 200, resp.text

    async def drift_shown() -> list[str] | None:
        shown = await page.texts("#timeline tbody tr td:nth-child(2)")
        return shown if "DriftDetected" in shown else None

    live = await eventually(drift_shown, timeout=60, interval=0.5)  # no reload in between

    async def stats_shown() -> str | None:  # the champion's live stats, as the monitor counts
        await page.open(url(gateway, "/ui/models/churn"))
        [rows] = await page.texts('#live-stats tr[data-version="1"] td.rows') or ["0"]
        return rows if int(rows) >= 400 else None

    served_rows = await eventually(stats_shown, timeout=30, interval=0.5)
    await page.shot("console-model.png")
    await page.script("document.getElementById('timeline-section').scrollIntoView()")
    await page.shot("console-timeline.png")
    await page.open(url(gateway, "/ui/models/churn/drift"))
    features = await page.script(
        "return [...document.querySelectorAll('#features section.feature')]"
        ".map(s => [s.dataset.feature, s.querySelectorAll('svg.chart').length])"
    )
    await page.shot("console-drift.png")
    drawn = await page.script(  # each chart's "current" bars: the judged window's share per bin
        "return Object.fromEntries([...document.querySelectorAll('#features section.feature')]"
        ".map(s => [s.dataset.feature, [...s.querySelectorAll('svg.chart rect title')]"
        ".map(t => t.textContent).filter(t => t.includes(': current '))"
        ".map(t => parseFloat(t.split(': current ')[1]))]))"
    )
    judged = (await gateway.get("/v1/models/churn")).json()["monitor"]["last_drift"]["counts"]

    assert listed == ["churn"]
    assert served_rows == "400"  # the drifted customers the test sent, counted by the monitor
    for feature, counts in judged.items():  # drawn from the judged window's counts
        assert drawn[feature] == pytest.approx([100 * c / sum(counts) for c in counts], abs=0.01)
    assert "Deployed" in before
    assert "DriftDetected" not in before
    assert live[0] in ("DriftDetected", "RetrainRequested")  # newest first, added live
    assert sorted(features) == sorted(
        [[f, 1] for f in ("tenure", "monthly_charges", "plan", "autopay")]
    )


async def test_approve_needs_the_token_and_advances_a_manual_rollout(
    settings: Settings,
    bus: Bus,
    running: Any,
    gateway: httpx.AsyncClient,
    page: Page,
    tmp_path: Path,
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    manual = staged_spec("deployer: {shadow: {rows: 0}, approval: manual}\n")
    cycle = await release_second_version(settings, bus, tmp_path, manual)
    await wait_for(settings, cycle, "ApprovalRequired")
    await page.open(url(gateway, "/ui/models/churn"))
    waiting = await page.texts("#rollout .big")

    await page.script("document.getElementById('do-approve').click()")
    refused = await eventually(lambda: page.texts("#control-result.bad"), timeout=20)
    await page.script(
        "const f = document.getElementById('control');"
        "f.elements.token.value = arguments[0]; f.elements.actor.value = 'ana';"
        "document.getElementById('do-approve').click()",
        TOKEN,
    )
    approved = await eventually(lambda: page.texts("#control-result.good"), timeout=30)

    async def advanced() -> list[str] | None:
        shown = await page.texts("#rollout .big")
        return shown if shown and "canary" in shown[0] else None

    after = await eventually(advanced, timeout=30)  # the page reloads itself after a command
    await page.shot("console-approved.png")
    await page.size(*PHONE)
    await page.open(url(gateway, "/ui/models/churn"))
    await page.shot("console-model-phone.png")
    await page.size(*DESKTOP)
    audit = await wait_for(settings, cycle, "Approved")
    no_token = await gateway.post(
        "/ui/models/churn/control", json={"action": "pause"}, headers={"Origin": "http://x"}
    )

    assert "awaiting_approval" in waiting[0]
    assert "401" in refused[0]
    assert "token" in refused[0]
    assert "canary 10%" in approved[0]
    assert "canary 10%" in after[0]
    assert audit[-2:] == ["Approved", "RolloutAdvanced"] or "Approved" in audit
    assert no_token.status_code == 401


def wide(rng: np.random.Generator, n: int, features: int, *, shift: float = 0.0) -> pd.DataFrame:
    """`features` numeric columns and a label that depends on the first three."""
    x = rng.normal(shift, 1.0, (n, features))
    y = (x[:, 0] + x[:, 1] - x[:, 2] + rng.normal(0, 0.5, n)) > 0
    frame = pd.DataFrame(x.round(4), columns=[f"f{i}" for i in range(features)])
    frame["y"] = y.astype(int)
    return frame


async def test_page_load_with_100_features_and_10000_events_is_measured(
    settings: Settings,
    bus: Bus,
    running: Any,
    gateway: httpx.AsyncClient,
    page: Page,
    tmp_path: Path,
) -> None:
    """Not a timed test: the load times are printed (and kept in DRIFTLOOP_CONSOLE_TIMINGS, a
    JSON file, when set) for docs/console.md."""
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    names = [f"f{i}" for i in range(100)]
    spec = (
        SPEC.replace("model: churn", "model: wide")
        .replace("target: churned", "target: y")
        .replace(
            "features: [tenure, monthly_charges, plan, autopay]", f"features: [{', '.join(names)}]"
        )
    )
    await (await bus.kv(SPECS_BUCKET)).put("wide", parse_spec(spec).to_json())
    rng = np.random.default_rng(5)
    wide(rng, 1200, 100).to_csv(tmp_path / "wide.csv", index=False)
    await wait_for(
        settings, await start_bootstrap(settings, bus, "wide", tmp_path / "wide.csv"), "Deployed"
    )
    for _ in range(4):  # a judged window of 300 rows, and 100 in the open one
        rows = wide(rng, 100, 100, shift=0.5).drop(columns="y").to_dict(orient="records")
        resp = await eventually(
            lambda rows=rows: _served(gateway, "wide", rows), timeout=30, interval=0.2
        )
        assert resp.status_code == 200, resp.text

    async def judged() -> bool:
        monitor_status = (await gateway.get("/v1/models/wide")).json().get("monitor") or {}
        return bool(monitor_status.get("last_drift")) and monitor_status.get("window_rows") == 100

    await eventually(judged, timeout=30)
    for first in range(0, 10_000, 500):
        await asyncio.gather(
            *(
                bus.publish(
                    RolloutAdvanced(
                        model="wide",
                        cycle_id=f"load-{i // 50}",
                        version="1",
                        stage="canary",
                        weight=i % 100,
                        reason=f"load test step {i}",
                    )
                )
                for i in range(first, first + 500)
            )
        )
    timings: dict[str, float] = {}
    for name, path in (
        ("models", "/ui/models"),
        ("model", "/ui/models/wide"),
        ("drift", "/ui/models/wide/drift"),
    ):
        await page.open(url(gateway, path))  # once to warm up (the profile is read once)
        await page.open(url(gateway, path))
        timings[name] = round(await page.load_ms(), 1)
        started = time.perf_counter()  # the gateway's part alone: the HTML over HTTP
        await gateway.get(path)
        timings[f"{name} (server)"] = round((time.perf_counter() - started) * 1000, 1)
        if name == "model":
            rows_shown = await page.count("#timeline tbody tr")
            older = await page.count("#older")
        if name == "drift":
            charts = await page.count("#features section.feature svg.chart")
    print(f"console page load, 100 features and 10,000 events (ms): {timings}")  # noqa: T201
    if out := os.environ.get("DRIFTLOOP_CONSOLE_TIMINGS"):
        await asyncio.to_thread(Path(out).write_text, json.dumps(timings, indent=2) + "\n")

    assert rows_shown == 200
    assert older == 1
    assert charts == 100


async def _served(gateway: httpx.AsyncClient, model: str, rows: list[dict[str, Any]]) -> Any:
    resp = await gateway.post(f"/v1/models/{model}/predict", json={"instances": rows})
    return resp if resp.status_code != 503 else None  # no champion loaded yet
