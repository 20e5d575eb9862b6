"""Several gateway worker processes on one port (DRIFTLOOP_GATEWAY_WORKERS=2): a real gateway
(`python -m driftloop.gateway`: a supervisor and its workers), a real nats-server and MLflow
store. Both workers answer on the one port, every answered request's record reaches JetStream
once, /metrics adds up across the workers, a killed worker is restarted and loses no record, a
killed gateway leaves no worker on the port, and a gateway restarted with fewer workers
publishes the spool of the one that is gone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats.errors
import pytest
from helpers import connect_nats, eventually, fixed_port, terminate
from nats.js.api import DeliverPolicy
from serving import ROW, serve_champion

from driftloop.cli.supervisor import pid_alive, port_open, start_nats
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import PREDICTIONS_STREAM

pytestmark = pytest.mark.faults


@pytest.fixture
def db_url() -> None:
    """No service here uses a database."""
    return None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The test's nats-server, which a test may freeze (SIGSTOP)."""
    proc, url = start_nats(tmp_path / "nats", tmp_path / "nats.log")
    proc.url = url  # type: ignore[attr-defined]  # the fixture below reads it
    yield proc
    os.kill(proc.pid, signal.SIGCONT)
    terminate(proc)


@pytest.fixture
def nats_url(nats_server: subprocess.Popen[bytes]) -> str:
    return str(nats_server.url)  # type: ignore[attr-defined]


def children(pid: int) -> list[int]:
    """The gateway's worker processes: its children started by multiprocessing's spawn (its
    shadow workers are the forkserver's children, one level down)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"multiprocessing.spawn" in cmdline:
                found.append(int(child))
    return sorted(found)


class Gateway:
    """`python -m driftloop.gateway` on a fixed port, its log under tmp_path."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.port = fixed_port()  # killed and started again on it
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.answered: list[str] = []  # ids of every request answered 200
        self.probes = 0  # readiness probes sent (their ids: r-1-0, r-2-0, ...)

    def start(self, workers: int) -> None:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "MLFLOW_"))}
        env = keep | {
            "DRIFTLOOP_HOME": str(self.settings.home),
            "DRIFTLOOP_NATS_URL": str(self.settings.nats_url),
            "MLFLOW_TRACKING_URI": self.settings.tracking_uri(),
            "DRIFTLOOP_GATEWAY_PORT": str(self.port),
            "DRIFTLOOP_GATEWAY_WORKERS": str(workers),
            "DRIFTLOOP_SHADOW_PRIORITY": "normal",
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "driftloop.gateway"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        terminate(self.proc, 40)  # its workers stop gracefully first

    async def predict(self, http: httpx.AsyncClient, n: int) -> int | str:
        """One request of two rows with ids of its own: its status, or the transport error
        (a request no worker took, or whose worker was killed before answering)."""
        ids = [f"r{n}-0", f"r{n}-1"]
        try:
            resp = await http.post(
                "/v1/models/churn/predict", json={"instances": [ROW, ROW], "ids": ids}
            )
        except httpx.TransportError as exc:
            return type(exc).__name__
        if resp.status_code == 200:
            self.answered += ids
        return resp.status_code

    async def load(self, first: int, count: int, *, connections: int = 16) -> list[int | str]:
        """`count` requests over `connections` concurrent connections."""
        numbers = iter(range(first, first + count))
        codes: list[int | str] = []
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as http:

            async def client() -> None:
                for n in numbers:
                    codes.append(await self.predict(http, n))

            await asyncio.gather(*(client() for _ in range(connections)))
        return codes

    async def answering_pids(self, tries: int = 40) -> set[int]:
        """The pids that answered /healthz over `tries` new connections."""
        pids = set()
        for _ in range(tries):
            async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
                pids.add((await http.get("/healthz")).json()["pid"])
        return pids

    async def ready(self, workers: int) -> list[int]:
        """Wait until `workers` worker processes answer predict; their pids."""

        async def check() -> list[int] | None:
            pids = children(self.pid)
            if len(pids) != workers:
                return None
            try:
                seen = await self.answering_pids()
                async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
                    ok = []
                    for _ in range(4):
                        self.probes += 1
                        ok.append(await self.predict(http, -self.probes))
            except httpx.HTTPError:
                return None
            return pids if seen == set(pids) and ok == [200] * 4 else None

        return await eventually(check, timeout=120, interval=0.5)

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            text = (await http.get("/metrics")).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((f"{name}{{", f"{name} "))
        )


