"""Drift monitor logic without Evidently: scopes, monitor configuration, windows, and the
retrain policy (K drifted windows in a row, opt-in quality floors, the per-cause cooldown).
The quality tests against the reference and the observed false-alarm scenario are in
test_drift_quality.py."""
import json

import pytest

from llmops.drift.features import Observation
from llmops.drift.monitor import Monitor, Reference, WindowOutcome
from llmops.drift.monitor_config import MonitorSpec, Scope, load_specs, parse_quality
from llmops.drift.policy import (CAUSE_EMBEDDING, CAUSE_TABULAR, LOW_SCORE_TRACE_IDS, MIN_QUALITY_VALUES,
                                 SAMPLE_TRACE_IDS, decide_retrain, score_means)
from llmops.v1 import events_pb2
from tests.support import make_settings

HOUR_US = 3_600_000_000


def obs(i: int, **kw) -> Observation:
    base = dict(trace_id=f"{i:032x}", ts_us=1_000_000 * (i + 1), has_completion=True, model="m1",
                prompt_version=2, metadata={"tenant": "acme"}, features={"prompt_chars": 10.0})
    base.update(kw)
    return Observation(**base)


def test_scope_matches_model_version_and_metadata():
    assert Scope().matches(obs(1))
    assert Scope(model="m1", prompt_version=2, metadata=(("tenant", "acme"),)).matches(obs(1))
    assert not Scope(model="m2").matches(obs(1))
    assert not Scope(prompt_version=3).matches(obs(1))
    assert not Scope(metadata=(("tenant", "other"),)).matches(obs(1))
    assert Scope(model="m1", metadata=(("tenant", "acme"),)).describe() == "model=m1 metadata.tenant=acme"


def test_quality_rules_parse_and_bad_ones_are_refused():
    assert parse_quality("faithfulness=0.3, feedback_user=0.5") == {"score_faithfulness": 0.3, "feedback_user": 0.5}
    assert parse_quality("") == {}
    with pytest.raises(ValueError, match="not score=min_mean"):
        parse_quality("faithfulness")
    with pytest.raises(ValueError, match="not score=min_mean"):
        parse_quality("faithfulness=high")


def test_monitor_config_file(tmp_path):
    cfg = tmp_path / "drift.json"
    cfg.write_text(json.dumps({"monitors": [
        {"name": "all"},
        {"name": "acme-v2", "scope": {"model": "m1", "prompt_version": 2, "metadata": {"tenant": "acme"}},
         "window_size": 50, "method": "model", "consecutive": 3, "quality_min": {"answer_relevancy": 0.4}},
    ]}))
    s = make_settings(tmp_path, "127.0.0.1:1", drift_config=str(cfg), drift_window_size=120)
    a, b = load_specs(s)
    assert (a.name, a.window_size, a.method, a.quality_min) == ("all", 120, "mmd", {})   # floors are opt-in
    assert (b.window_size, b.method, b.consecutive) == (50, "model", 3)
    assert b.quality_min == {"score_answer_relevancy": 0.4}
    assert b.scope == Scope(model="m1", prompt_version=2, metadata=(("tenant", "acme"),))
    for bad, msg in (({"name": "x", "method": "nope"}, "method 'nope'"), ({"name": "a b"}, "name 'a b'"),
                     ({"name": "x", "windows": 3}, "unknown keys"), ({"name": "x", "window_size": 2}, "window_size"),
                     ({"name": "x", "quality_test": "ks"}, "quality_test 'ks'"),
                     ({"name": "x", "quality_alpha": 1.5}, "quality_alpha"),
                     ({"name": "x", "quality_min_n": "many"}, "drift monitor 'x'"),
                     ({"name": "x", "consecutive": 21}, "recent windows")):
        cfg.write_text(json.dumps({"monitors": [bad]}))
        with pytest.raises(ValueError, match=msg):
            load_specs(s)
    cfg.write_text(json.dumps({"monitors": [{"name": "x"}, {"name": "x"}]}))
    with pytest.raises(ValueError, match="repeat"):
        load_specs(s)


