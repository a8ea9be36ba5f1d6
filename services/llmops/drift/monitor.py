"""Drift monitors: how a monitor cuts windows of the traffic in its scope, the reference it
compares them with, and what it keeps of each judged window. Its configuration is in
:mod:`llmops.drift.monitor_config`, the retrain policy in :mod:`llmops.drift.policy`.

A monitor is plain state plus pure steps, so the service, the tests and the benchmark drive the
same code: :meth:`Monitor.offer` adds joined observations, :meth:`Monitor.take_window` cuts a
window when one is due, :meth:`Monitor.evaluate` runs Evidently on it (CPU-bound: call it in a
thread) and decides, :meth:`Monitor.apply` records the outcome.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmops.common.times import now_us, ts_to_us, us_to_ts
from llmops.drift.features import CATEGORICAL, NUMERIC, TEXT, Observation
from llmops.drift.monitor_config import MonitorSpec
from llmops.drift.policy import decide_retrain, quality_tests, score_means
from llmops.drift.window_report import WindowDrift, prune_reports, window_drift
from llmops.v1 import events_pb2

log = logging.getLogger(__name__)

MIN_SCORE_COLUMN_SHARE = 0.5  # a score column joins the tabular drift when half the rows of both sides have it
RECENT_WINDOWS = 20


@dataclass
class Reference:
    reference_id: str
    rows: list[Observation]
    created_us: int
    source: str


@dataclass
class WindowOutcome:
    rows: list[Observation]
    report: events_pb2.DriftReportEvent | None = None   # None: the window became the reference
    retrain: events_pb2.RetrainEvent | None = None
    reference: Reference | None = None                  # set when the window became the reference
    drift: WindowDrift | None = None


def new_id(prefix: str) -> str:
    """A fresh id (a reference set through the API: no replay makes it again)."""
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def window_digest(monitor: str, rows: list[Observation]) -> str:
    """What names a window: its monitor and the set of its trace ids (not their order), so that a
    replay, a redelivery or another worker that cuts the same window names it alike."""
    h = hashlib.sha256(monitor.encode())
    for tid in sorted(r.trace_id for r in rows):
        h.update(b"\0" + tid.encode())
    return h.hexdigest()


def window_id(prefix: str, monitor: str, rows: list[Observation]) -> str:
    """``<prefix>-<last observation's time>-<digest>``: derived from the window, never random."""
    end = max((r.ts_us for r in rows), default=0)
    return f"{prefix[:48]}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(end / 1e6))}-{window_digest(monitor, rows)[:12]}"


def frame(rows: list[Observation]) -> tuple[pd.DataFrame, np.ndarray | None]:
    df = pd.DataFrame([r.row() for r in rows])
    for col in (*NUMERIC, *CATEGORICAL, *TEXT):
        if col not in df:
            df[col] = np.nan if col in NUMERIC else ""
    embs = [r.embedding for r in rows]
    emb = np.vstack(embs).astype(float) if embs and all(e is not None for e in embs) else None
    return df, emb


def score_columns(ref: pd.DataFrame, cur: pd.DataFrame) -> list[str]:
    """Judge-score and feedback columns that enough rows on both sides carry."""
    cols = []
    for col in sorted(c for c in set(ref.columns) & set(cur.columns) if c.startswith(("score_", "feedback_"))):
        n_ref, n_cur = ref[col].notna().sum(), cur[col].notna().sum()
        if (n_ref >= max(10, MIN_SCORE_COLUMN_SHARE * len(ref))
                and n_cur >= max(10, MIN_SCORE_COLUMN_SHARE * len(cur))):
            cols.append(col)
    return cols


def _feature_proto(f) -> events_pb2.FeatureDrift:
    p_value = "p_value" in f.method
    return events_pb2.FeatureDrift(feature=f.feature, drifted=f.drifted, method=f.method, threshold=f.threshold,
                                   p_value=f.value if p_value else 0.0, statistic=0.0 if p_value else f.value)


