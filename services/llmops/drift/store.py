"""The drift store (SQLite by default, PostgreSQL by URL): joined observations, references,
monitor state, window reports, retrain events and rollout decisions. A restart rebuilds every
monitor from it.

Writes are idempotent: an observation is keyed by trace id (a redelivered completion or score
merges into its row), a monitor's row by (monitor, trace id), windows and retrain events by their
ids. A judged window is saved in one transaction with its monitor's state, and marked unpublished
(the outbox): the engine publishes it after, and again until the broker acknowledged it.
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
from llmops.drift.monitor import Monitor, Reference, WindowOutcome
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
        r, st = t.monitor_rows, t.monitor_state
        closed_upto = func.coalesce(select(st.c.last_pos).where(st.c.monitor == r.c.monitor).scalar_subquery(), 0)
        open_rows = select(r.c.trace_id).where(r.c.pos > closed_upto)
        with self.engine.begin() as conn:
            obs = conn.execute(delete(t.observations).where(and_(t.observations.c.ts_us < before_us,
                                                                 t.observations.c.seq <= keep_after_seq,
                                                                 t.observations.c.trace_id.not_in(open_rows)))).rowcount
            conn.execute(delete(r).where(and_(r.c.ts_us < before_us, r.c.pos <= closed_upto)))
            win = conn.execute(delete(t.windows).where(and_(t.windows.c.created_us < before_us,
                                                            t.windows.c.published == 1))).rowcount
        return obs, win

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.observations)).scalar() or 0)

    # -- the late join's open entries ---------------------------------------------------------
    def save_join(self, rows: list[tuple[str, int, str]]) -> None:
        """Write (trace id, source partition, entry JSON) rows, replacing what each trace id had:
        one transaction, so a batch's entries are stored together or not at all."""
        if not rows:
            return
        j = t.join_entries
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 500):
                chunk = [dict(trace_id=k, partition=p, entry_json=v) for k, p, v in rows[start:start + 500]]
                ins = self.sql.insert(j).values(chunk)
                conn.execute(ins.on_conflict_do_update(index_elements=["trace_id"], set_={
                    "partition": ins.excluded.partition, "entry_json": ins.excluded.entry_json}))

    def delete_join(self, trace_ids: list[str]) -> None:
        """Forget the entries of ``trace_ids`` (closed: their observations are stored)."""
        if not trace_ids:
            return
        j = t.join_entries
        with self.engine.begin() as conn:
            for start in range(0, len(trace_ids), 500):
                conn.execute(delete(j).where(j.c.trace_id.in_(trace_ids[start:start + 500])))

    def load_join(self, partitions: set[int] | None = None) -> list[tuple[str, int, str]]:
        """The open entries of ``partitions`` (every one with None) as (trace id, partition, JSON)."""
        j = t.join_entries
        q = select(j.c.trace_id, j.c.partition, j.c.entry_json)
        if partitions is not None:
            if not partitions:
                return []
            q = q.where(j.c.partition.in_(sorted(partitions)))
        with self.engine.connect() as conn:
            return [(r[0], int(r[1]), r[2]) for r in conn.execute(q)]

    # -- references ---------------------------------------------------------------------------
    def save_reference(self, monitor: str, ref: Reference) -> None:
        with self.engine.begin() as conn:
            self._insert_reference(conn, monitor, ref)
            self._put_state(conn, monitor, reference_id=ref.reference_id)

    def _insert_reference(self, conn, monitor: str, ref: Reference) -> None:
        """Once per id: a window taken as the reference again after a crash names it alike."""
        ins = self.sql.insert(t.references).values(reference_id=ref.reference_id, monitor=monitor,
                                                   created_us=ref.created_us, source=ref.source, size=len(ref.rows))
        if conn.execute(ins.on_conflict_do_nothing(index_elements=["reference_id"])
                        .returning(t.references.c.reference_id)).first() is None:
            return
        if ref.rows:
            conn.execute(t.reference_rows.insert(), [
                dict(reference_id=ref.reference_id, trace_id=o.trace_id,
                     row_json=json.dumps({k: v for k, v in _values(o).items() if k != "embedding"}),
                     embedding=_blob(o.embedding)) for o in ref.rows])

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

    def _state_values(self, m: Monitor) -> dict:
        return dict(reference_id=m.reference.reference_id if m.reference else "", consecutive=m.consecutive,
                    last_seq=m.last_seq, last_pos=m.last_pos, window_started_us=m.window_started_us,
                    last_retrain_us=m.last_retrain_us, retrain_count=m.retrain_count)

    def reference_of(self, monitor: str) -> str:
        """The id of ``monitor``'s reference, as its owner last saved it ("" when none)."""
        with self.engine.connect() as conn:
            return conn.execute(select(t.monitor_state.c.reference_id)
                                .where(t.monitor_state.c.monitor == monitor)).scalar() or ""

    def save_state(self, m: Monitor) -> None:
        with self.engine.begin() as conn:
            self._put_state(conn, m.spec.name, **self._state_values(m))

    def restore(self, m: Monitor, recent: int = 20) -> None:
        """Load a monitor's reference, counters and recent windows, and refill its open window
        with its rows after its last closed window, in their order. A monitor with a state but no
        rows (its state is from before rows were kept) is refilled from the observations after its
        last closed window, which then become its rows."""
        name = m.spec.name
        with self.engine.connect() as conn:
            st = conn.execute(select(t.monitor_state).where(t.monitor_state.c.monitor == name)).mappings().first()
            top = conn.execute(select(func.max(t.monitor_rows.c.pos))
                               .where(t.monitor_rows.c.monitor == name)).scalar()
        m.next_pos = int(top or 0) + 1
        if st is None:
            for pos, o in self.open_rows(name, 0):   # rows taken before the first window closed
                m.offer(o, pos)
            return
        if st["reference_id"]:
            m.reference = self.load_reference(st["reference_id"])
        m.consecutive, m.last_seq = st["consecutive"], st["last_seq"]
        m.last_pos = max(0, st["last_pos"])
        m.last_retrain_us, m.retrain_count = st["last_retrain_us"], st["retrain_count"]
        for ev in reversed(self.recent_windows(name, recent)):
            m.recent.append(ev)
        m.restore_cooldowns(list(reversed(self.list_retrain(name, 100)[0])))   # the policy's per-cause cooldowns
        if top is None:
            legacy = []
            for o in self.observations_after(m.last_seq):
                if m.offer(o):
                    legacy.append((o.trace_id, m.pos[o.trace_id], o.ts_us))
                elif not o.has_completion:
                    m.offer_scores(o, o.scores)
            self.add_rows(name, legacy)
        else:
            for pos, o in self.open_rows(name, m.last_pos):
                m.offer(o, pos)
        if m.current and st["window_started_us"]:
            m.window_started_us = st["window_started_us"]

    # -- a monitor's rows ---------------------------------------------------------------------
    def add_rows(self, monitor: str, rows: list[tuple[str, int, int]]) -> set[str]:
        """Add (trace id, position, time) rows to ``monitor``; the trace ids that were new to it
        (a redelivered observation is not: it joins a monitor once)."""
        added: set[str] = set()
        if not rows:
            return added
        with self.engine.begin() as conn:
            for tid, pos, ts in rows:
                ins = self.sql.insert(t.monitor_rows).values(monitor=monitor, trace_id=tid, pos=pos, ts_us=ts)
                ins = ins.on_conflict_do_nothing(index_elements=["monitor", "trace_id"])
                if conn.execute(ins.returning(t.monitor_rows.c.trace_id)).first() is not None:
                    added.add(tid)
        return added

    def open_rows(self, monitor: str, after_pos: int) -> list[tuple[int, Observation]]:
        """The observations of ``monitor``'s rows after ``after_pos``, in position order."""
        r = t.monitor_rows
        q = (select(r.c.pos, t.observations).join(t.observations, t.observations.c.trace_id == r.c.trace_id)
             .where(and_(r.c.monitor == monitor, r.c.pos > after_pos, t.observations.c.has_completion == 1))
             .order_by(r.c.pos))
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [(int(row["pos"]), _obs(row)) for row in rows]

    # -- a judged window: saved first, published after (the outbox) ---------------------------
    def commit_window(self, m: Monitor, outcome: WindowOutcome, created_us: int) -> None:
        """In one transaction: the window's reference, or its report and retrain event (both
        unpublished), with the monitor's state after it (``m`` has applied ``outcome``)."""
        name = m.spec.name
        with self.engine.begin() as conn:
            if outcome.reference is not None:
                self._insert_reference(conn, name, outcome.reference)
            else:
                self._insert_window(conn, outcome.report, created_us, published=False)
                if outcome.retrain is not None:
                    self._insert_retrain(conn, outcome.retrain, published=False)
            self._put_state(conn, name, **self._state_values(m))

    def unpublished(self, monitor: str) -> list[tuple[str, str, object]]:
        """What ``monitor`` saved but the broker has not acknowledged: (kind, id, event), oldest
        first, a window's report before its retrain event."""
        with self.engine.connect() as conn:
            wins = conn.execute(select(t.windows.c.report_id, t.windows.c.created_us, t.windows.c.event_pb)
                                .where(and_(t.windows.c.monitor == monitor, t.windows.c.published == 0))).all()
            rets = conn.execute(select(t.retrain_events.c.id, t.retrain_events.c.created_us,
                                       t.retrain_events.c.event_pb)
                                .where(and_(t.retrain_events.c.monitor == monitor,
                                            t.retrain_events.c.published == 0))).all()
        out = [(c, 0, "drift", i, events_pb2.DriftReportEvent.FromString(b)) for i, c, b in wins]
        out += [(c, 1, "retrain", i, events_pb2.RetrainEvent.FromString(b)) for i, c, b in rets]
        return [(kind, i, ev) for _c, _o, kind, i, ev in sorted(out, key=lambda x: x[:2])]

    def mark_published(self, items: list[tuple[str, str]]) -> None:
        """(kind, id) items the broker acknowledged."""
        windows = [i for k, i in items if k == "drift"]
        retrains = [i for k, i in items if k == "retrain"]
        with self.engine.begin() as conn:
            if windows:
                conn.execute(update(t.windows).where(t.windows.c.report_id.in_(windows)).values(published=1))
            if retrains:
                conn.execute(update(t.retrain_events).where(t.retrain_events.c.id.in_(retrains)).values(published=1))

    # -- windows and retrain events -----------------------------------------------------------
    def save_window(self, ev: events_pb2.DriftReportEvent, created_us: int, published: bool = True) -> None:
        with self.engine.begin() as conn:
            self._insert_window(conn, ev, created_us, published)

    def _insert_window(self, conn, ev: events_pb2.DriftReportEvent, created_us: int, published: bool) -> None:
        ins = self.sql.insert(t.windows).values(report_id=ev.report_id, monitor=ev.monitor, created_us=created_us,
                                                drift_detected=int(ev.drift_detected), event_pb=ev.SerializeToString(),
                                                published=int(published))
        conn.execute(ins.on_conflict_do_nothing(index_elements=["report_id"]))

    def windows_of(self, monitor: str) -> list[events_pb2.DriftReportEvent]:
        """Every window report of ``monitor`` that is kept, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.windows.c.event_pb).where(t.windows.c.monitor == monitor)
                                .order_by(t.windows.c.created_us, t.windows.c.report_id)).scalars().all()
        return [events_pb2.DriftReportEvent.FromString(r) for r in rows]

    def recent_windows(self, monitor: str, limit: int = 20) -> list[events_pb2.DriftReportEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.windows.c.event_pb).where(t.windows.c.monitor == monitor)
                                .order_by(t.windows.c.created_us.desc()).limit(limit)).scalars().all()
        return [events_pb2.DriftReportEvent.FromString(r) for r in rows]

    def save_retrain(self, ev: events_pb2.RetrainEvent, published: bool = True) -> None:
        with self.engine.begin() as conn:
            self._insert_retrain(conn, ev, published)

    def _insert_retrain(self, conn, ev: events_pb2.RetrainEvent, published: bool) -> None:
        ins = self.sql.insert(t.retrain_events).values(id=ev.id, monitor=ev.monitor, created_us=ts_to_us(ev.created_at),
                                                       event_pb=ev.SerializeToString(), published=int(published))
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
