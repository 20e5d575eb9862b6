"""Every service's Prometheus metrics over real HTTP scrapes of real services (real
nats-server, database and MLflow store): the gauges say what the services stored, a restart
loses none of them, and every metric the Grafana dashboards query is one a running service
exports."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import helpers
import httpx
import numpy as np
import pytest
from helpers import churn, eventually, staged_spec
from loop import predict_and_label, start_bootstrap, wait_for
from monitoring import MODEL, T0, predict, start_monitor
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from driftloop.cli.supervisor import free_port
from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.monitor.main import STATUS_SUBJECT
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import ROUTES_BUCKET, SPECS_BUCKET
from driftloop.shared.routes import Routes
from driftloop.shared.spec import parse_spec
from driftloop.trainer.main import serve as trainer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
METRIC = re.compile(r"\bdriftloop_[A-Za-z0-9_:]*")
# What a family's samples are named beyond the family (the exposition's suffixes).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def with_metrics_port(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_port": free_port()})


def metrics_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.metrics_port}/metrics"


async def scrape(url: str) -> dict[str, Any]:
    """The families a /metrics answer holds (prometheus_client's own text parser)."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(url)
    answer.raise_for_status()
    return {f.name: f for f in text_string_to_metric_families(answer.text)}


async def scraped(url: str) -> dict[str, Any]:
    """`scrape` once the exporter answers (it starts when the service is ready)."""

    async def answered() -> dict[str, Any] | None:
        try:
            return await scrape(url)
        except httpx.HTTPError:
            return None

    families: dict[str, Any] = await eventually(answered, timeout=30)
    return families


def samples(families: dict[str, Any], name: str) -> list[Sample]:
    family = families.get(name)
    return list(family.samples) if family is not None else []


def value(families: dict[str, Any], sample: str, **labels: str) -> float | None:
    """The value of the sample named `sample` whose labels include `labels`; None if none."""
    family = re.sub(r"_(total|bucket|count|sum)$", "", sample)
    for s in samples(families, family) + samples(families, sample):
        if s.name == sample and labels.items() <= s.labels.items():
            return float(s.value)
    return None


def exported(families: dict[str, Any]) -> set[str]:
    """Every name a PromQL query may use for these families: each family's name, its
    samples' names and the suffixed names its type implies (declared even without samples)."""
    names: set[str] = set()
    for family in families.values():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(dashboard file, query) for every PromQL expression of every panel and variable."""

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, item in node.items():
                if key in ("expr", "query", "definition") and isinstance(item, str):
                    yield item
                else:
                    yield from walk(item)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for path in sorted(DASHBOARDS.glob("*.json")):
        for query in walk(json.loads(path.read_text())):
            yield path.name, query


def test_the_dashboards_hold_queries_that_name_driftloop_metrics() -> None:
    queries = list(dashboard_queries())

    assert len({name for name, _ in queries}) == 4
    assert all(METRIC.search(query) for _, query in queries), queries


# The monitor's gauges against what it stored -------------------------------------------------

MONITOR_YAML = "  window: 200\n  drift: {psi_warn: 0.2, psi_retrain: 0.25, min_features: 1}\n"


async def drifted_window(bus: Bus) -> dict[str, Any]:
    """Publish a drifted window (tenure three times longer) and one more batch; the monitor's
    status once it judged the window."""
    rng = np.random.default_rng(3)
    for i in range(5):
        await predict(bus, 50, T0 + timedelta(seconds=i), rng, scale=36.0)

    async def judged() -> dict[str, Any] | None:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        done = status.get("last_drift") and status.get("last_decision")
        return status if done and status.get("window_rows") == 50 else None

    status: dict[str, Any] = await eventually(judged, timeout=30)
    return status


def assert_the_gauges_equal(families: dict[str, Any], status: dict[str, Any]) -> None:
    last = status["last_drift"]
    assert last["drifted_features"], last
    for feature, figures in last["features"].items():
        got = value(families, "driftloop_drift_psi", model=MODEL, version="1", feature=feature)
        assert got == pytest.approx(figures["psi"], rel=1e-12), feature
        ks = value(
            families, "driftloop_drift_ks_statistic", model=MODEL, version="1", feature=feature
        )
        expected = figures.get("ks_statistic")
        assert ks == (None if expected is None else pytest.approx(expected, rel=1e-12)), feature
    assert value(families, "driftloop_drift_features_drifted", model=MODEL) == len(
        last["drifted_features"]
    )
    assert value(families, "driftloop_window_rows", model=MODEL, version="1") == 50
    decision = status["last_decision"]
    assert decision["fired"], decision
    fired = value(
        families,
        "driftloop_retrain_decisions_total",
        model=MODEL,
        trigger="drift",
        outcome="fired",
        reason="condition",
    )
    assert fired == 1


async def test_after_a_drifted_window_the_drift_gauges_equal_what_the_monitor_stored_and_a_restart_keeps_them(  # noqa: E501
    settings: Settings, bus: Bus, running: Any
) -> None:
    first = with_metrics_port(settings)
    await start_monitor(first, bus, running, MONITOR_YAML)
    status = await drifted_window(bus)

    families = await scraped(metrics_url(first))

    assert_the_gauges_equal(families, status)
    # the fired decision started a cycle (its RetrainRequested, handled by the monitor too)
    running_cycles = await eventually(
        lambda: _cycles_running(metrics_url(first)), timeout=30, interval=0.5
    )
    assert running_cycles == 1
    ended = value(
        families, "driftloop_cycles_total", model=MODEL, trigger="unknown", outcome="Deployed"
    )
    assert ended == 1  # the Deployed that gave the reference (its start was never seen)
    (first_monitor,) = helpers.SERVICE_TASKS
    while not first_monitor.done():  # stopped: connect_bus closes the bus and its exporter
        first_monitor.cancel()
        await asyncio.wait([first_monitor], timeout=1.0)
    second = with_metrics_port(settings)
    running(monitor(second))

    again = await scraped(metrics_url(second))

    assert_the_gauges_equal(again, status)
    assert value(again, "driftloop_cycles_running", model=MODEL) == 1


async def _cycles_running(url: str) -> float | None:
    return value(await scrape(url), "driftloop_cycles_running", model=MODEL)


async def test_every_bus_consumer_reports_its_lag_and_its_redeliveries(
    settings: Settings, bus: Bus, running: Any
) -> None:
    first = with_metrics_port(settings)
    await start_monitor(first, bus, running, MONITOR_YAML)

    async def reported() -> dict[str, Any] | None:
        families = await scrape(metrics_url(first))
        lag = {
            s.labels["consumer"]: s.value
            for s in samples(families, "driftloop_consumer_pending_messages")
        }
        caught_up = all(lag.get(consumer) == 0 for consumer in CONSUMERS)
        return families if caught_up else None

    families = await eventually(reported, timeout=30)

    for consumer in CONSUMERS:
        assert value(families, "driftloop_consumer_pending_messages", consumer=consumer) == 0
        redelivered = value(families, "driftloop_consumer_redeliveries_total", consumer=consumer)
        assert redelivered == 0
        assert value(families, "driftloop_dead_letters_total", consumer=consumer) == 0


CONSUMERS = {"monitor-predictions", "monitor-feedback", "monitor-Deployed"}


async def test_a_service_whose_metrics_port_is_taken_runs_on_without_metrics(
    settings: Settings, bus: Bus, running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:  # another process listens on the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        occupied = settings.model_copy(update={"metrics_port": taken.getsockname()[1]})

        await start_monitor(occupied, bus, running, MONITOR_YAML)  # it answers its status

        assert any(
            r.getMessage() == "metrics not served: cannot listen on their port"
            for r in caplog.records
        )


# The whole loop: the canary weight, and every metric the dashboards name ---------------------


async def second_version_released(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    """Version 1 promoted at once (nothing served before it), then a version 2 trained on
    the changed customers, released through shadow and the canary steps (staged_spec)."""
    spec = parse_spec(staged_spec())
    await (await bus.kv(SPECS_BUCKET)).put(spec.model, spec.to_json())
    churn(np.random.default_rng(1), 1200).to_csv(tmp_path / "v1.csv", index=False)
    first = await start_bootstrap(settings, bus, "churn", tmp_path / "v1.csv")
    await wait_for(settings, first, "Deployed")
    churn(np.random.default_rng(9), 900, drifted=True).to_csv(tmp_path / "v2.csv", index=False)
    await start_bootstrap(settings, bus, "churn", tmp_path / "v2.csv")


async def current_routes(bus: Bus) -> Routes:
    entry = await (await bus.kv(ROUTES_BUCKET)).get("churn")
    return Routes.model_validate_json(entry.value or b"")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the rollout tests' choice
async def test_in_a_canary_step_the_weight_gauge_matches_the_routes_and_the_dashboards_metrics_are_all_exported(  # noqa: E501
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    urls = {}
    for name, serve in (
        ("trainer", trainer),
        ("evaluator", evaluator),
        ("deployer", deployer),
        ("monitor", monitor),
    ):
        own = with_metrics_port(settings)
        running(serve(own))
        urls[name] = metrics_url(own)
    await second_version_released(settings, bus, tmp_path)
    rng = np.random.default_rng(42)

    async def in_canary() -> int | None:  # labelled traffic until the canary serves
        await predict_and_label(gateway, churn(rng, 5, drifted=True))
        routes = await current_routes(bus)
        return routes.canary.weight if routes.canary is not None else None

    weight = await eventually(in_canary, timeout=120, interval=0.0)

    async def gauge_matches() -> bool:
        routes = await current_routes(bus)
        now = routes.canary.weight if routes.canary is not None else 0
        families = await scrape(urls["deployer"])
        version = {"model": "churn", "version": "2"}
        got = value(families, "driftloop_rollout_canary_weight_ratio", **version)
        canary = value(families, "driftloop_rollout_stage", stage="canary", **version)
        return got == pytest.approx(now / 100) and canary == 1

    assert weight in (10, 50, 100)
    assert await eventually(gauge_matches, timeout=20)
    served = (await gateway.get("/metrics")).text  # the gateway's, on its HTTP port
    everything = exported({f.name: f for f in text_string_to_metric_families(served)})
    for url in urls.values():
        everything |= exported(await scraped(url))
    missing = [
        f"{board}: {name} in {query!r}"
        for board, query in dashboard_queries()
        for name in METRIC.findall(query)
        if name not in everything
    ]
    assert not missing, "queries name metrics no running service exports:\n" + "\n".join(missing)
