# ruff: noqa: T201  (a benchmark prints its figures)
"""Streaming ingest of prediction records into the monitor: rows per second and RSS.

Issue 5's goals: at least 50,000 rows/s in one monitor process, and a flat RSS over a
10-million-row stream. Run it with the project's venv:

    .venv/bin/python bench/bench_ingest.py                    # 1,000,000 rows, a few minutes
    .venv/bin/python bench/bench_ingest.py --rows 10000000    # the RSS claim
    .venv/bin/python bench/bench_ingest.py --ids uuid7        # time-ordered prediction ids

What runs (all real, nothing mocked):

- a nats-server (`.venv/bin/nats-server`) on a free loopback port, JetStream file storage in
  a temporary folder;
- the monitor as its own process, `python -m driftloop.monitor` (what `driftloop run monitor`
  runs: the real handler wiring, SQLite under a temporary HOME, the outbox relay, tracing to
  the span file under HOME as by default), logging at WARNING;
- a spec in the `driftloop_specs` bucket and a reference the way production sets it: a
  reference profile logged as `data/reference_profile.json` of an MLflow run (SQLite store
  under HOME) and a `Deployed` event naming that run.

Traffic: `--rows` rows in PredictionBatch records of `--batch` rows (a busy gateway's
requests) on `driftloop.predictions.churn`, route champion, `--features` features (numeric and
categorical). Ids (`--ids`): random uuid4 strings (as a client's own ids may be), or
time-ordered uuid7 ones, what the gateway makes when the client sends none (`ordered_id`); the
samples table's primary key takes them, and random keys cost SQLite a page write per row. The
inputs follow the reference's distribution (no drift), so every `monitor.window` rows a window
is judged and nothing fires. The spec keeps `--keep` samples (`monitor.keep_samples`), so the
retention runs during the measurement.

Modes: `before` publishes every record first (the monitor stopped), then starts the monitor
on the backlog: the consumer's rate alone. `concurrent` publishes while the monitor consumes,
at most `--lead` rows ahead of it, and purges the consumed part of the stream as it goes
(what the stream's age limit does in production), so a 10-million-row run fits on disk. The
publisher shares the machine's cores with the monitor then. Default: `before` up to
2,000,000 rows, `concurrent` beyond.

Measured: rows/s from the first acknowledged record to the moment the consumer's ack floor
reaches the last one (end to end: fetch, parse, handle, commit, ack), polled every 0.25 s;
the monitor's CPU time (utime + stime from /proc/<pid>/stat), so rows per CPU second says
what one free core would do when the machine is shared; the monitor's VmRSS from
/proc/<pid>/status at every poll; its database on disk (file + WAL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop.cli.supervisor import start_nats
from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import FEEDBACK_STREAM, PREDICTIONS_STREAM, SPECS_BUCKET, Deployed
from driftloop.shared.profile import build_profile
from driftloop.shared.spec import parse_spec

GOAL_ROWS_PER_SECOND = 50_000
MODEL = "churn"
DURABLE = "monitor-predictions"
STATUS_SUBJECT = "driftloop.rpc.monitor.status"
POLL_SECONDS = 0.25
POOL = 64  # distinct batches of inputs, reused with fresh ids


def features_frame(rng: np.random.Generator, n: int, features: int) -> pd.DataFrame:
    """`features` columns, about two numeric for one categorical."""
    columns: dict[str, Any] = {}
    for k in range(features):
        if k % 3 == 2:
            columns[f"c{k}"] = rng.choice(["basic", "pro", "max", "team", "edu"], n)
        else:
            columns[f"x{k}"] = rng.gamma(2.0 + k, 10.0, n).round(2)
    return pd.DataFrame(columns)


def batch_pool(rng: np.random.Generator, rows: int, features: int) -> list[tuple[str, str]]:
    """POOL pairs of (instances JSON, predictions JSON) of `rows` rows each."""
    out = []
    for _ in range(POOL):
        frame = features_frame(rng, rows, features)
        instances = json.dumps(frame.to_dict(orient="records"), separators=(",", ":"))
        predictions = json.dumps(rng.integers(0, 2, rows).tolist(), separators=(",", ":"))
        out.append((instances, predictions))
    return out


def uuid7() -> str:
    """A time-ordered uuid (RFC 9562 version 7: milliseconds since the epoch, then random)."""
    ms = time.time_ns() // 1_000_000
    rand = secrets.randbits(74)
    return str(
        uuid.UUID(
            int=(ms << 80) | (7 << 76) | ((rand >> 62) << 64) | (2 << 62) | (rand & (2**62 - 1))
        )
    )


def record(
    seq: int,
    rows: int,
    pool: list[tuple[str, str]],
    kind: str,
    kept: list[str] | None = None,
    *,
    shadow: bool = False,
) -> list[bytes]:
    """One PredictionBatch as the gateway publishes it (JSON built by hand: the publisher
    must not be the bottleneck). Ids: random uuid4 strings, what the gateway generates when
    the client sends none, or time-ordered uuid7 ones (what it could generate instead);
    appended to `kept` when given (the labels phase labels them). With `shadow`, also the
    shadow's record of the same requests (version 2, its answers differing on every third
    record), before the champion's on even `seq` and after it on odd ones: the shadow's
    worker publishes on a connection of its own, so either can reach the monitor first."""
    make = uuid.uuid4 if kind == "uuid4" else uuid7
    made = [str(make()) for _ in range(rows)]
    if kept is not None:
        kept.extend(made)
    ids = ",".join(f'"{i}"' for i in made)
    instances, predictions = pool[seq % len(pool)]
    at = datetime.now(UTC).isoformat()

    def one(version: str, route: str, answers: str) -> bytes:
        return (
            f'{{"batch_id":"{uuid.uuid4()}","model":"{MODEL}","version":"{version}",'
            f'"route":"{route}","ids":[{ids}],"instances":{instances},'
            f'"predictions":{answers},"latency_ms":3.5,"at":"{at}"}}'
        ).encode()

    champion = one("1", "champion", predictions)
    if not shadow:
        return [champion]
    theirs = one("2", "shadow", predictions if seq % 3 else pool[(seq + 1) % len(pool)][1])
    return [theirs, champion] if seq % 2 == 0 else [champion, theirs]


def rss_kib(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of a process, KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("monitor.sqlite*"))


@dataclass
class Sample:
    at: float
    rows: int
    rss_kib: int
    db_bytes: int
    cpu: float  # the monitor's CPU seconds so far


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    hwm_kib: int = 0

    def take(self, pid: int, rows: int, home: Path) -> Sample:
        """A sample of the measured process now, `rows` consumed so far (not kept: the caller
        keeps those from the first consumed record on); its peak RSS kept."""
        rss, self.hwm_kib = rss_kib(pid)
        return Sample(time.perf_counter(), rows, rss, disk_bytes(home / "db"), cpu_seconds(pid))


def spec_yaml(window: int, keep: int, min_labels: int = 200) -> str:
    return (
        f"model: {MODEL}\ntarget: y\nmonitor:\n  window: {window}\n  keep_samples: {keep}\n"
        "  drift: {psi_warn: 0.2, psi_retrain: 0.25}\n"
        f"  performance: {{metric: accuracy, min: 0.2, min_labels: {min_labels}}}\n"
    )


def log_reference(
    settings: Settings, frame: pd.DataFrame, rng: np.random.Generator, *, labelled: bool
) -> str:
    """A run holding the reference profile, as the trainer logs it (`labelled`: with the
    profile of its predictions and labels, which the label window needs); returns the run
    id."""
    from driftloop.shared.registry import configure_mlflow, experiment_id

    client = configure_mlflow(settings)
    run = client.create_run(experiment_id(client, settings, MODEL))
    profile = (
        build_profile(
            MODEL,
            frame.assign(y=rng.integers(0, 2, len(frame))),
            list(frame.columns),
            predictions=rng.integers(0, 2, len(frame)),
            target="y",
        )
        if labelled
        else build_profile(MODEL, frame, list(frame.columns))
    )
    client.log_dict(run.info.run_id, profile.model_dump(mode="json"), "data/reference_profile.json")
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def start_monitor(
    home: Path, url: str, log: Path, service: str = "monitor"
) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "DRIFTLOOP_HOME": str(home),
        "DRIFTLOOP_NATS_URL": url,
        "DRIFTLOOP_LOG_LEVEL": "WARNING",
    }
    env.pop("DRIFTLOOP_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", f"driftloop.{service}"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_for(check: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = await check()
        except Exception:
            found = None
        if found:
            return found
        await asyncio.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


async def ack_floor(js: Any, durable: str = DURABLE) -> int:
    info = await js.consumer_info(PREDICTIONS_STREAM, durable)
    return int(info.ack_floor.stream_seq) if info.ack_floor else 0


async def bench(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    messages = args.rows // args.batch
    mode = args.mode or ("before" if args.rows <= 2_000_000 else "concurrent")
    prefix = secrets.token_hex(12)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        nats_proc, url = start_nats(tmp / "nats", tmp / "nats.log")
        settings = Settings(home=home, nats_url=url)
        monitor: subprocess.Popen[bytes] | None = None
        try:
            async with connect_bus(settings, service="bench") as bus:
                js = bus.js
                kv = await bus.kv(SPECS_BUCKET)
                await kv.put(MODEL, parse_spec(spec_yaml(args.window, args.keep)).to_json())
                frame = features_frame(rng, 20_000, args.features)
                run_id = log_reference(settings, frame, rng, labelled=bool(args.labels))
                pool = batch_pool(rng, args.batch, args.features)

                monitor = start_monitor(home, url, tmp / "monitor.log", args.service)
                durable = f"{args.service}-predictions"

                async def has_reference() -> bool:
                    if args.service == "trainer":  # no reference: its consumer is enough
                        return bool(await js.consumer_info(PREDICTIONS_STREAM, durable))
                    status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
                    return status.get("reference_version") == "1"

                await bus.publish(
                    Deployed(
                        model=MODEL,
                        cycle_id="bench",
                        version="1",
                        previous_version=None,
                        run_id=run_id,
                    )
                )
                await wait_for(has_reference, timeout=120, what="the monitor's reference")
                base = (await js.stream_info(PREDICTIONS_STREAM)).state.last_seq

                async def publish(count: int, *, lead: int | None) -> None:
                    sent = 0
                    for seq in range(count):
                        made = record(seq, args.batch, pool, args.ids, kept, shadow=args.shadow)
                        for message in made:
                            await bus.nc.publish(
                                f"driftloop.predictions.{MODEL}",
                                message,
                                headers={"Nats-Msg-Id": f"{prefix}-{sent}"},
                            )
                            sent += 1
                        if seq % 200 == 199:
                            await bus.nc.flush()
                            while lead is not None and (sent - consumed[0]) * args.batch > lead:
                                advanced.clear()
                                await advanced.wait()  # the poller saw the consumer move
                    await bus.nc.flush()

                kept: list[str] | None = [] if args.labels else None
                consumed = [0]  # records acknowledged so far
                advanced = asyncio.Event()
                if mode == "before":
                    stop(monitor)
                    started = time.perf_counter()
                    await publish(messages, lead=None)
                    print(
                        f"published {messages * (2 if args.shadow else 1):,} records in "
                        f"{time.perf_counter() - started:.1f} s"
                    )
                    monitor = start_monitor(home, url, tmp / "monitor.log", args.service)
                    publisher = None
                else:
                    publisher = asyncio.create_task(publish(messages, lead=args.lead))

                last = base + messages * (2 if args.shadow else 1)
                result = Run()
                first: Sample | None = None
                purged_to = base
                while True:
                    await asyncio.sleep(POLL_SECONDS)
                    if monitor.poll() is not None:
                        raise RuntimeError(f"the monitor exited; see {tmp / 'monitor.log'}")
                    floor = await ack_floor(js, durable)
                    consumed[0] = floor - base
                    advanced.set()
                    sample = result.take(monitor.pid, (floor - base) * args.batch, home)
                    if first is None:
                        if floor > base:
                            first = sample
                        else:
                            continue
                    result.samples.append(sample)
                    if mode == "concurrent" and floor - purged_to > 2000:
                        await js.purge_stream(PREDICTIONS_STREAM, seq=floor)
                        purged_to = floor
                    if floor >= last:
                        break
                if publisher is not None:
                    await publisher
                report(args, mode, result, first)
                if kept is not None:
                    stop(monitor)
                    monitor = await labels_phase(args, bus, kept, rng, home, url, tmp)
        finally:
            if monitor is not None:
                stop(monitor)
            nats_proc.terminate()
            nats_proc.wait(10)


def feedback_record(ids: list[str], labels: list[int]) -> bytes:
    """One FeedbackBatch as the gateway publishes it (built by hand, as `record`)."""
    items = ",".join(f'{{"id":"{i}","label":{y}}}' for i, y in zip(ids, labels, strict=True))
    at = datetime.now(UTC).isoformat()
    return (
        f'{{"batch_id":"{uuid.uuid4()}","model":"{MODEL}","labels":[{items}],"at":"{at}"}}'
    ).encode()


async def labels_phase(
    args: argparse.Namespace,
    bus: Any,
    ids: list[str],
    rng: np.random.Generator,
    home: Path,
    url: str,
    tmp: Path,
) -> subprocess.Popen[bytes]:
    """The labels of every predicted row, `--labels` per FeedbackBatch record, published
    with the service stopped; then the service consumes that backlog, measured as the
    predictions were. Returns the restarted service (the caller stops it)."""
    js = bus.js
    base = (await js.stream_info(FEEDBACK_STREAM)).state.last_seq
    labels = rng.integers(0, 2, len(ids)).tolist()
    count = 0
    for start in range(0, len(ids), args.labels):
        await bus.nc.publish(
            f"driftloop.feedback.{MODEL}",
            feedback_record(ids[start : start + args.labels], labels[start : start + args.labels]),
        )
        count += 1
        if count % 200 == 0:
            await bus.nc.flush()
    await bus.nc.flush()
    print(f"published {count:,} feedback records of {args.labels} labels")
    service = start_monitor(home, url, tmp / "monitor.log", args.service)
    durable = f"{args.service}-feedback"
    result = Run()
    first: Sample | None = None
    while True:
        await asyncio.sleep(POLL_SECONDS)
        if service.poll() is not None:
            raise RuntimeError(f"the {args.service} exited; see {tmp / 'monitor.log'}")
        try:
            info = await js.consumer_info(FEEDBACK_STREAM, durable)
        except Exception:  # not created yet
            continue
        floor = int(info.ack_floor.stream_seq) if info.ack_floor else 0
        sample = result.take(service.pid, min((floor - base) * args.labels, len(ids)), home)
        if first is None:
            if floor > base:
                first = sample
            continue
        result.samples.append(sample)
        if floor >= base + count:
            break
    assert first is not None
    end = result.samples[-1]
    labelled, seconds, cpu = end.rows - first.rows, end.at - first.at, end.cpu - first.cpu
    records = labelled / args.labels
    print(
        f"labels consumed: {labelled:,} in {seconds:.1f} s, {labelled / seconds:,.0f} labels/s; "
        f"{args.service} CPU {cpu:.1f} s: {labelled / cpu:,.0f} labels per CPU second, "
        f"{1000 * cpu / records:.3f} ms per record of {args.labels} labels, "
        f"{1000 * cpu / labelled:.4f} ms per label"
    )
    print(
        f"RSS MiB: start {first.rss_kib / 1024:.1f}, end {end.rss_kib / 1024:.1f}, "
        f"peak (VmHWM) {result.hwm_kib / 1024:.1f}"
    )
    return service


def report(args: argparse.Namespace, mode: str, run: Run, first: Sample | None) -> None:
    assert first is not None
    end = run.samples[-1]
    rows = end.rows - first.rows
    seconds = end.at - first.at
    rate = rows / seconds if seconds else float("nan")
    # the steady rate: the middle 80 % of the rows
    lo = next(s for s in run.samples if s.rows - first.rows >= 0.1 * rows)
    hi = next(s for s in run.samples if s.rows - first.rows >= 0.9 * rows)
    steady = (hi.rows - lo.rows) / (hi.at - lo.at) if hi.at > lo.at else float("nan")
    middle = min(run.samples, key=lambda s: abs(s.rows - first.rows - rows / 2))
    tenth = [run.samples[int(i * (len(run.samples) - 1) / 10)] for i in range(11)]
    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the end, "
        f"Python {platform.python_version()}, mode {mode}, batch {args.batch} rows, "
        f"{args.features} features, window {args.window}, keep_samples {args.keep:,}, "
        f"{args.ids} ids{', every record also a shadow' if args.shadow else ''}"
    )
    print(f"rows consumed: {rows:,} in {seconds:.1f} s")
    print(
        f"rows/s: {rate:,.0f} (middle 80 %: {steady:,.0f}); goal {GOAL_ROWS_PER_SECOND:,}: "
        f"{rate / GOAL_ROWS_PER_SECOND:.2f}x"
    )
    cpu = end.cpu - first.cpu
    print(
        f"{args.service} CPU: {cpu:.1f} s for those rows, {rows / cpu:,.0f} rows per CPU second "
        f"({100 * cpu / seconds:.0f} % of one core on average); "
        f"{1000 * cpu / (rows / args.batch):.3f} ms per record of {args.batch} rows"
    )
    print(
        f"RSS MiB: start {first.rss_kib / 1024:.1f}, middle {middle.rss_kib / 1024:.1f}, "
        f"end {end.rss_kib / 1024:.1f}, peak (VmHWM) {run.hwm_kib / 1024:.1f}"
    )
    print("every tenth of the run (rows, RSS MiB, database MiB):")
    for s in tenth:
        print(f"  {s.rows:>12,}  {s.rss_kib / 1024:8.1f}  {s.db_bytes / 1024**2:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100, help="rows per PredictionBatch")
    parser.add_argument(
        "--service",
        choices=["monitor", "trainer"],
        default="monitor",
        help="the record consumer measured (the trainer keeps the rows as training samples)",
    )
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--window", type=int, default=2000, help="monitor.window of the spec")
    parser.add_argument("--mode", choices=["before", "concurrent"], default=None)
    parser.add_argument("--lead", type=int, default=500_000, help="concurrent: rows ahead")
    parser.add_argument(
        "--keep", type=int, default=200_000, help="monitor.keep_samples: the retention"
    )
    parser.add_argument("--ids", choices=["uuid4", "uuid7"], default="uuid4", help="prediction ids")
    parser.add_argument(
        "--labels",
        type=int,
        default=0,
        help="then label every row, this many labels per FeedbackBatch record, and measure "
        "the feedback consumer on that backlog (0: predictions only); the spec judges the "
        "live accuracy every 200 labels",
    )
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="a shadow stage: every record also answered by a shadow (version 2), whose "
        "record the monitor compares with the champion's (rows and CPU count both records)",
    )
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
