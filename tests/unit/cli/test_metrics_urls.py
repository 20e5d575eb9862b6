"""`driftloop status` lists where each service serves its metrics: the gateway on its HTTP
port, the others where `up` recorded their ports."""

from __future__ import annotations

from pathlib import Path

from driftloop.cli.supervisor import metrics_urls
from driftloop.shared.config import Settings


def test_status_lists_the_recorded_ports_and_none_for_a_service_without_one(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path, gateway_port=8123)
    settings.run_dir.mkdir(parents=True)
    (settings.run_dir / "monitor.metrics").write_text("127.0.0.1:9301")
    (settings.run_dir / "deployer.metrics").write_text("0.0.0.0:9302")  # any address

    urls = metrics_urls(settings)

    assert urls == {
        "gateway": "http://127.0.0.1:8123/metrics",
        "monitor": "http://127.0.0.1:9301/metrics",
        "trainer": None,
        "evaluator": None,
        "deployer": "http://127.0.0.1:9302/metrics",
    }
