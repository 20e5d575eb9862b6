"""The deployer's own tables: rollouts (the state machine, one row per cycle), the audit log
of every transition, inbox and outbox."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from driftloop.deployer.domain.rollout import (
    RUNNING,
    AuditEntry,
    Counters,
    Rollout,
    Stage,
)
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
rollouts = sa.Table(
    "deployer_rollouts",
    metadata,
    sa.Column("cycle_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("previous_version", sa.String(32), nullable=True),
    sa.Column("previous_run_id", sa.String(64), nullable=True),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("weight", sa.Integer, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("baseline", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("stage_started_at", UtcDateTime(), nullable=False),
    sa.Column("rows_reached_at", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("trace", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("degraded", sa.Boolean, nullable=False, server_default=sa.false()),  # 0004
)
sa.Index("ix_deployer_rollouts_model_stage", rollouts.c.model, rollouts.c.stage)  # migration 0002
VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


class StaleRolloutError(RuntimeError):
    """Another transition of the same rollout committed first; look again."""


def last_champion(conn: Connection, model: str, *, before_cycle: str) -> Served | None:
    """The version promoted (or restored) last by another cycle than `before_cycle`."""
    row = conn.execute(
        sa.select(rollouts)
        .where(
            rollouts.c.model == model,
            rollouts.c.stage.in_([Stage.PROMOTED.value, Stage.ROLLED_BACK.value]),
            rollouts.c.cycle_id != before_cycle,
        )
        .order_by(rollouts.c.updated_at.desc())
        .limit(1)
    ).first()
    if row is not None:
        if row.stage == Stage.PROMOTED.value:
            return Served(version=row.version, run_id=row.run_id)
        if row.previous_version:
            return Served(version=row.previous_version, run_id=row.previous_run_id)
    legacy = conn.execute(  # releases promoted before the rollouts table existed
        sa.select(releases.c.version, releases.c.run_id)
        .where(
            releases.c.model == model,
            releases.c.to_stage == "promoted",
            releases.c.cycle_id != before_cycle,
        )
        .order_by(releases.c.id.desc())
        .limit(1)
    ).first()
    return Served(version=legacy.version, run_id=legacy.run_id) if legacy else None


def champion_before(conn: Connection, model: str, version: str) -> Served | None:
    """The champion that `version` replaced when it was last promoted."""
    row = conn.execute(
        sa.select(rollouts.c.previous_version, rollouts.c.previous_run_id)
        .where(
            rollouts.c.model == model,
            rollouts.c.version == version,
            rollouts.c.stage == Stage.PROMOTED.value,
        )
        .order_by(rollouts.c.updated_at.desc())
        .limit(1)
    ).first()
    if row is None or row.previous_version is None:
        return None
    return Served(version=row.previous_version, run_id=row.previous_run_id)


def _from_row(row: Any) -> Rollout:
    previous = (
        Served(version=row.previous_version, run_id=row.previous_run_id)
        if row.previous_version
        else None
    )
    return Rollout(
        model=row.model,
        cycle_id=row.cycle_id,
        version=row.version,
        run_id=row.run_id,
        previous=previous,
        stage=Stage(row.stage),
        started_at=row.started_at,
        stage_started_at=row.stage_started_at,
        updated_at=row.updated_at,
        step=row.step,
        weight=row.weight,
        paused=row.paused,
        baseline=Counters(**row.baseline) if row.baseline else None,
        rows_reached_at=row.rows_reached_at,
        reason=row.reason,
        revision=row.revision,
        trace=dict(row.trace or {}),
        degraded=row.degraded,
    )


def running(conn: Connection, model: str | None = None) -> list[Rollout]:
    """The rollouts still running (at most one per model), oldest first."""
    query = sa.select(rollouts).where(rollouts.c.stage.in_([s.value for s in RUNNING]))
    if model is not None:
        query = query.where(rollouts.c.model == model)
    return [_from_row(r) for r in conn.execute(query.order_by(rollouts.c.started_at))]


def rollout_of(conn: Connection, cycle_id: str) -> Rollout | None:
    row = conn.execute(sa.select(rollouts).where(rollouts.c.cycle_id == cycle_id)).first()
    return _from_row(row) if row else None


def latest(conn: Connection, model: str) -> Rollout | None:
    row = conn.execute(
        sa.select(rollouts)
        .where(rollouts.c.model == model)
        .order_by(rollouts.c.updated_at.desc())
        .limit(1)
    ).first()
    return _from_row(row) if row else None


def save(conn: Connection, rollout: Rollout, *, expected_revision: int | None) -> None:
    """Insert (expected_revision None) or update the row if nobody moved it meanwhile."""
    values = {
        "model": rollout.model,
        "version": rollout.version,
        "run_id": rollout.run_id,
        "previous_version": rollout.previous.version if rollout.previous else None,
        "previous_run_id": rollout.previous.run_id if rollout.previous else None,
        "stage": rollout.stage.value,
        "step": rollout.step,
        "weight": rollout.weight,
        "paused": rollout.paused,
        "baseline": rollout.baseline.as_dict() if rollout.baseline else None,
        "started_at": rollout.started_at,
        "stage_started_at": rollout.stage_started_at,
        "rows_reached_at": rollout.rows_reached_at,
        "updated_at": rollout.updated_at,
        "reason": rollout.reason,
        "revision": rollout.revision,
        "trace": rollout.trace or None,
        "degraded": rollout.degraded,
    }
    if expected_revision is None:
        conn.execute(sa.insert(rollouts).values(cycle_id=rollout.cycle_id, **values))
        return
    done = conn.execute(
        sa.update(rollouts)
        .where(rollouts.c.cycle_id == rollout.cycle_id, rollouts.c.revision == expected_revision)
        .values(**values)
    )
    if done.rowcount != 1:
        raise StaleRolloutError(f"rollout of cycle {rollout.cycle_id} moved meanwhile")


def audit(conn: Connection, rollout: Rollout, entry: AuditEntry, *, at: datetime) -> None:
    conn.execute(
        sa.insert(releases).values(
            model=rollout.model,
            cycle_id=rollout.cycle_id,
            version=rollout.version,
            run_id=rollout.run_id,
            from_stage=entry.from_stage,
            to_stage=entry.to_stage,
            previous_version=rollout.previous.version if rollout.previous else None,
            actor=entry.actor,
            reason=entry.reason,
            at=at,
        )
    )


def history(conn: Connection, model: str, *, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(releases)
        .where(releases.c.model == model)
        .order_by(releases.c.id.desc())
        .limit(limit)
    ).mappings()
    return [dict(r) for r in rows]