class Monitor:
    def __init__(self, spec: MonitorSpec, reports_dir: Path) -> None:
        self.spec = spec
        self.reports_dir = reports_dir / spec.name
        self.reference: Reference | None = None
        self.current: dict[str, Observation] = {}
        self.extra: list[tuple[str, str, float]] = []   # (trace_id, column, value): scores with no row here
        self.window_started_us = 0
        self.consecutive = 0
        self.last_retrain_us = 0
        self.cooldowns: dict[str, int] = {}   # cause -> when it last fired (us): the cooldown is per cause
        self.retrain_count = 0
        self.last_seq = 0
        # positions: the order this monitor took its observations in (its partition of
        # drift-observations); a window is the next ``window_size`` of them
        self.pos: dict[str, int] = {}        # trace id -> position, for the rows of ``current``
        self.next_pos = 1
        self.last_pos = 0                    # positions up to here are in closed windows
        self._taken_started_us = 0           # when the window take_window detached had started
        self.recent: deque[events_pb2.DriftReportEvent] = deque(maxlen=RECENT_WINDOWS)

    # -- filling ------------------------------------------------------------------------------
    def offer(self, obs: Observation, pos: int | None = None) -> bool:
        """Add a joined completion (or update one of this window) at position ``pos`` (the next
        one when not given); True if this monitor took it."""
        if not obs.has_completion or not self.spec.scope.matches(obs):
            return False
        if obs.trace_id not in self.current:
            self.window_started_us = self.window_started_us or now_us()
            self.pos[obs.trace_id] = self.next_pos if pos is None else pos
            self.next_pos = max(self.next_pos, self.pos[obs.trace_id] + 1)
        self.current[obs.trace_id] = obs
        return True

    def offer_scores(self, obs: Observation, scores: dict[str, float]) -> bool:
        """Scores that came after their completion's join (or with no completion at all): they
        update the row if it is in this window, else they count in this window's means."""
        row = self.current.get(obs.trace_id)
        if row is not None:
            row.scores.update(scores)
            return True
        if obs.has_completion and not self.spec.scope.matches(obs):
            return False
        if not obs.has_completion and (self.spec.scope.metadata or not self.spec.scope.matches(obs)):
            return False  # a score alone does not carry the completion's metadata
        have = {(tid, k) for tid, k, _ in self.extra}   # a redelivered score counts once in a window
        self.extra.extend((obs.trace_id, k, v) for k, v in scores.items() if (obs.trace_id, k) not in have)
        return True

    def takes_scores_of(self, obs: Observation) -> bool:
        """Whether scores of ``obs`` that come after its row left the window belong to this monitor."""
        if obs.has_completion:
            return self.spec.scope.matches(obs)
        return not self.spec.scope.metadata and self.spec.scope.matches(obs)

    def due(self, now: int | None = None) -> bool:
        n = len(self.current)
        if n >= self.spec.window_size:
            return True
        if self.spec.window_seconds and n >= self.spec.min_window and self.window_started_us:
            return ((now or now_us()) - self.window_started_us) / 1e6 >= self.spec.window_seconds
        return False

    def take_window(self) -> tuple[list[Observation], list[tuple[str, str, float]]]:
        """Detach the window being filled: the first ``window_size`` rows by position."""
        rows = sorted(self.current.values(), key=lambda r: self.pos.get(r.trace_id, 0))
        take, keep = rows[:self.spec.window_size], rows[self.spec.window_size:]
        extra, self.extra = self.extra, []
        self.current = {r.trace_id: r for r in keep}
        self._taken_started_us = self.window_started_us
        self.window_started_us = now_us() if keep else 0
        return take, extra

    def window_last_pos(self, rows: list[Observation]) -> int:
        """The last position of a window taken by :meth:`take_window` (what ``apply`` records)."""
        return max([self.last_pos, *(self.pos.get(r.trace_id, 0) for r in rows)])

    def put_back(self, rows: list[Observation], extra: list[tuple[str, str, float]]) -> None:
        """Undo :meth:`take_window` (its outcome could not be saved): the window is judged again."""
        self.current = {**{r.trace_id: r for r in rows}, **self.current}
        self.extra = extra + self.extra
        self.window_started_us = self._taken_started_us or self.window_started_us or now_us()

    def skip(self, rows: list[Observation]) -> None:
        """A window that could not be judged: the next one starts after its rows."""
        self.last_pos = self.window_last_pos(rows)
        for r in rows:
            self.pos.pop(r.trace_id, None)

    def snapshot(self) -> dict:
        """What :meth:`apply` changes, to undo it when its outcome could not be saved."""
        return {"reference": self.reference, "consecutive": self.consecutive, "last_retrain_us": self.last_retrain_us,
                "cooldowns": dict(self.cooldowns), "retrain_count": self.retrain_count,
                "last_seq": self.last_seq, "last_pos": self.last_pos, "pos": dict(self.pos),
                "recent": list(self.recent)}

    def restore_snapshot(self, snap: dict) -> None:
        for k, v in snap.items():
            if k == "recent":
                self.recent.clear()
                self.recent.extend(v)
            else:
                setattr(self, k, v)

    # -- judging a window (pure; CPU-bound) ---------------------------------------------------
    def evaluate(self, rows: list[Observation], extra: list[tuple[str, str, float]],
                 now: int | None = None) -> WindowOutcome:
        now = now or now_us()
        name = self.spec.name
        rows = sorted(rows, key=lambda r: (r.ts_us, r.trace_id))   # the same window, whatever order it came in
        if self.reference is None:
            ref = Reference(window_id(f"ref-{name}", name, rows), rows, now, "first window")
            return WindowOutcome(rows, reference=ref)
        ref_df, ref_emb = frame(self.reference.rows)
        cur_df, cur_emb = frame(rows)
        if ref_emb is not None and cur_emb is not None and ref_emb.shape[1] != cur_emb.shape[1]:
            log.warning("monitor %s: prompt embeddings changed width (%d vs %d); embedding drift skipped; "
                        "set a new reference", self.spec.name, ref_emb.shape[1], cur_emb.shape[1])
            ref_emb = cur_emb = None
        report_id = window_id(name, name, rows)
        drift = window_drift(
            ref_df, cur_df, numeric=list(NUMERIC) + score_columns(ref_df, cur_df), categorical=CATEGORICAL, text=TEXT,
            reference_embeddings=ref_emb, current_embeddings=cur_emb, method=self.spec.method,
            method_options=self.spec.method_options, drift_share=self.spec.drift_share,
            save_to=self.reports_dir / report_id, embedding_plot=self.spec.embedding_plot,
        )
        detected = drift.dataset_drift or bool(drift.embedding and drift.embedding.drifted)
        means = score_means(rows, extra)
        features = [*drift.features, *([drift.embedding] if drift.embedding else [])]
        ts = [r.ts_us for r in rows]
        report = events_pb2.DriftReportEvent(
            monitor=self.spec.name, report_id=report_id, window_start=us_to_ts(min(ts)), window_end=us_to_ts(max(ts)),
            window_size=len(rows), reference_id=self.reference.reference_id, drift_detected=detected,
            drift_share=drift.drift_share, features=[_feature_proto(f) for f in features],
            report_path=str(drift.report_html or ""), report_json_path=str(drift.report_json or ""),
            score_means={k: m for k, (m, _n) in means.items()}, seconds=drift.seconds,
            quality=quality_tests(self.spec, self.reference.rows, rows, extra),
        )
        retrain = decide_retrain(self.spec, report, rows, means, history=list(self.recent),
                                 cooldowns=self.cooldowns, now=now,
                                 event_id=window_id(f"retrain-{name}", name, rows))
        return WindowOutcome(rows, report=report, retrain=retrain, drift=drift)

    # -- recording ----------------------------------------------------------------------------
    def apply(self, outcome: WindowOutcome) -> None:
        seqs = [r.seq for r in outcome.rows if r.seq]
        self.last_seq = max([self.last_seq, *seqs])
        self.last_pos = self.window_last_pos(outcome.rows)
        for r in outcome.rows:
            self.pos.pop(r.trace_id, None)
        if outcome.reference is not None:
            self.set_reference(outcome.reference)
            return
        report = outcome.report
        self.recent.append(report)
        self.consecutive = self.consecutive + 1 if report.drift_detected else 0
        if outcome.retrain is not None:
            self.consecutive = 0
            self.last_retrain_us = ts_to_us(outcome.retrain.created_at)
            self.cooldowns.update(dict.fromkeys(outcome.retrain.causes, self.last_retrain_us))
            self.retrain_count += 1
        prune_reports(self.reports_dir, self.spec.keep_reports)

    def set_reference(self, ref: Reference) -> None:
        """A new baseline: the drift count and the cooldown start over."""
        self.reference = ref
        self.consecutive = 0
        self.last_retrain_us = 0
        self.cooldowns = {}

    def restore_cooldowns(self, events: list[events_pb2.RetrainEvent]) -> None:
        """The per-cause cooldowns from the stored retrain events: those against the current
        reference, up to the last one the saved state counts (an event stored by a window whose
        state was not saved is decided again when the window is replayed)."""
        self.cooldowns = {}
        for ev in events:
            at = ts_to_us(ev.created_at)
            if self.reference is None or ev.reference_id != self.reference.reference_id or at > self.last_retrain_us:
                continue
            for cause in ev.causes:
                self.cooldowns[cause] = max(self.cooldowns.get(cause, 0), at)
