"""Each service's migrations build exactly the tables its code declares: a column, index or
table added to a store module without its migration (or the other way round) fails here, on
SQLite and on PostgreSQL, before it fails a deployment."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from driftloop.shared.config import Settings
from driftloop.shared.db import make_engine, migrate

SERVICES = ["monitor", "trainer", "evaluator", "deployer"]


def _differences(diffs: list[Any]) -> list[Any]:
    """Schema differences that matter: not the column types' spelling (UtcDateTime is a
    DateTime decorator, JSON on PostgreSQL) and not alembic's own version table."""
    kept = []
    for diff in diffs:
        flat = diff if isinstance(diff, list) else [diff]
        for item in flat:
            if item[0] == "remove_table" and item[1].name.endswith("_alembic_version"):
                continue
            kept.append(item)
    return kept


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_build_the_tables_the_code_declares(
    service: str, db_url: str | None, tmp_path: Path
) -> None:
    store = importlib.import_module(f"driftloop.{service}.adapters.store")
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    engine = make_engine(settings.database_url_for(service))
    migrate(engine, service=service, versions=store.VERSIONS)

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": False,
                # other services' tables share one PostgreSQL schema: compare ours only
                "include_name": lambda name, kind, _parent: (
                    kind != "table" or name.startswith(f"{service}_")
                ),
            },
        )
        diffs = _differences(compare_metadata(context, store.metadata))
    engine.dispose()

    assert diffs == []
