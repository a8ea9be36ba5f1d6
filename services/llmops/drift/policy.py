"""The retrain policy, pure: a window's report (its drifted features and its quality tests
against the reference), with the monitor's recent windows and its cooldowns, decides whether a
retrain event fires, and for which causes.

Causes, each with a key of its own (``RetrainEvent.causes``):

- ``drift:prompt_embedding`` / ``drift:tabular``: the prompt embeddings, or the tabular preset
  (its share of drifted columns reached ``drift_share``), drifted in ``consecutive`` windows in a
  row (against the same reference);
- ``quality:<score>``: the window's score dropped against the reference's: a one-sided two-sample
  test significant at ``quality_alpha`` (Holm-adjusted over the scores tested in the window),
  and a drop of at least ``quality_min_drop`` and of Cohen's d ``quality_min_effect``
  (:func:`quality_tests`);
- ``floor:<score>``: an opt-in absolute floor (``quality_min``), for a window mean over at least
  :data:`MIN_QUALITY_VALUES` scores.

A cause that fired is silent for ``cooldown_s`` (one shift, one event; a shift that persists past
it fires once more, as a reminder); the cooldown of one cause never hides another. The event
carries a sample of the window's trace ids and its lowest-scored trace ids, worst first."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from llmops.common.times import us_to_ts
from llmops.drift.features import Observation
from llmops.drift.monitor_config import MonitorSpec
from llmops.drift.quality import TEST_NAMES, cohens_d, holm_levels, one_sided_drop
from llmops.v1 import events_pb2

MIN_QUALITY_VALUES = 5        # a window mean over fewer scores is shown but meets no floor
SAMPLE_TRACE_IDS = 20
LOW_SCORE_TRACE_IDS = 50
EMBEDDING_FEATURE = "prompt_embedding"
CAUSE_EMBEDDING = f"drift:{EMBEDDING_FEATURE}"
CAUSE_TABULAR = "drift:tabular"


def score_means(rows: list[Observation], extra: list[tuple[str, str, float]]) -> dict[str, tuple[float, int]]:
    """Mean and count per score column over a window's rows and its unjoined scores."""
    return {k: (float(np.mean(v)), len(v)) for k, v in score_values(rows, extra).items() if v}


def score_values(rows: Sequence[Observation], extra: Sequence[tuple[str, str, float]] = ()) -> dict[str, list[float]]:
    """The values of each score column over rows and unjoined (trace id, column, value) scores."""
    values: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.scores.items():
            values.setdefault(k, []).append(v)
    for _tid, k, v in extra:
        values.setdefault(k, []).append(v)
    return values


def quality_tests(spec: MonitorSpec, reference: Sequence[Observation], rows: Sequence[Observation],
                  extra: Sequence[tuple[str, str, float]] = ()) -> list[events_pb2.QualityTest]:
    """Each of the monitor's quality scores that both the reference and the window carry at
    least ``quality_min_n`` times, tested for a drop; ``dropped`` marks the significant ones
    (Holm over the scores tested) whose drop is also large enough."""
    ref_values, win_values = score_values(reference), score_values(rows, extra)
    scores = [s for s in spec.quality_scores
              if len(ref_values.get(s, ())) >= spec.quality_min_n and len(win_values.get(s, ())) >= spec.quality_min_n]
    tests = []
    for s in scores:
        ref, win = ref_values[s], win_values[s]
        stat, p = one_sided_drop(ref, win, spec.quality_test)
        ref_mean, win_mean = float(np.mean(ref)), float(np.mean(win))
        tests.append(events_pb2.QualityTest(
            score=s, test=TEST_NAMES[spec.quality_test], statistic=stat, p_value=p, reference_mean=ref_mean,
            reference_n=len(ref), window_mean=win_mean, window_n=len(win), mean_drop=ref_mean - win_mean,
            effect_size=cohens_d(ref, win), min_drop=spec.quality_min_drop, min_effect_size=spec.quality_min_effect))
    levels, rejected = holm_levels([t.p_value for t in tests], spec.quality_alpha)
    for t, level, reject in zip(tests, levels, rejected):
        t.alpha = level
        t.dropped = bool(reject and t.mean_drop >= spec.quality_min_drop and t.effect_size >= spec.quality_min_effect)
    return tests


