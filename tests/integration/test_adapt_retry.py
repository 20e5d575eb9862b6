"""Adapting to an episode: a failed cycle is retried once enough new labels arrived, not when
the time cooldown ends; a model whose attempts keep failing says so (AdaptationStalled); a
persisting drift is reported once and then every `monitor.event_every` windows. Real
nats-server, database and MLflow store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from helpers import SPEC, churn, eventually, read_all_events
from loop import bootstrap, predict_and_label, serving, wait_for
from monitoring import MODEL, T0, predict, start_monitor

from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.monitor.main import STATUS_SUBJECT
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import (
    SPECS_BUCKET,
    DataRejected,
    FeedbackBatch,
    Label,
    TrainingFailed,
)
from driftloop.shared.spec import parse_spec
from driftloop.trainer.main import serve as trainer


def of_type(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e["envelope"]["data"] for e in events if e["envelope"]["type"] == name]


async def requested(settings: Settings, n: int) -> list[dict[str, Any]]:
    """The model's RetrainRequested events, once there are `n`."""

    async def check() -> list[dict[str, Any]]:
        found = of_type(
            await read_all_events(settings.resolved_nats_url(), MODEL), "RetrainRequested"
        )
        assert len(found) >= n, found
        return found

    return list(await eventually(check, timeout=20))


async def drift_episode(bus: Bus, check: Any = None) -> dict[str, Any]:
    """The monitor's open drift episode as its status shows it, once `check` holds on it."""

    async def shown() -> dict[str, Any]:
        episode = (await bus.request(STATUS_SUBJECT, {"model": MODEL}))["episodes"].get("drift")
        assert episode is not None
        assert check is None or check(episode), episode
        return dict(episode)

    return dict(await eventually(shown, timeout=20))


async def label(bus: Bus, ids: list[str]) -> None:
    await bus.publish_record(
        f"driftloop.feedback.{MODEL}",
        FeedbackBatch(
            model=MODEL, labels=[Label(id=i, label=1) for i in ids], at=datetime.now(UTC)
        ),
        msg_id=str(uuid.uuid4()),
    )


