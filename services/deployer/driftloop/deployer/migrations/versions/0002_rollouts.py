"""deployer: the persistent rollout state machine, one row per cycle

Revision ID: deployer_0002
Revises: deployer_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "deployer_0002"
down_revision = "deployer_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployer_rollouts",
        sa.Column("cycle_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("previous_version", sa.String(32), nullable=True),
        sa.Column("previous_run_id", sa.String(64), nullable=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("weight", sa.Integer, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("baseline", sa.JSON, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stage_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows_reached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("trace", sa.JSON, nullable=True),
    )
    op.create_index("ix_deployer_rollouts_model_stage", "deployer_rollouts", ["model", "stage"])


def downgrade() -> None:
    op.drop_table("deployer_rollouts")
