"""The trainer's own tables: labelled samples, cycles it trained, inbox and outbox."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from driftloop.shared.db import UtcDateTime, messaging_tables
from driftloop.shared.samples import samples_table

SERVICE = "trainer"
metadata = sa.MetaData()
messaging = messaging_tables(metadata, SERVICE)
samples = samples_table(metadata, SERVICE)
runs = sa.Table(
    "trainer_runs",
    metadata,
    sa.Column("cycle_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("dataset_version", sa.String(64), nullable=False),
    sa.Column("recent_rows", sa.Integer, nullable=False),
    sa.Column("reference_rows", sa.Integer, nullable=False),
    sa.Column("trained_at", UtcDateTime(), nullable=False),
)
VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"
