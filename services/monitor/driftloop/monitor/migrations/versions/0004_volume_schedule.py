"""monitor: counters for the volume and schedule triggers

Revision ID: monitor_0004
Revises: monitor_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0004"
down_revision = "monitor_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_models") as batch:
        batch.add_column(
            sa.Column("labels_since_retrain", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("reference_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_models") as batch:
        batch.drop_column("reference_at")
        batch.drop_column("labels_since_retrain")
