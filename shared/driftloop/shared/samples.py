"""The join of predictions and delayed labels by prediction id, shared by every service that
keeps labelled samples in its own table (the trainer now, the monitor's performance later).

A label may arrive before its prediction record (the streams are independent), after it, or
twice: each side upserts its half of the row, so the order never matters and a repeat changes
nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from driftloop.shared.db import UtcDateTime
from driftloop.shared.events import FeedbackBatch, PredictionBatch


def samples_table(metadata: sa.MetaData, service: str) -> sa.Table:
    table = sa.Table(
        f"{service}_samples",
        metadata,
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("features", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("version", sa.String(32), nullable=True),
        sa.Column("label", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("predicted_at", UtcDateTime(), nullable=True),
        sa.Column("labelled_at", UtcDateTime(), nullable=True),
    )
    # as create_samples_table makes it: the newest labels of a model first
    sa.Index(f"ix_{service}_samples_labelled_at", table.c.model, table.c.labelled_at)
    return table


def create_samples_table(op: Any, service: str) -> None:
    """For a migration: the samples table of `service`."""
    op.create_table(
        f"{service}_samples",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("features", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("version", sa.String(32), nullable=True),
        sa.Column("label", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        f"ix_{service}_samples_labelled_at", f"{service}_samples", ["model", "labelled_at"]
    )


def _upsert(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], update: list[str]
) -> None:
    """Insert the rows, or update `update` on the (model, id) already there: one statement per
    table, store and columns, built once and run over the rows (executemany); building and
    compiling a VALUES list anew for every record was over half a record consumer's CPU."""
    if not rows:
        return
    conn.execute(_upsert_statement(table, conn.dialect.name, tuple(update)), rows)


@functools.cache
def _upsert_statement(table: sa.Table, dialect: str, update: tuple[str, ...]) -> Any:
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - SQLite and PostgreSQL are the supported stores
        raise RuntimeError(f"unsupported database {dialect}")
    return stmt.on_conflict_do_update(
        index_elements=["model", "id"], set_={c: stmt.excluded[c] for c in update}
    )


def record_predictions(conn: Connection, table: sa.Table, batch: PredictionBatch) -> int:
    """Store the inputs and answers of a served batch (shadow answers are not samples)."""
    return record_all_predictions(conn, table, [batch])


def record_all_predictions(
    conn: Connection, table: sa.Table, batches: Sequence[PredictionBatch]
) -> int:
    """`record_predictions` of each batch in turn, in one statement run over all their rows."""
    rows = [
        {
            "model": batch.model,
            "id": i,
            "features": inst,
            "prediction": pred,
            "version": batch.version,
            "predicted_at": batch.at,
        }
        for batch in batches
        if not batch.error and batch.route != "shadow"
        for i, inst, pred in zip(batch.ids, batch.instances, batch.predictions, strict=False)
    ]
    _upsert(conn, table, rows, ["features", "prediction", "version", "predicted_at"])
    return len(rows)


def record_labels(conn: Connection, table: sa.Table, batch: FeedbackBatch) -> int:
    """Store labels; the first label of an id wins, so a repeated label changes nothing."""
    return record_all_labels(conn, table, [batch])


def record_all_labels(conn: Connection, table: sa.Table, batches: Sequence[FeedbackBatch]) -> int:
    """`record_labels` of each batch in turn (the first label of an id wins, across them too),
    in one look-up and one statement per model."""
    written = 0
    for model in dict.fromkeys(batch.model for batch in batches):
        seen: dict[str, tuple[Any, datetime]] = {}
        for batch in batches:
            if batch.model == model:
                for item in batch.labels:
                    seen.setdefault(item.id, (item.label, batch.at))
        existing: set[str] = set()
        ids = list(seen)
        for start in range(0, len(ids), 500):
            existing.update(
                conn.execute(
                    sa.select(table.c.id).where(
                        table.c.model == model,
                        table.c.id.in_(ids[start : start + 500]),
                        table.c.label.is_not(None),
                    )
                ).scalars()
            )
        rows = [
            {"model": model, "id": i, "label": label, "labelled_at": at}
            for i, (label, at) in seen.items()
            if i not in existing
        ]
        _upsert(conn, table, rows, ["label", "labelled_at"])
        written += len(rows)
    return written


def _labelled(
    table: sa.Table,
    model: str,
    *,
    after: datetime | None,
    predicted_from: datetime | None,
    predicted_before: datetime | None,
) -> list[sa.ColumnElement[bool]]:
    """The conditions of a model's joined samples (features and label) labelled after `after`
    and predicted in [`predicted_from`, `predicted_before`)."""
    where: list[sa.ColumnElement[bool]] = [
        table.c.model == model,
        table.c.label.is_not(None),
        table.c.features.is_not(None),
    ]
    if after is not None:
        where.append(table.c.labelled_at > after)
    if predicted_from is not None:
        where.append(table.c.predicted_at >= predicted_from)
    if predicted_before is not None:
        # a row without a prediction time is older than any onset: never post-onset
        where.append(
            sa.or_(table.c.predicted_at < predicted_before, table.c.predicted_at.is_(None))
        )
    return where


def recent_labelled(
    conn: Connection,
    table: sa.Table,
    model: str,
    *,
    after: datetime | None,
    limit: int,
    predicted_from: datetime | None = None,
    predicted_before: datetime | None = None,
) -> list[sa.Row[Any]]:
    """Joined samples (features and label) labelled after `after`, newest label first;
    optionally only those predicted at or after `predicted_from` and/or before
    `predicted_before` (served after, or before, a drift episode's onset)."""
    query = (
        sa.select(
            table.c.id, table.c.features, table.c.label, table.c.labelled_at, table.c.predicted_at
        )
        .where(
            *_labelled(
                table,
                model,
                after=after,
                predicted_from=predicted_from,
                predicted_before=predicted_before,
            )
        )
        .order_by(table.c.labelled_at.desc(), table.c.id)
        .limit(limit)
    )
    return list(conn.execute(query))


def count_labelled(
    conn: Connection,
    table: sa.Table,
    model: str,
    *,
    after: datetime | None,
    predicted_from: datetime | None = None,
) -> int:
    """How many joined samples were labelled after `after` (and predicted at or after
    `predicted_from`): what a retraining waiting for labels counts."""
    query = (
        sa.select(sa.func.count())
        .select_from(table)
        .where(
            *_labelled(
                table, model, after=after, predicted_from=predicted_from, predicted_before=None
            )
        )
    )
    return int(conn.execute(query).scalar_one())
