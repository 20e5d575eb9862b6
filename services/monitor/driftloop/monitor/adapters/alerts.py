"""The alerts outbox (`monitor_alerts`, declared in store.py): queue, read what is due, mark."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from driftloop.monitor.adapters.store import alerts
from driftloop.monitor.domain.alerts import Message


def enqueue(
    conn: Connection,
    *,
    event_id: str,
    model: str,
    event_type: str,
    message: Message,
    destinations: Sequence[str],
    now: datetime,
) -> int:
    """One pending alert per destination not queued for this event before (the key is
    (event id, destination)); the number queued."""
    queued = set(
        conn.execute(sa.select(alerts.c.destination).where(alerts.c.event_id == event_id)).scalars()
    )
    rows = [
        {
            "event_id": event_id,
            "destination": destination,
            "model": model,
            "event_type": event_type,
            "title": message.title,
            "body": message.body,
            "created_at": now,
            "attempts": 0,
            "next_at": now,
        }
        for destination in dict.fromkeys(destinations)
        if destination not in queued
    ]
    if rows:
        conn.execute(alerts.insert(), rows)
    return len(rows)


def due(conn: Connection, *, now: datetime, limit: int = 200) -> list[sa.Row[Any]]:
    """Pending alerts whose time has come, oldest first."""
    return list(
        conn.execute(
            sa.select(alerts)
            .where(
                alerts.c.sent_at.is_(None),
                alerts.c.given_up_at.is_(None),
                alerts.c.next_at <= now,
            )
            .order_by(alerts.c.seq)
            .limit(limit)
        )
    )


def mark_sent(conn: Connection, seq: int, *, now: datetime) -> None:
    conn.execute(
        alerts.update()
        .where(alerts.c.seq == seq)
        .values(sent_at=now, attempts=alerts.c.attempts + 1, last_error=None)
    )


def mark_failed(
    conn: Connection, seq: int, *, attempts: int, next_at: datetime, error: str
) -> None:
    conn.execute(
        alerts.update()
        .where(alerts.c.seq == seq)
        .values(attempts=attempts, next_at=next_at, last_error=error[:2000])
    )


def mark_given_up(conn: Connection, seq: int, *, now: datetime, error: str) -> None:
    conn.execute(
        alerts.update()
        .where(alerts.c.seq == seq)
        .values(given_up_at=now, attempts=alerts.c.attempts + 1, last_error=error[:2000])
    )


def prune(conn: Connection, *, older_than: datetime) -> int:
    """Delete alerts sent or given up before `older_than` (pending ones stay)."""
    done = sa.or_(alerts.c.sent_at < older_than, alerts.c.given_up_at < older_than)
    return int(conn.execute(alerts.delete().where(done)).rowcount)


def of_model(conn: Connection, model: str) -> list[dict[str, Any]]:
    """Every alert of `model` kept, oldest first (tests, inspection)."""
    rows = conn.execute(
        sa.select(alerts).where(alerts.c.model == model).order_by(alerts.c.seq)
    ).mappings()
    return [dict(row) for row in rows]