def test_windows_by_count_and_by_time(tmp_path):
    m = Monitor(MonitorSpec("m", window_size=10, window_seconds=60, min_window=5), tmp_path)
    for i in range(4):
        assert m.offer(obs(i))
    start = m.window_started_us
    assert not m.due(start + 120 * 1_000_000)          # old enough, but fewer than min_window
    m.offer(obs(4))
    assert not m.due(start + 30 * 1_000_000) and m.due(start + 61 * 1_000_000)
    for i in range(5, 12):
        m.offer(obs(i))
    assert m.due(start)
    rows, _ = m.take_window()
    assert [r.trace_id for r in rows] == [obs(i).trace_id for i in range(10)]
    assert len(m.current) == 2                          # the overflow starts the next window


def test_scores_reach_the_open_window_or_its_means(tmp_path):
    m = Monitor(MonitorSpec("m", window_size=10, scope=Scope(model="m1")), tmp_path)
    m.offer(obs(1))
    m.offer_scores(obs(1), {"score_faithfulness": 0.9})          # late, its row is here: updated
    assert m.current[obs(1).trace_id].scores == {"score_faithfulness": 0.9}
    orphan = Observation(trace_id="f" * 32, ts_us=1, model="m1", scores={"score_faithfulness": 0.1})
    assert m.offer_scores(orphan, orphan.scores)                 # no completion: counts in the means
    assert not m.offer_scores(Observation(trace_id="e" * 32, ts_us=1, model="m2"), {"score_x": 1.0})
    assert not m.offer(obs(2, model="m2"))
    _, extra = m.take_window()
    assert extra == [("f" * 32, "score_faithfulness", 0.1)]


def report(drifted: bool, n: int = 3, *, embedding: bool = False, tabular: bool = True,
           reference_id: str = "ref") -> events_pb2.DriftReportEvent:
    """A window's report: with ``drifted``, the tabular preset drifted (``tabular``) and/or the
    prompt embeddings (``embedding``)."""
    tab = drifted and tabular
    emb = drifted and embedding
    return events_pb2.DriftReportEvent(
        monitor="m", report_id="r", window_size=n, reference_id=reference_id, drift_detected=tab or emb,
        drift_share=0.5 if tab else 0.0,
        features=[events_pb2.FeatureDrift(feature="prompt_chars", drifted=tab, p_value=0.001, method="K-S p_value",
                                          threshold=0.05),
                  events_pb2.FeatureDrift(feature="latency_ms", drifted=False, p_value=0.6, method="K-S p_value",
                                          threshold=0.05),
                  events_pb2.FeatureDrift(feature="prompt_embedding", drifted=emb, statistic=0.3 if emb else 0.01,
                                          method="MMDDriftMethod", threshold=0.015)])


def run_policy(m: Monitor, drifted: bool, now: int, rows=None, means=None, **kw):
    rows = rows or [obs(i) for i in range(3)]
    rep = report(drifted, len(rows), reference_id=m.reference.reference_id, **kw)
    ev = decide_retrain(m.spec, rep, rows, means or {}, history=list(m.recent), cooldowns=m.cooldowns, now=now,
                        event_id="retrain-m-test")
    m.apply(WindowOutcome(rows, report=rep, retrain=ev))
    return ev


def test_policy_fires_once_after_k_drifted_windows_then_cools_down(tmp_path):
    m = Monitor(MonitorSpec("m", consecutive=2, cooldown_s=3600), tmp_path)
    m.reference = Reference("ref", [], 0, "test")
    t = 10 * HOUR_US
    assert run_policy(m, True, t) is None and m.consecutive == 1
    assert run_policy(m, False, t) is None and m.consecutive == 0       # the streak breaks
    assert run_policy(m, True, t) is None
    ev = run_policy(m, True, t + 1)
    assert ev is not None and ev.reason == "tabular drift in 2 consecutive windows (policy: 2)"
    assert list(ev.causes) == [CAUSE_TABULAR]
    assert [f.feature for f in ev.evidence] == ["prompt_chars"] and ev.evidence[0].p_value == pytest.approx(0.001)
    assert ev.reference_id == "ref" and len(ev.trace_ids) == 3
    fired = [run_policy(m, True, t + k * 60_000_000) for k in range(2, 40)]   # still drifting, 38 more minutes
    assert fired == [None] * 38 and m.retrain_count == 1
    again = run_policy(m, True, t + HOUR_US + 10)          # cooled down and still drifting: reminded once
    assert again is not None and "consecutive windows" in again.reason and m.retrain_count == 2


