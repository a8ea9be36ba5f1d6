"""monitor rows and an outbox: which observations each monitor took, in the order its partition of
``drift-observations`` delivered them (a monitor's windows are ranges of that order, so any worker
that owns the monitor cuts the same windows); windows and retrain events carry ``published`` (saved
first, published after, republished until acknowledged)

Revision ID: d0003
Revises: d0002
"""
import sqlalchemy as sa
from alembic import op

revision = "d0003"
down_revision = "d0002"
branch_labels = None
depends_on = None

OUTBOX = ("drift_windows", "drift_retrain_events")


def upgrade() -> None:
    op.create_table(
        "drift_monitor_rows",
        sa.Column("monitor", sa.String(200), primary_key=True),
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("pos", sa.BigInteger, nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_drift_monitor_rows_pos", "drift_monitor_rows", ["monitor", "pos"])
    for table in OUTBOX:   # what was there before was published already
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("published", sa.Integer, nullable=False, server_default="1"))
    with op.batch_alter_table("drift_monitor_state") as batch:
        batch.add_column(sa.Column("last_pos", sa.BigInteger, nullable=False, server_default="-1"))


def downgrade() -> None:
    with op.batch_alter_table("drift_monitor_state") as batch:
        batch.drop_column("last_pos")
    for table in reversed(OUTBOX):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("published")
    op.drop_index("ix_drift_monitor_rows_pos", "drift_monitor_rows")
    op.drop_table("drift_monitor_rows")
