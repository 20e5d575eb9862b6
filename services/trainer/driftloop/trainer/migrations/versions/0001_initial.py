"""trainer: inbox, outbox, samples, runs

Revision ID: trainer_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from driftloop.shared.db import create_messaging_tables
from driftloop.shared.samples import create_samples_table

revision = "trainer_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables(op, "trainer")
    create_samples_table(op, "trainer")
    op.create_table(
        "trainer_runs",
        sa.Column("cycle_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("dataset_version", sa.String(64), nullable=False),
        sa.Column("recent_rows", sa.Integer, nullable=False),
        sa.Column("reference_rows", sa.Integer, nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trainer_runs")
    op.drop_table("trainer_samples")
    op.drop_table("trainer_outbox")
    op.drop_table("trainer_inbox")
