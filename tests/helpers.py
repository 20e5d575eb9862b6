"""Helpers for the integration and end-to-end tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any, NoReturn, TypeVar

import nats
import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from nats.js.api import DeliverPolicy

from driftloop.cli.supervisor import free_port
from driftloop.shared.events import EVENTS_STREAM, EvaluationPassed
from driftloop.shared.permissions import inbox_prefix

T = TypeVar("T")

SPEC = """\
model: churn
task: classification
target: churned
features: [tenure, monthly_charges, plan, autopay]
recipe:
  estimator: sklearn.ensemble.HistGradientBoostingClassifier
  params: {max_iter: 60, random_state: 0}
monitor:
  window: 300
  drift: {psi_warn: 0.2, psi_retrain: 0.25, min_features: 1}
  cooldown: 10m
trainer: {max_rows: 900, min_rows: 300, holdout: 0.25}
evaluator: {metric: accuracy, min_delta: 0.0, max_p95_ms: 1000}  # latency is not under test here
deployer: {shadow: {rows: 0}, canary: {steps: []}}  # promote at once: see staged_spec()
"""


DIRECT = "deployer: {shadow: {rows: 0}, canary: {steps: []}}"
ROWS_PER_STEP = 60
STAGED = (
    "deployer:\n"
    "  shadow: {rows: 100}\n"
    f"  canary: {{steps: [10, 50, 100], rows_per_step: {ROWS_PER_STEP}, min_labels: 20,"
    " label_wait: 5s, max_metric_drop: 0.05, max_latency_ratio: 1000}\n"
)


def staged_spec(deployer_section: str = STAGED) -> str:
    """The test spec with a staged rollout (latency is not under test: shadows run in the
    test's process beside everything else)."""
    assert DIRECT in SPEC
    return SPEC.replace(DIRECT, deployer_section)


# An empty MLflow SQLite store at the current schema, made once per test process: creating one
# runs MLflow's ~50 Alembic migrations (2-3 s of CPU), which every test that starts the services
# on a fresh home would otherwise repeat. A copy is the same file MLflow would have created.
_MLFLOW_TEMPLATE: list[Path] = []


def mlflow_template() -> Path:
    """The path of this process's empty, migrated MLflow store (made on first use, in a
    subprocess so that no engine of this process keeps it open)."""
    if not _MLFLOW_TEMPLATE:
        path = Path(tempfile.mkdtemp(prefix="driftloop-mlflow-template-")) / "mlflow.db"
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from mlflow.tracking import MlflowClient; "
                "MlflowClient(sys.argv[1], sys.argv[1]).search_experiments(max_results=1)",
                f"sqlite:///{path}",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        _MLFLOW_TEMPLATE.append(path)
    return _MLFLOW_TEMPLATE[0]


def seed_home(home: Path) -> Path:
    """`home` with an empty MLflow store already migrated (a copy of the template), unless it
    has one; what the services then do with it is what they do with a store they created."""
    home.mkdir(parents=True, exist_ok=True)
    store = home / "mlflow.db"
    if not store.exists():
        shutil.copyfile(mlflow_template(), store)
    return home


def cli_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a `driftloop` command under `home` (seeded with an empty MLflow
    store, see seed_home): none of the caller's DRIFTLOOP_, MLFLOW_ or OTEL_ settings leak in."""
    seed_home(home)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "MLFLOW_", "OTEL_"))
    }
    return env | {"DRIFTLOOP_HOME": str(home), "DRIFTLOOP_GATEWAY_PORT": str(port), **extra}


def run_cli(env: dict[str, str], *args: str, timeout: float = 300) -> CompletedProcess[str]:
    """`driftloop ARGS` in a subprocess, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "driftloop.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Each phase's report of a test (setup, call), kept by tests/conftest.py's report hook.
PHASES = pytest.StashKey[dict[str, pytest.TestReport]]()


def unavailable(why: str) -> NoReturn:
    """A prerequisite of the test is missing: a skip on a developer's machine, a failure in
    CI (CI=true), where every prerequisite is installed and a skip would hide a test."""
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def failed(item: pytest.Item) -> bool:
    """Whether the test itself (its call) failed: asked from a fixture's teardown."""
    call = item.stash.get(PHASES, {}).get("call")
    return call is not None and call.failed


# The service tasks the `running` fixture started for the current test (one test at a time per
# process): `eventually` fails at once when one of them crashed rather than wait out its timeout.
SERVICE_TASKS: list[asyncio.Task[Any]] = []


def crashed_service(tasks: list[asyncio.Task[Any]]) -> asyncio.Task[Any] | None:
    """The first of `tasks` that ended with an exception of its own (not cancelled), if any."""
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            return task
    return None


