"""deployer: a rollout remembers whether it replaces a champion shown degraded

Such a release runs the canary's `degraded_steps` instead of its `steps` (docs/evaluation.md).
Rollouts from before default to false: they keep the steps they started with.

Revision ID: deployer_0004
Revises: deployer_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "deployer_0004"
down_revision = "deployer_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployer_rollouts") as batch:
        batch.add_column(
            sa.Column("degraded", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("deployer_rollouts") as batch:
        batch.drop_column("degraded")