def test_quality_floor_fires_with_the_low_scored_traces_and_needs_enough_scores(tmp_path):
    m = Monitor(MonitorSpec("m", consecutive=5, quality_min={"score_faithfulness": 0.5}), tmp_path)
    m.reference = Reference("ref", [], 0, "test")
    rows = [obs(i, scores={"score_faithfulness": v}) for i, v in enumerate((0.9, 0.1, 0.3, 0.2, 0.95, 0.4))]
    few = {"score_faithfulness": (0.2, 4)}
    assert run_policy(m, False, HOUR_US, rows, few) is None                   # 4 scores are too few
    ev = run_policy(m, False, HOUR_US, rows, {"score_faithfulness": (0.475, 6)})
    assert ev is not None and ev.reason == "score_faithfulness window mean 0.475 < 0.5"
    assert list(ev.causes) == ["floor:score_faithfulness"]
    assert ev.evidence == []                                                  # nothing drifted
    assert list(ev.low_score_trace_ids) == [obs(i).trace_id for i in (1, 3, 2, 5)]   # lowest first


def test_a_new_reference_rearms_the_policy(tmp_path):
    m = Monitor(MonitorSpec("m", consecutive=1, cooldown_s=3600), tmp_path)
    m.reference = Reference("ref", [], 0, "test")
    assert run_policy(m, True, HOUR_US) is not None
    assert run_policy(m, True, HOUR_US + 1) is None
    m.set_reference(Reference("ref2", [], 0, "test"))
    assert run_policy(m, True, HOUR_US + 2) is not None


# -- the pure policy (llmops.drift.policy), without a Monitor --------------------------------
def decide(spec: MonitorSpec, drifted: bool, rows=None, means=None, *, before=0, cooldowns=None,
           now=10 * HOUR_US, **kw):
    """``before``: drifted windows (of the same kind) right before this one."""
    rows = rows if rows is not None else [obs(i) for i in range(3)]
    history = [report(True, len(rows), **kw) for _ in range(before)]
    return decide_retrain(spec, report(drifted, len(rows), **kw), rows, means or {}, history=history,
                          cooldowns=cooldowns, now=now, event_id="retrain-m-1")


def test_k_drifted_windows_in_a_row_fire_and_a_clean_window_between_resets_the_count():
    spec = MonitorSpec("m", consecutive=3)
    assert decide(spec, True, before=1) is None                      # the 2nd drifted window in a row
    ev = decide(spec, True, before=2)                                # the 3rd
    assert ev is not None and ev.reason == "tabular drift in 3 consecutive windows (policy: 3)"
    assert ev.id == "retrain-m-1" and ev.monitor == "m" and ev.created_at.ToMicroseconds() == 10 * HOUR_US
    assert [f.feature for f in ev.evidence] == ["prompt_chars"] and ev.window.count == 3

    def fired(windows: tuple[bool, ...]) -> list[bool]:
        history, out = [], []
        for drifted in windows:
            rep = report(drifted)
            out.append(decide_retrain(spec, rep, [obs(0)], {}, history=history, now=1, event_id="e") is not None)
            history.append(rep)
        return out

    assert fired((True, True, True)) == [False, False, True]
    # drifted, drifted, clean, drifted, drifted: the clean window resets the count, nothing fires
    assert fired((True, True, False, True, True)) == [False] * 5
    assert decide(spec, False, before=10) is None                    # a clean window after a streak fires nothing
    # a streak against another reference does not count
    other = [report(True, reference_id="old")] * 2
    assert decide_retrain(spec, report(True), [obs(0)], {}, history=other, now=1, event_id="e") is None


def test_embedding_and_tabular_drift_are_causes_of_their_own_with_streaks_of_their_own():
    spec = MonitorSpec("m", consecutive=2)
    ev = decide(spec, True, before=1, embedding=True, tabular=False)
    assert list(ev.causes) == [CAUSE_EMBEDDING]
    assert ev.reason == "prompt-embedding drift in 2 consecutive windows (policy: 2)"
    assert [f.feature for f in ev.evidence] == ["prompt_embedding"]
    both = decide(spec, True, before=1, embedding=True)
    assert list(both.causes) == [CAUSE_EMBEDDING, CAUSE_TABULAR]
    # the embeddings drifted before, the tabular preset only now: the embeddings' streak fires alone
    history = [report(True, embedding=True, tabular=False)]
    ev = decide_retrain(spec, report(True, embedding=True), [obs(0)], {}, history=history, now=1, event_id="e")
    assert list(ev.causes) == [CAUSE_EMBEDDING]


