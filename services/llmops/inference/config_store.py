"""The deployment store: every deployment version and every route revision, in SQLite (default)
or PostgreSQL (``LLMOPS_DEPLOYMENT_DB``). History is append-only: a change is a new version or
revision, a rollback is a new revision that copies an older one.

Numbers are assigned here, inside a transaction, with the table's primary key as the referee: two
replicas writing the same route at once on a shared PostgreSQL get revisions n and n+1, never two
n's (the loser of the insert race retries with the next number).

Replicas that each keep their own store (SQLite per replica) mirror what they read on the config
topic with :meth:`put_deployment` / :meth:`put_route` (idempotent), so every store holds the history
it has seen. Admin writes on several replicas at once need a shared store.
"""
from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from llmops.common.errors import FailedPrecondition
from llmops.common.sql import SqlDialect, upgrade_schema
from llmops.inference.config_schema import deployments, route_revisions
from llmops.v1 import inference_pb2

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_deployments"
_RETRIES = 20


class RevisionConflict(FailedPrecondition):
    pass


def _now_us() -> int:
    return int(time.time() * 1e6)


class DeploymentStore:
    def __init__(self, url: str) -> None:
        self.sql = SqlDialect(url)
        self.engine = self.sql.engine
        upgrade_schema(self.engine, MIGRATIONS, VERSION_TABLE)

    def close(self) -> None:
        self.engine.dispose()

    # -- deployments ----------------------------------------------------------------------------
    def add_deployment(self, d: inference_pb2.Deployment) -> inference_pb2.Deployment:
        """Store ``d`` as the next version of its name (``version`` and ``created_at`` are set here)."""
        for _ in range(_RETRIES):
            with self.engine.connect() as conn:
                top = conn.execute(sa.select(sa.func.max(deployments.c.version))
                                   .where(deployments.c.name == d.name)).scalar() or 0
            out = inference_pb2.Deployment()
            out.CopyFrom(d)
            out.version = top + 1
            if not out.HasField("created_at"):
                out.created_at.GetCurrentTime()
            try:
                with self.engine.begin() as conn:
                    conn.execute(deployments.insert().values(name=out.name, version=out.version,
                                                             created_us=_now_us(), body=out.SerializeToString()))
                return out
            except IntegrityError:   # another writer took this version: take the next
                continue
        raise RuntimeError(f"could not assign a version to deployment {d.name!r} after {_RETRIES} tries")

    def put_deployment(self, d: inference_pb2.Deployment) -> None:
        """Keep a deployment version read from the config topic (idempotent)."""
        stmt = self.sql.insert(deployments).values(name=d.name, version=d.version, created_us=_now_us(),
                                                   body=d.SerializeToString())
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["name", "version"]))

    def deployment(self, name: str, version: int = 0) -> inference_pb2.Deployment | None:
        """Version ``version`` of ``name`` (0: the newest), or None."""
        q = sa.select(deployments.c.body).where(deployments.c.name == name)
        q = q.where(deployments.c.version == version) if version else q.order_by(deployments.c.version.desc()).limit(1)
        with self.engine.connect() as conn:
            body = conn.execute(q).scalar()
        return inference_pb2.Deployment.FromString(body) if body is not None else None

    def deployments(self, name: str = "", all_versions: bool = False) -> list[inference_pb2.Deployment]:
        """Deployments by name then version; only the newest version of each unless ``all_versions``."""
        q = sa.select(deployments.c.name, deployments.c.version, deployments.c.body)
        if name:
            q = q.where(deployments.c.name == name)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(deployments.c.name, deployments.c.version)).all()
        if not all_versions:
            newest: dict[str, bytes] = {}
            for n, _, body in rows:
                newest[n] = body
            return [inference_pb2.Deployment.FromString(b) for b in newest.values()]
        return [inference_pb2.Deployment.FromString(b) for _, _, b in rows]

    # -- routes ---------------------------------------------------------------------------------
    def add_route(self, route: inference_pb2.Route, expected_revision: int | None = None) -> inference_pb2.Route:
        """Store ``route`` as the next revision of its name (``revision`` and ``created_at`` set here).
        With ``expected_revision``, only while the route is at that revision (0: does not exist):
        :class:`RevisionConflict` otherwise, also when another writer wins the race for the number."""
        for _ in range(_RETRIES):
            with self.engine.connect() as conn:
                top = conn.execute(sa.select(sa.func.max(route_revisions.c.revision))
                                   .where(route_revisions.c.name == route.name)).scalar() or 0
            if expected_revision is not None and top != expected_revision:
                raise RevisionConflict(
                    f"route {route.name!r} is at revision {top or '(none: it does not exist)'}, not at the expected "
                    f"{expected_revision or '(none)'}: someone changed it meanwhile; read it again and retry")
            out = inference_pb2.Route()
            out.CopyFrom(route)
            out.revision = top + 1
            out.created_at.GetCurrentTime()
            try:
                with self.engine.begin() as conn:
                    conn.execute(route_revisions.insert().values(
                        name=out.name, revision=out.revision, created_us=_now_us(), changed_by=out.changed_by[:200],
                        body=out.SerializeToString()))
                return out
            except IntegrityError:
                continue
        raise RuntimeError(f"could not assign a revision to route {route.name!r} after {_RETRIES} tries")

    def put_route(self, route: inference_pb2.Route) -> None:
        """Keep a route revision read from the config topic (idempotent)."""
        stmt = self.sql.insert(route_revisions).values(name=route.name, revision=route.revision, created_us=_now_us(),
                                                       changed_by=route.changed_by[:200], body=route.SerializeToString())
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["name", "revision"]))

    def route(self, name: str, revision: int = 0) -> inference_pb2.Route | None:
        """Revision ``revision`` of route ``name`` (0: the current one, the newest), or None."""
        q = sa.select(route_revisions.c.body).where(route_revisions.c.name == name)
        q = (q.where(route_revisions.c.revision == revision) if revision
             else q.order_by(route_revisions.c.revision.desc()).limit(1))
        with self.engine.connect() as conn:
            body = conn.execute(q).scalar()
        return inference_pb2.Route.FromString(body) if body is not None else None

    def route_history(self, name: str) -> list[inference_pb2.Route]:
        """Every revision of ``name``, newest first."""
        q = (sa.select(route_revisions.c.body).where(route_revisions.c.name == name)
             .order_by(route_revisions.c.revision.desc()))
        with self.engine.connect() as conn:
            return [inference_pb2.Route.FromString(b) for b in conn.execute(q).scalars()]

    def current_routes(self) -> list[inference_pb2.Route]:
        """The current (newest) revision of every route, by name."""
        top = (sa.select(route_revisions.c.name, sa.func.max(route_revisions.c.revision).label("rev"))
               .group_by(route_revisions.c.name).subquery())
        q = (sa.select(route_revisions.c.body)
             .join(top, sa.and_(route_revisions.c.name == top.c.name, route_revisions.c.revision == top.c.rev))
             .order_by(route_revisions.c.name))
        with self.engine.connect() as conn:
            return [inference_pb2.Route.FromString(b) for b in conn.execute(q).scalars()]
