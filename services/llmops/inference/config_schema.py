"""Tables of the deployment store: every deployment version and every route revision, each kept
as its protobuf (the contract's own shape) next to the columns it is looked up by."""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

deployments = sa.Table(
    "deployments", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),     # llmops.v1.Deployment
)

route_revisions = sa.Table(
    "route_revisions", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("revision", sa.Integer, primary_key=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("changed_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("body", sa.LargeBinary, nullable=False),     # llmops.v1.Route
)
