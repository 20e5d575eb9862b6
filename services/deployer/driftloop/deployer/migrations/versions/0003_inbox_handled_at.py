"""deployer: an index on the inbox's handled_at

The hourly inbox retention deletes rows handled more than a week ago; without an index each
batch scanned the whole inbox while holding the write lock (about 70 ms on a large one).

Revision ID: deployer_0003
Revises: deployer_0002
"""

from alembic import op

from driftloop.shared.db import create_inbox_index

revision = "deployer_0003"
down_revision = "deployer_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_inbox_index(op, "deployer")


def downgrade() -> None:
    op.drop_index("ix_deployer_inbox_handled_at", "deployer_inbox")
