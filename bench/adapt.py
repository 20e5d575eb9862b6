# ruff: noqa: T201  (a benchmark prints its figures)
"""Adapting on drifted streams (issue 15): does the loop put a better model in front of users?

    .venv/bin/python bench/adapt.py [--scenarios mc,synthetic_sample] [--rate 250] [--rows 30000]
        [--label-delay 5] [--json adapt.json]
    make bench-adapt BENCH_ARGS="--scenarios mc --rows 12000 --pre-rows 2000"   # a quick look

Data: the dataset files shipped inside the nannyml 0.13.1 wheel, fetched once with
`pip download --no-deps nannyml==0.13.1` into bench/.cache/ and read out of the zip (nannyml
is not installed, never imported). Scenarios: synthetic_sample (binary), mc (multiclass),
regression_synthetic (regression, RMSE), employment_MA (census rows 2016-2018, little
drift) and synthetic_sample_poisoned (40 % of the post-onset labels flipped before they are
posted). Where each drift begins: bench/_adapt.py `onset_index`, docs/benchmarks.md.

Each scenario, in a fresh DRIFTLOOP_HOME under a temp dir, all on loopback:

1. offline, on one OpenMP thread, while `driftloop up --detach` starts: the static model (the
   spec's recipe, trained once on the whole reference file), the performance floor (that
   recipe's accuracy/RMSE on the last 20 % of the reference, fitted on the first 80 %, moved
   by a margin beyond the live metric's noise), the oracle (the recipe on the reference plus
   the first post-onset labelled rows, as posted);
2. `driftloop apply` of a README-shaped spec, `driftloop train` of
   the first version on the reference file (waits for Deployed);
3. the replay: the analysis rows in time order, `--batch` rows per POST /v1/models/{m}/predict
   at `--rate` rows/s, one request at a time; the labels of each batch go to /feedback
   `--label-delay` batches later. Every row's serving version, route and prediction is kept;
4. `--tail` seconds for the cycle in flight to land its events, `driftloop events --json`,
   then `driftloop down` (always, even on error); every version that served is loaded from
   the run's MLflow store and scored offline on the post-onset rows it could not have
   trained on;
5. the figures and the goals (PASS/FAIL) per scenario; a table, and JSON with `--json`
   (what each figure means: docs/benchmarks.md, "Adapting on drifted streams").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _adapt as ad  # bench/ is not a package: its directory is put on the path
from load import cli, user_env, wait_serving  # as the load bench runs driftloop

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
ESTIMATORS = {
    "classification": "sklearn.ensemble.HistGradientBoostingClassifier",
    "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
}


# Data ----------------------------------------------------------------------------------------


def fetch_wheel(cache: Path) -> Path:
    """The nannyml wheel, downloaded once into `cache` (which ignores itself in git)."""
    cache.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    found = sorted(cache.glob("nannyml-0.13.1-*.whl"))
    if found:
        return found[0]
    print(f"fetching {ad.NANNYML} into {cache} ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            ad.NANNYML,
            "-d",
            str(cache),
        ],
        check=True,
    )
    found = sorted(cache.glob("nannyml-0.13.1-*.whl"))
    if not found:
        raise RuntimeError(f"pip download left no nannyml wheel in {cache}")
    return found[0]


@dataclass
class Prepared:
    scenario: ad.Scenario
    source: ad.Source
    task: str
    target: str
    features: list[str]
    categorical: list[str]
    reference: pd.DataFrame  # features + target
    stream: pd.DataFrame  # the replayed rows, features + target (true labels)
    onset: int  # position of the onset row in `stream`
    onset_in_analysis: int
    analysis_rows: int
    posted: np.ndarray  # labels as posted to /feedback
    flipped: int


def prepare(wheel: Path, scenario: ad.Scenario, args: argparse.Namespace) -> Prepared:
    source = ad.SOURCES[scenario.source]
    reference, analysis = ad.read_source(wheel, source)
    features = ad.feature_columns(reference, source.target)
    onset_at = ad.onset_index(source, analysis)
    picked, onset = ad.select_rows(
        len(analysis),
        onset_at,
        rows=args.rows,
        pre_rows=args.pre_rows,
        thin=scenario.thin,
        batch=args.batch,
    )
    ref = ad.clean(reference, features, source.target, source.task).reset_index(drop=True)
    stream = ad.clean(analysis.iloc[picked], features, source.target, source.task)
    stream = stream.reset_index(drop=True)
    y = stream[source.target].to_numpy()
    posted, flipped = y.copy(), np.zeros(len(y), dtype=bool)
    if scenario.poison:
        posted, flipped = ad.flip_labels(
            y, onset, scenario.poison, np.random.default_rng(args.seed)
        )
    return Prepared(
        scenario=scenario,
        source=source,
        task=source.task,
        target=source.target,
        features=features,
        categorical=ad.categorical(ref, features),
        reference=ref,
        stream=stream,
        onset=onset,
        onset_in_analysis=onset_at,
        analysis_rows=len(analysis),
        posted=posted,
        flipped=int(flipped.sum()),
    )


# Offline models ------------------------------------------------------------------------------


def recipe(p: Prepared) -> Any:
    """The spec's recipe as the trainer builds it: one-hot for strings, categories and
    booleans, numbers as they are, then HistGradientBoosting (max_iter 100)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    pre = ColumnTransformer(
        [("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False), p.categorical)],
        remainder="passthrough",
    )
    est = (
        HistGradientBoostingRegressor(max_iter=100, random_state=0)
        if p.task == "regression"
        else HistGradientBoostingClassifier(max_iter=100, random_state=0)
    )
    return make_pipeline(pre, est)


def fit(p: Prepared, frame: pd.DataFrame, labels: np.ndarray) -> Any:
    x = frame[p.features].copy()
    for c in p.categorical:
        x[c] = x[c].astype(str)
    return recipe(p).fit(x, labels)


def predict(p: Prepared, model: Any, frame: pd.DataFrame) -> np.ndarray:
    x = frame[p.features].copy()
    for c in p.categorical:
        x[c] = x[c].astype(str)
    return np.asarray(model.predict(x))


@dataclass
class Offline:
    static: np.ndarray  # static predictions on every stream row
    validation: float  # the recipe on the reference's last 20 %, fitted on the first 80 %
    floor: float
    margin: float
    oracle_rows: int  # post-onset rows the oracle learnt from
    oracle: np.ndarray  # oracle predictions on stream[onset + oracle_rows:]
    seconds: float


def offline(p: Prepared, args: argparse.Namespace) -> Offline:
    """The static model, the floor and the oracle, on one OpenMP thread (libgomp spin-waits
    badly on shared cores: docs/benchmarks.md, the gateway section)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _offline(p, args)


def _offline(p: Prepared, args: argparse.Namespace) -> Offline:
    t = time.monotonic()
    y_ref = p.reference[p.target].to_numpy()
    static = fit(p, p.reference, y_ref)
    cut = int(len(p.reference) * 0.8)
    val_model = fit(p, p.reference.iloc[:cut], y_ref[:cut])
    val_y = y_ref[cut:]
    val_pred = predict(p, val_model, p.reference.iloc[cut:])
    validation = ad.metric(p.task, val_y, val_pred)
    floor, margin = performance_floor(p.task, val_y, val_pred, validation, args)
    k = ad.oracle_split(len(p.stream) - p.onset, labels=args.oracle_labels)
    learn = p.stream.iloc[p.onset : p.onset + k]
    oracle_model = fit(
        p,
        pd.concat([p.reference, learn], ignore_index=True),
        np.concatenate([y_ref, p.posted[p.onset : p.onset + k]]),
    )
    return Offline(
        static=predict(p, static, p.stream),
        validation=validation,
        floor=floor,
        margin=margin,
        oracle_rows=k,
        oracle=predict(p, oracle_model, p.stream.iloc[p.onset + k :]),
        seconds=time.monotonic() - t,
    )


def performance_floor(
    task: str, y: np.ndarray, pred: np.ndarray, validation: float, args: argparse.Namespace
) -> tuple[float, float]:
    """The spec's monitor.performance.min: the validation metric moved by a margin, the
    larger of `--margin` (relative, for RMSE) and 3 standard errors of the live metric over
    the labelled rows the monitor judges at once (max(min_labels, window)), so a stable
    stream does not fall below it by chance."""
    n = max(args.min_labels, args.window)
    if task == "regression":
        sq = (np.asarray(pred, float) - np.asarray(y, float)) ** 2
        se = float(sq.std(ddof=1) / math.sqrt(n)) / (2 * validation)
        margin = max(args.margin * validation, 3 * se)
        return validation + margin, margin
    se = math.sqrt(validation * (1 - validation) / n)
    margin = max(args.margin, 3 * se)
    return validation - margin, margin


# The system ----------------------------------------------------------------------------------


def spec_for(p: Prepared, off: Offline, args: argparse.Namespace) -> dict[str, Any]:
    """A spec shaped like the README's; what is not written keeps its documented default."""
    name = ad.metric_name(p.task)
    return {
        "model": p.scenario.name,
        "task": p.task,
        "target": p.target,
        "features": p.features,
        "recipe": {
            "estimator": ESTIMATORS[p.task],
            "params": {"max_iter": 100, "random_state": 0},
        },
        "monitor": {
            "window": args.window,
            "drift": {"psi_warn": 0.2, "psi_retrain": 0.25, "min_features": 1},
            "performance": {
                "metric": name,
                "min": round(off.floor, 6),
                "min_labels": args.min_labels,
            },
            "cooldown": args.cooldown,
        },
        "trainer": {"max_rows": 50000, "min_rows": 500, "holdout": 0.2},
        "evaluator": {"metric": name, "max_p95_ms": args.max_p95_ms},
        "deployer": {
            "shadow": {"rows": 500},
            "canary": {"steps": [10, 50, 100], "rows_per_step": 500},
            "approval": "auto",
        },
    }


def read_events(env: dict[str, str], model: str) -> list[dict[str, Any]]:
    """`driftloop events MODEL --json`: one CloudEvent (or dead letter) per line."""
    try:
        done = cli(env, "events", model, "--json", timeout=120)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"  (event log not read: {exc})", flush=True)
        return []
    out = []
    for line in done.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def instances(p: Prepared) -> list[dict[str, Any]]:
    """The stream's rows as JSON instances (native types)."""
    rows = p.stream[p.features].to_dict(orient="records")
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()} for r in rows]


