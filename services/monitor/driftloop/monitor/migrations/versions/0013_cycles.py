"""monitor: the cycles it saw start and end (for the cycle metrics)

One row per retraining cycle: its trigger and when it was requested (RetrainRequested), when
the monitor handled its end and how it ended (Deployed, RolledBack, EvaluationFailed,
DataRejected, TrainingFailed). Read at scrape time by driftloop.monitor.metrics.

Revision ID: monitor_0013
Revises: monitor_0012
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0013"
down_revision = "monitor_0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_cycles",
        sa.Column("cycle_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("monitor_cycles")
