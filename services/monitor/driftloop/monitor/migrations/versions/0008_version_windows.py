"""monitor: drift windows per serving version

A canary's inputs (and answers) fill a window of their own, judged against the version's own
training profile (or, without one, the champion's reference): one row per (model, version)
in monitor_version_windows, its reservoir segments in monitor_version_window_samples as the
champion window's are in monitor_window_samples.

Revision ID: monitor_0008
Revises: monitor_0007
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0008"
down_revision = "monitor_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_version_windows",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("reference_run_id", sa.String(64), nullable=True),
        sa.Column("reference_version", sa.String(32), nullable=True),
        sa.Column("profile", sa.JSON, nullable=True),
        sa.Column("window", sa.JSON, nullable=False),
        sa.Column("last_drift", sa.JSON, nullable=True),
    )
    op.create_table(
        "monitor_version_window_samples",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("segments", sa.JSON, nullable=False),
        sa.Column("prediction", sa.JSON, nullable=True),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("monitor_version_window_samples")
    op.drop_table("monitor_version_windows")
