"""The drift store on SQLite and on the machine's PostgreSQL: observations merge by trace id
(late scores, a completion after its orphan scores), references are copies that round-trip with
their embeddings, a monitor is restored with its open window, retrain events page newest first."""
import numpy as np
import pytest

from llmops.drift.features import Observation
from llmops.drift.monitor import Monitor, Reference
from llmops.drift.monitor_config import MonitorSpec, Scope
from llmops.common.paging import InvalidPageToken
from llmops.drift.store import DriftStore
from llmops.v1 import events_pb2


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'drift.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = DriftStore(url)
    yield s
    s.close()


def obs(i: int, **kw) -> Observation:
    base = dict(trace_id=f"{i:032x}", ts_us=1_000_000 * i, has_completion=True, model="m", prompt=f"q{i}",
                answer="a", features={"prompt_chars": float(i), "finish_reason": "eos_token"},
                embedding=np.full(4, i, dtype=np.float32))
    base.update(kw)
    return Observation(**base)


def test_observations_merge_by_trace_id(store):
    got = store.upsert([obs(1, scores={"score_f": 0.5}), obs(2, has_completion=False, scores={"score_f": 0.1},
                                                                 embedding=None)])
    assert [o for _, o in got] == ["new", "orphan"]
    first_seq = got[0][0].seq
    got = store.upsert([obs(1, scores={"feedback_user": 1.0})])                  # a late score: merged
    assert got[0][1] == "merged" and got[0][0].scores == {"score_f": 0.5, "feedback_user": 1.0}
    got = store.upsert([obs(2, scores={"score_g": 0.7})])                        # the orphan's completion
    assert got[0][1] == "new" and got[0][0].scores == {"score_f": 0.1, "score_g": 0.7}
    rows = list(store.observations_after(0))
    assert [r.trace_id for r in rows] == [obs(1).trace_id, obs(2).trace_id] and rows[1].seq > first_seq
    assert rows[1].has_completion and np.array_equal(rows[0].embedding, np.full(4, 1, dtype=np.float32))
    assert [o.trace_id for o in store.completions_between(1_500_000, 3_000_000)] == [obs(2).trace_id]


def test_reference_and_state_survive_a_new_store(store, tmp_path):
    m = Monitor(MonitorSpec("m", window_size=10, scope=Scope(model="m")), tmp_path)
    store.upsert([obs(i) for i in range(1, 6)])
    ref = Reference("ref-1", list(store.observations_after(0))[:3], 123, "first 3")
    store.save_reference("m", ref)
    m.set_reference(ref)
    m.last_seq, m.consecutive, m.retrain_count = 3, 1, 2
    store.save_state(m)
    store.save_window(events_pb2.DriftReportEvent(monitor="m", report_id="w1", drift_share=0.25), 5)
    fresh = Monitor(MonitorSpec("m", window_size=10, scope=Scope(model="m")), tmp_path)
    store.restore(fresh)
    assert fresh.reference.reference_id == "ref-1" and fresh.reference.source == "first 3"
    assert [o.trace_id for o in fresh.reference.rows] == [obs(i).trace_id for i in (1, 2, 3)]
    assert np.array_equal(fresh.reference.rows[2].embedding, np.full(4, 3, dtype=np.float32))
    assert (fresh.consecutive, fresh.retrain_count, fresh.last_seq) == (1, 2, 3)
    assert list(fresh.current) == [obs(4).trace_id, obs(5).trace_id]            # the open window, refilled
    assert [w.report_id for w in fresh.recent] == ["w1"]


def test_retrain_events_page_newest_first(store):
    for i in range(5):
        ev = events_pb2.RetrainEvent(id=f"e{i}", monitor="m" if i % 2 == 0 else "other", reason=f"r{i}")
        ev.created_at.FromSeconds(1000 + i)
        store.save_retrain(ev)
        store.save_retrain(ev)                                                  # idempotent
    page, token = store.list_retrain("", 2)
    assert [e.id for e in page] == ["e4", "e3"] and token
    page, token = store.list_retrain("", 2, token)
    assert [e.id for e in page] == ["e2", "e1"]
    page, token = store.list_retrain("", 2, token)
    assert [e.id for e in page] == ["e0"] and token == ""
    assert [e.id for e in store.list_retrain("m", 10)[0]] == ["e4", "e2", "e0"]
    with pytest.raises(InvalidPageToken):
        store.list_retrain("", 2, "garbage")


def test_prune_keeps_what_an_open_window_needs(store):
    store.upsert([obs(i) for i in range(1, 6)])                   # ts 1..5 s
    for i in range(3):
        store.save_window(events_pb2.DriftReportEvent(monitor="m", report_id=f"w{i}"), created_us=1_000_000 * i)
    removed = store.prune(before_us=4_500_000, keep_after_seq=2)  # old: 1..4; the open window starts after seq 2
    assert removed == (2, 3)
    assert [o.trace_id for o in store.observations_after(0)] == [obs(i).trace_id for i in (3, 4, 5)]
    assert store.recent_windows("m") == []


