"""monitor: prediction and label drift

The champion's predictions join the drift window with a reservoir of their own, whose segments
go beside the features' in monitor_window_samples (`prediction`, null for rows written before).
Labels fill a window of their own, judged apart, in monitor_label_windows: one row per model,
apart from monitor_models, whose row every prediction batch rewrites.

Revision ID: monitor_0007
Revises: monitor_0006
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0007"
down_revision = "monitor_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_window_samples") as batch:
        batch.add_column(sa.Column("prediction", sa.JSON, nullable=True))
    op.create_table(
        "monitor_label_windows",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("window", sa.JSON, nullable=False),
        sa.Column("last_drift", sa.JSON, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("monitor_label_windows")
    with op.batch_alter_table("monitor_window_samples") as batch:
        batch.drop_column("prediction")
