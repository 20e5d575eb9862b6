# ruff: noqa: T201  (a benchmark prints its figures)
"""driftloop's gateway vs `mlflow models serve` vs MLServer: one model, one load generator.

Run it from the project's venv (it makes bench/.venv-mlserver on first use: MLServer 1.7
needs fastapi < 0.116 and runs on pandas 2, so it stays out of the project's dependencies):

    .venv/bin/python bench/bench_gateway.py [--duration 15] [--warmup 3] [--rounds 1]
        [--model churn|rf] [--no-shadow]

What one run does:

1. starts the real system (`driftloop up --detach`, a fresh DRIFTLOOP_HOME under a temp dir),
   applies the demo's churn spec (HistGradientBoostingClassifier) and trains version 1 on
   3000 rows of the demo's generator (`driftloop train`): one scikit-learn pipeline,
   registered in driftloop's MLflow store; `--model rf` instead serves model `rf`, a
   RandomForestClassifier(n_estimators=50) on 8 numeric features (3000 seeded rows), issue
   19's case, where the predict call, not the server, is most of a one-row request;
2. serves that same registered version two more ways: `mlflow models serve -m
   models:/churn/1 --env-manager local` (1 uvicorn worker, its default) and MLServer 1.7.1
   with mlserver-sklearn (the pipeline saved with joblib), twice: with its defaults (one
   parallel inference worker process, "MLServer V2") and with parallel_workers 0
   (inference in the server process, "MLServer V2 pw=0"), and a third time with its
   adaptive batching ("MLServer V2 batch": max_batch_size 32, max_batch_time 0.002 s in
   model-settings.json, default workers); all, and mlflow, with one
   OpenMP/BLAS thread (OMP_NUM_THREADS=1 ...), as driftloop's gateway predicts
   (threadpool_limits(1)): with the libraries' default of a thread per core, the
   HistGradientBoosting predict's OpenMP barriers (one per tree) spin-wait, and on a 2-core
   machine with other load a one-row predict took ~1.2 s at times (`--native-threads` keeps
   that default, to see it);
3. drives each with bench/_load.py (its own process, bench venv's Python with uvloop: raw
   keep-alive HTTP/1.1, closed loop) at 1 and 16 connections, `--warmup` then `--duration`
   seconds, one-row requests in each server's own format, round-robin over 64 rows:
   driftloop `/v1/models/churn/predict` and its OIP V2 `/v2/models/churn/infer`, mlflow
   `/invocations` (dataframe_split), MLServer `/v2/models/churn/infer` (content_type pd);
   the servers take turns (the order rotates each round); medians over `--rounds`; for
   driftloop it also reads the gateway's own mean time in run_model (queueing for a batch
   included) and rows per model call (driftloop_batch_rows) over each run;
4. measures the load generator's own ceiling against a trivial server, the prediction-only
   floor (best of N in this process, one thread), and the champion's latency with and
   without a shadow (a Routes value naming the same version as shadow, written to the
   routes bucket as the deployer would), back to back;
5. prints the table and the goals of issues 6 and 19 (goal 1: adaptive batching), and writes
   results.json in the work dir. `--no-shadow` skips the shadow runs.

`--shadow-only` measures the shadow's cost alone, without the other servers (no MLServer venv
needed: the load generator then runs on the project's Python, without uvloop): a gateway of
its own (`python -m driftloop.gateway`, the same bus and store as `driftloop up`'s), with no
shadow then with one, `--rounds` times; besides latency it reads the share of requests the
shadow answered (driftloop_shadow_dropped) and the gateway process's CPU time per request
(its shadow worker's not included), a figure less swayed by the machine's other load.

Every server, the load generator and the other driftloop services share this machine's cores:
the figures are for comparison side by side, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv-mlserver"
VENV_PY = VENV / "bin" / "python"
STAMP = VENV / ".installed"
LOAD = ROOT / "bench" / "_load.py"
PINS = [
    "mlserver==1.7.1",
    "mlserver-sklearn==1.7.1",
    # the pipeline is unpickled there: the project's scikit-learn and numpy, MLServer's pandas 2
    "scikit-learn==1.9.1",
    "numpy==2.4.6",
    "pandas==2.3.3",
    "py-spy==0.4.3",
    # the HTTP parser uvicorn picks when it is installed, as it is for driftloop and mlflow
    # (MLServer depends on plain uvicorn, which parses with h11)
    "httptools==0.9.0",
    # MLServer 1.7.1's worker calls asyncio.get_event_loop(), which uvloop 0.22+ refuses
    "uvloop==0.21.0",
]
MODEL = "churn"  # the demo's model, spec (driftloop.cli.demo.SPEC) and data; see use_model
MS0 = "MLServer V2 pw=0"  # parallel_workers 0: inference in the server process
MSB = "MLServer V2 batch"  # its adaptive batching: max_batch_size 32, max_batch_time 2 ms
SKLEARN = "driftloop /v1 scikit-learn"  # --scikit-learn: DRIFTLOOP_COMPILED_TREES=false
MLSERVERS = ("MLServer V2", MS0, MSB)
FEATURES = ["tenure", "monthly_charges", "plan", "support_calls"]
# the thread limit driftloop's gateway sets itself (threadpool_limits(limits=1)), given to
# mlflow and MLServer through the environment (their worker processes inherit it)
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
V2_TYPES = {"tenure": "FP64", "monthly_charges": "FP64", "plan": "BYTES", "support_calls": "INT64"}
RF_FEATURES = [f"x{i}" for i in range(8)]
RF_SPEC = f"""\
model: rf
task: classification
target: y
features: [{", ".join(RF_FEATURES)}]
recipe:
  estimator: sklearn.ensemble.RandomForestClassifier
  params: {{n_estimators: 50, random_state: 0}}
