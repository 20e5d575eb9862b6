"""Which store errors the bus treats as transient (retried quietly by redelivery): a SQLite file
locked by another connection is; a constraint or a missing table is a real failure."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from driftloop.shared.db import make_engine, transient_database_error


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite'}", busy_timeout=0.05)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    yield engine
    engine.dispose()


def failure(engine: sa.Engine, sql: str) -> BaseException:
    with pytest.raises(sa.exc.DBAPIError) as caught, engine.begin() as conn:
        conn.exec_driver_sql(sql)
    return caught.value


def test_a_file_locked_by_another_connection_is_transient(
    engine: sa.Engine, tmp_path: Path
) -> None:
    holder = sqlite3.connect(tmp_path / "s.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        error = failure(engine, "INSERT INTO t VALUES (1)")
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    wrapped = RuntimeError("while storing")
    wrapped.__cause__ = error

    assert "database is locked" in str(error)
    assert transient_database_error(error)
    assert transient_database_error(wrapped)
    assert not transient_database_error(RuntimeError("while storing"))


@pytest.mark.parametrize(
    "sql",
    ["INSERT INTO t VALUES (1), (1)", "INSERT INTO missing VALUES (1)"],
    ids=["constraint", "missing-table"],
)
def test_a_real_failure_is_not_transient(engine: sa.Engine, sql: str) -> None:
    error = failure(engine, sql)

    assert not transient_database_error(error)
