"""deployment store: deployment versions and route revisions

Revision ID: i0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "i0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "route_revisions",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("route_revisions")
    op.drop_table("deployments")