@pytest.fixture
async def gateway(settings: Settings, bus: Bus, tmp_path: Path) -> AsyncIterator[Gateway]:
    await serve_champion(settings, bus)
    gw = Gateway(settings, tmp_path)
    try:
        yield gw
    finally:
        gw.stop()


async def published_ids(nats_url: str) -> Counter[str]:
    """How many times each prediction id is on the predictions stream (served records)."""
    nc = await connect_nats(nats_url)
    try:
        js = nc.jetstream()
        if (await js.stream_info(PREDICTIONS_STREAM)).state.messages == 0:
            return Counter()
        sub = await js.subscribe(
            "driftloop.predictions.churn",
            stream=PREDICTIONS_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        seen: Counter[str] = Counter()
        while True:
            try:
                msg = await sub.next_msg(timeout=2.0)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            seen.update(json.loads(msg.data)["ids"])
            if msg.metadata.num_pending == 0:
                break
        await sub.unsubscribe()
        return seen
    finally:
        await nc.close()


async def every_record_once(gw: Gateway, nats_url: str) -> None:
    """Wait until each answered id is on the stream; fail if any is there twice."""

    async def check() -> bool:
        seen = await published_ids(nats_url)
        missing = [i for i in gw.answered if seen[i] == 0]
        assert not missing, f"{len(missing)} of {len(gw.answered)} answered ids not published"
        twice = [i for i, n in seen.items() if n > 1]
        assert not twice, f"published more than once: {twice[:5]}"
        return True

    await eventually(check, timeout=60, interval=1.0)


async def test_two_workers_answer_on_one_port_and_metrics_add_up(
    gateway: Gateway, settings: Settings
) -> None:
    gateway.start(workers=2)
    workers = await gateway.ready(2)

    codes = await gateway.load(0, 300)

    assert set(codes) == {200}
    assert len(set(workers)) == 2
    assert gateway.pid not in workers
    await every_record_once(gateway, str(settings.nats_url))
    requests = len(gateway.answered) // 2
    assert await gateway.metric("driftloop_requests_total") == requests
    assert await gateway.metric("driftloop_predict_seconds_count") == requests
    depth = await gateway.metric("driftloop_record_spool_depth")
    assert depth >= 0  # one figure for the gateway, not one per worker


async def test_a_worker_killed_mid_load_is_restarted_and_loses_no_record(
    gateway: Gateway, settings: Settings
) -> None:
    gateway.start(workers=2)
    first, _ = await gateway.ready(2)

    loading = asyncio.create_task(gateway.load(0, 600))
    await eventually(lambda: len(gateway.answered) >= 200, timeout=60, interval=0.02)
    os.kill(first, signal.SIGKILL)
    codes = await loading
    after = await gateway.ready(2)
    codes += await gateway.load(1000, 100)

    assert first not in after
    assert 200 in codes
    assert all(c == 200 or isinstance(c, str) for c in codes), Counter(codes)
    await every_record_once(gateway, str(settings.nats_url))
    # the killed worker's counts stay in the sum; requests it counted but never answered too
    assert await gateway.metric("driftloop_requests_total") >= len(gateway.answered) // 2


async def test_a_killed_gateway_leaves_no_worker_and_fewer_workers_publish_its_spools(
    gateway: Gateway, settings: Settings, nats_server: subprocess.Popen[bytes]
) -> None:
    gateway.start(workers=2)
    workers = await gateway.ready(2)
    await every_record_once(gateway, str(settings.nats_url))
    spools = settings.home / "spool"
    os.kill(nats_server.pid, signal.SIGSTOP)  # records cannot leave the spools now
    try:
        codes = await gateway.load(0, 200)
        os.kill(gateway.pid, signal.SIGKILL)
        # a killed process's leader is a zombie before its other threads let its files go
        await eventually(lambda: not any(pid_alive(p) for p in workers), timeout=30)
        await eventually(lambda: not port_open("127.0.0.1", gateway.port), timeout=30)
        left = sorted(p.name for p in spools.glob(f"gateway-{gateway.port}-w1*.sqlite"))
    finally:
        os.kill(nats_server.pid, signal.SIGCONT)
    gateway.start(workers=1)  # a single process: slot 1's spools are orphans now
    await eventually(lambda: children(gateway.pid) == [] and port_open("127.0.0.1", gateway.port))

    assert set(codes) == {200}
    assert f"gateway-{gateway.port}-w1.sqlite" in left
    await every_record_once(gateway, str(settings.nats_url))
    await eventually(lambda: not list(spools.glob(f"gateway-{gateway.port}-w1*.sqlite")))
