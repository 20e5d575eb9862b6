"""monitor: index of served answers by time, for the samples retention

Revision ID: monitor_0005
Revises: monitor_0004
"""

from alembic import op

revision = "monitor_0005"
down_revision = "monitor_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_monitor_samples_predicted_at", "monitor_samples", ["model", "predicted_at"])


def downgrade() -> None:
    op.drop_index("ix_monitor_samples_predicted_at", "monitor_samples")