async def stop_services(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel the service tasks until they are done; then fail when one had crashed before
    (ended with an exception of its own) or raised while being stopped."""
    crashed = crashed_service(tasks)
    # Cancel until done: a cancel that lands while a service is still connecting can be
    # swallowed by asyncio.wait_for on Python 3.11, so one cancel() is not enough.
    for task in tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
    stopping = [
        f"{task.get_coro()!r}: {task.exception()!r}"  # retrieved: no "never retrieved" at exit
        for task in tasks
        if not task.cancelled() and task.exception() is not None and task is not crashed
    ]
    if crashed is not None:
        raise AssertionError(
            f"a service task crashed during the test: {crashed.get_coro()!r}"
        ) from crashed.exception()
    if stopping:
        raise AssertionError(f"service tasks raised while being stopped: {stopping}")


async def eventually(
    check: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
) -> T:
    """Poll `check` (a coroutine function or a plain one) until it returns something truthy;
    fail with the last error after timeout."""
    last: BaseException | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        crashed = crashed_service(SERVICE_TASKS)
        if crashed is not None:
            raise AssertionError(
                f"a service task crashed while waiting: {crashed.get_coro()!r}"
            ) from crashed.exception()
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {last}")


def churn_requests(n: int, features: list[str], *, seed: int = 3) -> list[dict[str, Any]]:
    """Drifted churn rows as predict instances, with gaps: tenure missing in every 7th row,
    monthly_charges in every 17th, plan a category never trained on in every 11th and missing
    in every 13th."""
    rows = churn(np.random.default_rng(seed), n, drifted=True)[features].to_dict(orient="records")
    for i, row in enumerate(rows):
        if i % 7 == 0 and "tenure" in row:
            row["tenure"] = None
        if i % 17 == 0 and "monthly_charges" in row:
            row["monthly_charges"] = None
        if i % 11 == 0 and "plan" in row:
            row["plan"] = "enterprise"
        if i % 13 == 0 and "plan" in row:
            row["plan"] = None
    return rows


def churn(rng: np.random.Generator, n: int, *, drifted: bool = False) -> pd.DataFrame:
    """Customers with numeric, categorical and boolean features; `drifted` ones differ in both
    inputs and in what makes them churn."""
    if drifted:
        tenure = rng.gamma(1.2, 8.0, n)
        monthly = rng.normal(110, 10, n)
        plan = rng.choice(["basic", "pro", "max"], n, p=[0.1, 0.3, 0.6])
        logit = -0.1 * (monthly - 110) + np.where(plan == "max", 1.5, -1.0)
    else:
        tenure = rng.gamma(2.0, 12.0, n)
        monthly = rng.normal(60, 15, n)
        plan = rng.choice(["basic", "pro", "max"], n, p=[0.6, 0.3, 0.1])
        logit = 1.0 - 0.07 * tenure + 0.04 * (monthly - 60) + np.where(plan == "basic", 0.5, 0)
    autopay = rng.random(n) < 0.5
    churned = rng.random(n) < 1 / (1 + np.exp(-2 * logit))
    return pd.DataFrame(
        {
            "tenure": tenure.round(1),
            "monthly_charges": monthly.round(2),
            "plan": plan,
            "autopay": autopay,
            "churned": churned.astype(int),
        }
    )


async def connect_nats(url: str, **options: Any) -> nats.NATS:
    """A plain NATS connection to `url`, taking replies in the inbox its user may read (with
    the embedded server's users, `_INBOX.<account>`: shared/permissions.inbox_prefix)."""
    return await nats.connect(url, inbox_prefix=inbox_prefix(url), **options)


async def read_all_events(nats_url: str, model: str | None = None) -> list[dict[str, Any]]:
    """Every event on the stream (oldest first) as {"envelope", "headers"}."""
    nc = await connect_nats(nats_url)
    try:
        js = nc.jetstream()
        subject = f"driftloop.events.{model}.>" if model else "driftloop.events.>"
        info = await js.stream_info(EVENTS_STREAM)
        if info.state.messages == 0:
            return []
        sub = await js.subscribe(
            subject, stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        out: list[dict[str, Any]] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            out.append({"envelope": json.loads(msg.data), "headers": dict(msg.headers or {})})
            if msg.metadata.num_pending == 0:
                break
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def of_cycle(events: list[dict[str, Any]], cycle_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["envelope"]["data"].get("cycle_id") == cycle_id]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["envelope"]["type"] for e in events]


async def consumer_settled(
    js: Any, durable: str, *, acked: int, stream: str = EVENTS_STREAM
) -> Any:
    """The consumer's info once `acked` stream messages are acked (or terminated) and none
    wait, pending or unacknowledged."""
    from nats.js.errors import NotFoundError

    async def check() -> Any:
        try:
            info = await js.consumer_info(stream, durable)
        except NotFoundError as exc:  # the subscription creates it in the background
            raise AssertionError("consumer not created yet") from exc
        assert info.ack_floor is not None
        assert info.ack_floor.stream_seq == acked, info
        assert info.num_pending == 0, info
        assert info.num_ack_pending == 0, info
        return info

    return await eventually(check, timeout=10, interval=0.1)


def evaluation_passed(
    version: str = "2",
    run_id: str = "run-2",
    *,
    cycle_id: str = "cycle-7",
    metric: str = "f1",
    reason: str = "better",
) -> EvaluationPassed:
    """The verdict the evaluator sends for a challenger better than champion version 1, for a
    test acting as the evaluator."""
    return EvaluationPassed(
        model="churn",
        cycle_id=cycle_id,
        version=version,
        run_id=run_id,
        champion_version="1",
        metric=metric,
        challenger_score=0.9,
        champion_score=0.8,
        checks=[],
        reason=reason,
    )


# `driftloop` commands run in this process ---------------------------------------------------

LEAKY_PREFIXES = ("DRIFTLOOP_", "MLFLOW_", "OTEL_")


def invoke_cli(home: Path, *args: str, **extra: str) -> Result:
    """`driftloop ARGS` run in this process by Typer's CliRunner, as a process would run it
    without paying for a new interpreter and its imports (1.5-3 s of CPU a call): with
    DRIFTLOOP_HOME `home` and `extra` added to the environment, and none of the caller's
    DRIFTLOOP_, MLFLOW_ or OTEL_ settings leak in; the CLI's consoles write as to a pipe (80
    columns, no colours) whatever terminal runs the tests (rich fixes a console's width, from
    COLUMNS, and colours, from whether stdout is a terminal, when it is made: at import);
    result.stdout and result.stderr come apart. An exception the command does not turn into an
    exit code fails the test (a process would exit 1).

    What a command may change for the whole process is put back afterwards: the environment
    (CliRunner puts back only the variables it was given; mlflow.set_tracking_uri exports
    MLFLOW_TRACKING_URI), the root logger's handlers and level, MLflow's tracking and registry
    URIs. Commands that configure logging or tracing for good, or serve (`run SERVICE`, `up`),
    need a process of their own: run_cli."""
    from typer.testing import CliRunner

    from driftloop.cli.main import app, err, out

    pinned = ("_width", "_height", "_color_system")  # rich has no public way to unset them
    consoles = [(console, [getattr(console, a) for a in pinned]) for console in (out, err)]
    environ = dict(os.environ)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uris = _mlflow_uris()
    try:
        for key in [k for k in os.environ if k.startswith(LEAKY_PREFIXES)]:
            del os.environ[key]
        for console, _ in consoles:
            console.size, console._color_system = (80, 25), None
        env = {"DRIFTLOOP_HOME": str(home), "COLUMNS": "80", **extra}
        return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    finally:
        if _mlflow_uris() != uris:  # before the environment: setting them sets MLFLOW_ vars
            import mlflow

            mlflow.set_tracking_uri(uris[0])  # type: ignore[arg-type]
            mlflow.set_registry_uri(uris[1])  # type: ignore[arg-type]
        for key in os.environ.keys() - environ.keys():
            del os.environ[key]
        os.environ.update(environ)
        root.handlers[:] = handlers
        root.setLevel(level)
        for console, kept in consoles:
            for attribute, value in zip(pinned, kept, strict=True):
                setattr(console, attribute, value)


def _mlflow_uris() -> tuple[str | None, str | None]:
    """MLflow's process-wide tracking and registry URIs as set (None: not set), if imported."""
    if "mlflow" not in sys.modules:
        return None, None
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    return tracking._tracking_uri, registry._registry_uri


def cpu_seconds() -> float:
    """User and system CPU of this process and of the children it has reaped."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def fixed_port() -> int:
    """A free port below the kernel's ephemeral range, for a server a test stops and starts
    again on the same port (MLflow's outage, the fault tests' gateway): every other port the
    suite picks (`free_port`: bind to port 0, e.g. the services' metrics ports in other
    workers) comes from that range, so this one cannot be taken while its server is away (an
    MLflow port was, once, in CI)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port()
    for _ in range(100):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a process the test started; SIGKILL it if it has not ended within `timeout` s."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
