"""The CLI refuses bad input with a clear error and the documented exit codes.

The commands run in this process (helpers.invoke_cli): what is under test is what a command
does, not the interpreter starting. A few run as a real `python -m driftloop.cli` process:
one proves the entry point itself; `run gateway` and `up` need a process of their own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LEAKY_PREFIXES, invoke_cli


def driftloop(
    *args: str, home: Path, timeout: float = 60, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`driftloop ARGS` as a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_PREFIXES)}
    env["DRIFTLOOP_HOME"] = str(home)
    env |= extra or {}
    return subprocess.run(
        [sys.executable, "-m", "driftloop.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_entry_point_refuses_a_wrong_spec_naming_the_field(tmp_path: Path) -> None:
    """`python -m driftloop.cli` itself: its exit code and its stderr, as a script sees them."""
    path = tmp_path / "spec.yaml"
    path.write_text("model: churn\ntarget: y\nmonitor: {window: lots}\n")

    result = driftloop("apply", str(path), home=tmp_path)

    assert result.returncode == 1
    assert "monitor.window" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("model: churn\ntarget: y\nmonitor: {window: lots}\n", "monitor.window"),
        ("model: churn\ntarget: y\nmonitr: {}\n", "monitr"),
        ("model: churn\ntask: clustering\ntarget: y\n", "task"),
        ("model: churn\n", "target"),
        ("model: churn\ntarget: y\nmonitor: {cooldown: soon}\n", "monitor.cooldown"),
        ("- just\n- a list\n", "mapping"),
        ("model: [unclosed\n", "YAML"),
    ],
    ids=[
        "wrong-type",
        "unknown-key",
        "bad-enum",
        "missing-target",
        "bad-duration",
        "not-a-mapping",
        "bad-yaml",
    ],
)
def test_apply_refuses_a_wrong_spec_naming_the_field(tmp_path: Path, spec: str, named: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(spec)

    result = invoke_cli(tmp_path, "apply", str(path))

    assert result.exit_code == 1
    assert named in result.stderr


@pytest.mark.parametrize(
    "estimator",
    [
        "sklearn.datasets.clear_data_home",  # a function that deletes its data_home
        "sklearn.neighbors.KDTree",  # a class, not an estimator
        "sklearn.base.BaseEstimator",  # an estimator class, not from an allowed module
        "sklearn.ensemble.BaseEnsemble",  # allowed module, no fit and predict of its own
        "sklearn.linear_model.NoSuchModel",
        "os.system",
    ],
    ids=["function", "not-an-estimator", "module-not-allowed", "abstract", "unknown", "os"],
)
def test_apply_refuses_a_recipe_that_is_not_an_allowed_estimator_class(
    tmp_path: Path, estimator: str
) -> None:
    data_home = tmp_path / "data_home"
    (data_home / "kept").mkdir(parents=True)
    path = tmp_path / "spec.yaml"
    path.write_text(
        "model: churn\ntarget: y\n"
        f"recipe: {{estimator: {estimator}, params: {{data_home: '{data_home}'}}}}\n"
    )

    result = invoke_cli(tmp_path, "apply", str(path))

    assert result.exit_code == 1
    assert "recipe.estimator" in result.stderr
    assert "driftloop up" not in result.stderr  # refused before reaching for the bus
    assert (data_home / "kept").is_dir()


def test_run_gateway_refuses_a_public_address_with_a_token_list_of_blanks(tmp_path: Path) -> None:
    # A process of its own: `run` hands the process to the service (logging and tracing set
    # for good, BLAS threads limited), the refusal reaches stderr as the uncaught error, and
    # a gateway that did not refuse would serve on 0.0.0.0 until the timeout kills it.
    result = driftloop(
        "run",
        "gateway",
        home=tmp_path,
        extra={"DRIFTLOOP_GATEWAY_HOST": "0.0.0.0", "DRIFTLOOP_API_TOKENS": " , "},
    )

    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 without DRIFTLOOP_API_TOKENS" in result.stderr


def test_unknown_service_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke_cli(tmp_path, "run", "nope")

    assert result.exit_code == 2
    assert "unknown service" in result.stderr


def test_commands_that_need_the_bus_say_how_to_start_it(tmp_path: Path) -> None:
    result = invoke_cli(tmp_path, "retrain", "churn")

    assert result.exit_code == 1
    assert "driftloop up" in result.stderr


def test_train_refuses_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / ("long-" * 20) / "nope.csv"  # past any terminal width
    result = invoke_cli(tmp_path, "train", "churn", "--data", str(missing))

    assert result.exit_code == 1
    assert f"{missing}: no such file" in result.stderr  # whole, on one line


def test_status_reports_everything_down_when_nothing_runs(tmp_path: Path) -> None:
    result = invoke_cli(tmp_path, "status", "--json")

    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["services"] == dict.fromkeys(
        ["gateway", "monitor", "trainer", "evaluator", "deployer"], "down"
    )
    assert doc["models"] == []
    assert doc["nats_url"] is None
    assert doc["metrics"]["monitor"] is None  # no port recorded: `up` did not start it


def test_up_refuses_a_gateway_port_in_use(tmp_path: Path) -> None:
    # A process of its own: `up --detach` starts the supervisor as a child process (which
    # finds the port taken) and waits for it; in this process it would start it all the same.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = driftloop(
            "up",
            "--detach",
            "--timeout",
            "60",
            home=tmp_path,
            extra={"DRIFTLOOP_GATEWAY_PORT": str(port)},
        )

    assert result.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert not (tmp_path / "run" / "supervisor.pid").exists()
