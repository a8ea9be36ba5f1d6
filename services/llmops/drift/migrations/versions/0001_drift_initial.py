"""drift store: observations, references, monitor state, windows and retrain events

Revision ID: d0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "d0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "drift_observations",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(32), nullable=False, unique=True),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("has_completion", sa.Integer, nullable=False, server_default="0"),
        sa.Column("model", sa.String(200), nullable=False, server_default=""),
        sa.Column("prompt_template", sa.String(200), nullable=False, server_default=""),
        sa.Column("prompt_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("metadata_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("answer", sa.Text, nullable=False, server_default=""),
        sa.Column("features_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("scores_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("embedding", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_drift_obs_ts", "drift_observations", ["ts_us"])
    op.create_table(
        "drift_references",
        sa.Column("reference_id", sa.String(80), primary_key=True),
        sa.Column("monitor", sa.String(200), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default=""),
        sa.Column("size", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "drift_reference_rows",
        sa.Column("reference_id", sa.String(80), primary_key=True),
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("row_json", sa.Text, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=True),
    )
    op.create_table(
        "drift_monitor_state",
        sa.Column("monitor", sa.String(200), primary_key=True),
        sa.Column("reference_id", sa.String(80), nullable=False, server_default=""),
        sa.Column("consecutive", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("window_started_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_retrain_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("retrain_count", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "drift_windows",
        sa.Column("report_id", sa.String(80), primary_key=True),
        sa.Column("monitor", sa.String(200), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("drift_detected", sa.Integer, nullable=False, server_default="0"),
        sa.Column("event_pb", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_drift_windows_monitor", "drift_windows", ["monitor", "created_us"])
    op.create_table(
        "drift_retrain_events",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("monitor", sa.String(200), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("event_pb", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_drift_retrain_monitor", "drift_retrain_events", ["monitor", "created_us"])


def downgrade() -> None:
    for name in ("drift_retrain_events", "drift_windows", "drift_monitor_state", "drift_reference_rows",
                 "drift_references", "drift_observations"):
        op.drop_table(name)
