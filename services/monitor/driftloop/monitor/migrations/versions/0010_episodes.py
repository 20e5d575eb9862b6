"""monitor: the champion's open drift and performance episodes

One JSON column on monitor_models: per open episode its onset, windows, last emitted event,
last cycle and failed attempts (domain/episode.py), read and written with the model's row.

Revision ID: monitor_0010
Revises: monitor_0009
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0010"
down_revision = "monitor_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_models") as batch:
        batch.add_column(sa.Column("episodes", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_models") as batch:
        batch.drop_column("episodes")
