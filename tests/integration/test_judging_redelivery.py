"""A completion delivered twice to the judging service (tracing beside it, the real broker, MiniLM
and llama.cpp as the judge) is judged twice with the same span ids and the same scores, so the
trace store keeps one set of judge spans."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from llmops.cli.client import Client
from llmops.judging.main import build as build_judging
from llmops.tracing.main import build as build_tracing
from llmops.v1 import events_pb2
from tests.integration.test_judging_service import GROUNDED, completion, judged_by_both_tiers, publish
from tests.support import consume_until, make_settings, running_services


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory):
    data = tmp_path_factory.mktemp("judging-redelivery")
    config = data / "judge.json"
    config.write_text(json.dumps({"evaluators": {"rag.faithfulness.llm": {"online": True, "rate": 1.0},
                                                 "rubric.helpfulness": {"online": False}}}))
    s = make_settings(data, kafka, judge_config=str(config))
    with running_services(s, (("tracing", build_tracing), ("judging", build_judging))):
        yield s, Client(s)


def judging_spans(msgs, trace_id: str) -> list[events_pb2.SpanEvent]:
    spans = [events_pb2.SpanEvent.FromString(m.value) for m in msgs if m.key == trace_id.encode()]
    return [sp for sp in spans if sp.service == "judging"]


def score_events(msgs, trace_id: str) -> list[tuple[bytes, bytes]]:
    """(the ScoreEvent without its created_at, its traceparent) of ``trace_id``."""
    out = []
    for m in msgs:
        if m.key == trace_id.encode():
            ev = events_pb2.ScoreEvent.FromString(m.value)
            ev.score.ClearField("created_at")   # when it was scored: the one field a re-judgement changes
            out.append((ev.SerializeToString(deterministic=True), dict(m.headers)["traceparent"]))
    return out


def test_a_redelivered_completion_gives_the_same_judge_spans_and_scores(stack):
    s, client = stack
    ev, sentinel = completion(GROUNDED), completion(GROUNDED)
    publish(s, ev)
    first = judged_by_both_tiers(client, ev)
    stored_once = sorted(sp.span_id for sp in first.spans if sp.service == "judging")
    assert {sp.name for sp in first.spans if sp.service == "judging"} >= {"judge cheap", "judge rag.faithfulness.llm",
                                                                         "judge.call"}
    publish(s, ev, sentinel)             # the redelivery, then a sentinel behind it on the one partition
    judged_by_both_tiers(client, sentinel)

    spans = judging_spans(consume_until(s.bootstrap_servers, s.topic("spans"),
                                        lambda ms: len(judging_spans(ms, ev.trace_id)) >= 2 * len(stored_once),
                                        what="the judge spans of both deliveries"), ev.trace_id)
    published = Counter(sp.span_id for sp in spans)
    assert sorted(published) == stored_once and set(published.values()) == {2}, published

    scores = score_events(consume_until(s.bootstrap_servers, s.topic("scores"),
                                        lambda ms: len(score_events(ms, ev.trace_id)) >= 2 * len(first.scores),
                                        what="the scores of both deliveries"), ev.trace_id)
    assert len(scores) == 2 * len(first.scores)
    assert set(Counter(scores).values()) == {2}      # each score event published twice, identical

    again = client.get_trace(ev.trace_id)
    assert sorted(sp.span_id for sp in again.spans if sp.service == "judging") == stored_once
    keys = [(sc.evaluator, sc.version, sc.name) for sc in again.scores]
    assert len(keys) == len(set(keys)) == len(first.scores)
