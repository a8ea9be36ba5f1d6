"""The drift service in-process (as `llmops serve drift` runs it) with tracing, on the real
embedded broker, MiniLM, Evidently and SQLite: completions, scores and feedback published to
Kafka are joined by trace id; a stationary stream fires nothing; a shift to another language and
domain fires one retrain event per cause (the quality drop at once, the drift after two windows);
the reference survives a restart; the retrain listener writes the event's training candidates;
bad input is refused with a clear status."""
from __future__ import annotations

import json
import random

import grpc
import pytest

from llmops.cli.client import Client
from llmops.common import metrics
from llmops.common.envelope import encode
from llmops.common.spans import new_trace_id
from llmops.cli.retrain_listener import RetrainListener
from llmops.drift.main import build as build_drift
from llmops.drift.store import DriftStore
from llmops.cli.workloads import KOREAN_ANSWERS, korean_prompts, python_prompts, stream, synthetic_completion
from llmops.tracing.main import build as build_tracing
from llmops.v1 import common_pb2, drift_pb2, events_pb2
from tests.support import ServiceThread, consume, consume_until, make_settings, produce, wait_until

WINDOW = 40


def completion(prompt: str, rng: random.Random, *, shifted: bool = False) -> events_pb2.CompletionEvent:
    return synthetic_completion(prompt, rng, shifted=shifted)


def score(trace_id: str, value: float, name: str = "faithfulness") -> events_pb2.ScoreEvent:
    return events_pb2.ScoreEvent(trace_id=trace_id, model="smollm2-135m-instruct", prompt_template="rag",
                                 prompt_version=1, tier="cheap",
                                 score=common_pb2.Score(name=name, evaluator=f"rag.{name}.cheap", value=value,
                                                        status=common_pb2.SCORE_STATUS_OK))


def publish(s, topic: str, events) -> None:
    produce(s.bootstrap_servers, s.topic(topic), [(e.trace_id.encode(), *encode(e)) for e in events])


def send_workload(s, prompts, rng, *, shifted=False, score_mean=0.8):
    comps = [completion(p, rng, shifted=shifted) for p in prompts]
    publish(s, "completions", comps)
    publish(s, "scores", [score(c.trace_id, min(1.0, max(0.0, rng.gauss(score_mean, 0.1)))) for c in comps])
    return comps


@pytest.fixture(scope="module")
def drift_stack(kafka, tmp_path_factory):
    data = tmp_path_factory.mktemp("drift")
    s = make_settings(data, kafka, drift_window_size=WINDOW, drift_join_wait_s=1.0, drift_consecutive=2,
                      drift_keep_reports=4)
    threads = {}

    def restart():
        threads.pop("drift").stop()
        threads["drift"] = ServiceThread("drift", s, build_drift).start()

    try:
        threads["tracing"] = ServiceThread("tracing", s, build_tracing).start()
        threads["drift"] = ServiceThread("drift", s, build_drift).start()
        yield s, Client(s), restart
    finally:
        for t in threads.values():
            t.stop()


def status(client, monitor="default") -> drift_pb2.MonitorStatus:
    return client.drift.GetStatus(drift_pb2.GetStatusRequest(monitor=monitor), timeout=10).monitors[0]


def retrain_events(client):
    return list(client.drift.ListRetrainEvents(drift_pb2.ListRetrainEventsRequest(), timeout=10).events)


def windows_seen(client) -> int:
    st = status(client)
    return len(st.recent_windows)


def test_scores_join_their_completion_late_early_or_never(drift_stack):
    s, client, _ = drift_stack
    rng = random.Random(5)
    store = DriftStore(s.drift_db_url)
    on_time, early, late = (completion(p, rng) for p in python_prompts()[:3])
    orphan_id = new_trace_id()
    orphans_before = metrics.DRIFT_JOINED.labels("orphan")._value.get()
    publish(s, "scores", [score(early.trace_id, 0.7)])                 # the score before its completion
    publish(s, "completions", [on_time, early, late])
    publish(s, "scores", [score(on_time.trace_id, 0.9), score(orphan_id, 0.2)])
    fb = events_pb2.FeedbackEvent(trace_id=on_time.trace_id,
                                  feedback=common_pb2.Feedback(id="fb1", trace_id=on_time.trace_id, score=1.0))
    publish(s, "feedback", [fb, fb])                                   # redelivered: counts once

    def row(tid):
        return next((o for o in store.observations_after(0) if o.trace_id == tid), None)

    wait_until(lambda: row(late.trace_id), timeout_s=30, what="the completions to be joined and stored")
    publish(s, "scores", [score(late.trace_id, 0.4)])                  # after its join closed: merged
    got = wait_until(lambda: (r := row(late.trace_id)) and r.scores and r, timeout_s=30, what="the late score")
    assert got.scores == {"score_faithfulness": 0.4}
    # scores and feedback come on their own topics: each joins its row (before or after its close)
    want_on_time = {"score_faithfulness": 0.9, "feedback_user": 1.0}
    wait_until(lambda: row(on_time.trace_id).scores == want_on_time, timeout_s=30,
               what="the on-time completion's score and feedback")
    wait_until(lambda: row(early.trace_id).scores == {"score_faithfulness": 0.7}, timeout_s=30,
               what="the score that came before its completion")
    assert row(early.trace_id).has_completion
    assert row(on_time.trace_id).embedding.shape == (384,)
    o = wait_until(lambda: row(orphan_id), timeout_s=30, what="the orphan score to be kept")
    assert not o.has_completion and o.scores == {"score_faithfulness": 0.2} and o.model == "smollm2-135m-instruct"
    assert metrics.DRIFT_JOINED.labels("orphan")._value.get() == orphans_before + 1
    store.close()