"""


def use_model(kind: str) -> None:
    """Bench the demo's churn HistGradientBoosting (default) or, `rf`, a
    RandomForestClassifier(n_estimators=50) on 8 numeric features (issue 19's case)."""
    global MODEL, FEATURES, V2_TYPES
    if kind == "rf":
        MODEL, FEATURES, V2_TYPES = "rf", RF_FEATURES, dict.fromkeys(RF_FEATURES, "FP64")


def rf_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """8 standard normal features; y from a noisy linear rule of the first four."""
    x = rng.normal(size=(n, len(RF_FEATURES)))
    frame = pd.DataFrame(x, columns=RF_FEATURES)
    noise = rng.normal(scale=0.5, size=n)
    frame["y"] = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3] + noise > 0).astype(int)
    return frame


# Environment ---------------------------------------------------------------------------------


def ensure_venv() -> None:
    """bench/.venv-mlserver with MLServer at fixed versions (created once)."""
    if STAMP.exists() and STAMP.read_text() == "\n".join(PINS):
        return
    print(f"making {VENV} (MLServer and its runtime, once) ...", flush=True)
    if not VENV_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV_PY), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip==26.3"], check=True)
    subprocess.run([*pip, *PINS], check=True)
    STAMP.write_text("\n".join(PINS))


def free_port() -> int:
    from driftloop.cli.supervisor import free_port as _free

    return _free()


@contextmanager
def process(
    args: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group, stopped (SIGTERM, then SIGKILL) on the way out."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited; see {log}:\n{log.read_text()[-2000:]}")
        with suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s; see {log}")


# The model -----------------------------------------------------------------------------------


def home_of(env: dict[str, str]) -> Path:
    return Path(env["DRIFTLOOP_HOME"])


def driftloop_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "MLFLOW_"))}
    # NATS users off: the bench writes the routes bucket itself, as only the deployer may
    # (authentication is per connection, not per request: no effect on the figures)
    return env | {
        "DRIFTLOOP_HOME": str(home),
        "DRIFTLOOP_GATEWAY_PORT": str(port),
        "DRIFTLOOP_NATS_AUTH": "0",
    }


