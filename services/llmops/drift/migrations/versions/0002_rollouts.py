"""rollouts: how each observation was served (route, deployment and version, arm), so monitors can
be scoped to a deployment; and the rollout decisions, one per route revision

Revision ID: d0002
Revises: d0001
"""
import sqlalchemy as sa
from alembic import op

revision = "d0002"
down_revision = "d0001"
branch_labels = None
depends_on = None

COLUMNS = (
    ("route", sa.String(200), ""),
    ("deployment", sa.String(200), ""),
    ("deployment_version", sa.Integer, "0"),
    ("arm", sa.String(20), ""),
)


def upgrade() -> None:
    with op.batch_alter_table("drift_observations") as batch:
        for name, kind, default in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=False, server_default=default))
    op.create_table(
        "drift_deployment_events",
        sa.Column("route", sa.String(200), primary_key=True),
        sa.Column("route_revision", sa.Integer, primary_key=True),
        sa.Column("id", sa.String(300), nullable=False),
        sa.Column("decision", sa.Integer, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("event_pb", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_drift_deployment_events_created", "drift_deployment_events", ["created_us"])


def downgrade() -> None:
    op.drop_index("ix_drift_deployment_events_created", "drift_deployment_events")
    op.drop_table("drift_deployment_events")
    with op.batch_alter_table("drift_observations") as batch:
        for name, _, _ in reversed(COLUMNS):
            batch.drop_column(name)
