"""monitor: inbox, outbox, models, decisions

Revision ID: monitor_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from driftloop.shared.db import create_messaging_tables

revision = "monitor_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables(op, "monitor")
    op.create_table(
        "monitor_models",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("reference_version", sa.String(32), nullable=True),
        sa.Column("reference_run_id", sa.String(64), nullable=True),
        sa.Column("profile", sa.JSON, nullable=True),
        sa.Column("window", sa.JSON, nullable=True),
        sa.Column("last_drift", sa.JSON, nullable=True),
        sa.Column("last_retrain_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("open_cycle_id", sa.String(64), nullable=True),
        sa.Column("rows_seen", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "monitor_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("fired", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("cycle_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_monitor_decisions_model", "monitor_decisions", ["model"])


def downgrade() -> None:
    op.drop_table("monitor_decisions")
    op.drop_table("monitor_models")
    op.drop_table("monitor_outbox")
    op.drop_table("monitor_inbox")
