"""initial trace store: traces, spans, scores, feedback

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("model", sa.String(200), nullable=False, server_default=""),
        sa.Column("session_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("user_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("answer", sa.Text, nullable=False, server_default=""),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("prompt_template", sa.String(200), nullable=False, server_default=""),
        sa.Column("prompt_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("finish_reason", sa.String(50), nullable=False, server_default=""),
        sa.Column("metadata_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("status", sa.Integer, nullable=False, server_default="0"),
        sa.Column("span_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("has_completion", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_pb", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_traces_start", "traces", ["start_us"])
    op.create_index("ix_traces_session", "traces", ["session_id", "start_us"])
    op.create_index("ix_traces_user", "traces", ["user_id", "start_us"])
    op.create_index("ix_traces_model", "traces", ["model", "start_us"])
    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("parent_span_id", sa.String(16), nullable=False, server_default=""),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("service", sa.String(100), nullable=False, server_default=""),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status_message", sa.Text, nullable=False, server_default=""),
        sa.Column("attributes_json", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_table(
        "scores",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("evaluator", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(50), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("explanation", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default="user"),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        sa.Column("user_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_feedback_trace", "feedback", ["trace_id"])


def downgrade() -> None:
    for t in ("feedback", "scores", "spans", "traces"):
        op.drop_table(t)
