"""monitor: reference profiles in their own table; the drift window's reservoir segments

The profile (now with a sample of reference values per numeric feature, tens of kilobytes)
leaves monitor_models, whose row every prediction batch updates: SQLite rewrites a whole row
on update. Reservoir segments are appended per batch to monitor_window_samples.

Revision ID: monitor_0006
Revises: monitor_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0006"
down_revision = "monitor_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_profiles",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("profile", sa.JSON, nullable=False),
    )
    op.execute(
        "INSERT INTO monitor_profiles (model, profile) "
        "SELECT model, profile FROM monitor_models WHERE profile IS NOT NULL"
    )
    op.execute("UPDATE monitor_models SET profile = NULL")
    op.create_table(
        "monitor_window_samples",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("segments", sa.JSON, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("monitor_window_samples")
    op.execute(
        "UPDATE monitor_models SET profile = (SELECT p.profile FROM monitor_profiles p "
        "WHERE p.model = monitor_models.model)"
    )
    op.drop_table("monitor_profiles")
