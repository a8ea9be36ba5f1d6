"""The trace store contract, against real SQLite and the machine's real PostgreSQL."""
import time

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from llmops.common.paging import InvalidPageToken
from llmops.tracing.store import SqlTraceStore, TraceQuery
from llmops.v1 import common_pb2, events_pb2


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqlTraceStore(f"sqlite:///{tmp_path}/traces.db")
    else:
        s = SqlTraceStore(request.getfixturevalue("postgres_url"))
    yield s
    s.close()


def ts(us):
    t = Timestamp()
    t.FromMicroseconds(us)
    return t


def span(trace, sid, name, start, end, parent=""):
    return events_pb2.SpanEvent(trace_id=trace, span_id=sid, parent_span_id=parent, name=name, service="inference",
                                start_time=ts(start), end_time=ts(end), attributes={"k": name},
                                status=common_pb2.SPAN_STATUS_OK)


def completion(trace, end_us, model="m1", session="s1", user="u1", latency_ms=10.0):
    c = events_pb2.CompletionEvent(trace_id=trace, model=model, prompt="q", answer="a", latency_ms=latency_ms,
                                   session_id=session, user_id=user, prompt_template="rag", prompt_version=2,
                                   usage=common_pb2.Usage(prompt_tokens=5, completion_tokens=7),
                                   contexts=[common_pb2.Context(id="d#0", document_id="d", text="ctx")])
    c.timestamp.CopyFrom(ts(end_us))
    return c


T1 = "1" * 32


def test_redelivered_spans_are_stored_once(store):
    spans = [span(T1, f"{i:016x}", f"s{i}", 1_000_000 + i, 2_000_000 + i) for i in range(5)]
    assert store.write_spans(spans + spans[:2]) == 5   # a duplicate inside one batch
    assert store.write_spans(spans) == 0              # a redelivery
    store.write_spans(spans[:2])      # a partial replay
    trace = store.get_trace(T1)
    assert len(trace.spans) == 5 and trace.summary.span_count == 5
    assert store.count_spans() == 5
    assert trace.spans[0].attributes["k"] == "s0"


def test_completion_and_spans_merge_in_either_order(store):
    store.write_completions([completion(T1, 3_000_000)])
    store.write_spans([span(T1, "a" * 16, "generate", 2_990_000, 3_000_000)])
    store.write_completions([completion(T1, 3_000_000)])  # redelivered
    t = store.get_trace(T1)
    assert t.summary.model == "m1" and t.summary.usage.completion_tokens == 7 and t.summary.prompt_version == 2
    assert t.summary.span_count == 1 and len(t.spans) == 1
    assert store.completion(T1).contexts[0].text == "ctx"


def test_scores_and_feedback_are_idempotent(store):
    store.write_spans([span(T1, "a" * 16, "generate", 1, 2)])
    sc = events_pb2.ScoreEvent(trace_id=T1, score=common_pb2.Score(name="faithfulness", value=0.5,
                                                                   evaluator="rag.cheap", version="1"))
    store.write_scores([sc, sc])
    sc.score.value = 0.9
    store.write_scores([sc])          # a re-score replaces, never duplicates
    fb = common_pb2.Feedback(id="f1", trace_id=T1, score=1.0, comment="good")
    store.write_feedback([fb, fb])
    t = store.get_trace(T1)
    assert [(s.name, s.value) for s in t.scores] == [("faithfulness", 0.9)]
    assert [(f.id, f.comment) for f in t.feedback] == [("f1", "good")]


def test_list_filters_and_paginates_newest_first(store):
    base = int(time.time() * 1e6)
    for i in range(25):
        tid = f"{i:032x}"
        store.write_completions([completion(tid, base + i * 1000, model="m1" if i % 2 else "m2",
                                            session=f"s{i % 3}", user="u")])
    page, token = store.list_traces(TraceQuery(page_size=10))
    assert [p.trace_id for p in page] == [f"{i:032x}" for i in range(24, 14, -1)]
    seen = [p.trace_id for p in page]
    while token:
        page, token = store.list_traces(TraceQuery(page_size=10, page_token=token))
        seen += [p.trace_id for p in page]
    assert len(seen) == 25 and len(set(seen)) == 25
    m1, _ = store.list_traces(TraceQuery(model="m1", page_size=100))
    assert len(m1) == 12 and all(p.model == "m1" for p in m1)
    s0, _ = store.list_traces(TraceQuery(session_id="s0", page_size=100))
    assert len(s0) == 9
    window, _ = store.list_traces(TraceQuery(start_us=base + 5 * 1000 - 10_000, end_us=base + 10 * 1000 - 10_000,
                                             page_size=100))
    assert sorted(p.trace_id for p in window) == [f"{i:032x}" for i in range(5, 10)]
    with pytest.raises(InvalidPageToken):
        store.list_traces(TraceQuery(page_token="not-a-token"))


