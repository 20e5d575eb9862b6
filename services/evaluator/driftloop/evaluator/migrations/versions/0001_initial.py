"""evaluator: inbox, outbox, verdicts

Revision ID: evaluator_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from driftloop.shared.db import create_messaging_tables

revision = "evaluator_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables(op, "evaluator")
    op.create_table(
        "evaluator_verdicts",
        sa.Column("cycle_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("champion_version", sa.String(32), nullable=True),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("judged_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evaluator_verdicts")
    op.drop_table("evaluator_outbox")
    op.drop_table("evaluator_inbox")