def bootstrap(work: Path, home: Path) -> tuple[str, str]:
    """Train the demo's churn pipeline (the trainer's own `make_pipeline`, the spec's
    HistGradientBoostingClassifier) on 3000 rows of the demo's generator, register it in
    driftloop's MLflow store with its signature and reference profile, and make it champion:
    the spec into the specs bucket, a Routes value into the routes bucket, as a bootstrap
    cycle's trainer and deployer would (the evaluator's and deployer's judgement is not what
    is measured here). Returns (version, run_id)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    from driftloop.cli.demo import customers
    from driftloop.shared import registry
    from driftloop.shared.config import Settings
    from driftloop.shared.modeling import prepare
    from driftloop.shared.profile import build_profile
    from driftloop.shared.registry import CHAMPION, configure_mlflow, experiment_id
    from driftloop.trainer.domain.training import make_pipeline

    if MODEL == "rf":
        frame, target = rf_frame(np.random.default_rng(7), 3000), "y"
        estimator: Any = RandomForestClassifier(n_estimators=50, random_state=0)
    else:
        frame, target = customers(np.random.default_rng(7), 3000, drifted=False), "churned"
        estimator = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    frame.to_csv(work / f"{MODEL}.csv", index=False)
    settings = Settings(home=home)
    client = configure_mlflow(settings)
    pipeline = make_pipeline(frame, FEATURES, estimator)
    pipeline.fit(prepare(frame, FEATURES), frame[target])
    raw = frame[FEATURES].head(20)
    signature = infer_signature(raw, pipeline.predict(prepare(raw, FEATURES)))
    with mlflow.start_run(experiment_id=experiment_id(client, settings, MODEL)) as run:
        with tempfile.TemporaryDirectory() as tmp:
            profile = build_profile(MODEL, frame, FEATURES)
            (Path(tmp) / "reference_profile.json").write_text(profile.model_dump_json())
            mlflow.log_artifacts(tmp, artifact_path="data")
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            registered_model_name=MODEL,
            serialization_format="cloudpickle",
        )
    version, run_id = str(info.registered_model_version), str(run.info.run_id)
    if hasattr(registry, "record_artifact_digest"):  # the gateway loads only hashed versions
        registry.record_artifact_digest(client, MODEL, version)
    client.set_registered_model_alias(MODEL, CHAMPION, version)
    for attempt in range(3):  # a bus still starting up on a busy machine can time out
        try:
            asyncio.run(_publish_champion(settings, version, run_id))
            break
        except Exception:
            if attempt == 2:
                raise
            time.sleep(2)
    return version, run_id


async def _publish_champion(settings: Any, version: str, run_id: str) -> None:
    from driftloop.cli.demo import SPEC as DEMO_SPEC
    from driftloop.shared.bus import connect_bus
    from driftloop.shared.events import ROUTES_BUCKET, SPECS_BUCKET
    from driftloop.shared.routes import Routes, Served
    from driftloop.shared.spec import parse_spec

    async with connect_bus(settings, service="bench") as bus:
        spec = RF_SPEC if MODEL == "rf" else DEMO_SPEC
        await (await bus.kv(SPECS_BUCKET)).put(MODEL, parse_spec(spec).to_json())
        routes = Routes(model=MODEL, champion=Served(version=version, run_id=run_id), revision=1)
        await (await bus.kv(ROUTES_BUCKET)).put(MODEL, routes.to_json())


def rows(n: int = 64) -> list[dict[str, Any]]:
    from driftloop.cli.demo import customers

    if MODEL == "rf":
        numbers: list[dict[str, Any]] = (
            rf_frame(np.random.default_rng(11), n).drop(columns="y").to_dict(orient="records")
        )
        return numbers
    frame = customers(np.random.default_rng(11), n, drifted=False).drop(columns="churned")
    out: list[dict[str, Any]] = frame.to_dict(orient="records")
    return [
        {k: (float(v) if k in ("tenure", "monthly_charges") else v) for k, v in r.items()}
        for r in out
    ]


def v2_inputs(row: dict[str, Any], *, mlserver: bool) -> list[dict[str, Any]]:
    inputs = []
    for f in FEATURES:
        inp: dict[str, Any] = {"name": f, "shape": [1], "datatype": V2_TYPES[f], "data": [row[f]]}
        if mlserver and V2_TYPES[f] == "BYTES":
            inp["parameters"] = {"content_type": "str"}
        inputs.append(inp)
    return inputs


def bodies(server: str, data: list[dict[str, Any]]) -> list[Any]:
    if server.startswith("driftloop /v1"):
        return [{"instances": [r]} for r in data]
    if server == "driftloop OIP V2":
        return [{"inputs": v2_inputs(r, mlserver=False)} for r in data]
    if server == "mlflow serve":
        return [
            {"dataframe_split": {"columns": FEATURES, "data": [[r[f] for f in FEATURES]]}}
            for r in data
        ]
    if server in MLSERVERS:
        return [
            {"parameters": {"content_type": "pd"}, "inputs": v2_inputs(r, mlserver=True)}
            for r in data
        ]
    raise ValueError(server)


def first_prediction(server: str, answer: Any) -> Any:
    if server.startswith("driftloop /v1"):
        return answer["predictions"][0]
    if server in ("driftloop OIP V2", *MLSERVERS):
        return answer["outputs"][0]["data"][0]
    return answer["predictions"][0]


def export_for_mlserver(
    work: Path,
    tracking_uri: str,
    version: str,
    port: int,
    name: str,
    model_extra: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """The registered pipeline as MLServer's sklearn runtime reads it: model.joblib + settings
    (`extra`: more server settings, such as parallel_workers; `model_extra`: more model
    settings, such as max_batch_size)."""
    import joblib
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    pipeline = mlflow.sklearn.load_model(f"models:/{MODEL}/{version}")
    repo = work / name
    (repo / MODEL).mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, repo / MODEL / "model.joblib")
    (repo / MODEL / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": version},
            }
            | (model_extra or {})
        )
    )
    (repo / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "host": "127.0.0.1",
                "debug": False,
                "load_models_at_startup": True,
            }
            | extra
        )
    )
    return repo


def floor(tracking_uri: str, version: str, data: list[dict[str, Any]], n: int) -> dict[str, float]:
    """The model's own time on one row (best of n, ms, one thread): the pipeline's predict
    and predict_proba on a one-row frame (what mlflow and MLServer call), the final estimator
    alone on the already-encoded row, and the gateway's LoadedModel.predict (from the JSON
    row: encoding, predictions and probabilities)."""
    import mlflow
    from threadpoolctl import threadpool_limits

    from driftloop.gateway.adapters.models import load_version
    from driftloop.shared.modeling import prepare
    from driftloop.shared.routes import Served

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    run_id = mlflow.MlflowClient().get_model_version(MODEL, version).run_id
    loaded = load_version(MODEL, Served(version=version, run_id=str(run_id)))
    plain = load_version(MODEL, Served(version=version, run_id=str(run_id)), compile_trees=False)
    frame = prepare(
        pd.DataFrame([data[0]]),
        FEATURES,
        numeric={f for f, t in V2_TYPES.items() if t != "BYTES"},
    )

    estimator = loaded.pipeline[-1]
    encoded = loaded.pipeline[:-1].transform(frame)

    def best(call: Any, pick: Any = min) -> float:
        call()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        return float(pick(times)) * 1000

    with threadpool_limits(limits=1):
        return {
            "pipeline.predict (1-row frame)": best(lambda: loaded.pipeline.predict(frame)),
            "pipeline.predict_proba": best(lambda: loaded.pipeline.predict_proba(frame)),
            "estimator.predict_proba (row)": best(lambda: estimator.predict_proba(encoded)),
            "gateway LoadedModel.predict": best(lambda: loaded.predict([data[0]])),
            "gateway LoadedModel.predict, scikit-learn": best(lambda: plain.predict([data[0]])),
            "gateway LoadedModel.predict, 16 rows": best(lambda: loaded.predict(data[:16])),
            # the same call's median: what a busy shared machine makes of it
            "gateway LoadedModel.predict, median": best(
                lambda: loaded.predict([data[0]]), pick=np.median
            ),
        }


# Load ----------------------------------------------------------------------------------------


def load_python() -> Path:
    """The bench venv's Python (with uvloop) when it is there, else this one."""
    return VENV_PY if VENV_PY.exists() else Path(sys.executable)