def test_unknown_trace_is_none(store):
    assert store.get_trace("f" * 32) is None and not store.trace_exists("f" * 32)


def test_migrations_are_rerunnable(store):
    from llmops.tracing.store import migrate

    migrate(store.engine)  # already at head: a no-op, not an error
    store.write_spans([span(T1, "a" * 16, "x", 1, 2)])
    assert store.trace_exists(T1)


def score_event(trace, name, value, evaluator, status=common_pb2.SCORE_STATUS_OK):
    return events_pb2.ScoreEvent(trace_id=trace, score=common_pb2.Score(
        name=name, value=value, evaluator=evaluator, version="1", status=status))


def test_list_traces_filters_by_score_and_shows_scores(store):
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    store.write_completions([completion(t, 1_000_000 + i) for i, t in enumerate((a, b, c))])
    store.write_scores([score_event(a, "faithfulness", 0.9, "rag.faithfulness.cheap"),
                        score_event(b, "faithfulness", 0.2, "rag.faithfulness.cheap"),
                        score_event(b, "faithfulness", 0.8, "rag.faithfulness.llm"),
                        score_event(c, "faithfulness", 0.1, "rag.faithfulness.cheap", common_pb2.SCORE_STATUS_ERROR)])

    def ids(**kw):
        return [s.trace_id for s in store.list_traces(TraceQuery(**kw))[0]]

    assert ids(score_name="faithfulness", max_score=0.5) == [b]          # the error score never matches
    assert ids(score_name="faithfulness", min_score=0.7) == [b, a]       # any evaluator
    assert ids(score_name="faithfulness", evaluator="rag.faithfulness.cheap", min_score=0.7) == [a]
    assert ids(score_name="answer_relevancy") == []
    rows, _ = store.list_traces(TraceQuery(score_name="faithfulness", max_score=0.5))
    assert {(s.evaluator, s.value) for s in rows[0].scores} == {("rag.faithfulness.cheap", 0.2),
                                                                ("rag.faithfulness.llm", 0.8)}


def test_eval_runs_are_stored_listed_and_names_are_unique(store):
    from llmops.tracing.store import RunNameTaken
    from llmops.v1 import tracing_pb2

    run = tracing_pb2.EvalRun(name="baseline", dataset="qa.jsonl", dataset_hash="f" * 64, model="m1",
                              prompt_template="rag", prompt_version=2, retrieval=True, evaluators=["reference.token_f1"],
                              aggregates={"reference.token_f1": 0.5})
    run.items.add(item_id="q1", question="Q1", reference="R1", answer="A1", contexts=["c1"], trace_id=T1,
                  scores=[common_pb2.Score(name="token_f1", value=0.5, evaluator="reference.token_f1", version="1",
                                           status=common_pb2.SCORE_STATUS_OK)])
    run.items.add(item_id="q2", question="Q2", error="UNAVAILABLE: down")
    saved = store.save_eval_run(run)
    assert len(saved.run_id) == 32 and saved.item_count == 2 and saved.error_count == 1
    got = store.get_eval_run("baseline")
    assert got == store.get_eval_run(saved.run_id)
    assert [i.item_id for i in got.items] == ["q1", "q2"]
    assert got.items[0].scores[0].value == 0.5 and list(got.items[0].contexts) == ["c1"]
    assert got.aggregates["reference.token_f1"] == 0.5 and got.retrieval
    with pytest.raises(RunNameTaken):
        store.save_eval_run(tracing_pb2.EvalRun(name="baseline", dataset_hash="e" * 64))
    store.save_eval_run(tracing_pb2.EvalRun(name="other", dataset_hash="e" * 64))
    assert [r.name for r in store.list_eval_runs()] == ["other", "baseline"]
    assert [r.name for r in store.list_eval_runs(dataset_hash="f" * 64)] == ["baseline"]
    assert not store.list_eval_runs()[1].items                  # listing leaves the items out
    assert store.get_eval_run("missing") is None


def served(trace, end_us, *, deployment, version, arm, **fields):
    c = completion(trace, end_us)
    c.metadata["app"] = "tests"
    c.route, c.route_revision, c.deployment, c.deployment_version, c.arm = "chat", 5, deployment, version, arm
    for k, v in fields.items():
        setattr(c, k, v)
    return c


