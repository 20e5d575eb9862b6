"""Fixtures shared by the integration and end-to-end tests: a real nats-server with JetStream
on a free port, a real database (SQLite, and PostgreSQL under its marker), a real MLflow store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from driftloop.cli.supervisor import start_nats
from driftloop.shared.config import Settings

POSTGRES_URL = os.environ.get(
    "DRIFTLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A fresh nats-server with JetStream (file storage) on a free loopback port."""
    proc, url = start_nats(tmp_path / "nats", tmp_path / "nats.log")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


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
        home=tmp_path / "home",
        nats_url=nats_url,
        database_url=db_url,
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
    )


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Awaitable[Any]], asyncio.Task[Any]]]:
    """Start service coroutines as tasks; they are cancelled at the end of the test."""
    tasks: list[asyncio.Task[Any]] = []

    def start(coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        tasks.append(task)
        return task

    yield start
    # Cancel until done: a cancel that lands while a service is still connecting can be
    # swallowed by asyncio.wait_for on Python 3.11, so one cancel() is not enough.
    for task in tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
