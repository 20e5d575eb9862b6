"""The monitor's record of retraining cycles: started (RetrainRequested) and ended (the
cycle's terminal event). Written in the transaction that handles the event, so a repeat
changes nothing; read by the cycle metrics (driftloop.monitor.metrics)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from driftloop.monitor.adapters.store import cycles


def cycle_started(
    conn: Connection, model: str, cycle_id: str, *, trigger: str, at: datetime
) -> None:
    """Record a cycle's start (its end may have been recorded first: kept)."""
    done = conn.execute(
        cycles.update().where(cycles.c.cycle_id == cycle_id).values(trigger=trigger, started_at=at)
    )
    if done.rowcount == 0:
        conn.execute(
            cycles.insert().values(cycle_id=cycle_id, model=model, trigger=trigger, started_at=at)
        )


def cycle_ended(conn: Connection, model: str, cycle_id: str, *, outcome: str, at: datetime) -> None:
    """Record how and when a cycle ended; its first end stands (a later terminal event of the
    same cycle, a rollback after a promotion, does not rewrite it)."""
    done = conn.execute(
        cycles.update()
        .where(cycles.c.cycle_id == cycle_id, cycles.c.outcome.is_(None))
        .values(outcome=outcome, ended_at=at)
    )
    if done.rowcount == 0:
        known = conn.execute(sa.select(cycles.c.cycle_id).where(cycles.c.cycle_id == cycle_id))
        if known.first() is None:
            conn.execute(
                cycles.insert().values(cycle_id=cycle_id, model=model, outcome=outcome, ended_at=at)
            )