def test_undecodable_events_go_to_the_dead_letter_topic(drift_stack):
    s, _, _ = drift_stack
    produce(s.bootstrap_servers, s.topic("completions"), [(b"k", b"\xff\x00not protobuf", [])])
    group = f"{s.topic_prefix}drift".encode()            # tracing reads completions too, and parks its own copy

    def drifts(msgs):
        return [m for m in msgs if dict(m.headers)["dlq-consumer-group"] == group and m.key == b"k"]

    mine = drifts(consume_until(s.bootstrap_servers, s.topic("dlq"), drifts, what="drift's dead letter"))
    assert len(mine) == 1 and mine[0].value == b"\xff\x00not protobuf"
    headers = dict(mine[0].headers)
    assert headers["dlq-source-topic"].decode() == s.topic("completions")
    assert b"not a valid llmops.v1.CompletionEvent" in headers["dlq-reason"]


def test_stationary_traffic_fires_nothing_and_a_shift_fires_one_event_per_cause(drift_stack, tmp_path):
    s, client, restart = drift_stack
    rng = random.Random(11)
    english, korean = python_prompts(), korean_prompts()
    # the 3 rows of the join test are in the first (reference) window already
    send_workload(s, stream(english, WINDOW - 3 + 6 * WINDOW, seed=1), rng)
    wait_until(lambda: windows_seen(client) >= 6, timeout_s=180, interval_s=1, what="6 stationary windows")
    st = status(client)
    assert st.reference_id and st.reference_size == WINDOW and st.reference_source.startswith("first window")
    assert [w.drift_detected for w in st.recent_windows] == [False] * 6, [
        [f.feature for f in w.features if f.drifted] for w in st.recent_windows]
    assert retrain_events(client) == []

    shifted = send_workload(s, stream(korean, 3 * WINDOW, seed=2), rng, shifted=True, score_mean=0.45)
    wait_until(lambda: windows_seen(client) >= 9, timeout_s=180, interval_s=1, what="3 shifted windows")
    events = retrain_events(client)                          # newest first
    assert len(events) == 2, [e.reason for e in events]
    ev, quality_ev = events
    korean_ids = {c.trace_id for c in shifted}
    # the first shifted window: faithfulness dropped against the reference (0.8 -> 0.45)
    assert list(quality_ev.causes) == ["quality:score_faithfulness"], quality_ev.reason
    assert set(quality_ev.trace_ids) <= {c.trace_id for c in shifted[:WINDOW]}
    (q,) = [t for t in quality_ev.quality if t.dropped]
    assert q.score == "score_faithfulness" and q.p_value < q.alpha and q.effect_size >= 0.3
    assert q.reference_mean > 0.7 and q.window_mean < 0.55 and q.reference_n >= 20 and q.window_n >= 20
    # the second: the drift, two windows in a row, a new cause that the quality event's cooldown does not hide
    assert "drift:prompt_embedding" in ev.causes and "quality:score_faithfulness" not in ev.causes
    assert ev.window.count == WINDOW and set(ev.trace_ids) <= korean_ids
    assert set(ev.trace_ids) & {c.trace_id for c in shifted[WINDOW:2 * WINDOW]}, "fired on the second shifted window"
    assert "2 consecutive windows" in ev.reason and ev.reference_id == status(client).reference_id
    drifted = {f.feature for f in ev.evidence}
    assert "prompt_embedding" in drifted and {"prompt_non_ascii", "retrieval_top_score"} <= drifted, drifted
    assert ev.low_score_trace_ids and set(ev.low_score_trace_ids) <= korean_ids
    st = status(client)
    assert [w.drift_detected for w in st.recent_windows[:3]] == [True] * 3
    assert st.retrain_events == 2 and st.last_retrain_at.seconds > 0
    newest = st.recent_windows[0]
    report = json.loads(open(newest.report_json_path).read())
    assert report["metrics"] and open(newest.report_path).read(200).strip().lower().startswith("<!doctype html")
    kept = list((s.drift_reports_dir / "default").glob("*.html"))
    assert len(kept) == 4                                    # LLMOPS_DRIFT_KEEP_REPORTS
    # the same events went out on llmops.retrain, and a report per window on llmops.drift
    on_topic = consume(s.bootstrap_servers, s.topic("retrain"), want=2, timeout_s=20)
    assert [events_pb2.RetrainEvent.FromString(m.value).id for m in on_topic] == [quality_ev.id, ev.id]
    reports = [events_pb2.DriftReportEvent.FromString(m.value).report_id for m in consume_until(
        s.bootstrap_servers, s.topic("drift"), lambda ms: len(ms) >= 9, what="the 9 window reports")]
    assert sorted(reports) == sorted(w.report_id for w in st.recent_windows)   # each window once

    # the listener turns the first (the quality drop) into a training-candidate dataset read from the trace store
    import asyncio
    stats = asyncio.run(RetrainListener(s, tmp_path / "out", trace_wait_s=30).run(max_events=1))
    assert stats.events == 1 and stats.missing == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "default" / f"{quality_ev.id}.jsonl").read_text().splitlines()]
    assert [x["trace_id"] for x in lines[:len(quality_ev.low_score_trace_ids)]] == list(quality_ev.low_score_trace_ids)
    assert {x["trace_id"] for x in lines} == {*quality_ev.low_score_trace_ids, *quality_ev.trace_ids}
    assert {x["why"] for x in lines} <= {"low_score", "drift_sample"} and lines[0]["why"] == "low_score"
    first = lines[0]
    assert first["prompt"] in korean and first["answer"] in KOREAN_ANSWERS
    assert first["scores"]["rag.faithfulness.cheap/faithfulness"] < q.window_mean       # the lowest first

    # a restart keeps the reference, the counters and the windows
    before = status(client)
    restart()
    after = status(client)
    assert (after.reference_id, after.reference_size, after.retrain_events) == (
        before.reference_id, before.reference_size, 2)
    assert [w.report_id for w in after.recent_windows] == [w.report_id for w in before.recent_windows]