def test_a_quality_floor_needs_min_quality_values_scores():
    spec = MonitorSpec("m", consecutive=5, quality_min={"score_faithfulness": 0.5})
    rows = [obs(i, scores={"score_faithfulness": 0.1}) for i in range(3)]
    assert decide(spec, False, rows, {"score_faithfulness": (0.1, MIN_QUALITY_VALUES - 1)}) is None
    assert decide(spec, False, rows, {"score_faithfulness": (0.5, MIN_QUALITY_VALUES)}) is None   # at the floor
    assert decide(spec, False, rows, {"score_other": (0.0, 100)}) is None          # a column with no floor
    ev = decide(spec, False, rows, {"score_faithfulness": (0.1, MIN_QUALITY_VALUES)})
    assert ev is not None and ev.reason == "score_faithfulness window mean 0.100 < 0.5" and ev.evidence == []
    both = decide(MonitorSpec("m", consecutive=1, quality_min={"score_faithfulness": 0.5}), True, rows,
                  {"score_faithfulness": (0.1, MIN_QUALITY_VALUES)})
    assert both.reason == ("tabular drift in 1 consecutive windows (policy: 1); "
                           "score_faithfulness window mean 0.100 < 0.5")
    assert list(both.causes) == [CAUSE_TABULAR, "floor:score_faithfulness"]


def test_the_default_monitor_has_no_absolute_floor(tmp_path):
    (spec,) = load_specs(make_settings(tmp_path, "127.0.0.1:1"))
    assert spec.quality_min == {}
    assert spec.quality_scores == ("score_faithfulness", "score_answer_relevancy", "score_context_relevancy")
    assert (spec.quality_test, spec.quality_alpha, spec.quality_min_drop, spec.quality_min_effect) == (
        "welch", 0.001, 0.05, 0.3)
    rows = [obs(i, scores={"score_faithfulness": 0.05}) for i in range(50)]
    assert decide(spec, False, rows, score_means(rows, [])) is None           # a low mean alone fires nothing
    (floored,) = load_specs(make_settings(tmp_path, "127.0.0.1:1", drift_quality_min="faithfulness=0.3",
                                          drift_quality_scores="faithfulness, feedback_user"))
    assert floored.quality_min == {"score_faithfulness": 0.3}                  # opted in
    assert floored.quality_scores == ("score_faithfulness", "feedback_user")


def test_the_cooldown_suppresses_until_it_is_over():
    spec = MonitorSpec("m", consecutive=1, cooldown_s=600)
    last = 10 * HOUR_US
    fired = {CAUSE_TABULAR: last}
    assert decide(spec, True, cooldowns=fired, now=last + 599_999_999) is None
    assert decide(spec, True, cooldowns=fired, now=last + 600_000_000) is not None
    assert decide(spec, True, cooldowns={}, now=last) is not None     # never fired: no cooldown


def test_the_cooldown_of_one_cause_never_hides_another():
    spec = MonitorSpec("m", consecutive=1, cooldown_s=3600, quality_min={"score_faithfulness": 0.5})
    now = 10 * HOUR_US
    rows = [obs(i, scores={"score_faithfulness": 0.1}) for i in range(5)]
    low = {"score_faithfulness": (0.1, 5)}
    # a quality event a minute ago: embedding drift now fires, with its own cause only
    ev = decide(spec, True, rows, low, cooldowns={"floor:score_faithfulness": now - 60_000_000}, now=now,
                embedding=True, tabular=False)
    assert list(ev.causes) == [CAUSE_EMBEDDING] and "floor" not in ev.reason
    # embedding drift a minute ago: a quality drop now fires
    ev = decide(spec, True, rows, low, cooldowns={CAUSE_EMBEDDING: now - 60_000_000}, now=now,
                embedding=True, tabular=False)
    assert list(ev.causes) == ["floor:score_faithfulness"]
    # both cooling: nothing
    assert decide(spec, True, rows, low, cooldowns={CAUSE_EMBEDDING: now - 1, "floor:score_faithfulness": now - 1},
                  now=now, embedding=True, tabular=False) is None