def test_a_trace_shows_and_lists_by_the_deployment_version_that_answered(store):
    primary, canary, shadow, failed, plain = "a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32
    store.write_completions([
        served(primary, 1_000_000, deployment="smol", version=1, arm="primary", attempts=3, fallback=True),
        served(canary, 1_000_001, deployment="smol", version=2, arm="canary", attempts=1),
        served(shadow, 1_000_002, deployment="smol", version=2, arm="shadow", attempts=1, shadow_of=canary),
        served(failed, 1_000_003, deployment="smol", version=2, arm="canary", attempts=2, error="UNAVAILABLE: 503"),
        completion(plain, 1_000_004),
    ])
    t = store.get_trace(primary)
    assert (t.completion.deployment, t.completion.deployment_version, t.completion.arm) == ("smol", 1, "primary")
    assert t.summary.metadata == {"app": "tests", "llmops.route": "chat", "llmops.route_revision": "5",
                                  "llmops.deployment": "smol", "llmops.deployment_version": "1",
                                  "llmops.arm": "primary", "llmops.attempts": "3", "llmops.fallback": "true"}
    s1 = t.summary
    assert (s1.route, s1.route_revision, s1.deployment, s1.deployment_version, s1.arm, s1.attempts, s1.fallback) == (
        "chat", 5, "smol", 1, "primary", 3, True)
    assert store.get_trace(failed).summary.error == "UNAVAILABLE: 503"
    assert store.get_trace(shadow).summary.shadow_of == canary
    sh = store.get_trace(shadow).summary.metadata
    assert sh["llmops.arm"] == "shadow" and sh["llmops.shadow_of"] == canary and "llmops.fallback" not in sh
    assert store.get_trace(failed).summary.metadata["llmops.error"] == "UNAVAILABLE: 503"
    assert not [k for k in store.get_trace(plain).summary.metadata if k.startswith("llmops.")]   # not routed

    def ids(**kw):
        return [s.trace_id for s in store.list_traces(TraceQuery(**kw))[0]]

    assert ids(deployment="smol") == [failed, shadow, canary, primary]
    assert ids(deployment="smol", deployment_version=2) == [failed, shadow, canary]
    assert ids(deployment="smol", deployment_version=2, arm="canary") == [failed, canary]
    assert ids(route="chat", arm="primary") == [primary]
    assert ids(deployment="other") == []
    rows, _ = store.list_traces(TraceQuery(arm="shadow"))
    assert rows[0].metadata["llmops.deployment_version"] == "2"
    # a redelivery with other serving details overwrites them, as it does the rest of the completion
    store.write_completions([served(primary, 1_000_000, deployment="smol", version=1, arm="primary", attempts=1)])
    assert "llmops.fallback" not in store.get_trace(primary).summary.metadata


def test_prune_deletes_what_started_before_the_cutoff_with_its_spans_scores_and_feedback(store):
    """LLMOPS_TRACE_RETENTION_DAYS: old traces go with everything of theirs, in batches; a young
    trace, an old score of a trace never seen (orphan) aside, and eval runs stay."""
    from llmops.v1 import tracing_pb2

    now = int(time.time() * 1e6)
    old = [f"{i:032x}" for i in range(1, 6)]
    young, orphan_old, orphan_young = "f" * 32, "e" * 32, "d" * 32
    day = 86_400 * 10**6
    for tid, at in [*((t, now - 40 * day) for t in old), (young, now - day)]:
        store.write_completions([completion(tid, at)])
        store.write_spans([span(tid, "a" * 16, "generate", at - 1000, at)])
        store.write_feedback([common_pb2.Feedback(id=f"fb-{tid}", trace_id=tid, score=1.0, created_at=ts(at))])
    def score_of(tid, at):
        return events_pb2.ScoreEvent(trace_id=tid, score=common_pb2.Score(
            name="faithfulness", evaluator="rag.faithfulness.cheap", version="1", value=0.5, created_at=ts(at)))
    store.write_scores([score_of(t, now - 40 * day) for t in old] + [score_of(young, now - day),
                       score_of(orphan_old, now - 40 * day), score_of(orphan_young, now - day)])
    store.save_eval_run(tracing_pb2.EvalRun(name="kept", dataset_hash="a" * 64))

    removed = store.prune(now - 30 * day, batch=2)       # three transactions of old traces
    assert removed == {"traces": 5, "spans": 5, "scores": 6, "feedback": 5}
    assert all(store.get_trace(t) is None for t in old)
    kept = store.get_trace(young)
    assert kept is not None and len(kept.spans) == 1 and len(kept.scores) == 1 and len(kept.feedback) == 1
    assert store.count_spans() == 1 and store.get_eval_run("kept") is not None
    assert store.prune(now - 30 * day) == {"traces": 0, "spans": 0, "scores": 0, "feedback": 0}   # idempotent
