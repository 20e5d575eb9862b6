"""monitor: labelled samples for live performance

Revision ID: monitor_0002
Revises: monitor_0001
"""

import sqlalchemy as sa
from alembic import op

from driftloop.shared.samples import create_samples_table

revision = "monitor_0002"
down_revision = "monitor_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_samples_table(op, "monitor")
    with op.batch_alter_table("monitor_models") as batch:
        batch.add_column(
            sa.Column("labels_since_eval", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("last_performance", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_models") as batch:
        batch.drop_column("last_performance")
        batch.drop_column("labels_since_eval")
    op.drop_table("monitor_samples")
