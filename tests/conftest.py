"""Fixtures shared by the integration and end-to-end tests: a real nats-server with JetStream
on a free port, a real database (SQLite, and PostgreSQL under its marker), a real MLflow store."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest

from driftloop.cli.supervisor import start_nats
from driftloop.shared.config import Settings

# The shadow's worker process runs under SCHED_IDLE by default: on a machine that is never idle
# (pytest-xdist's workers keep both cores busy) it got no CPU at all, so a rollout's shadow
# stage never reached its rows and tests timed out. The tests here prove the loop's decisions,
# not the worker's priority (tests/unit/gateway/test_shadow_worker.py proves that, and the
# shadow rounds of `make bench-gateway` what it buys): every gateway they start, in this
# process or as a subprocess, runs its shadow at normal priority unless a test says otherwise.
os.environ.setdefault("DRIFTLOOP_SHADOW_PRIORITY", "normal")

POSTGRES_URL = os.environ.get(
    "DRIFTLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so a fixture's teardown knows its test failed."""
    report: pytest.TestReport = yield
    item.stash.setdefault(helpers.PHASES, {})[report.when] = report
    return report


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks (integration/test_suite.py)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`--dist loadgroup`), the tests sharing an expensive module- or
    package-scoped fixture stay on one worker: the fault tests (one `driftloop up` for the
    package) and each file with a module-scoped one; every other test is scheduled alone."""
    for item in items:
        if "faults" in item.path.parts:
            group = "faults"
        elif item.path.name in SHARED_FIXTURE_FILES:
            group = item.path.name
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    """With DRIFTLOOP_TEST_CPU_REPORT=DIR, each test's wall time and CPU time (this process's,
    and that of the child processes it reaped: nats-servers, `driftloop up`, MLflow servers)
    are appended to DIR/<worker>.jsonl; `python tests/cpu_report.py DIR` sums them per file.
    The suite is CPU-bound on two cores (docs/testing.md), so CPU is what a change must cut."""
    where = os.environ.get("DRIFTLOOP_TEST_CPU_REPORT")
    if not where:
        return (yield)
    before, started = helpers.cpu_seconds(), time.monotonic()
    try:
        return (yield)
    finally:
        path = Path(where) / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {
            "test": item.nodeid,
            "wall_s": round(time.monotonic() - started, 3),
            "cpu_s": round(helpers.cpu_seconds() - before, 3),
        }
        with path.open("a") as out:
            out.write(json.dumps(row) + "\n")


# Files whose tests share a module-scoped fixture that starts services (see above).
SHARED_FIXTURE_FILES = {"test_api_fuzz.py", "test_permissions.py"}


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A fresh nats-server with JetStream (file storage) on a free loopback port."""
    proc, url = start_nats(tmp_path / "nats", tmp_path / "nats.log")
    yield url
    helpers.terminate(proc)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None (one SQLite file per service under HOME) or a PostgreSQL schema of this test."""
    if request.param == "sqlite":
        yield None
        return
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, db_url: str | None) -> Settings:
    return Settings(
        home=helpers.seed_home(tmp_path / "home"),
        nats_url=nats_url,
        database_url=db_url,
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
    )


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Awaitable[Any]], asyncio.Task[Any]]]:
    """Start service coroutines as tasks; they are stopped at the end of the test.

    A service task that ends with an exception of its own (not by being cancelled) fails its
    test: `eventually` stops waiting at once and raises it, and the teardown fails the test
    (helpers.stop_services)."""
    tasks: list[asyncio.Task[Any]] = []
    helpers.SERVICE_TASKS.clear()

    def start(coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        tasks.append(task)
        helpers.SERVICE_TASKS.append(task)
        return task

    yield start
    helpers.SERVICE_TASKS.clear()
    await helpers.stop_services(tasks)
