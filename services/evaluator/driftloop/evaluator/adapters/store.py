"""The evaluator's own tables: verdicts, inbox and outbox."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from driftloop.shared.db import UtcDateTime, messaging_tables

SERVICE = "evaluator"
metadata = sa.MetaData()
messaging = messaging_tables(metadata, SERVICE)
verdicts = sa.Table(
    "evaluator_verdicts",
    metadata,
    sa.Column("cycle_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("champion_version", sa.String(32), nullable=True),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("judged_at", UtcDateTime(), nullable=False),
)
VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"
