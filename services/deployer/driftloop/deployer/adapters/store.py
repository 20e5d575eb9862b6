"""The deployer's own tables: the audit log of releases, inbox and outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from driftloop.shared.db import UtcDateTime, messaging_tables
from driftloop.shared.routes import Served

SERVICE = "deployer"
metadata = sa.MetaData()
messaging = messaging_tables(metadata, SERVICE)
releases = sa.Table(
    "deployer_releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=False, index=True),
    sa.Column("cycle_id", sa.String(64), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("from_stage", sa.String(32), nullable=True),
    sa.Column("to_stage", sa.String(32), nullable=False),
    sa.Column("previous_version", sa.String(32), nullable=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
)
VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def last_champion(conn: Connection, model: str, *, before_cycle: str) -> Served | None:
    """The version promoted last by another cycle than `before_cycle`."""
    row = conn.execute(
        sa.select(releases.c.version, releases.c.run_id)
        .where(
            releases.c.model == model,
            releases.c.to_stage == "promoted",
            releases.c.cycle_id != before_cycle,
        )
        .order_by(releases.c.id.desc())
        .limit(1)
    ).first()
    return Served(version=row.version, run_id=row.run_id) if row else None


def audit(conn: Connection, **values: Any) -> None:
    conn.execute(sa.insert(releases).values(**values))
