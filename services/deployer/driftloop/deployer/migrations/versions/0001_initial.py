"""deployer: inbox, outbox, releases

Revision ID: deployer_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from driftloop.shared.db import create_messaging_tables

revision = "deployer_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables(op, "deployer")
    op.create_table(
        "deployer_releases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("cycle_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("from_stage", sa.String(32), nullable=True),
        sa.Column("to_stage", sa.String(32), nullable=False),
        sa.Column("previous_version", sa.String(32), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_deployer_releases_model", "deployer_releases", ["model"])


def downgrade() -> None:
    op.drop_table("deployer_releases")
    op.drop_table("deployer_outbox")
    op.drop_table("deployer_inbox")