def drift_causes(spec: MonitorSpec, report: events_pb2.DriftReportEvent) -> set[str]:
    """What drifted in a window: the prompt embeddings, the tabular preset, or both."""
    if not report.drift_detected:
        return set()
    causes = set()
    if any(f.feature == EMBEDDING_FEATURE and f.drifted for f in report.features):
        causes.add(CAUSE_EMBEDDING)
    if report.drift_share >= spec.drift_share:
        causes.add(CAUSE_TABULAR)
    return causes or {CAUSE_TABULAR}


def drift_streak(spec: MonitorSpec, cause: str, report: events_pb2.DriftReportEvent,
                 history: Sequence[events_pb2.DriftReportEvent]) -> int:
    """Windows in a row, this one included, in which ``cause`` drifted (against this reference)."""
    if cause not in drift_causes(spec, report):
        return 0
    n = 1
    for past in reversed(history):
        if past.reference_id != report.reference_id or cause not in drift_causes(spec, past):
            break
        n += 1
    return n


def _label(cause: str) -> str:
    return "prompt-embedding drift" if cause == CAUSE_EMBEDDING else "tabular drift"


def cooling(spec: MonitorSpec, cause: str, cooldowns: Mapping[str, int], now: int) -> bool:
    fired = cooldowns.get(cause, 0)
    return bool(fired) and (now - fired) / 1e6 < spec.cooldown_s


def decide_retrain(spec: MonitorSpec, report: events_pb2.DriftReportEvent, rows: list[Observation],
                   means: dict[str, tuple[float, int]], *, now: int, event_id: str,
                   history: Sequence[events_pb2.DriftReportEvent] = (),
                   cooldowns: Mapping[str, int] | None = None) -> events_pb2.RetrainEvent | None:
    """The retrain event of a judged window, or None. ``history`` is the monitor's windows
    before this one (oldest first), ``cooldowns`` when each cause last fired (microseconds);
    ``event_id`` is the id the event gets."""
    cooldowns = cooldowns or {}
    found: dict[str, str] = {}
    for cause in sorted(drift_causes(spec, report)):
        k = drift_streak(spec, cause, report, history)
        if k >= spec.consecutive:
            found[cause] = f"{_label(cause)} in {k} consecutive windows (policy: {spec.consecutive})"
    for q in report.quality:
        if q.dropped:
            found[f"quality:{q.score}"] = (
                f"{q.score} dropped: window mean {q.window_mean:.3f} (n={q.window_n}) vs reference "
                f"{q.reference_mean:.3f} (n={q.reference_n}), {q.test} p={q.p_value:.2g} < {q.alpha:.2g}, "
                f"Cohen's d {q.effect_size:.2f}")
    for k, floor in sorted(spec.quality_min.items()):
        if k in means and means[k][1] >= MIN_QUALITY_VALUES and means[k][0] < floor:
            found[f"floor:{k}"] = f"{k} window mean {means[k][0]:.3f} < {floor:g}"
    fresh = {c: why for c, why in found.items() if not cooling(spec, c, cooldowns, now)}
    if not fresh:
        return None
    step = max(1, len(rows) // SAMPLE_TRACE_IDS)
    return events_pb2.RetrainEvent(
        id=event_id, monitor=spec.name, reason="; ".join(fresh.values()), causes=list(fresh),
        evidence=[f for f in report.features if f.drifted] if report.drift_detected else [],
        quality=list(report.quality),
        window=events_pb2.Window(start=report.window_start, end=report.window_end, count=report.window_size),
        trace_ids=[r.trace_id for r in rows[::step]][:SAMPLE_TRACE_IDS], reference_id=report.reference_id,
        low_score_trace_ids=low_scored(spec, report, rows), created_at=us_to_ts(now),
        score_means=dict(report.score_means), report_id=report.report_id, report_path=report.report_path,
    )


def low_scored(spec: MonitorSpec, report: events_pb2.DriftReportEvent, rows: Sequence[Observation]) -> list[str]:
    """Trace ids scored below a floor or below the reference's mean of a score that dropped (of
    any score tested, when none dropped), the furthest below first (fine-tuning or evaluation
    candidates)."""
    bars = {q.score: q.reference_mean for q in report.quality if q.dropped}
    if not bars and not spec.quality_min:
        bars = {q.score: q.reference_mean for q in report.quality}
    bars.update(spec.quality_min)
    gaps = sorted((min(r.scores[k] - bar for k, bar in bars.items() if k in r.scores), r.trace_id)
                  for r in rows if any(k in r.scores for k in bars))
    return [tid for gap, tid in gaps if gap < 0][:LOW_SCORE_TRACE_IDS]
