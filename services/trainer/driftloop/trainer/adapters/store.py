"""The trainer's own tables: labelled samples, cycles it trained, inbox and outbox."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
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

SERVED_ROWS = 20_000
"""At most this many served rows (a uniform sample of the period) are what the validation
gate's feature checks compare the training rows with."""


def served_features(
    engine: sa.Engine,
    model: str,
    *,
    onset: datetime | None,
    labelled_after: datetime | None,
    limit: int = SERVED_ROWS,
) -> pd.DataFrame:
    """The features of what the gateway served for `model` (labelled or not) over the period the
    training rows come from: since the episode's `onset`; without one, since the earliest
    serving of a row labelled after `labelled_after` (the whole history when both are None).
    A uniform sample of at most `limit` rows, so the whole period is represented."""
    samples_of_model = (samples.c.model == model, samples.c.features.is_not(None))
    with engine.connect() as conn:
        start = onset
        if start is None and labelled_after is not None:
            first = sa.select(sa.func.min(samples.c.predicted_at)).where(
                *samples_of_model, samples.c.labelled_at > labelled_after
            )
            start = conn.execute(first).scalar_one_or_none()
        query = sa.select(samples.c.features).where(*samples_of_model)
        if start is not None:
            query = query.where(samples.c.predicted_at >= start)
        rows = conn.execute(query.order_by(sa.func.random()).limit(limit))
        return pd.DataFrame([r.features for r in rows])
