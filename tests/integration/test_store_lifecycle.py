"""A stopped service gives its database connections back: on a shared PostgreSQL server every
pooled connection counts against `max_connections` until it is closed, idle or not (a process
that starts and stops services, like the tests or an embedding application, would otherwise
run the server out of connections)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import POSTGRES_URL
from helpers import eventually, stop_services

from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.monitor.main import serve as monitor
from driftloop.shared.config import Settings
from driftloop.trainer.main import serve as trainer

SERVICES = {"monitor": monitor, "trainer": trainer, "evaluator": evaluator, "deployer": deployer}


def connections(name: str) -> int:
    """Open connections to the server whose client called itself `name`."""
    admin = sa.create_engine(POSTGRES_URL, poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(name)s"
            return int(conn.exec_driver_sql(query, {"name": name}).scalar_one())
    finally:
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # the server counts them
@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_a_stopped_service_closes_its_database_connections(
    service: str, settings: Settings, db_url: str, running: Any
) -> None:
    name = f"driftloop-test-{uuid.uuid4().hex[:12]}"
    named = settings.model_copy(update={"database_url": f"{db_url}&application_name={name}"})

    task = running(SERVICES[service](named))
    await eventually(lambda: connections(name) > 0, timeout=60)  # migrated, serving
    await stop_services([task])  # cancelled until done (one cancel can be swallowed on 3.11)

    assert task.cancelled()
    await eventually(lambda: connections(name) == 0, timeout=10)