def test_the_cooldowns_are_restored_from_the_stored_events_of_the_current_reference(tmp_path):
    m = Monitor(MonitorSpec("m", consecutive=1, cooldown_s=3600), tmp_path)
    m.reference = Reference("ref", [], 0, "test")
    m.last_retrain_us = 5 * HOUR_US                     # the saved state counts events up to here

    def ev(at, causes, ref="ref"):
        e = events_pb2.RetrainEvent(id=f"e{at}", reference_id=ref, causes=causes)
        e.created_at.FromMicroseconds(at)
        return e

    m.restore_cooldowns([ev(5 * HOUR_US, [CAUSE_EMBEDDING]), ev(4 * HOUR_US, [CAUSE_EMBEDDING, "quality:score_f"]),
                         ev(6 * HOUR_US, [CAUSE_TABULAR]),           # stored, but its window's state was not saved
                         ev(5 * HOUR_US, ["quality:score_g"], ref="old")])
    assert m.cooldowns == {CAUSE_EMBEDDING: 5 * HOUR_US, "quality:score_f": 4 * HOUR_US}
    assert run_policy(m, True, 5 * HOUR_US + 60_000_000, embedding=True, tabular=False) is None   # still cooling
    assert run_policy(m, True, 5 * HOUR_US + 120_000_000) is not None       # the tabular drift: a new cause


def test_low_score_trace_ids_are_listed_worst_first_below_any_floor_and_capped():
    spec = MonitorSpec("m", consecutive=1, quality_min={"score_faithfulness": 0.5, "feedback_user": 0.8})
    rows = [obs(0, scores={"score_faithfulness": 0.45}),                           # 0.05 under
            obs(1, scores={"score_faithfulness": 0.9, "feedback_user": 0.2}),      # 0.6 under, on feedback
            obs(2, scores={"score_faithfulness": 0.9}),                            # above: not listed
            obs(3),                                                                # not scored: not listed
            obs(4, scores={"score_faithfulness": 0.2})]                            # 0.3 under
    ev = decide(spec, True, rows)
    assert list(ev.low_score_trace_ids) == [obs(i).trace_id for i in (1, 4, 0)]
    many = [obs(i, scores={"score_faithfulness": 0.4 - i / 1000}) for i in range(LOW_SCORE_TRACE_IDS + 10)]
    ev = decide(spec, True, many)
    assert len(ev.low_score_trace_ids) == LOW_SCORE_TRACE_IDS
    assert ev.low_score_trace_ids[0] == many[-1].trace_id                           # the lowest score first


def test_sample_trace_ids_spread_over_the_window_and_are_capped():
    spec = MonitorSpec("m", consecutive=1)
    rows = [obs(i) for i in range(10 * SAMPLE_TRACE_IDS)]
    ev = decide(spec, True, rows)
    assert list(ev.trace_ids) == [rows[i].trace_id for i in range(0, len(rows), 10)]
    assert len(ev.trace_ids) == SAMPLE_TRACE_IDS
    odd = [obs(i) for i in range(2 * SAMPLE_TRACE_IDS + 5)]                        # step 2 gives 23: capped
    assert list(decide(spec, True, odd).trace_ids) == [odd[i].trace_id for i in range(0, 2 * SAMPLE_TRACE_IDS, 2)]
    assert len(decide(spec, True, rows[:5]).trace_ids) == 5                         # fewer rows: all of them


def test_score_means_count_the_rows_and_the_unjoined_scores():
    rows = [obs(1, scores={"score_f": 0.2, "feedback_user": 1.0}), obs(2, scores={"score_f": 0.4}), obs(3)]
    means = score_means(rows, [("f" * 32, "score_f", 0.9), ("e" * 32, "score_g", 0.5)])
    assert means == {"score_f": (pytest.approx(0.5), 3), "feedback_user": (1.0, 1), "score_g": (0.5, 1)}
    assert score_means([], []) == {}
