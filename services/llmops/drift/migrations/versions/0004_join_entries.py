"""the late join's open entries in the store, not in a faust table whose changelog lived in the
broker (an in-memory broker's restart lost them): one row per trace id not yet closed, with the
source partition it came on

Revision ID: d0004
Revises: d0003
"""
import sqlalchemy as sa
from alembic import op

revision = "d0004"
down_revision = "d0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_join_entries",
        sa.Column("trace_id", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("entry_json", sa.Text, nullable=False),
    )
    op.create_index("ix_drift_join_entries_partition", "drift_join_entries", ["partition"])


def downgrade() -> None:
    op.drop_index("ix_drift_join_entries_partition", "drift_join_entries")
    op.drop_table("drift_join_entries")
