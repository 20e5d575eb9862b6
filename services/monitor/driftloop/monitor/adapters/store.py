"""The monitor's own tables: per-model reference, window and trigger state; decisions."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from driftloop.shared.db import UtcDateTime, messaging_tables
from driftloop.shared.samples import samples_table

SERVICE = "monitor"
metadata = sa.MetaData()
messaging = messaging_tables(metadata, SERVICE)
models = sa.Table(
    "monitor_models",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("reference_version", sa.String(32), nullable=True),
    sa.Column("reference_run_id", sa.String(64), nullable=True),
    sa.Column("profile", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("window", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("last_drift", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("last_retrain_at", UtcDateTime(), nullable=True),
    sa.Column("open_cycle_id", sa.String(64), nullable=True),
    sa.Column("rows_seen", sa.BigInteger, nullable=False, default=0),
    sa.Column("labels_since_eval", sa.Integer, nullable=False, default=0),
    sa.Column("last_performance", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("labels_since_retrain", sa.Integer, nullable=False, default=0),
    sa.Column("reference_at", UtcDateTime(), nullable=True),
)
samples = samples_table(metadata, SERVICE)
version_stats = sa.Table(
    "monitor_version_stats",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("route", sa.String(16), primary_key=True),
    sa.Column("stats", sa.JSON, nullable=False),
    sa.Column("since", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)
decisions = sa.Table(
    "monitor_decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=False, index=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("fired", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("cycle_id", sa.String(64), nullable=True),
)
VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def load(conn: Connection, model: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(models).where(models.c.model == model)).mappings().first()
    return dict(row) if row else None


def save(conn: Connection, model: str, **values: Any) -> None:
    """Insert or update the model's row (only the given columns change)."""
    done = conn.execute(models.update().where(models.c.model == model).values(**values))
    if done.rowcount == 0:
        values = {"rows_seen": 0, "labels_since_eval": 0, "labels_since_retrain": 0} | values
        conn.execute(models.insert().values(model=model, **values))


def last_decision(conn: Connection, model: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.select(decisions)
            .where(decisions.c.model == model)
            .order_by(decisions.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def labelled_of_version(
    conn: Connection, model: str, version: str, *, limit: int, since: datetime | None = None
) -> list[sa.Row[Any]]:
    """The newest joined (prediction, label) pairs served by `version` (predicted at or after
    `since` when given)."""
    where = [
        samples.c.model == model,
        samples.c.version == version,
        samples.c.label.is_not(None),
        samples.c.prediction.is_not(None),
    ]
    if since is not None:
        where.append(samples.c.predicted_at >= since)
    return list(
        conn.execute(
            sa.select(samples.c.prediction, samples.c.label, samples.c.labelled_at)
            .where(*where)
            .order_by(samples.c.labelled_at.desc())
            .limit(limit)
        )
    )


def load_stats(conn: Connection, model: str, version: str, route: str) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(version_stats.c.stats, version_stats.c.since).where(
            version_stats.c.model == model,
            version_stats.c.version == version,
            version_stats.c.route == route,
        )
    ).first()
    return {"stats": row.stats, "since": row.since} if row else None


def save_stats(
    conn: Connection, model: str, version: str, route: str, stats: dict[str, Any], at: datetime
) -> None:
    done = conn.execute(
        version_stats.update()
        .where(
            version_stats.c.model == model,
            version_stats.c.version == version,
            version_stats.c.route == route,
        )
        .values(stats=stats, updated_at=at)
    )
    if done.rowcount == 0:
        conn.execute(
            version_stats.insert().values(
                model=model, version=version, route=route, stats=stats, since=at, updated_at=at
            )
        )


def stats_of_version(conn: Connection, model: str, version: str) -> list[sa.Row[Any]]:
    return list(
        conn.execute(
            sa.select(version_stats.c.route, version_stats.c.stats, version_stats.c.since).where(
                version_stats.c.model == model, version_stats.c.version == version
            )
        )
    )


def champion_answers(conn: Connection, model: str, ids: list[str]) -> dict[str, Any]:
    """The served (champion or canary) answers recorded for these prediction ids."""
    rows = conn.execute(
        sa.select(samples.c.id, samples.c.prediction).where(
            samples.c.model == model, samples.c.id.in_(ids), samples.c.prediction.is_not(None)
        )
    )
    return {r.id: r.prediction for r in rows}