def test_set_reference_and_bad_input(drift_stack):
    s, client, _ = drift_stack
    stub = client.drift

    def code_of(fn, req):
        with pytest.raises(grpc.RpcError) as exc:
            fn(req, timeout=30)
        return exc.value.code(), exc.value.details()

    R = drift_pb2.SetReferenceRequest
    assert code_of(stub.SetReference, R(monitor="nope", first_n=10))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(stub.GetStatus, drift_pb2.GetStatusRequest(monitor="nope"))[0] == grpc.StatusCode.NOT_FOUND
    empty = R(monitor="default")
    empty.start_time.FromSeconds(2_000_000_000)
    empty.end_time.FromSeconds(2_000_000_000)
    c, msg = code_of(stub.SetReference, empty)
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "empty" in msg
    future = R(monitor="default")
    future.start_time.FromSeconds(4_000_000_000)
    future.end_time.FromSeconds(4_000_000_100)
    c, msg = code_of(stub.SetReference, future)
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "has 0 completions" in msg
    assert code_of(stub.SetReference, R(monitor="default"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    both = R(monitor="default", first_n=10)
    both.start_time.FromSeconds(1)
    both.end_time.FromSeconds(2)
    assert code_of(stub.SetReference, both)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(stub.SetReference, R(monitor="default", first_n=10**6))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(stub.SetReference, R(monitor="", first_n=5))[0] == grpc.StatusCode.INVALID_ARGUMENT
    bad_page = drift_pb2.ListRetrainEventsRequest(page_token="zzz")
    assert code_of(stub.ListRetrainEvents, bad_page)[0] == grpc.StatusCode.INVALID_ARGUMENT

    resp = stub.SetReference(R(monitor="default", first_n=25), timeout=30)
    st = status(client)
    assert (st.reference_id, st.reference_size, st.reference_source) == (resp.reference_id, 25, "first 25")
    assert st.consecutive_drifted == 0


def test_on_postgresql_an_entry_that_cannot_be_stored_is_parked_not_lost(kafka, tmp_path, postgres_url):
    """PostgreSQL refuses NUL characters in text: that completion goes to the DLQ with the reason,
    its neighbours in the same batch are stored."""
    s = make_settings(tmp_path, kafka, drift_db=postgres_url, drift_join_wait_s=0.5, drift_window_size=40)
    rng = random.Random(3)
    good = [synthetic_completion(p, rng) for p in python_prompts()[:3]]
    bad = synthetic_completion("a prompt with a NUL \x00 byte", rng)
    t = ServiceThread("drift", s, build_drift).start()
    try:
        publish(s, "completions", [good[0], bad, *good[1:]])
        store = DriftStore(s.drift_db_url)
        wait_until(lambda: store.count() == 3, timeout_s=30, what="the three good completions on PostgreSQL")
        parked = [m for m in consume_until(s.bootstrap_servers, s.topic("dlq"),
                                           lambda ms: any(m.key == bad.trace_id.encode() for m in ms),
                                           what="the parked join entry") if m.key == bad.trace_id.encode()]
        headers = dict(parked[0].headers)
        assert headers["dlq-source-topic"].decode() == s.topic("drift-join")
        assert b"could not be stored" in headers["dlq-reason"]
        assert json.loads(parked[0].value)["c"]["prompt"] == bad.prompt
        assert {o.trace_id for o in store.observations_after(0)} == {c.trace_id for c in good}
        store.close()
    finally:
        t.stop()
