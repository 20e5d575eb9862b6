"""Fault-injection harness (the fixture is in conftest.py): a running `driftloop up`, driven
through the CLI, the gateway and the stores; services are killed with SIGKILL (or stopped with
SIGTERM) at moments the test can observe, and what each service stored is counted against what
the gateway accepted."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from helpers import (
    SPEC,
    churn,
    cli_env,
    connect_nats,
    eventually,
    of_cycle,
    read_all_events,
    run_cli,
    types,
)
from nats.js.api import ConsumerConfig

from driftloop.cli.supervisor import pid_alive, start_nats
from driftloop.shared.events import EVENTS_STREAM, TERMINAL_TYPES

SERVICES = ("gateway", "monitor", "trainer", "evaluator", "deployer")
# Drift out of reach (only the test starts cycles), every challenger passes (the verdict is
# not under test: each cycle must reach Deployed), promotion at once.
FAULT_SPEC = SPEC.replace(
    "psi_warn: 0.2, psi_retrain: 0.25", "psi_warn: 50, psi_retrain: 50"
).replace(
    "evaluator: {metric: accuracy, min_delta: 0.0, max_p95_ms: 1000}",
    "evaluator: {metric: accuracy, min_delta: -1.0, non_inferiority: 1.0, slice_tolerance: 1.0,"
    " max_p95_ms: 100000}",
)
# A consumer whose process died holds its unacked messages until ack_wait (30 s in the
# services); the harness shortens it so a test sees the redelivery within its budget. Long
# handlers keep their message with in-progress acks, and a redelivery during one is a repeat
# the inbox absorbs.
TEST_ACK_WAIT = 8.0
ROWS_PER_REQUEST = 25
CYCLE = ["RetrainRequested", "ModelTrained", "EvaluationPassed", "RolloutAdvanced", "Deployed"]
ENOUGH_LABELS = 13  # requests of 25 labelled rows: past trainer.min_rows (300)


class Loop:
    """A running `driftloop up` under `home`, and the faults a test injects into it."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.env = cli_env(home, port)
        self.gateway = f"http://127.0.0.1:{port}"
        self.nats_url = ""
        self.restarted_nats: list[subprocess.Popen[bytes]] = []
        self.rng = np.random.default_rng(11)
        self.accepted_rows = 0  # rows the gateway answered 200 (champion or canary)
        self.labelled_rows = 0  # labels the gateway answered 202
        self.refused_labels = 0  # labels answered 503: the client was told; they may arrive
        self.base = (0, 0, 0)  # monitor rows_seen, trainer predictions, labels before traffic

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env, *args, timeout=timeout)

    # Processes ---------------------------------------------------------------------------

    def pid(self, name: str) -> int:
        return int((self.home / "run" / f"{name}.pid").read_text())

    def kill(self, name: str) -> int:
        """SIGKILL a service; returns the pid killed (the supervisor starts a new one)."""
        pid = self.pid(name)
        if pid_alive(pid):  # else still down from an earlier kill: nothing runs to kill
            os.kill(pid, signal.SIGKILL)
        return pid

    def terminate(self, name: str) -> int:
        """SIGTERM a service (a graceful stop); returns its pid."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGTERM)
        return pid

    async def restarted(self, name: str, killed: int) -> None:
        """Wait until the supervisor restarted `name` and it answers on the bus."""

        async def ready() -> bool:
            pid = self.pid(name)
            if pid == killed or not pid_alive(pid):
                return False
            if name == "gateway":
                async with httpx.AsyncClient(base_url=self.gateway, timeout=2) as http:
                    try:
                        return (await http.get("/readyz")).status_code == 200
                    except httpx.TransportError:
                        return False
            return await self.ping(name)

        await eventually(ready, timeout=90, interval=0.3)

    async def ping(self, name: str) -> bool:
        try:
            nc = await connect_nats(self.nats_url, max_reconnect_attempts=0)
        except Exception:
            return False
        try:
            await nc.request(f"driftloop.rpc.ping.{name}", b"{}", timeout=1.0)
        except Exception:
            return False
        finally:
            await nc.close()
        return True

    @property
    def nats_port(self) -> int:
        return int(self.nats_url.rsplit(":", 1)[1])

    def stop_nats(self) -> None:
        """SIGKILL the nats-server (the embedded one, or one this harness restarted)."""
        if self.restarted_nats:
            proc = self.restarted_nats[-1]
            proc.kill()
            proc.wait(10)
            return
        pid = int((self.home / "run" / "nats.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def start_nats(self) -> None:
        """Start nats-server again on the same port and store, with the users and permissions
        `driftloop up` wrote (HOME/run/nats.conf, when it has them): the supervisor only
        starts it once; this one is stopped by the fixture."""
        conf = self.home / "run" / "nats.conf"
        proc, _ = start_nats(
            self.home / "nats",
            self.home / "logs" / "nats-restarted.log",
            port=self.nats_port,
            conf=conf if conf.exists() else None,
        )
        self.restarted_nats.append(proc)

    async def anonymous_refusal(self) -> str | None:
        """Why the server refuses a connection without a user (None: it accepts it)."""
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        try:
            nc = await connect_nats(
                f"nats://127.0.0.1:{self.nats_port}",
                error_cb=on_error,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )
        except Exception as exc:
            return " ".join([*errors, str(exc)])
        await nc.close()
        return None

    def nats_pid(self) -> int:
        if self.restarted_nats:
            return self.restarted_nats[-1].pid
        return int((self.home / "run" / "nats.pid").read_text())

    def freeze_nats(self) -> None:
        """SIGSTOP the nats-server: every client's publish hangs, nothing is delivered."""
        os.kill(self.nats_pid(), signal.SIGSTOP)

    def thaw_nats(self) -> None:
        os.kill(self.nats_pid(), signal.SIGCONT)

    async def delivered(self, durable: str, stream: str = EVENTS_STREAM) -> int:
        """How many messages the consumer `durable` has delivered (redeliveries included)."""
        nc = await connect_nats(self.nats_url)
        try:
            info = await nc.jetstream().consumer_info(stream, durable)
        finally:
            await nc.close()
        return int(info.delivered.consumer_seq if info.delivered else 0)

    async def settled(self) -> None:
        """Wait until no durable consumer of a service holds a pending or unacked message, so
        every redelivery a kill caused has happened."""

        async def check() -> bool:
            nc = await connect_nats(self.nats_url)
            try:
                js = nc.jetstream()
                for stream in await js.streams_info():
                    for info in await js.consumers_info(stream.config.name):
                        durable = info.config.durable_name or ""
                        if durable.split("-")[0] not in SERVICES:
                            continue  # an ordered consumer (a KV watch, a test's reader)
                        busy = info.num_pending or info.num_ack_pending
                        assert not busy, (
                            f"{info.name}: {info.num_pending} pending, "
                            f"{info.num_ack_pending} unacked"
                        )
            finally:
                await nc.close()
            return True

        await eventually(check, timeout=60, interval=0.5)

    def query(self, store: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on a service's SQLite file (or `mlflow`)."""
        db = self.home / ("mlflow.db" if store == "mlflow" else f"db/{store}.sqlite")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return list(conn.execute(sql, args).fetchall())

    def logged(self, service: str, message: str, **fields: str) -> int:
        """How many lines of the service's log (JSON lines under home/logs, every run of it)
        say `message` with these field values."""
        path = self.home / "logs" / f"{service}.log"
        if not path.exists():
            return 0
        found = 0
        for line in path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue  # a line a library printed, or one being written
            if doc.get("message") == message and all(doc.get(k) == v for k, v in fields.items()):
                found += 1
        return found

    def unpublished(self, service: str, event_type: str) -> int:
        return int(
            self.query(
                service,
                f"SELECT count(*) FROM {service}_outbox "
                "WHERE published_at IS NULL AND subject LIKE ?",
                f"%.{event_type}",
            )[0][0]
        )

    # Traffic -----------------------------------------------------------------------------

    async def traffic(
        self, http: httpx.AsyncClient, requests: int, *, label: bool = True
    ) -> list[int]:
        """`requests` predict requests of ROWS_PER_REQUEST rows, each labelled when answered;
        the status codes; counts what was accepted."""
        codes = []
        for _ in range(requests):
            frame = churn(self.rng, ROWS_PER_REQUEST)
            resp = await http.post(
                "/v1/models/churn/predict",
                json={"instances": frame.drop(columns="churned").to_dict(orient="records")},
            )
            codes.append(resp.status_code)
            if resp.status_code != 200:
                continue
            self.accepted_rows += ROWS_PER_REQUEST
            if label:
                ids = resp.json()["ids"]
                labels = [
                    {"id": k, "label": int(y)} for k, y in zip(ids, frame["churned"], strict=True)
                ]
                fed = await http.post("/v1/models/churn/feedback", json={"labels": labels})
                if fed.status_code == 202:
                    self.labelled_rows += ROWS_PER_REQUEST
                elif fed.status_code == 503:
                    self.refused_labels += ROWS_PER_REQUEST
                else:
                    raise AssertionError(f"feedback answered {fed.status_code}: {fed.text}")
        return codes

    async def predict_once(
        self, http: httpx.AsyncClient, *, rows: int = ROWS_PER_REQUEST
    ) -> int | str:
        """One unlabelled predict request: its status, or the transport error's name (a
        request the server never took)."""
        frame = churn(self.rng, rows).drop(columns="churned")
        try:
            resp = await http.post(
                "/v1/models/churn/predict", json={"instances": frame.to_dict(orient="records")}
            )
        except httpx.TransportError as exc:
            return type(exc).__name__
        if resp.status_code == 200:
            self.accepted_rows += rows
        return resp.status_code

    # What the services stored -------------------------------------------------------------

    async def monitor_status(self) -> dict[str, Any]:
        nc = await connect_nats(self.nats_url)
        try:
            reply = await nc.request(
                "driftloop.rpc.monitor.status", json.dumps({"model": "churn"}).encode(), timeout=3
            )
        finally:
            await nc.close()
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    def trainer_counts(self) -> tuple[int, int]:
        """(samples with a prediction, samples with a label) in the trainer's own store."""
        ((predicted, labelled),) = self.query(
            "trainer",
            "SELECT count(prediction), count(label) FROM trainer_samples WHERE model = 'churn'",
        )
        return int(predicted), int(labelled)

    async def rebase(self) -> None:
        """Count from what is stored now (after a test that knowingly loses records)."""
        seen = (await self.monitor_status()).get("rows_seen") or 0
        predicted, labelled = self.trainer_counts()
        self.base = (
            seen - self.accepted_rows,
            predicted - self.accepted_rows,
            labelled - self.labelled_rows,
        )
        self.refused_labels = 0

    async def stored_everything(self, *, timeout: float = 60) -> None:
        """Wait until the monitor has seen every row the gateway accepted and the trainer
        stored each of them and every accepted label; fail with the figures otherwise."""
        rows, labels = self.accepted_rows, self.labelled_rows

        async def check() -> bool:
            seen = ((await self.monitor_status()).get("rows_seen") or 0) - self.base[0]
            predicted, labelled = self.trainer_counts()
            predicted, labelled = predicted - self.base[1], labelled - self.base[2]
            if labels <= labelled <= labels + self.refused_labels:
                labelled = labels
            assert (seen, predicted, labelled) == (rows, rows, labels), (
                f"monitor rows_seen={seen}, trainer predictions={predicted} labels={labelled}; "
                f"gateway accepted rows={rows} labels={labels}"
            )
            return True

        await eventually(check, timeout=timeout, interval=0.5)

    # Cycles --------------------------------------------------------------------------------

    async def events(self) -> list[dict[str, Any]]:
        return await read_all_events(self.nats_url, "churn")

    async def cycle_ids(self) -> list[str]:
        return [
            e["envelope"]["data"]["cycle_id"]
            for e in await self.events()
            if e["envelope"]["type"] == "RetrainRequested"
        ]

    async def retrain(self) -> str:
        """Ask for a manual retraining; the new cycle's id."""
        before = set(await self.cycle_ids())
        done = self.cli("retrain", "churn", "--no-wait")
        assert done.returncode == 0, done.stderr

        async def started() -> str | None:
            new = [c for c in await self.cycle_ids() if c not in before]
            return new[0] if new else None

        return await eventually(started, timeout=30)

    async def seen(self, cycle_id: str, event_type: str, *, timeout: float = 120) -> None:
        async def check() -> bool:
            return event_type in types(of_cycle(await self.events(), cycle_id))

        await eventually(check, timeout=timeout, interval=0.1)

    async def ended(self, cycle_id: str, *, timeout: float = 150) -> list[str]:
        async def check() -> list[str] | None:
            cycle = types(of_cycle(await self.events(), cycle_id))
            return cycle if cycle and cycle[-1] in TERMINAL_TYPES else None

        return await eventually(check, timeout=timeout, interval=0.5)

    async def shorten_ack_waits(self) -> None:
        nc = await connect_nats(self.nats_url)
        try:
            js = nc.jetstream()
            for stream in await js.streams_info():
                for info in await js.consumers_info(stream.config.name):
                    config: ConsumerConfig = info.config
                    if config.durable_name and config.durable_name.split("-")[0] in SERVICES:
                        config.ack_wait = TEST_ACK_WAIT
                        await js.add_consumer(stream.config.name, config)
        finally:
            await nc.close()


async def assert_exactly_once(loop: Loop, cycle_id: str, versions_before: int) -> None:
    """The cycle ended Deployed, each of its events once, one model version registered, one
    release to champion recorded, and the gateway serves that version."""
    await loop.settled()  # every redelivery the kills caused has been handled
    events = of_cycle(await loop.events(), cycle_id)
    version = next(e for e in events if e["envelope"]["type"] == "ModelTrained")["envelope"][
        "data"
    ]["version"]
    versions = loop.query("mlflow", "SELECT count(*) FROM model_versions WHERE name = 'churn'")
    tagged = loop.query("trainer", "SELECT count(*) FROM trainer_runs WHERE cycle_id = ?", cycle_id)
    releases = loop.query(
        "deployer",
        "SELECT count(*) FROM deployer_releases WHERE cycle_id = ? AND to_stage = 'promoted'",
        cycle_id,
    )
    alias = loop.query(
        "mlflow",
        "SELECT version FROM registered_model_aliases WHERE name = 'churn' AND alias = 'champion'",
    )

    assert types(events) == CYCLE
    assert versions[0][0] == versions_before + 1
    assert tagged[0][0] == 1
    assert releases[0][0] == 1
    assert str(alias[0][0]) == version

    async def serving() -> bool:
        one = churn(loop.rng, 1).drop(columns="churned").to_dict(orient="records")
        async with httpx.AsyncClient(base_url=loop.gateway, timeout=10) as http:
            resp = await http.post("/v1/models/churn/predict", json={"instances": one})
        if resp.status_code == 200:
            loop.accepted_rows += 1
        return resp.status_code == 200 and resp.json()["version"] == version

    await eventually(serving, timeout=30)


def model_versions(loop: Loop) -> int:
    return int(
        loop.query("mlflow", "SELECT count(*) FROM model_versions WHERE name = 'churn'")[0][0]
    )


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temp folder, a free loopback port,
    trust auth), so a test can stop and start a real server mid-traffic while the machine's
    shared one is left alone. As root, the server runs as the `postgres` user."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="driftloop-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{tool}: {done.stdout}{done.stderr}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")

    def stop(self) -> None:
        """Stop it as a restart does (`-m fast`: open sessions are terminated, their
        transactions rolled back) and wait until it is down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_bindir() -> Path | None:
    """The folder of the newest installed PostgreSQL's initdb and pg_ctl, if any."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: float(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0.0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None
