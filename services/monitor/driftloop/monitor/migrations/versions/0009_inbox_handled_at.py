"""monitor: an index on the inbox's handled_at

The hourly inbox retention deletes rows handled more than a week ago; without an index each
batch scanned the whole inbox while holding the write lock (about 70 ms on a large one).

Revision ID: monitor_0009
Revises: monitor_0008
"""

from alembic import op

from driftloop.shared.db import create_inbox_index

revision = "monitor_0009"
down_revision = "monitor_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_inbox_index(op, "monitor")


def downgrade() -> None:
    op.drop_index("ix_monitor_inbox_handled_at", "monitor_inbox")