def decision(route: str, revision: int, ts_us: int, kind=events_pb2.ROLLOUT_DECISION_ROLLBACK) -> events_pb2.DeploymentEvent:
    ev = events_pb2.DeploymentEvent(id=f"rollout:{route}:{revision}", route=route, route_revision=revision,
                                    decision=kind, reason="worse",
                                    evidence=events_pb2.RolloutEvidence(score="faithfulness", canary_n=40))
    ev.timestamp.FromMicroseconds(ts_us)
    return ev


def test_rollout_decisions_are_kept_once_per_route_revision_newest_first(store):
    assert store.deployment_events() == []
    assert store.save_deployment_event(decision("chat", 1, 10))
    assert store.save_deployment_event(decision("chat", 3, 30, events_pb2.ROLLOUT_DECISION_PROMOTE))
    assert store.save_deployment_event(decision("other:v1/x", 1, 20))
    assert not store.save_deployment_event(decision("chat", 1, 40, events_pb2.ROLLOUT_DECISION_PASSED))   # the first stays
    assert [(e.route, e.route_revision) for e in store.deployment_events()] == [("chat", 3), ("other:v1/x", 1), ("chat", 1)]
    chat = store.deployment_events("chat")
    assert [e.decision for e in chat] == [events_pb2.ROLLOUT_DECISION_PROMOTE, events_pb2.ROLLOUT_DECISION_ROLLBACK]
    assert chat[1].evidence.canary_n == 40


def test_observations_keep_how_their_request_was_served(store):
    store.upsert([obs(1, route="chat", deployment="small", deployment_version=2, arm="canary")])
    [o] = list(store.observations_after(0))
    assert (o.route, o.deployment, o.deployment_version, o.arm) == ("chat", "small", 2, "canary")


def test_a_monitor_takes_a_trace_once_and_is_restored_with_its_open_rows_in_their_order(store, tmp_path):
    store.upsert([obs(i) for i in range(1, 7)])
    assert store.add_rows("m", [(obs(i).trace_id, p, i) for p, i in ((1, 5), (2, 2), (3, 6))]) == {
        obs(i).trace_id for i in (5, 2, 6)}
    assert store.add_rows("m", [(obs(5).trace_id, 4, 5), (obs(1).trace_id, 5, 1)]) == {obs(1).trace_id}   # 5 again
    assert store.add_rows("other", [(obs(5).trace_id, 1, 5)]) == {obs(5).trace_id}            # per monitor
    assert [(p, o.trace_id) for p, o in store.open_rows("m", 1)] == [(2, obs(2).trace_id), (3, obs(6).trace_id),
                                                                     (5, obs(1).trace_id)]
    m = Monitor(MonitorSpec("m", window_size=10, scope=Scope(model="m")), tmp_path)
    m.last_pos = 2
    store.save_state(m)
    fresh = Monitor(MonitorSpec("m", window_size=10, scope=Scope(model="m")), tmp_path)
    store.restore(fresh)
    assert list(fresh.current) == [obs(6).trace_id, obs(1).trace_id] and fresh.next_pos == 6   # after position 2
    removed = store.prune(before_us=10_000_000, keep_after_seq=2**62)   # all old; the open rows' observations stay
    assert removed[0] == 3 and {o.trace_id for o in store.observations_after(0)} == {obs(i).trace_id for i in (1, 5, 6)}


def test_a_judged_window_is_saved_with_the_state_unpublished_until_marked(store, tmp_path):
    from llmops.drift.monitor import WindowOutcome

    m = Monitor(MonitorSpec("m", window_size=10), tmp_path)
    m.consecutive, m.last_pos = 1, 10
    report = events_pb2.DriftReportEvent(monitor="m", report_id="m-w1", drift_detected=True)
    retrain = events_pb2.RetrainEvent(id="retrain-m-w1", monitor="m", reason="drift")
    retrain.created_at.FromSeconds(1000)
    out = WindowOutcome(rows=[], report=report, retrain=retrain)
    store.commit_window(m, out, 5)
    store.commit_window(m, out, 6)                                  # the same window again: kept once
    assert [(k, i) for k, i, _ in store.unpublished("m")] == [("drift", "m-w1"), ("retrain", "retrain-m-w1")]
    assert [e.id for e in store.list_retrain("m", 10)[0]] == ["retrain-m-w1"]
    fresh = Monitor(MonitorSpec("m", window_size=10), tmp_path)
    store.restore(fresh)
    assert (fresh.consecutive, fresh.last_pos) == (1, 10)
    store.mark_published([("drift", "m-w1"), ("retrain", "retrain-m-w1")])
    assert store.unpublished("m") == [] and [w.report_id for w in store.windows_of("m")] == ["m-w1"]
