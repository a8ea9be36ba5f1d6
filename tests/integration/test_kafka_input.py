"""The input topics as any producer sees them, on the real embedded broker with retrieval and
tracing in-process: protobuf's JSON mapping under ``content-type: application/json``, messages
typed by their topic, completions without a timestamp, and DLQ reasons that name the real cause."""
from __future__ import annotations

import json

import pytest

from llmops.cli.client import Client
from llmops.retrieval.main import build as build_retrieval
from llmops.tracing.main import build as build_tracing
from llmops.v1 import events_pb2, retrieval_pb2
from tests.support import consume_until, make_settings, produce, running_services, wait_until

JSON = [("content-type", b"application/json")]


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("kafka-input"), kafka)
    with running_services(s, (("retrieval", build_retrieval), ("tracing", build_tracing))):
        yield s, Client(s)


def searchable(client, query: str, collection: str) -> list[str]:
    r = client.retrieval.Search(retrieval_pb2.SearchRequest(query=query, collection=collection), timeout=10)
    return [c.document_id for c in r.results]


def dlq_reasons(s, topic: str, keys: set[bytes]) -> dict[bytes, str]:
    def mine(msgs):
        return {m.key: dict(m.headers)["dlq-reason"].decode() for m in msgs
                if dict(m.headers).get("dlq-source-topic") == s.topic(topic).encode() and m.key in keys}

    return mine(consume_until(s.kafka_bootstrap, s.topic("dlq"), lambda msgs: set(mine(msgs)) == keys,
                              timeout_s=30, what=f"the rejected {topic} messages"))


def test_json_and_header_less_protobuf_documents_are_indexed(stack):
    s, client = stack
    as_json = json.dumps({"id": "in:otter", "text": "Sea otters hold hands while they sleep.", "collection": "input",
                          "metadata": {"source": "etl"}}).encode()
    bare = events_pb2.DocumentEvent(id="in:heron", text="Grey herons stand still in shallow water to fish.",
                                    collection="input").SerializeToString()     # no headers at all
    produce(s.kafka_bootstrap, s.topic("documents"), [(b"in:otter", as_json, JSON), (b"in:heron", bare, [])])
    assert wait_until(lambda: searchable(client, "otters sleeping", "input")[:1] == ["in:otter"] or None,
                      timeout_s=30, what="the JSON document to be searchable")
    assert wait_until(lambda: searchable(client, "herons fishing", "input")[:1] == ["in:heron"] or None,
                      timeout_s=30, what="the protobuf document without headers to be searchable")
    hits = client.retrieval.Search(retrieval_pb2.SearchRequest(query="otters", collection="input"), timeout=10)
    assert hits.results[0].metadata["source"] == "etl"


def test_undecodable_documents_go_to_the_dlq_with_their_real_cause(stack):
    s, client = stack
    produce(s.kafka_bootstrap, s.topic("documents"), [
        (b"bad:typo", b'{"id": "bad:typo", "txt": "a typo"}', JSON),
        (b"bad:plain", b"hi", [("content-type", b"text/plain")]),      # "hi" parses as protobuf: it must not be
        (b"bad:utf8", b'{"id": "\xff"}', JSON),
        (b"bad:array", b'[{"id": "x"}]', JSON),
        (b"bad:no-header", b'{"id": "bad:no-header", "text": "t"}', []),
    ])
    reasons = dlq_reasons(s, "documents", {b"bad:typo", b"bad:plain", b"bad:utf8", b"bad:array", b"bad:no-header"})
    assert reasons[b"bad:typo"] == ('JSON llmops.v1.DocumentEvent does not match protobuf\'s JSON mapping: '
                                    'unknown field "txt" in llmops.v1.DocumentEvent')
    assert reasons[b"bad:plain"] == ("content-type 'text/plain' is not accepted; send application/x-protobuf "
                                     "or application/json")
    assert reasons[b"bad:utf8"].startswith("JSON llmops.v1.DocumentEvent is not valid UTF-8")
    assert reasons[b"bad:array"].startswith("JSON value is an array, not an object")
    assert "looks like JSON: send it with the header content-type: application/json" in reasons[b"bad:no-header"]
    assert not any("protobuf:" in r for k, r in reasons.items() if k != b"bad:no-header")