async def test_a_model_whose_attempts_keep_failing_emits_adaptation_stalled_once(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await start_monitor(
        settings,
        bus,
        running,
        "  window: 100\n  cooldown: 1h\n  retry_labels: 50\n  stall_after: 2\n  event_every: 2\n",
    )
    rng = np.random.default_rng(21)
    drifted = 36.0  # tenures three times the reference's

    first_ids = await predict(bus, 100, T0, rng, scale=drifted)  # window 1: the episode opens
    [first] = await requested(settings, 1)
    await bus.publish(
        TrainingFailed(model=MODEL, cycle_id=first["cycle_id"], reason="only 40 labelled rows")
    )
    waiting = await drift_episode(bus, lambda e: len(e["attempts"]) == 1)
    second_ids = await predict(
        bus, 100, T0 + timedelta(seconds=1), rng, scale=drifted
    )  # no labels yet
    await drift_episode(bus, lambda e: e["windows"] == 2)
    await label(bus, first_ids + second_ids)
    await drift_episode(bus, lambda e: e["labels_since_last_attempt"] >= 50)
    await predict(bus, 100, T0 + timedelta(seconds=2), rng, scale=drifted)  # window 3: the retry
    second = (await requested(settings, 2))[1]
    await bus.publish(
        DataRejected(model=MODEL, cycle_id=second["cycle_id"], reason="label_consistency 0.4")
    )
    stalled = await drift_episode(bus, lambda e: e["stalled"])
    third_ids = await predict(bus, 100, T0 + timedelta(seconds=3), rng, scale=drifted)  # window 4
    # window 4 closed before its labels come: else, on a busy machine, the labels can be
    # counted first and the retry fire at window 4 (after window 3's DriftDetected), not 5
    await drift_episode(bus, lambda e: e["windows"] == 4)
    await label(bus, third_ids)  # 100 labels: the doubled count the third attempt needs
    await drift_episode(bus, lambda e: e["labels_since_last_attempt"] >= 100)
    await predict(bus, 100, T0 + timedelta(seconds=4), rng, scale=drifted)  # window 5
    third = (await requested(settings, 3))[2]

    assert (first["trigger"], first["attempt"]) == ("drift", 1)
    assert datetime.fromisoformat(first["onset"]) == T0  # the first drifted window's start
    assert waiting["retry_labels_needed"] == 50
    assert waiting["attempts"][0]["outcome"] == "TrainingFailed"
    assert (second["attempt"], second["onset"]) == (2, first["onset"])
    assert "retry after 1 failed attempt" in second["reason"]  # in the 1h cooldown
    assert stalled["retry_labels_needed"] == 100  # doubled
    assert (third["attempt"], third["onset"]) == (3, first["onset"])  # it keeps trying
    events = await read_all_events(settings.resolved_nats_url(), MODEL)
    [adaptation] = of_type(events, "AdaptationStalled")
    assert adaptation["trigger"] == "drift"
    assert datetime.fromisoformat(adaptation["onset"]) == T0
    assert [(a["cycle_id"], a["outcome"]) for a in adaptation["attempts"]] == [
        (first["cycle_id"], "TrainingFailed"),
        (second["cycle_id"], "DataRejected"),
    ]
    assert "label_consistency 0.4" in adaptation["reason"]
    detected = of_type(events, "DriftDetected")  # windows 1, 3, 5 of the episode
    assert [d["episode_windows"] for d in detected] == [1, 3, 5]
    assert {datetime.fromisoformat(d["episode_start"]) for d in detected} == {T0}
    detected_ids = [e["envelope"]["id"] for e in events if e["envelope"]["type"] == "DriftDetected"]
    assert [first["cause_id"], second["cause_id"], third["cause_id"]] == detected_ids


async def drift_requests(settings: Settings, n: int) -> list[dict[str, Any]]:
    """The drift-triggered RetrainRequested of the churn model, once there are `n`."""

    async def check() -> list[dict[str, Any]]:
        events = await read_all_events(settings.resolved_nats_url(), "churn")
        found = [e for e in of_type(events, "RetrainRequested") if e["trigger"] == "drift"]
        assert len(found) >= n, found
        return found

    return list(await eventually(check, timeout=30))


RETRY_SPEC = SPEC.replace("  cooldown: 10m\n", "  cooldown: 1h\n  retry_labels: 200\n").replace(
    "trainer: {max_rows: 900, min_rows: 300, holdout: 0.25}",
    "trainer: {max_rows: 900, min_rows: 400, holdout: 0.25, label_wait: 3s,"
    " onset_holdout_rows: 100}",
)


async def test_a_failed_cycle_is_retried_when_labels_arrive_not_when_the_cooldown_ends(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer, monitor):
        running(serve(settings))
    await wait_for(settings, await bootstrap(settings, bus, tmp_path), "Deployed")
    spec = parse_spec(RETRY_SPEC)
    assert spec.monitor.cooldown == timedelta(hours=1)
    await (await bus.kv(SPECS_BUCKET)).put("churn", spec.to_json())
    await serving(gateway, "1")
    rng = np.random.default_rng(22)

    for _ in range(6):  # one drifted window: 300 labels, fewer than the 400 training needs
        await predict_and_label(gateway, churn(rng, 50, drifted=True))
    [first] = await drift_requests(settings, 1)
    await wait_for(settings, first["cycle_id"], "TrainingFailed", timeout=60)
    for _ in range(40):  # more drifted traffic with its labels, until the retry comes
        await predict_and_label(gateway, churn(rng, 50, drifted=True))
        if len(await drift_requests(settings, 1)) > 1:
            break
    [_, second] = await drift_requests(settings, 2)
    await wait_for(settings, second["cycle_id"], "Deployed", timeout=150)

    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert second["onset"] == first["onset"] is not None
    assert "retry after 1 failed attempt" in second["reason"]  # in the 1h cooldown
    await serving(gateway, "2")

    async def episodes_ended() -> bool:  # the monitor takes Deployed after the gateway serves
        status = (await gateway.get("/v1/models/churn")).json()["monitor"]
        return status["episodes"] == {}  # the deployment ended the episode

    await eventually(episodes_ended, timeout=30)
