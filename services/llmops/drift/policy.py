"""The retrain policy, pure: a window's report, rows and score means, with the monitor's
counters, decide whether a retrain event fires. It fires after ``consecutive`` drifted windows
in a row, or when a quality mean (over at least :data:`MIN_QUALITY_VALUES` scores) is below its
floor; then nothing fires for ``cooldown_s``. The event carries a sample of the window's trace
ids and the trace ids scored below a floor, worst first."""
from __future__ import annotations

import numpy as np

from llmops.common.times import us_to_ts
from llmops.drift.features import Observation
from llmops.drift.monitor_config import MonitorSpec
from llmops.v1 import events_pb2

MIN_QUALITY_VALUES = 5        # a window mean over fewer scores is shown but fires nothing
SAMPLE_TRACE_IDS = 20
LOW_SCORE_TRACE_IDS = 50


def score_means(rows: list[Observation], extra: list[tuple[str, str, float]]) -> dict[str, tuple[float, int]]:
    """Mean and count per score column over a window's rows and its unjoined scores."""
    values: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.scores.items():
            values.setdefault(k, []).append(v)
    for _tid, k, v in extra:
        values.setdefault(k, []).append(v)
    return {k: (float(np.mean(v)), len(v)) for k, v in values.items() if v}


def decide_retrain(spec: MonitorSpec, report: events_pb2.DriftReportEvent, rows: list[Observation],
                   means: dict[str, tuple[float, int]], *, consecutive: int, last_retrain_us: int, now: int,
                   event_id: str) -> events_pb2.RetrainEvent | None:
    """The retrain event of a judged window, or None. ``consecutive`` and ``last_retrain_us``
    are the monitor's counters before this window; ``event_id`` is the id the event gets."""
    consecutive = consecutive + 1 if report.drift_detected else 0
    low = {k: means[k][0] for k, floor in spec.quality_min.items()
           if k in means and means[k][1] >= MIN_QUALITY_VALUES and means[k][0] < floor}
    reasons = []
    if consecutive >= spec.consecutive:
        reasons.append(f"drift in {consecutive} consecutive windows (policy: {spec.consecutive})")
    reasons += [f"{k} window mean {v:.3f} < {spec.quality_min[k]:g}" for k, v in sorted(low.items())]
    cooling = last_retrain_us and (now - last_retrain_us) / 1e6 < spec.cooldown_s
    if not reasons or cooling:
        return None
    step = max(1, len(rows) // SAMPLE_TRACE_IDS)
    low_rows = sorted((min(r.scores[k] - spec.quality_min[k] for k in spec.quality_min if k in r.scores), r.trace_id)
                      for r in rows if any(k in r.scores for k in spec.quality_min))
    return events_pb2.RetrainEvent(
        id=event_id, monitor=spec.name, reason="; ".join(reasons),
        evidence=[f for f in report.features if f.drifted] if report.drift_detected else [],
        window=events_pb2.Window(start=report.window_start, end=report.window_end, count=report.window_size),
        trace_ids=[r.trace_id for r in rows[::step]][:SAMPLE_TRACE_IDS], reference_id=report.reference_id,
        low_score_trace_ids=[tid for gap, tid in low_rows if gap < 0][:LOW_SCORE_TRACE_IDS],
        created_at=us_to_ts(now), score_means=dict(report.score_means), report_id=report.report_id,
        report_path=report.report_path,
    )
