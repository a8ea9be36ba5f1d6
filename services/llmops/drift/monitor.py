"""Drift monitors: which traffic a monitor watches (its scope), how it cuts windows, the
reference it compares them with, and the retrain policy.

A monitor is plain state plus pure steps, so the service, the tests and the benchmark drive the
same code: :meth:`Monitor.offer` adds joined observations, :meth:`Monitor.take_window` cuts a
window when one is due, :meth:`Monitor.evaluate` runs Evidently on it (CPU-bound: call it in a
thread) and decides, :meth:`Monitor.apply` records the outcome.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from llmops.common.settings import Settings
from llmops.common.times import now_us, ts_to_us, us_to_ts
from llmops.drift.features import CATEGORICAL, NUMERIC, TEXT, Observation, quality_column
from llmops.drift.window_report import EMBEDDING_METHODS, WindowDrift, window_drift
from llmops.v1 import events_pb2

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
MIN_QUALITY_VALUES = 5        # a window mean over fewer scores is shown but fires nothing
MIN_SCORE_COLUMN_SHARE = 0.5  # a score column joins the tabular drift when half the rows of both sides have it
SAMPLE_TRACE_IDS = 20
LOW_SCORE_TRACE_IDS = 50
RECENT_WINDOWS = 20


@dataclass(frozen=True)
class Scope:
    """The traffic a monitor watches; empty fields match everything."""
    model: str = ""
    prompt_template: str = ""
    prompt_version: int = 0
    metadata: tuple[tuple[str, str], ...] = ()

    def matches(self, obs: Observation) -> bool:
        return ((not self.model or obs.model == self.model)
                and (not self.prompt_template or obs.prompt_template == self.prompt_template)
                and (not self.prompt_version or obs.prompt_version == self.prompt_version)
                and all(obs.metadata.get(k) == v for k, v in self.metadata))

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("model", self.model), ("prompt_template", self.prompt_template),
                                          ("prompt_version", self.prompt_version or "")) if v]
        parts += [f"metadata.{k}={v}" for k, v in self.metadata]
        return " ".join(parts)


@dataclass(frozen=True)
class MonitorSpec:
    name: str
    scope: Scope = Scope()
    window_size: int = 200
    window_seconds: float = 0.0
    min_window: int = 30
    method: str = "mmd"
    method_options: dict = field(default_factory=dict)
    drift_share: float = 0.5
    consecutive: int = 2
    cooldown_s: float = 3600.0
    quality_min: dict[str, float] = field(default_factory=dict)  # score column -> lowest window mean
    keep_reports: int = 50


def parse_quality(text: str) -> dict[str, float]:
    """``"faithfulness=0.3,feedback_user=0.5"`` → ``{"score_faithfulness": 0.3, "feedback_user": 0.5}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[quality_column(key.strip())] = float(value)
        except ValueError:
            raise ValueError(f"quality rule {part!r} is not score=min_mean (e.g. faithfulness=0.3)") from None
    return out


def load_specs(settings: Settings) -> list[MonitorSpec]:
    """The monitors: ``LLMOPS_DRIFT_CONFIG`` if set (``{"monitors": [...]}``, each field
    defaulting to the ``LLMOPS_DRIFT_*`` settings), else one monitor ``default`` over all traffic."""
    base = MonitorSpec(
        name="default", window_size=settings.drift_window_size, window_seconds=settings.drift_window_seconds,
        min_window=settings.drift_min_window, method=settings.drift_method, drift_share=settings.drift_share,
        consecutive=settings.drift_consecutive, cooldown_s=settings.drift_cooldown_s,
        quality_min=parse_quality(settings.drift_quality_min), keep_reports=settings.drift_keep_reports,
    )
    if not settings.drift_config:
        return [base]
    try:
        raw = json.loads(Path(settings.drift_config).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"LLMOPS_DRIFT_CONFIG {settings.drift_config}: {exc}") from None
    specs = [spec_from_dict(m, base) for m in raw.get("monitors", [])]
    names = [s.name for s in specs]
    if not specs:
        raise ValueError(f"LLMOPS_DRIFT_CONFIG {settings.drift_config} lists no monitors")
    if len(set(names)) != len(names):
        raise ValueError(f"LLMOPS_DRIFT_CONFIG {settings.drift_config}: monitor names repeat: {names}")
    return specs


