"""offline evaluation runs (experiments) and an index for filtering traces by score

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_scores_name_value", "scores", ["name", "value"])
    op.create_table(
        "eval_runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("dataset", sa.String(500), nullable=False, server_default=""),
        sa.Column("dataset_hash", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False, server_default=""),
        sa.Column("prompt_template", sa.String(200), nullable=False, server_default=""),
        sa.Column("prompt_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retrieval", sa.Integer, nullable=False, server_default="0"),
        sa.Column("evaluators_json", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("aggregates_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("metadata_json", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_eval_runs_dataset", "eval_runs", ["dataset_hash", "created_us"])
    op.create_table(
        "eval_items",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("eval_runs.run_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("item_id", sa.String(200), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("question", sa.Text, nullable=False, server_default=""),
        sa.Column("reference", sa.Text, nullable=False, server_default=""),
        sa.Column("answer", sa.Text, nullable=False, server_default=""),
        sa.Column("contexts_json", sa.Text, nullable=False, server_default="[]"),
        sa.Column("trace_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("scores_json", sa.Text, nullable=False, server_default="[]"),
        sa.Column("latency_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("metadata_json", sa.Text, nullable=False, server_default="{}"),
    )


def downgrade() -> None:
    op.drop_table("eval_items")
    op.drop_table("eval_runs")
    op.drop_index("ix_scores_name_value", "scores")
