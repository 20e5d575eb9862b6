"""monitor: a shadow's answers that came before the champion's answers to the same requests

The shadow's worker publishes its records itself, on its own connection, so its answer to a
request can reach the monitor before the champion's. Such answers wait here until the
champion's record comes (then they are compared and deleted) or an hour passes.

Revision ID: monitor_0011
Revises: monitor_0010
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0011"
down_revision = "monitor_0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_shadow_answers",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_monitor_shadow_answers_at", "monitor_shadow_answers", ["at"])


def downgrade() -> None:
    op.drop_index("ix_monitor_shadow_answers_at", "monitor_shadow_answers")
    op.drop_table("monitor_shadow_answers")