SPEC_KEYS = {"name", "scope", "window_size", "window_seconds", "min_window", "method", "method_options",
             "drift_share", "consecutive", "cooldown_s", "quality_min", "keep_reports"}


def spec_from_dict(d: dict, base: MonitorSpec) -> MonitorSpec:
    unknown = set(d) - SPEC_KEYS
    if unknown:
        raise ValueError(f"drift monitor {d.get('name')!r}: unknown keys {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
    name = str(d.get("name", ""))
    if not NAME.match(name):
        raise ValueError(f"drift monitor name {name!r} must be 1-100 letters, digits, '.', '_' or '-'")
    sc = d.get("scope", {}) or {}
    scope = Scope(model=str(sc.get("model", "")), prompt_template=str(sc.get("prompt_template", "")),
                  prompt_version=int(sc.get("prompt_version", 0)),
                  metadata=tuple(sorted((str(k), str(v)) for k, v in (sc.get("metadata") or {}).items())))
    quality = d.get("quality_min")
    spec = replace(base, name=name, scope=scope,
                   quality_min=base.quality_min if quality is None else {quality_column(k): float(v) for k, v in quality.items()},
                   **{k: type(getattr(base, k))(d[k]) for k in SPEC_KEYS - {"name", "scope", "quality_min"} if k in d})
    if spec.method not in EMBEDDING_METHODS:
        raise ValueError(f"drift monitor {name!r}: method {spec.method!r} is not one of {', '.join(EMBEDDING_METHODS)}")
    if spec.window_size < 10 or spec.consecutive < 1 or not 0 < spec.drift_share <= 1:
        raise ValueError(f"drift monitor {name!r}: window_size >= 10, consecutive >= 1 and 0 < drift_share <= 1")
    return spec


# ---------------------------------------------------------------------------------------------
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
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


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


def score_means(rows: list[Observation], extra: list[tuple[str, str, float]]) -> dict[str, tuple[float, int]]:
    """Mean and count per score column over a window's rows and its unjoined scores."""
    values: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.scores.items():
            values.setdefault(k, []).append(v)
    for _tid, k, v in extra:
        values.setdefault(k, []).append(v)
    return {k: (float(np.mean(v)), len(v)) for k, v in values.items() if v}


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
        self.retrain_count = 0
        self.last_seq = 0
        self.recent: deque[events_pb2.DriftReportEvent] = deque(maxlen=RECENT_WINDOWS)

    # -- filling ------------------------------------------------------------------------------
    def offer(self, obs: Observation) -> bool:
        """Add a joined completion (or update one of this window); True if this monitor took it."""
        if not obs.has_completion or not self.spec.scope.matches(obs):
            return False
        if obs.trace_id not in self.current:
            self.window_started_us = self.window_started_us or now_us()
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
        self.extra.extend((obs.trace_id, k, v) for k, v in scores.items())
        return True

    def due(self, now: int | None = None) -> bool:
        n = len(self.current)
        if n >= self.spec.window_size:
            return True
        if self.spec.window_seconds and n >= self.spec.min_window and self.window_started_us:
            return ((now or now_us()) - self.window_started_us) / 1e6 >= self.spec.window_seconds
        return False

    def take_window(self) -> tuple[list[Observation], list[tuple[str, str, float]]]:
        """Detach the window being filled (the first ``window_size`` rows when it overflowed)."""
        rows = list(self.current.values())
        take, keep = rows[:self.spec.window_size], rows[self.spec.window_size:]
        extra, self.extra = self.extra, []
        self.current = {r.trace_id: r for r in keep}
        self.window_started_us = now_us() if keep else 0
        return take, extra

    # -- judging a window (pure; CPU-bound) ---------------------------------------------------
    def evaluate(self, rows: list[Observation], extra: list[tuple[str, str, float]],
                 now: int | None = None) -> WindowOutcome:
        now = now or now_us()
        if self.reference is None:
            ref = Reference(new_id(f"ref-{self.spec.name}"), rows, now, "first window")
            return WindowOutcome(rows, reference=ref)
        ref_df, ref_emb = frame(self.reference.rows)
        cur_df, cur_emb = frame(rows)
        if ref_emb is not None and cur_emb is not None and ref_emb.shape[1] != cur_emb.shape[1]:
            log.warning("monitor %s: prompt embeddings changed width (%d vs %d); embedding drift skipped; "
                        "set a new reference", self.spec.name, ref_emb.shape[1], cur_emb.shape[1])
            ref_emb = cur_emb = None
        report_id = new_id(self.spec.name)
        drift = window_drift(
            ref_df, cur_df, numeric=list(NUMERIC) + score_columns(ref_df, cur_df), categorical=CATEGORICAL, text=TEXT,
            reference_embeddings=ref_emb, current_embeddings=cur_emb, method=self.spec.method,
            method_options=self.spec.method_options, drift_share=self.spec.drift_share,
            save_to=self.reports_dir / report_id,
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
        )
        return WindowOutcome(rows, report=report, retrain=self._decide(report, rows, means, features, now), drift=drift)

    def _decide(self, report, rows, means, features, now) -> events_pb2.RetrainEvent | None:
        """The retrain policy: K drifted windows in a row, or a quality mean below its floor;
        then nothing for ``cooldown_s``."""
        consecutive = self.consecutive + 1 if report.drift_detected else 0
        low = {k: means[k][0] for k, floor in self.spec.quality_min.items()
               if k in means and means[k][1] >= MIN_QUALITY_VALUES and means[k][0] < floor}
        reasons = []
        if consecutive >= self.spec.consecutive:
            reasons.append(f"drift in {consecutive} consecutive windows (policy: {self.spec.consecutive})")
        reasons += [f"{k} window mean {v:.3f} < {self.spec.quality_min[k]:g}" for k, v in sorted(low.items())]
        cooling = self.last_retrain_us and (now - self.last_retrain_us) / 1e6 < self.spec.cooldown_s
        if not reasons or cooling:
            return None
        step = max(1, len(rows) // SAMPLE_TRACE_IDS)
        low_rows = sorted(((min(r.scores[k] - self.spec.quality_min[k] for k in self.spec.quality_min if k in r.scores), r.trace_id)
                           for r in rows if any(k in r.scores for k in self.spec.quality_min)))
        return events_pb2.RetrainEvent(
            id=new_id(f"retrain-{self.spec.name}"), monitor=self.spec.name, reason="; ".join(reasons),
            evidence=[f for f in report.features if f.drifted] if report.drift_detected else [],
            window=events_pb2.Window(start=report.window_start, end=report.window_end, count=report.window_size),
            trace_ids=[r.trace_id for r in rows[::step]][:SAMPLE_TRACE_IDS], reference_id=report.reference_id,
            low_score_trace_ids=[tid for gap, tid in low_rows if gap < 0][:LOW_SCORE_TRACE_IDS],
            created_at=us_to_ts(now), score_means=dict(report.score_means), report_id=report.report_id,
            report_path=report.report_path,
        )

    # -- recording ----------------------------------------------------------------------------
    def apply(self, outcome: WindowOutcome) -> None:
        seqs = [r.seq for r in outcome.rows if r.seq]
        self.last_seq = max([self.last_seq, *seqs])
        if outcome.reference is not None:
            self.set_reference(outcome.reference)
            return
        report = outcome.report
        self.recent.append(report)
        self.consecutive = self.consecutive + 1 if report.drift_detected else 0
        if outcome.retrain is not None:
            self.consecutive = 0
            self.last_retrain_us = ts_to_us(outcome.retrain.created_at)
            self.retrain_count += 1
        self._prune_reports()

    def set_reference(self, ref: Reference) -> None:
        """A new baseline: the drift count and the cooldown start over."""
        self.reference = ref
        self.consecutive = 0
        self.last_retrain_us = 0

    def _prune_reports(self) -> None:
        if not self.reports_dir.exists():
            return
        htmls = sorted(self.reports_dir.glob("*.html"), key=lambda p: p.stat().st_mtime)
        for old in htmls[:max(0, len(htmls) - self.spec.keep_reports)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)

