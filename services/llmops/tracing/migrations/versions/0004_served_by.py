"""how a trace's request was served: route, route revision, the deployment version that answered,
the arm (primary, canary, shadow), attempts, fallback, the request a shadow copies, and the error
of a failed request; indexes to list traces by deployment version and by route

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (
    ("route", sa.String(200), ""),
    ("route_revision", sa.Integer, "0"),
    ("deployment", sa.String(200), ""),
    ("deployment_version", sa.Integer, "0"),
    ("arm", sa.String(20), ""),
    ("attempts", sa.Integer, "0"),
    ("fallback", sa.Integer, "0"),
    ("shadow_of", sa.String(32), ""),
    ("error", sa.Text, ""),
)


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        for name, kind, default in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=False, server_default=default))
    op.create_index("ix_traces_deployment", "traces", ["deployment", "deployment_version", "start_us"])
    op.create_index("ix_traces_route", "traces", ["route", "start_us"])


def downgrade() -> None:
    op.drop_index("ix_traces_route", "traces")
    op.drop_index("ix_traces_deployment", "traces")
    with op.batch_alter_table("traces") as batch:
        for name, _, _ in reversed(COLUMNS):
            batch.drop_column(name)
