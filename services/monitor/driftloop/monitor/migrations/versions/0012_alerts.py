"""monitor: the alerts outbox

One row per (event, destination), written in the transaction that handles the event (so an
alert is queued exactly when its event is handled, and a repeat of the event queues nothing),
sent by the delivery worker with retries; secrets (the URLs) are not stored, only the name of
the environment variable that holds each.

Revision ID: monitor_0012
Revises: monitor_0011
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0012"
down_revision = "monitor_0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_alerts",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(128), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("given_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("event_id", "destination", name="uq_monitor_alerts_event_destination"),
    )
    op.create_index("ix_monitor_alerts_pending", "monitor_alerts", ["sent_at", "given_up_at"])


def downgrade() -> None:
    op.drop_index("ix_monitor_alerts_pending", "monitor_alerts")
    op.drop_table("monitor_alerts")