def native(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


@dataclass
class Live:
    versions: list[str | None]
    routes: list[str | None]
    predictions: list[Any]
    statuses: Counter[str] = field(default_factory=Counter)
    feedback_statuses: Counter[str] = field(default_factory=Counter)
    onset_at: datetime | None = None
    started_at: datetime | None = None
    replay_s: float = 0.0
    max_behind_s: float = 0.0
    labels_posted: int = 0
    sent: list[tuple[datetime, int]] = field(default_factory=list)  # (time, rows sent)


def replay(p: Prepared, gateway: str, args: argparse.Namespace) -> Live:
    """The stream at a fixed row rate, one request at a time; labels `label_delay` batches
    late. A request that cannot keep the pace is sent as soon as the previous one returns."""
    import httpx

    rows = instances(p)
    n = len(rows)
    ids = [f"{p.scenario.name}-{i}" for i in range(n)]
    live = Live(versions=[None] * n, routes=[None] * n, predictions=[None] * n)
    batches = [range(i, min(i + args.batch, n)) for i in range(0, n, args.batch)]
    interval = args.batch / args.rate
    pending: deque[range] = deque()
    model = p.scenario.name
    predict_url = f"/v1/models/{model}/predict"
    feedback_url = f"/v1/models/{model}/feedback"

    def post_labels(batch: range) -> None:
        labels = [
            {"id": ids[i], "label": native(p.posted[i])}
            for i in batch
            if live.versions[i] is not None
        ]
        if not labels:
            return
        try:
            answer = client.post(feedback_url, json={"labels": labels})
            live.feedback_statuses[str(answer.status_code)] += 1
            if answer.status_code == 202:
                live.labels_posted += len(labels)
        except httpx.HTTPError as exc:
            live.feedback_statuses[type(exc).__name__] += 1

    transport = httpx.HTTPTransport(retries=2)
    live.started_at = datetime.now(UTC)
    t0 = time.monotonic()
    next_report = 15.0
    with httpx.Client(base_url=gateway, timeout=60, transport=transport) as client:
        for b, batch in enumerate(batches):
            due = t0 + b * interval
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            else:
                live.max_behind_s = max(live.max_behind_s, now - due)
            if batch.start <= p.onset < batch.stop:
                live.onset_at = datetime.now(UTC)
            body = {"instances": [rows[i] for i in batch], "ids": [ids[i] for i in batch]}
            try:
                answer = client.post(predict_url, json=body)
                live.statuses[str(answer.status_code)] += 1
                if answer.status_code == 200:
                    got = answer.json()
                    for i, pred in zip(batch, got["predictions"], strict=True):
                        live.versions[i] = str(got["version"])
                        live.routes[i] = str(got.get("route"))
                        live.predictions[i] = pred
            except httpx.HTTPError as exc:
                live.statuses[type(exc).__name__] += 1
            live.sent.append((datetime.now(UTC), batch.stop))
            pending.append(batch)
            while len(pending) > args.label_delay:
                post_labels(pending.popleft())
            elapsed = time.monotonic() - t0
            if elapsed >= next_report:
                next_report += 15.0
                done = batch.stop
                where = "before" if done <= p.onset else "after"
                served = Counter(v for v in live.versions[max(0, done - 1000) : done] if v)
                print(
                    f"  {elapsed:5.0f}s  row {done}/{n} ({where} onset)  "
                    f"{done / elapsed:.0f} rows/s  last 1000 by version {dict(served)}  "
                    f"answers {dict(live.statuses)}",
                    flush=True,
                )
        while pending:
            post_labels(pending.popleft())
    live.replay_s = time.monotonic() - t0
    if live.onset_at is None:
        live.onset_at = datetime.now(UTC)
    return live


def load_versions(home: Path, port: int, model: str, versions: list[str]) -> dict[str, Any]:
    """Each served version's pipeline from the run's MLflow store (after `down`)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from driftloop.shared.config import Settings
    from driftloop.shared.registry import configure_mlflow, load_model

    settings = Settings(
        home=home, gateway_port=port, nats_url=None, database_url=None, mlflow_tracking_uri=None
    )
    configure_mlflow(settings)
    out: dict[str, Any] = {}
    for v in versions:
        try:
            out[v] = load_model(model, v)
        except Exception as exc:  # a figure missing, not the run
            print(f"  (version {v} not loaded: {exc})", flush=True)
    return out


# One scenario --------------------------------------------------------------------------------


def run_scenario(p: Prepared, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from driftloop.cli.supervisor import free_port

    name = p.scenario.name
    started = datetime.now(UTC)
    t = time.monotonic()
    print(
        f"\n== {name}: {len(p.stream)} rows (onset at row {p.onset}; analysis row "
        f"{p.onset_in_analysis} of {p.analysis_rows}), reference {len(p.reference)} rows",
        flush=True,
    )
    scen_dir = work / name
    scen_dir.mkdir(parents=True, exist_ok=True)
    home = scen_dir / "home"
    port = free_port()
    env = user_env(home, port)
    # `up` starts while the offline models are fitted (it waits on imports and NATS, mostly)
    up = subprocess.Popen(
        [sys.executable, "-m", "driftloop.cli", "up", "--detach", "--timeout", "400"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        off = offline(p, args)
    except BaseException:
        up.wait()
        cli(env, "down", timeout=120)
        raise
    print(
        f"  offline in {off.seconds:.0f}s: validation {off.validation:.4f}, floor "
        f"{off.floor:.4f}, oracle on reference + {off.oracle_rows} post-onset labels",
        flush=True,
    )
    spec = spec_for(p, off, args)
    (scen_dir / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    data = scen_dir / "reference.parquet"
    p.reference[[*p.features, p.target]].to_parquet(data, index=False)
    gateway = f"http://127.0.0.1:{port}"
    envelopes: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    live: Live | None = None
    error: str | None = None
    try:
        output, _ = up.communicate(timeout=600)
        if up.returncode != 0:
            raise RuntimeError(f"driftloop up --detach exited {up.returncode}:\n{output}")
        timings["up_s"] = time.monotonic() - t
        cli(env, "apply", str(scen_dir / "spec.yaml"))
        cli(env, "train", name, "--data", str(data), "--timeout", "600")
        wait_serving(gateway, model=p.scenario.name, row=instances(p)[0])
        timings["first_champion_s"] = time.monotonic() - t
        print(f"  up and first champion serving in {timings['first_champion_s']:.0f}s", flush=True)
        live = replay(p, gateway, args)
        print(f"  replayed in {live.replay_s:.0f}s; waiting {args.tail:.0f}s", flush=True)
        time.sleep(args.tail)
        envelopes = read_events(env, name)
    except Exception as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        said = [ln for ln in lines if ln.startswith("error:")] or lines[:1]
        error = f"{type(exc).__name__}: {lines[0] if lines else ''} {said[-1] if said else ''}"
        print(f"  FAILED: {error}", flush=True)
        if not envelopes:
            envelopes = read_events(env, name)
    finally:
        try:
            cli(env, "down", timeout=120)
        except Exception as exc:
            print(f"  driftloop down: {exc}", flush=True)
    (scen_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in envelopes))
    timings["total_s"] = time.monotonic() - t
    if live is not None:  # every row as served, for a closer look
        pd.DataFrame(
            {
                "version": live.versions,
                "route": live.routes,
                "prediction": [None if v is None else str(v) for v in live.predictions],
                "label": p.stream[p.target].astype(str),
                "posted": [str(v) for v in p.posted],
                "static": [str(v) for v in off.static],
                "after_onset": np.arange(len(p.stream)) >= p.onset,
            }
        ).to_parquet(scen_dir / "rows.parquet")
    result = figures(p, off, live, envelopes, home, port)
    result |= {
        "started": started.isoformat(),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "error": error,
        "spec": spec,
        "work": str(scen_dir),
    }
    result["goals"] = (
        [{"goal": g, "measured": m, "met": ok} for g, m, ok in ad.goals(result)]
        if error is None
        else [{"goal": "the run completed", "measured": error, "met": False}]
    )
    return result


def figures(
    p: Prepared,
    off: Offline,
    live: Live | None,
    envelopes: list[dict[str, Any]],
    home: Path,
    port: int,
) -> dict[str, Any]:
    from driftloop.shared.modeling import prepare

    task = p.task
    y = p.stream[p.target].to_numpy()
    n = len(y)
    versions = live.versions if live else [None] * n
    routes = live.routes if live else [None] * n
    preds = np.array(live.predictions if live else [None] * n, dtype=object)
    served_mask = np.array([v is not None for v in versions])
    after = np.arange(n) >= p.onset
    rest_start = p.onset + off.oracle_rows
    rest = np.arange(n) >= rest_start

    def on(mask: np.ndarray) -> dict[str, Any]:
        m = mask & served_mask
        return {
            "rows": int(m.sum()),
            "served": ad.metric(task, y[m], preds[m]),
            "static": ad.metric(task, y[m], off.static[m]),
        }

    before = on(~after)
    after_f = on(after)
    rest_f = on(rest)
    rest_m = rest[rest_start:] & served_mask[rest_start:]
    rest_f["oracle"] = ad.metric(task, y[rest_start:][rest_m], off.oracle[rest_m])
    rest_f["gap_recovered"] = ad.gap_recovered(
        task, rest_f["served"], rest_f["static"], rest_f["oracle"]
    )
    first = ad.first_adapted_row(versions, routes, p.onset)
    met = ad.first_new_version_row(versions, routes, p.onset)
    # every version that served, scored offline on the post-onset rows from its first answer
    # on (rows it cannot have trained on), against static on the same rows
    first_served: dict[str, int] = {}
    for i, v in enumerate(versions):
        if v is not None and v not in first_served:
            first_served[v] = i
    loaded = load_versions(home, port, p.scenario.name, sorted(first_served, key=_vkey))
    per_version: dict[str, dict[str, Any]] = {}
    for v, i0 in sorted(first_served.items(), key=lambda kv: _vkey(kv[0])):
        mine = np.array([w == v for w in versions])
        entry: dict[str, Any] = {
            "rows_served": int(mine.sum()),
            "rows_served_after_onset": int((mine & after).sum()),
            "first_row": i0,
            "live": ad.metric(task, y[mine & after], preds[mine & after]),
            "static_same_rows": ad.metric(task, y[mine & after], off.static[mine & after]),
        }
        start = max(i0, p.onset)
        if v in loaded and start < n:
            frame = prepare(p.stream.iloc[start:], p.features)  # as the gateway does
            try:
                pv = np.asarray(loaded[v].predict(frame))
                entry["offline_rows"] = n - start
                entry["offline"] = ad.metric(task, y[start:], pv)
                entry["static_offline"] = ad.metric(task, y[start:], off.static[start:])
                entry["vs_static"] = ad.paired_difference(task, y[start:], pv, off.static[start:])
            except Exception as exc:
                entry["offline_error"] = str(exc)
        versus = entry.get("vs_static")
        if versus is None:  # fall back on the rows it served
            versus = ad.paired_difference(
                task, y[mine & after], preds[mine & after], off.static[mine & after]
            )
        entry["worse_than_static"] = bool(v != "1" and versus["worse"])
        per_version[v] = entry
    statuses = live.statuses if live else Counter()
    fives = sum(c for s, c in statuses.items() if s.startswith("5"))
    return {
        "scenario": p.scenario.name,
        "source": p.source.name,
        "task": task,
        "metric": ad.metric_name(task),
        "poison": p.scenario.poison,
        "labels_flipped": p.flipped,
        "rows": n,
        "onset_row": p.onset,
        "onset_in_analysis": p.onset_in_analysis,
        "analysis_rows": p.analysis_rows,
        "reference_rows": len(p.reference),
        "validation": off.validation,
        "floor": off.floor,
        "floor_margin": off.margin,
        "oracle_rows": off.oracle_rows,
        "before_onset": before,
        "after_onset": after_f,
        "rest": rest_f,
        "rows_to_adapted_champion": None if first is None else first - p.onset,
        "rows_to_adapted_answer": None if met is None else met - p.onset,
        "timelines": ad.cycle_timelines(envelopes, live.sent if live else [], p.onset),
        "retrains_before_onset": ad.retrains_before(envelopes, live.onset_at if live else None),
        "retrains": [{**r, "time": r["time"].isoformat()} for r in ad.retrains(envelopes)],
        "cycles": ad.cycle_outcomes(envelopes),
        "events": ad.event_counts(envelopes),
        "served": ad.served_versions(versions, routes),
        "versions": per_version,
        # the loop's own first version (what would have served without adaptation), offline
        # on the post-onset rows, beside the static model of the brief (full reference)
        "v1_after_onset": per_version.get("1", {}).get("offline"),
        "statuses": dict(statuses),
        "five_xx": fives,
        "feedback_statuses": dict(live.feedback_statuses) if live else {},
        "labels_posted": live.labels_posted if live else 0,
        "replay_s": round(live.replay_s, 1) if live else None,
        "achieved_rate": round(n / live.replay_s, 1) if live and live.replay_s else None,
        "max_behind_s": round(live.max_behind_s, 1) if live else None,
    }


def _vkey(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (1 << 30, v)


# Report --------------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan"
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.{digits}f}"
    return str(v)


def timeline_text(steps: list[dict[str, Any]]) -> str:
    parts = []
    for e in steps:
        what = str(e["type"])
        if e.get("stage"):
            what = f"{e['stage']}" + (f" {e['weight']}%" if e.get("stage") == "canary" else "")
        where = "before the replay" if e["row"] is None else f"{e['row']:+d}"
        parts.append(f"{what} {where}")
    return ", ".join(parts)


def report(results: list[dict[str, Any]]) -> list[str]:
    head = (
        f"{'scenario':<26} {'metric':<8} {'served':>7} {'static':>7} {'v1':>7} | "
        f"{'rest: served':>12} {'static':>7} {'oracle':>7} {'gap rec.':>8} | "
        f"{'→canary':>9} {'→champion':>12} {'retrains<onset':>14} {'5xx':>4}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        a, rest = r["after_onset"], r["rest"]
        lines.append(
            f"{r['scenario']:<26} {r['metric']:<8} {fmt(a['served']):>7} {fmt(a['static']):>7} "
            f"{fmt(r['v1_after_onset']):>7} | "
            f"{fmt(rest['served']):>12} {fmt(rest['static']):>7} {fmt(rest['oracle']):>7} "
            f"{fmt(rest['gap_recovered'], 2):>8} | {fmt(r['rows_to_adapted_answer']):>9} "
            f"{fmt(r['rows_to_adapted_champion']):>12} "
            f"{r['retrains_before_onset']:>14} {r['five_xx']:>4}"
        )
    for r in results:
        lines += [
            "",
            f"{r['scenario']}: {r['rows']} rows, onset at {r['onset_row']}, "
            + (
                f"rate {r['achieved_rate']} rows/s (max {r['max_behind_s']}s behind), "
                if r["replay_s"] is not None
                else "not replayed, "
            )
            + f"floor {fmt(r['floor'])} (validation {fmt(r['validation'])}), "
            f"oracle on reference + {r['oracle_rows']} post-onset labels, "
            f"flipped labels {r['labels_flipped']}, timings {r.get('timings_s')}",
        ]
        b = r["before_onset"]
        lines.append(
            f"  before onset: served {fmt(b['served'])} static {fmt(b['static'])} "
            f"on {b['rows']} rows"
        )
        lines.append(f"  answers {r['statuses']}  feedback {r['feedback_statuses']}")
        lines.append(f"  served (version/route: rows) {r['served']}")
        for v, f in r["versions"].items():
            off = (
                f"offline on {f.get('offline_rows')} rows from its first answer: "
                f"{fmt(f.get('offline'))} vs static {fmt(f.get('static_offline'))}"
                if "offline" in f
                else f"offline: {f.get('offline_error', 'not loaded')}"
            )
            lines.append(
                f"  version {v}: {f['rows_served']} rows ({f['rows_served_after_onset']} after "
                f"onset, live {fmt(f['live'])} vs static {fmt(f['static_same_rows'])}); {off}"
                f"{'  WORSE than static' if f['worse_than_static'] else ''}"
            )
        lines.append(f"  events {r['events']}")
        for c in r["cycles"]:
            lines.append(
                f"  cycle {c['cycle_id'][:8]} {c['trigger']:<11} {c['requested'][11:19]} -> "
                f"{c['ended']} {('v' + c['version']) if c['version'] else ''} "
                f"{c['why'] or ''}"
            )
        for cycle, steps in r["timelines"].items():
            if cycle == "-":
                continue
            lines.append(f"  cycle {cycle[:8]} in rows from the onset: " + timeline_text(steps))
        if r.get("error"):
            lines.append(f"  ERROR {r['error']}")
        for g in r["goals"]:
            lines.append(f"  {'PASS' if g['met'] else 'FAIL'}  {g['goal']:<44} {g['measured']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        default=",".join(ad.SCENARIOS),
        help="comma-separated, of: " + ", ".join(ad.SCENARIOS),
    )
    parser.add_argument("--rate", type=float, default=250.0, help="rows per second")
    parser.add_argument("--batch", type=int, default=20, help="rows per predict request")
    parser.add_argument("--label-delay", type=int, default=5, help="batches before the labels")
    parser.add_argument("--rows", type=int, default=30000, help="rows replayed per scenario")
    parser.add_argument("--pre-rows", type=int, default=5000, help="of them before the onset")
    parser.add_argument("--oracle-labels", type=int, default=5000, help="post-onset rows")
    parser.add_argument("--window", type=int, default=1000, help="spec monitor.window")
    parser.add_argument("--min-labels", type=int, default=500, help="spec performance.min_labels")
    parser.add_argument("--margin", type=float, default=0.02, help="floor below validation")
    parser.add_argument("--cooldown", default="1m", help="spec monitor.cooldown")
    parser.add_argument("--max-p95-ms", type=float, default=100.0, help="spec evaluator")
    parser.add_argument("--tail", type=float, default=10.0, help="seconds after the stream")
    parser.add_argument("--seed", type=int, default=0, help="which labels are flipped")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the wheel is kept")
    parser.add_argument("--work", type=Path, help="work dir (default: a new temp dir)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in ad.SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; of {list(ad.SCENARIOS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="driftloop-adapt-"))
    work.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel(args.cache)
    print(f"work dir {work}; data {wheel.name}", flush=True)
    t = time.monotonic()
    results = []
    for name in names:
        p = prepare(wheel, ad.SCENARIOS[name], args)
        results.append(run_scenario(p, args, work))
        for g in results[-1]["goals"]:
            print(f"  {'PASS' if g['met'] else 'FAIL'}  {g['goal']}: {g['measured']}", flush=True)
    print("\n" + "\n".join(report(results)))
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "minutes": round((time.monotonic() - t) / 60, 1),
        "results": results,
    }
    print(f"\n{len(results)} scenario(s) in {out['minutes']} min; work dir {work}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