def load(
    url: str, body_file: Path | None, connections: int, args: argparse.Namespace
) -> dict[str, Any]:
    cmd = [
        str(load_python()),
        str(LOAD),
        "--url",
        url,
        "--connections",
        str(connections),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
    ]
    if body_file is not None:
        cmd += ["--bodies", str(body_file)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def set_shadow(home: Path, version: str | None, run_id: str) -> None:
    """Write the model's Routes with (or without) a shadow, as the deployer does."""
    from driftloop.shared.bus import connect_bus
    from driftloop.shared.config import Settings
    from driftloop.shared.events import ROUTES_BUCKET
    from driftloop.shared.routes import Routes, Served

    settings = Settings(home=home)
    async with connect_bus(settings, service="bench") as bus:
        kv = await bus.kv(ROUTES_BUCKET)
        current = Routes.model_validate_json((await kv.get(MODEL)).value or b"{}")
        shadow = Served(version=version, run_id=run_id) if version else None
        updated = current.model_copy(update={"shadow": shadow, "revision": current.revision + 1})
        await kv.put(MODEL, updated.to_json())


def wait_shadow(gateway: str, version: str | None, timeout: float = 30) -> None:
    """Until GET /v1/models/churn shows the champion and this shadow (None: no shadow); when
    that endpoint fails, until a predict answers, plus 2 s for the routes watch to apply."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(httpx.HTTPError, ValueError):
            resp = httpx.get(f"{gateway}/v1/models/{MODEL}", timeout=5)
            if resp.status_code == 200:
                status = resp.json()
                shown = (status.get("shadow") or {}).get("version")
                if status.get("champion") and shown == version:
                    return
            elif resp.status_code >= 500:
                row = rows(1)[0]
                answer = httpx.post(
                    f"{gateway}/v1/models/{MODEL}/predict", json={"instances": [row]}, timeout=5
                )
                if answer.status_code == 200:
                    print(f"(GET /v1/models/{MODEL} answers {resp.status_code}: waiting 2 s)")
                    time.sleep(2)
                    return
        time.sleep(0.2)
    raise RuntimeError(f"the gateway did not serve shadow {version} within {timeout:.0f}s")


def measure_shadow(
    url: str,
    body_file: Path,
    connections: int,
    args: argparse.Namespace,
    work: Path,
    gateway: str,
    version: str,
    run_id: str,
) -> dict[str, float]:
    """Champion latency without and with a shadow, alternated `--rounds` times (at least
    twice) back to back; medians of each side."""
    off: list[dict[str, Any]] = []
    on: list[dict[str, Any]] = []
    for _ in range(max(2, args.rounds)):
        off.append(load(url, body_file, connections, args))
        asyncio.run(set_shadow(work / "home", version, run_id))
        wait_shadow(gateway, version)
        on.append(load(url, body_file, connections, args))
        asyncio.run(set_shadow(work / "home", None, run_id))
        wait_shadow(gateway, None)
    return {
        f"{key}_{side}": median([r[metric] for r in runs])
        for side, runs in (("off", off), ("on", on))
        for key, metric in (("p50", "p50_ms"), ("p99", "p99_ms"), ("rps", "rps"))
    }


def shadow_counts(gateway: str, pid: int) -> dict[str, float]:
    """The gateway's predict requests and shadow jobs dropped so far (from /metrics), and the
    CPU seconds its process used (all its threads; not its shadow worker's)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    counts = {"requests": 0.0, "dropped": 0.0, "cpu_s": (int(stat[11]) + int(stat[12])) / ticks}
    for line in httpx.get(f"{gateway}/metrics", timeout=5).text.splitlines():
        if line.startswith("driftloop_requests_total{") and 'route="champion"' in line:
            counts["requests"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("driftloop_shadow_dropped_total{"):
            counts["dropped"] += float(line.rsplit(" ", 1)[1])
    return counts


def gateway_cpu(pid: int) -> float:
    """CPU seconds of a gateway process and of its worker processes (DRIFTLOOP_GATEWAY_WORKERS
    > 1: its children started by multiprocessing's spawn), every thread counted; not its
    shadow workers' (the forkserver's children) nor its forkserver's."""
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu(one: int | str) -> float:
        stat = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / ticks

    total = cpu(pid)
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            with suppress(OSError):
                if b"multiprocessing.spawn" in Path(f"/proc/{child}/cmdline").read_bytes():
                    total += cpu(child)
    return total


def gateway_sums(gateway: str, pid: int) -> dict[str, float]:
    """Running totals from the gateway's /metrics (summed over its workers when it has
    several): predict latency (seconds, as run_model times it: queueing for a batch
    included), rows per model call and the CPU seconds spent in the model's own predict; and
    the CPU seconds of its processes (gateway_cpu: process_cpu_seconds_total is one worker's
    with several)."""
    sums = dict.fromkeys(("latency_s", "requests", "rows", "calls", "cpu_s", "model_s"), 0.0)
    sums["cpu_s"] = gateway_cpu(pid)
    names = {
        "driftloop_model_cpu_seconds_total{": "model_s",
        "driftloop_predict_seconds_sum{": "latency_s",
        "driftloop_predict_seconds_count{": "requests",
        "driftloop_batch_rows_sum{": "rows",
        "driftloop_batch_rows_count{": "calls",
    }
    for line in httpx.get(f"{gateway}/metrics", timeout=5).text.splitlines():
        for prefix, key in names.items():
            if line.startswith(prefix):
                sums[key] += float(line.rsplit(" ", 1)[1])
    return sums


def measure_shadow_modes(
    gateways: dict[str, tuple[str, int]],
    body_file: Path,
    connections: int,
    args: argparse.Namespace,
    work: Path,
    version: str,
    run_id: str,
) -> dict[str, dict[str, float]]:
    """Each gateway's champion latency without and with a shadow, side by side: every round
    loads each gateway in turn (the order alternates) with no shadow, then with one; medians
    over max(2, --rounds) rounds, the share of requests the shadow answered, and the gateway
    process's CPU ms per request (less sensitive than latency to the machine's other load)."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    mirrored: dict[str, list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for rnd in range(max(2, args.rounds)):
        order = list(gateways.items())
        if rnd % 2:
            order.reverse()
        for side in ("off", "on"):
            asyncio.run(set_shadow(work / "home", version if side == "on" else None, run_id))
            for base, _ in gateways.values():
                wait_shadow(base, version if side == "on" else None)
            for name, (base, pid) in order:
                before = shadow_counts(base, pid)
                r = load(f"{base}/v1/models/{MODEL}/predict", body_file, connections, args)
                runs.setdefault((name, side), []).append(r)
                time.sleep(1)  # the shadow's last answers
                after = shadow_counts(base, pid)
                served = after["requests"] - before["requests"]
                if served:
                    cpu.setdefault((name, side), []).append(
                        1000 * (after["cpu_s"] - before["cpu_s"]) / served
                    )
                if side == "on":
                    lost = after["dropped"] - before["dropped"]
                    mirrored.setdefault(name, []).append(1 - lost / served if served else 0)
                print(
                    f"round {rnd} shadow {side:<3} {name:<8} {connections:>2} conn: "
                    f"{r['rps']:7.0f} req/s p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms",
                    flush=True,
                )
    asyncio.run(set_shadow(work / "home", None, run_id))
    return {
        name: {
            f"{key}_{side}": median([r[metric] for r in runs[(name, side)]])
            for side in ("off", "on")
            for key, metric in (("p50", "p50_ms"), ("p99", "p99_ms"), ("rps", "rps"))
        }
        | {"mirrored": median(mirrored.get(name, []))}
        | {f"cpu_ms_{side}": median(cpu.get((name, side), [])) for side in ("off", "on")}
        for name in gateways
    }


def shadow_report(modes: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    lines = ["champion latency, driftloop /v1, without -> with a shadow, side by side (medians):"]
    for c, by_mode in modes.items():
        for name, s in by_mode.items():
            change = s["p50_on"] / s["p50_off"] - 1
            lines.append(
                f"  {c:>2} conn, shadow in a {name:<7}: p50 {s['p50_off']:.2f} -> "
                f"{s['p50_on']:.2f} ms ({100 * change:+.1f} %, goal <= +10 %: "
                f"{'met' if change <= 0.10 else 'MISSED'}), p99 {s['p99_off']:.2f} -> "
                f"{s['p99_on']:.2f} ms, req/s {s['rps_off']:.0f} -> {s['rps_on']:.0f}, "
                f"mirrored {100 * s['mirrored']:.0f} %, gateway CPU ms/request "
                f"{s['cpu_ms_off']:.2f} -> {s['cpu_ms_on']:.2f}"
            )
    return lines


def run_shadow_only(
    args: argparse.Namespace,
    conns: list[int],
    work: Path,
    env: dict[str, str],
    version: str,
    run_id: str,
) -> None:
    """A gateway of its own on the same bus and store (the `driftloop up` one stays idle): its
    process id gives its CPU time."""
    body_file = work / "bodies-driftloop_v1.json"
    body_file.write_text(json.dumps(bodies("driftloop /v1", rows())))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "gateway-shadow.log"
    with process(
        [sys.executable, "-m", "driftloop.gateway"],
        env=env | {"DRIFTLOOP_GATEWAY_PORT": str(port)},
        log=log,
    ) as proc:
        wait_http(f"{url}/readyz", proc, log, 120)
        wait_shadow(url, None)
        gateways = {"process": (url, proc.pid)}
        modes = {
            c: measure_shadow_modes(gateways, body_file, c, args, work, version, run_id)
            for c in conns
        }
    lines = shadow_report(modes)
    print("\n" + "\n".join(lines))
    (work / "results.json").write_text(
        json.dumps(
            {"shadow_modes": modes, "args": vars(args) | {"work": str(work)}},
            indent=1,
            default=str,
        )
    )
    print(f"\nraw figures: {work / 'results.json'}")


# Report --------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def summarise(results: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, float]]:
    """Median over the rounds of each (server, connections)."""
    keyed: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        keyed.setdefault((r["server"], r["connections"]), []).append(r)
    return {
        k: {
            "rps": median([r["rps"] for r in rs]),
            "p50_ms": median([r["p50_ms"] for r in rs]),
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "errors": float(sum(r["errors"] for r in rs)),
            "outside_ms": median([r.get("outside_ms", float("nan")) for r in rs]),
        }
        for k, rs in keyed.items()
    }


def report(
    table: dict[tuple[str, int], dict[str, float]],
    conns: list[int],
    floors: dict[str, float],
    ceiling: dict[int, float],
    shadow: dict[int, dict[str, float]],
    args: argparse.Namespace,
) -> list[str]:
    servers = list(dict.fromkeys(s for s, _ in table))
    w = max([18, *(len(s) for s in servers)])
    lines = [
        f"{'server':<{w}} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
        f" {'x mlflow':>8} {'x MLServer':>10} {'x MS batch':>10}"
    ]
    for c in conns:
        for s in servers:
            row = table.get((s, c))
            if row is None:
                continue
            ml = table.get(("mlflow serve", c), {}).get("rps", float("nan"))
            ms = table.get(("MLServer V2", c), {}).get("rps", float("nan"))
            msb = table.get((MSB, c), {}).get("rps", float("nan"))
            lines.append(
                f"{s:<{w}} {c:>5} {row['rps']:>8.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
                f" {row['errors']:>6.0f} {row['rps'] / ml:>8.2f} {row['rps'] / ms:>10.2f}"
                f" {row['rps'] / msb:>10.2f}"
            )
    lines.append("")
    lines.append(f"prediction-only floor (one row, best of {args.floor_n}, one thread):")
    for name, ms in floors.items():
        lines.append(f"  {name:<32} {ms:.3f} ms  (= {1000 / ms:.0f} req/s on one core)")
    lines.append(
        "load generator ceiling (trivial server, same machine): "
        + ", ".join(f"{c} conn {rps:.0f} req/s" for c, rps in ceiling.items())
    )
    if shadow:
        lines.append(
            "champion latency, driftloop /v1, without -> with a shadow (alternated, medians):"
        )
        for c, s in shadow.items():
            lines.append(
                f"  {c:>2} conn: p50 {s['p50_off']:.2f} -> {s['p50_on']:.2f} ms "
                f"({100 * (s['p50_on'] / s['p50_off'] - 1):+.1f} %), "
                f"p99 {s['p99_off']:.2f} -> {s['p99_on']:.2f} ms, "
                f"req/s {s['rps_off']:.0f} -> {s['rps_on']:.0f}"
            )
    lines.append("")
    lines.append("goals (issue 6), driftloop /v1:")
    for c in conns:
        dl = table.get(("driftloop /v1", c))
        ml = table.get(("mlflow serve", c))
        ms = table.get(("MLServer V2", c))
        if dl and ml:
            ratio = dl["rps"] / ml["rps"]
            lines.append(
                f"  {c:>2} conn: >= 2x mlflow req/s: {ratio:.2f}x "
                f"{'met' if ratio >= 2 else 'MISSED'}"
            )
        for ms_name in ("MLServer V2", MS0):
            ms = table.get((ms_name, c))
            if not (dl and ms):
                continue
            ratio = dl["rps"] / ms["rps"]
            lines.append(
                f"  {c:>2} conn: >= {ms_name} req/s: {ratio:.2f}x "
                f"{'met' if ratio >= 1 else 'MISSED'}"
            )
    dl16 = table.get(("driftloop /v1", 16))
    for ms_name in ("MLServer V2", MS0):
        ms16 = table.get((ms_name, 16))
        if not (dl16 and ms16):
            continue
        ok = dl16["p99_ms"] <= ms16["p99_ms"]
        lines.append(
            f"  16 conn: p99 <= {ms_name}'s: {dl16['p99_ms']:.2f} vs {ms16['p99_ms']:.2f} ms "
            f"{'met' if ok else 'MISSED'}"
        )
    lines.append("goals (issue 19, goal 1: adaptive batching), driftloop /v1:")
    msb16 = table.get((MSB, 16))
    if dl16 and msb16:
        ratio = dl16["rps"] / msb16["rps"]
        lines.append(
            f"  16 conn: >= 2x {MSB} req/s: {ratio:.2f}x {'met' if ratio >= 2 else 'MISSED'}"
        )
        ok = dl16["p99_ms"] <= msb16["p99_ms"]
        lines.append(
            f"  16 conn: p99 <= {MSB}'s: {dl16['p99_ms']:.2f} vs {msb16['p99_ms']:.2f} ms "
            f"{'met' if ok else 'MISSED'}"
        )
    lines.append("goals (issue 19, goal 2: a lean request path), driftloop /v1:")
    for c in conns:
        for s in [s for s in servers if s.startswith("driftloop /v1")]:
            row = table.get((s, c))
            if not row:
                continue
            ok = row["outside_ms"] <= 1
            msb = table.get((MSB, c))
            versus = f"; {row['rps'] / msb['rps']:.2f}x {MSB} req/s" if msb else ""
            lines.append(
                f"  {c:>2} conn, {s}: gateway CPU per request outside the model <= 1 ms: "
                f"{row['outside_ms']:.2f} ms {'met' if ok else 'MISSED'}{versus}"
            )
    dl1 = table.get(("driftloop /v1", 1))
    for name, what in (
        ("gateway LoadedModel.predict", "the gateway's predictor"),
        ("gateway LoadedModel.predict, scikit-learn", "scikit-learn's predict"),
    ):
        own = floors.get(name)
        if dl1 and own is not None:
            gap = dl1["p50_ms"] - own
            lines.append(
                f"   1 conn: p50 within 1 ms of the prediction-only floor, {what} "
                f"({own:.2f} ms): {gap:+.2f} ms {'met' if gap <= 1 else 'MISSED'}"
            )
    if 1 in shadow:
        s = shadow[1]
        change = s["p50_on"] / s["p50_off"] - 1
        lines.append(
            f"   1 conn: champion p50 with a shadow within 10 %: {100 * change:+.1f} % "
            f"{'met' if change <= 0.10 else 'MISSED'}"
        )
    return lines


# Run -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every run; medians shown")
    parser.add_argument("--floor-n", type=int, default=2000)
    parser.add_argument(
        "--model",
        choices=["churn", "rf"],
        default="churn",
        help="churn: the demo's HistGradientBoosting; rf: RandomForestClassifier(n_estimators=50)"
        " on 8 numeric features (issue 19)",
    )
    parser.add_argument("--work", type=Path, help="work dir (default: a new temp dir)")
    parser.add_argument("--only", default="", help="comma list of servers to run (default all)")
    parser.add_argument(
        "--no-shadow", action="store_true", help="skip the champion-with-a-shadow runs"
    )
    parser.add_argument(
        "--shadow-only",
        action="store_true",
        help="only the shadow's cost: champion latency and gateway CPU without and with a shadow",
    )
    parser.add_argument(
        "--gateway-workers",
        type=int,
        default=0,
        metavar="N",
        help="also bench a gateway of N worker processes (DRIFTLOOP_GATEWAY_WORKERS=N, on the "
        "same bus and store; line 'driftloop /v1 N workers'), beside `driftloop up`'s single one",
    )
    parser.add_argument(
        "--scikit-learn",
        action="store_true",
        help=f"also bench a gateway predicting with scikit-learn (DRIFTLOOP_COMPILED_TREES=false, "
        f"on the same bus and store; line '{SKLEARN}') beside `driftloop up`'s treelite one",
    )
    parser.add_argument(
        "--native-threads",
        action="store_true",
        help="mlflow and MLServer with their libraries' default thread pools (OpenMP: one "
        "thread per core) instead of one thread, as the gateway predicts",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for `driftloop up` (e.g. OTEL_TRACES_SAMPLER=always_off)",
    )
    args = parser.parse_args()
    use_model(args.model)
    conns = [int(c) for c in args.connections.split(",")]
    if not args.shadow_only:
        ensure_venv()
    work = args.work or Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    gw_port = free_port()
    env = driftloop_env(home, gw_port)
    up_env = env | dict(kv.split("=", 1) for kv in args.gateway_env)
    gateway = f"http://127.0.0.1:{gw_port}"
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    print(f"work dir {work}; {platform.platform()}, {os.cpu_count()} cores", flush=True)
    up_log = work / "driftloop-up.log"
    with process([sys.executable, "-m", "driftloop.cli", "up"], env=up_env, log=up_log) as up_proc:
        wait_http(f"{gateway}/readyz", up_proc, up_log, 180)
        version, run_id = bootstrap(work, home)
        wait_shadow(gateway, None)  # the gateway serves the champion
        if args.shadow_only:
            run_shadow_only(args, conns, work, env, version, run_id)
        else:
            run(args, conns, work, env, gateway, tracking, version, run_id)


def run(
    args: argparse.Namespace,
    conns: list[int],
    work: Path,
    env: dict[str, str],
    gateway: str,
    tracking: str,
    version: str,
    run_id: str,
) -> None:
    data = rows()
    print("prediction-only floor ...", flush=True)
    floors = floor(tracking, version, data, args.floor_n)
    ml_port, ms_port, trivial_port = free_port(), free_port(), free_port()
    ms0_port, msb_port = free_port(), free_port()
    repo = export_for_mlserver(work, tracking, version, ms_port, "mlserver")
    repo0 = export_for_mlserver(work, tracking, version, ms0_port, "mlserver-0", parallel_workers=0)
    repob = export_for_mlserver(
        work,
        tracking,
        version,
        msb_port,
        "mlserver-batch",
        model_extra={"max_batch_size": 32, "max_batch_time": 0.002},
    )
    base = env | ({} if args.native_threads else ONE_THREAD)
    ml_env = base | {  # it execs `uvicorn` from PATH
        "MLFLOW_TRACKING_URI": tracking,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{env['PATH']}",
    }
    ms_env = {k: v for k, v in base.items() if k != "VIRTUAL_ENV"} | {
        "PATH": f"{VENV / 'bin'}:{env['PATH']}"
    }
    with (
        process(
            [
                str(ROOT / ".venv" / "bin" / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{MODEL}/{version}",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(ml_port),
            ],
            env=ml_env,
            log=work / "mlflow-serve.log",
        ) as ml_proc,
        process(
            [str(VENV / "bin" / "mlserver"), "start", str(repo)],
            env=ms_env,
            log=work / "mlserver.log",
            cwd=repo,  # it writes its Prometheus files to .metrics/ in its working directory
        ) as ms_proc,
        process(
            [str(VENV / "bin" / "mlserver"), "start", str(repo0)],
            env=ms_env,
            log=work / "mlserver-0.log",
            cwd=repo0,
        ) as ms0_proc,
        process(
            [str(VENV / "bin" / "mlserver"), "start", str(repob)],
            env=ms_env,
            log=work / "mlserver-batch.log",
            cwd=repob,
        ) as msb_proc,
        process(
            [str(VENV_PY), str(LOAD), "--serve", str(trivial_port)],
            env=env,
            log=work / "trivial.log",
        ),
        ExitStack() as more,
    ):
        # server -> (gateway URL, pid) of driftloop's lines: `driftloop up`'s gateway, and one
        # of --gateway-workers processes
        gateways = {
            "driftloop /v1": (gateway, int((home_of(env) / "run" / "gateway.pid").read_text())),
        }
        gateways["driftloop OIP V2"] = gateways["driftloop /v1"]
        extra: dict[str, dict[str, str]] = {}  # more gateways on the same bus and store
        if args.gateway_workers:
            extra[f"driftloop /v1 {args.gateway_workers} workers"] = {
                "DRIFTLOOP_GATEWAY_WORKERS": str(args.gateway_workers)
            }
        if args.scikit_learn:
            extra[SKLEARN] = {"DRIFTLOOP_COMPILED_TREES": "false"}
        for name, settings in extra.items():
            wk_port = free_port()
            wk_log = work / f"gateway-{name.split()[-1]}.log"
            wk_env = env | dict(kv.split("=", 1) for kv in args.gateway_env) | settings
            wk_env["DRIFTLOOP_GATEWAY_PORT"] = str(wk_port)
            wk_proc = more.enter_context(
                process([sys.executable, "-m", "driftloop.gateway"], env=wk_env, log=wk_log)
            )
            wk_url = f"http://127.0.0.1:{wk_port}"
            wait_http(f"{wk_url}/readyz", wk_proc, wk_log, 180)
            wait_shadow(wk_url, None)
            gateways[name] = (wk_url, wk_proc.pid)
        wait_http(f"http://127.0.0.1:{ml_port}/ping", ml_proc, work / "mlflow-serve.log", 120)
        wait_http(
            f"http://127.0.0.1:{ms_port}/v2/models/{MODEL}/ready",
            ms_proc,
            work / "mlserver.log",
            120,
        )
        wait_http(
            f"http://127.0.0.1:{ms0_port}/v2/models/{MODEL}/ready",
            ms0_proc,
            work / "mlserver-0.log",
            120,
        )
        wait_http(
            f"http://127.0.0.1:{msb_port}/v2/models/{MODEL}/ready",
            msb_proc,
            work / "mlserver-batch.log",
            120,
        )
        time.sleep(0.5)
        urls = {
            "driftloop /v1": f"{gateway}/v1/models/{MODEL}/predict",
            "driftloop OIP V2": f"{gateway}/v2/models/{MODEL}/infer",
            "mlflow serve": f"http://127.0.0.1:{ml_port}/invocations",
            "MLServer V2": f"http://127.0.0.1:{ms_port}/v2/models/{MODEL}/infer",
            MS0: f"http://127.0.0.1:{ms0_port}/v2/models/{MODEL}/infer",
            MSB: f"http://127.0.0.1:{msb_port}/v2/models/{MODEL}/infer",
        }
        if args.only:
            keep = set(args.only.split(","))
            urls = {k: v for k, v in urls.items() if k in keep}
        for name in extra:
            urls[name] = f"{gateways[name][0]}/v1/models/{MODEL}/predict"
        files: dict[str, Path] = {}
        agree: dict[str, list[Any]] = {}
        for server, url in urls.items():
            files[server] = work / f"bodies-{server.replace(' ', '_').replace('/', '')}.json"
            files[server].write_text(json.dumps(bodies(server, data)))
            answers = []
            for body in bodies(server, data[:16]):
                resp = httpx.post(url, json=body, timeout=30)
                if resp.status_code != 200:
                    raise RuntimeError(f"{server}: {resp.status_code} {resp.text[:500]}")
                answers.append(first_prediction(server, resp.json()))
            agree[server] = [int(a) for a in answers]
        reference = next(iter(agree.values()))
        for server, answers in agree.items():
            same = sum(a == b for a, b in zip(answers, reference, strict=True))
            print(f"{server}: {same}/16 predictions agree with the first server", flush=True)
        ceiling = {}
        for c in conns:
            ceiling[c] = load(f"http://127.0.0.1:{trivial_port}/x", None, c, args)["rps"]
        results = []
        for rnd in range(args.rounds):
            order = list(urls.items())
            order = order[rnd % len(order) :] + order[: rnd % len(order)]  # no fixed slot
            for c in conns:
                for server, url in order:
                    own = server.startswith("driftloop")
                    gw_url, gw_pid = gateways.get(server, (gateway, 0))
                    before = gateway_sums(gw_url, gw_pid) if own else {}
                    r = load(url, files[server], c, args) | {"server": server, "round": rnd}
                    inside = ""
                    if own:  # the gateway's own view: time in run_model, rows per model call
                        after = gateway_sums(gw_url, gw_pid)
                        d = {k: v - before[k] for k, v in after.items()}
                        r["gateway_ms"] = 1000 * d["latency_s"] / max(d["requests"], 1)
                        r["rows_per_call"] = d["rows"] / max(d["calls"], 1)
                        # CPU per request, and the part of it outside the model's predict
                        r["cpu_ms"] = 1000 * d["cpu_s"] / max(d["requests"], 1)
                        r["outside_ms"] = 1000 * (d["cpu_s"] - d["model_s"]) / max(d["requests"], 1)
                        inside = (
                            f" (in run_model {r['gateway_ms']:.2f} ms, "
                            f"{r['rows_per_call']:.1f} rows/call, CPU {r['cpu_ms']:.2f} "
                            f"ms/request, {r['outside_ms']:.2f} outside the model)"
                        )
                    results.append(r)
                    print(
                        f"round {rnd} {server:<17} {c:>2} conn: {r['rps']:7.0f} req/s "
                        f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms errors {r['errors']}"
                        f"{inside}",
                        flush=True,
                    )
        shadow: dict[int, dict[str, float]] = {}
        if "driftloop /v1" in urls and not args.no_shadow:
            for c in conns:
                shadow[c] = measure_shadow(
                    urls["driftloop /v1"],
                    files["driftloop /v1"],
                    c,
                    args,
                    work,
                    gateway,
                    version,
                    run_id,
                )
                print(f"shadow {c} conn: {shadow[c]}", flush=True)
    table = summarise(results)
    lines = report(table, conns, floors, ceiling, shadow, args)
    print("\n" + "\n".join(lines))
    (work / "results.json").write_text(
        json.dumps(
            {
                "runs": results,
                "floors": floors,
                "ceiling": ceiling,
                "shadow": shadow,
                "args": vars(args) | {"work": str(work)},
            },
            indent=1,
            default=str,
        )
    )
    print(f"\nraw figures: {work / 'results.json'}")


if __name__ == "__main__":
    main()
