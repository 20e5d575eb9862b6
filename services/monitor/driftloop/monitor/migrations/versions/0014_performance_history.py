"""monitor: the live metric's evaluations over time (the console's chart)

`monitor_models.performance_history`: the newest evaluations of the champion's live metric on
labelled traffic (`domain/performance.with_evaluation`: its figure, the floor, the labels, the
time and the version), oldest first; `last_performance` stays the newest.

Revision ID: monitor_0014
Revises: monitor_0013
"""

import sqlalchemy as sa
from alembic import op

revision = "monitor_0014"
down_revision = "monitor_0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_models") as batch:
        batch.add_column(sa.Column("performance_history", sa.JSON(none_as_null=True)))


def downgrade() -> None:
    with op.batch_alter_table("monitor_models") as batch:
        batch.drop_column("performance_history")