def test_json_events_of_one_trace_reach_the_trace_store(stack):
    s, client = stack
    tid = "1234" * 8
    span = {"traceId": tid, "spanId": "a1" * 8, "name": "external-step", "service": "etl",
            "startTime": "2025-06-01T10:00:00Z", "endTime": "2025-06-01T10:00:01.500Z", "attributes": {"k": "v"}}
    completion = {"traceId": tid, "model": "external-model", "prompt": "What do otters do?",  # no timestamp
                  "answer": "They hold hands.", "contexts": [{"documentId": "d1", "text": "Otters hold hands."}]}
    score = {"traceId": tid, "score": {"name": "helpfulness", "value": 0.75, "evaluator": "external.judge"}}
    feedback = {"traceId": tid, "feedback": {"id": "fb-1", "score": 1, "comment": "good"}}
    produce(s.kafka_bootstrap, s.topic("spans"), [(tid.encode(), json.dumps(span).encode(), JSON)])
    produce(s.kafka_bootstrap, s.topic("completions"), [(tid.encode(), json.dumps(completion).encode(), JSON)])
    produce(s.kafka_bootstrap, s.topic("scores"), [(tid.encode(), json.dumps(score).encode(), JSON)])
    produce(s.kafka_bootstrap, s.topic("feedback"), [(tid.encode(), json.dumps(feedback).encode(), JSON)])

    t = wait_until(lambda: (tr := client.get_trace(tid)) and tr.spans and tr.scores and tr.feedback
                   and tr.completion.answer and tr, timeout_s=30, what="the JSON span, completion, score and feedback")
    assert t.spans[0].name == "external-step" and t.spans[0].attributes["k"] == "v"
    assert t.spans[0].end_time.ToMilliseconds() - t.spans[0].start_time.ToMilliseconds() == 1500
    assert (t.scores[0].evaluator, t.scores[0].value) == ("external.judge", 0.75)
    assert t.feedback[0].id == "fb-1" and t.feedback[0].comment == "good"
    assert t.completion.model == "external-model" and t.completion.contexts[0].document_id == "d1"
    # the completion had no timestamp: it took its Kafka record's
    record = consume_until(s.kafka_bootstrap, s.topic("completions"), lambda msgs: any(m.key == tid.encode() for m in msgs),
                           what="the completion's record")
    ts_ms = next(m.timestamp for m in record if m.key == tid.encode())
    assert ts_ms > 0 and t.completion.timestamp.ToMilliseconds() == ts_ms


def test_undecodable_trace_events_go_to_the_dlq_with_their_real_cause(stack):
    s, client = stack
    produce(s.kafka_bootstrap, s.topic("completions"), [
        (b"c:unknown", b'{"traceId": "' + b"5" * 32 + b'", "answr": "typo"}', JSON),
        (b"c:charset", b'{"traceId": "' + b"5" * 32 + b'"}', [("content-type", b"application/json; charset=latin-1")]),
    ])
    produce(s.kafka_bootstrap, s.topic("scores"), [
        (b"s:plain", b"0.5", [("content-type", b"text/plain")]),
        (b"s:type", b"{}", [*JSON, ("llmops-type", b"llmops.v1.FeedbackEvent")]),
    ])
    completions = dlq_reasons(s, "completions", {b"c:unknown", b"c:charset"})
    assert 'unknown field "answr" in llmops.v1.CompletionEvent' in completions[b"c:unknown"]
    assert completions[b"c:charset"] == "charset 'latin-1' is not accepted; JSON must be UTF-8"
    scores = dlq_reasons(s, "scores", {b"s:plain", b"s:type"})
    assert scores[b"s:plain"].startswith("content-type 'text/plain' is not accepted")
    assert scores[b"s:type"] == "type header says 'llmops.v1.FeedbackEvent', topic carries 'llmops.v1.ScoreEvent'"
