"""The drift store (SQLite by default, PostgreSQL by URL): joined observations, references,
monitor state, window reports, retrain events and rollout decisions. A restart rebuilds every
monitor from it.

Writes are idempotent: an observation is keyed by trace id (a redelivered completion or score
merges into its row), windows and retrain events by their ids.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
from sqlalchemy import and_, delete, func, select, update

from llmops.common.paging import decode_page_token, encode_page_token
from llmops.common.sql import SqlDialect, upgrade_schema
from llmops.common.times import ts_to_us
from llmops.drift import schema as t
from llmops.drift.features import Observation
from llmops.drift.monitor import Monitor, Reference
from llmops.v1 import events_pb2

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_drift"   # the drift store may share a database with the trace store


def _emb(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()


def _blob(e: np.ndarray | None) -> bytes | None:
    return None if e is None else np.asarray(e, dtype=np.float32).tobytes()


def _obs(row) -> Observation:
    """A stored observation (a row, or a reference row's JSON: those written before the served-by
    columns lack them)."""
    return Observation(trace_id=row["trace_id"], ts_us=row["ts_us"], has_completion=bool(row["has_completion"]),
                       model=row["model"], prompt_template=row["prompt_template"],
                       prompt_version=row["prompt_version"], metadata=json.loads(row["metadata_json"]),
                       prompt=row["prompt"], answer=row["answer"], features=json.loads(row["features_json"]),
                       scores=json.loads(row["scores_json"]), embedding=_emb(row["embedding"]), seq=row["seq"],
                       route=row.get("route") or "", deployment=row.get("deployment") or "",
                       deployment_version=row.get("deployment_version") or 0, arm=row.get("arm") or "")


def _values(o: Observation) -> dict:
    return dict(trace_id=o.trace_id, ts_us=o.ts_us, has_completion=int(o.has_completion), model=o.model,
                prompt_template=o.prompt_template, prompt_version=o.prompt_version,
                metadata_json=json.dumps(o.metadata, sort_keys=True), prompt=o.prompt, answer=o.answer,
                features_json=json.dumps(o.features), scores_json=json.dumps(o.scores), embedding=_blob(o.embedding),
                route=o.route, deployment=o.deployment, deployment_version=o.deployment_version, arm=o.arm)


class DriftStore:
    def __init__(self, url: str) -> None:
        self.sql = SqlDialect(url)
        self.engine = self.sql.engine
        upgrade_schema(self.engine, MIGRATIONS, VERSION_TABLE)

    def close(self) -> None:
        self.engine.dispose()

    # -- observations -------------------------------------------------------------------------
    def upsert(self, items: list[Observation]) -> list[tuple[Observation, str]]:
        """Store joined observations. Returns each stored row with what happened to it:
        ``new`` (a completion seen for the first time: it enters windows), ``merged`` (scores
        added to a row stored before), or ``orphan`` (scores whose completion has not come)."""
        out: list[tuple[Observation, str]] = []
        with self.engine.begin() as conn:
            for o in items:
                row = conn.execute(select(t.observations).where(t.observations.c.trace_id == o.trace_id)).mappings().first()
                if row is None:
                    seq = conn.execute(t.observations.insert().values(**_values(o))).inserted_primary_key[0]
                    o.seq = int(seq)
                    out.append((o, "new" if o.has_completion else "orphan"))
                    continue
                old = _obs(row)
                if o.has_completion and not old.has_completion:
                    # the completion of scores stored alone: a new row at the end, so it joins the open window
                    o.scores = {**old.scores, **o.scores}
                    conn.execute(delete(t.observations).where(t.observations.c.seq == old.seq))
                    o.seq = int(conn.execute(t.observations.insert().values(**_values(o))).inserted_primary_key[0])
                    out.append((o, "new"))
                    continue
                old.scores.update(o.scores)
                conn.execute(update(t.observations).where(t.observations.c.seq == old.seq)
                             .values(scores_json=json.dumps(old.scores)))
                out.append((old, "merged" if old.has_completion else "orphan"))
        return out

    def observations_after(self, seq: int, batch: int = 2000) -> Iterator[Observation]:
        last = seq
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(select(t.observations).where(t.observations.c.seq > last)
                                    .order_by(t.observations.c.seq).limit(batch)).mappings().all()
            if not rows:
                return
            for r in rows:
                yield _obs(r)
            last = rows[-1]["seq"]

    def completions_between(self, start_us: int, end_us: int) -> Iterator[Observation]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.observations).where(and_(
                t.observations.c.ts_us >= start_us, t.observations.c.ts_us < end_us,
                t.observations.c.has_completion == 1)).order_by(t.observations.c.seq)).mappings().all()
        return (_obs(r) for r in rows)

    def prune(self, before_us: int, keep_after_seq: int) -> tuple[int, int]:
        """Delete observations older than ``before_us`` that no open window needs (seq up to
        ``keep_after_seq``), and window summaries older than ``before_us``."""
        with self.engine.begin() as conn:
            obs = conn.execute(delete(t.observations).where(and_(t.observations.c.ts_us < before_us,
                                                                 t.observations.c.seq <= keep_after_seq))).rowcount
            win = conn.execute(delete(t.windows).where(t.windows.c.created_us < before_us)).rowcount
        return obs, win

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.observations)).scalar() or 0)

    # -- references ---------------------------------------------------------------------------
    def save_reference(self, monitor: str, ref: Reference) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.references.insert().values(reference_id=ref.reference_id, monitor=monitor,
                                                      created_us=ref.created_us, source=ref.source, size=len(ref.rows)))
            if ref.rows:
                conn.execute(t.reference_rows.insert(), [
                    dict(reference_id=ref.reference_id, trace_id=o.trace_id,
                         row_json=json.dumps({k: v for k, v in _values(o).items() if k != "embedding"}),
                         embedding=_blob(o.embedding)) for o in ref.rows])
            self._put_state(conn, monitor, reference_id=ref.reference_id)

    def load_reference(self, reference_id: str) -> Reference | None:
        with self.engine.connect() as conn:
            meta = conn.execute(select(t.references).where(t.references.c.reference_id == reference_id)).mappings().first()
            if meta is None:
                return None
            rows = conn.execute(select(t.reference_rows).where(t.reference_rows.c.reference_id == reference_id)
                                .order_by(t.reference_rows.c.trace_id)).mappings().all()
        out = []
        for r in rows:
            v = json.loads(r["row_json"])
            out.append(_obs({**v, "embedding": r["embedding"], "seq": 0}))
        out.sort(key=lambda o: o.ts_us)
        return Reference(reference_id, out, meta["created_us"], meta["source"])

    # -- monitor state ------------------------------------------------------------------------
    def _put_state(self, conn, monitor: str, **values) -> None:
        ins = self.sql.insert(t.monitor_state).values(monitor=monitor, **values)
        conn.execute(ins.on_conflict_do_update(index_elements=["monitor"], set_=values))

    def save_state(self, m: Monitor) -> None:
        with self.engine.begin() as conn:
            self._put_state(conn, m.spec.name, reference_id=m.reference.reference_id if m.reference else "",
                            consecutive=m.consecutive, last_seq=m.last_seq, window_started_us=m.window_started_us,
                            last_retrain_us=m.last_retrain_us, retrain_count=m.retrain_count)

    def restore(self, m: Monitor, recent: int = 20) -> None:
        """Load a monitor's reference, counters and recent windows, and refill its open window
        from the observations after its last closed window."""
        with self.engine.connect() as conn:
            st = conn.execute(select(t.monitor_state).where(t.monitor_state.c.monitor == m.spec.name)).mappings().first()
        if st is None:
            return
        if st["reference_id"]:
            m.reference = self.load_reference(st["reference_id"])
        m.consecutive, m.last_seq = st["consecutive"], st["last_seq"]
        m.last_retrain_us, m.retrain_count = st["last_retrain_us"], st["retrain_count"]
        for ev in reversed(self.recent_windows(m.spec.name, recent)):
            m.recent.append(ev)
        for o in self.observations_after(m.last_seq):
            if not m.offer(o) and not o.has_completion:
                m.offer_scores(o, o.scores)
        if m.current and st["window_started_us"]:
            m.window_started_us = st["window_started_us"]

    # -- windows and retrain events -----------------------------------------------------------
    def save_window(self, ev: events_pb2.DriftReportEvent, created_us: int) -> None:
        with self.engine.begin() as conn:
            ins = self.sql.insert(t.windows).values(report_id=ev.report_id, monitor=ev.monitor, created_us=created_us,
                                                    drift_detected=int(ev.drift_detected), event_pb=ev.SerializeToString())
            conn.execute(ins.on_conflict_do_nothing(index_elements=["report_id"]))

    def recent_windows(self, monitor: str, limit: int = 20) -> list[events_pb2.DriftReportEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.windows.c.event_pb).where(t.windows.c.monitor == monitor)
                                .order_by(t.windows.c.created_us.desc()).limit(limit)).scalars().all()
        return [events_pb2.DriftReportEvent.FromString(r) for r in rows]

    def save_retrain(self, ev: events_pb2.RetrainEvent) -> None:
        created = ts_to_us(ev.created_at)
        with self.engine.begin() as conn:
            ins = self.sql.insert(t.retrain_events).values(id=ev.id, monitor=ev.monitor, created_us=created,
                                                           event_pb=ev.SerializeToString())
            conn.execute(ins.on_conflict_do_nothing(index_elements=["id"]))

    def list_retrain(self, monitor: str = "", page_size: int = 50,
                     page_token: str = "") -> tuple[list[events_pb2.RetrainEvent], str]:
        """Newest first; ``page_token`` continues where the last page ended."""
        q = select(t.retrain_events.c.created_us, t.retrain_events.c.id, t.retrain_events.c.event_pb)
        if monitor:
            q = q.where(t.retrain_events.c.monitor == monitor)
        if page_token:
            created, eid = decode_page_token(page_token)
            q = q.where((t.retrain_events.c.created_us < created)
                        | ((t.retrain_events.c.created_us == created) & (t.retrain_events.c.id < eid)))
        q = q.order_by(t.retrain_events.c.created_us.desc(), t.retrain_events.c.id.desc()).limit(page_size + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            token = encode_page_token(rows[-1][0], rows[-1][1])
        return [events_pb2.RetrainEvent.FromString(r[2]) for r in rows], token

    def count_retrain(self, monitor: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.retrain_events)
                                    .where(t.retrain_events.c.monitor == monitor)).scalar() or 0)

    # -- rollout decisions --------------------------------------------------------------------
    def save_deployment_event(self, ev: events_pb2.DeploymentEvent) -> bool:
        """Keep a rollout decision; False when its route revision was decided before (the first stays)."""
        with self.engine.begin() as conn:
            ins = self.sql.insert(t.deployment_events).values(
                route=ev.route, route_revision=ev.route_revision, id=ev.id, decision=int(ev.decision),
                created_us=ts_to_us(ev.timestamp), event_pb=ev.SerializeToString())
            ins = ins.on_conflict_do_nothing(index_elements=["route", "route_revision"])
            return conn.execute(ins.returning(t.deployment_events.c.route)).first() is not None

    def deployment_events(self, route: str = "") -> list[events_pb2.DeploymentEvent]:
        """Rollout decisions, newest first, of one route or of all."""
        q = select(t.deployment_events.c.event_pb)
        if route:
            q = q.where(t.deployment_events.c.route == route)
        q = q.order_by(t.deployment_events.c.created_us.desc(), t.deployment_events.c.route_revision.desc())
        with self.engine.connect() as conn:
            rows = conn.execute(q).scalars().all()
        return [events_pb2.DeploymentEvent.FromString(r) for r in rows]
