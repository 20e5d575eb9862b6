"""The fault-injection tests share one `driftloop up --detach` (real nats-server with file
storage, SQLite, MLflow, the five services as processes); see harness.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from faults.harness import FAULT_SPEC, SERVICES, Loop, PrivatePostgres, postgres_bindir
from helpers import churn, failed, fixed_port, terminate, unavailable

from driftloop.cli.supervisor import free_port, pid_alive, port_open


@pytest.fixture(scope="package")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """`driftloop up`, the spec applied and version 1 deployed; `down` afterwards."""
    tmp = tmp_path_factory.mktemp("faults")
    loop = Loop(tmp / "home", fixed_port())  # its gateway is killed and restarted on it
    up = loop.cli("up", "--detach")
    assert up.returncode == 0, up.stderr
    loop.nats_url = (loop.home / "run" / "nats.url").read_text().strip()
    try:
        (tmp / "churn.yaml").write_text(FAULT_SPEC)
        churn(np.random.default_rng(3), 1200).to_csv(tmp / "churn.csv", index=False)
        applied = loop.cli("apply", str(tmp / "churn.yaml"))
        assert applied.returncode == 0, applied.stderr
        trained = loop.cli("train", "churn", "--data", str(tmp / "churn.csv"))
        assert trained.returncode == 0, trained.stderr + trained.stdout
        asyncio.run(loop.shorten_ack_waits())
        loop.base = (
            asyncio.run(loop.monitor_status()).get("rows_seen") or 0,
            *loop.trainer_counts(),
        )
        yield loop
    finally:
        pids = {p.stem: int(p.read_text()) for p in (loop.home / "run").glob("*.pid")}
        down = loop.cli("down")
        for proc in loop.restarted_nats:
            terminate(proc)
        assert down.returncode == 0, down.stderr
        left = [n for n, pid in pids.items() if n != "nats" and pid_alive(pid)]
        assert not left, f"down left processes: {left}"


@pytest.fixture(autouse=True)
async def loop_restored_after_a_failure(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """A fault test that fails part-way can leave the shared loop broken for the next one
    (nats-server frozen or down, a service not restarted yet, redeliveries pending, the counts
    off): put it back, so a failure stays its own test's. A passing test leaves it as it is."""
    yield
    if "loop" not in request.fixturenames or not failed(request.node):
        return
    loop: Loop = request.getfixturevalue("loop")
    with contextlib.suppress(ProcessLookupError):
        loop.thaw_nats()
    if not port_open("127.0.0.1", loop.nats_port):
        loop.start_nats()
    for name in SERVICES:
        await loop.restarted(name, killed=-1)  # the supervisor restarts what was killed
    await loop.settled()
    await loop.rebase()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL cluster of this test's own (see PrivatePostgres); removed after."""
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("no PostgreSQL server binaries (initdb, pg_ctl) installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("running as root without runuser: initdb refuses root")
    cluster = PrivatePostgres(bindir, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
