"""trainer: an index on the inbox's handled_at

The hourly inbox retention deletes rows handled more than a week ago; without an index each
batch scanned the whole inbox while holding the write lock (about 70 ms on a large one).

Revision ID: trainer_0002
Revises: trainer_0001
"""

from alembic import op

from driftloop.shared.db import create_inbox_index

revision = "trainer_0002"
down_revision = "trainer_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_inbox_index(op, "trainer")


def downgrade() -> None:
    op.drop_index("ix_trainer_inbox_handled_at", "trainer_inbox")
