import pytest

from llmops.common.envelope import (Record, UndecodableMessage, decode, encode, parse_traceparent,
                                    traceparent)
from llmops.v1 import events_pb2


def rec(value, headers=()):
    return Record(topic="llmops.spans", partition=0, offset=7, key=b"k", value=value, headers=list(headers))


def test_roundtrip_carries_type_and_traceparent():
    ev = events_pb2.SpanEvent(trace_id="a" * 32, span_id="b" * 16, name="generate")
    value, headers = encode(ev, traceparent("a" * 32, "b" * 16))
    h = dict(headers)
    assert h["llmops-type"] == b"llmops.v1.SpanEvent"
    assert h["traceparent"] == b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"
    assert decode(rec(value, headers), events_pb2.SpanEvent) == ev


def test_wrong_type_header_is_named_in_the_reason():
    value, headers = encode(events_pb2.DocumentEvent(id="d", text="t"))
    with pytest.raises(UndecodableMessage, match="DocumentEvent.*SpanEvent"):
        decode(rec(value, headers), events_pb2.SpanEvent)


def test_garbage_and_tombstones_are_undecodable():
    with pytest.raises(UndecodableMessage, match="not a valid llmops.v1.SpanEvent"):
        decode(rec(b"\xff\xff\xff\xff not protobuf"), events_pb2.SpanEvent)
    with pytest.raises(UndecodableMessage, match="tombstone"):
        decode(rec(None), events_pb2.SpanEvent)


@pytest.mark.parametrize("value,ok", [
    ("00-" + "1" * 32 + "-" + "2" * 16 + "-01", True),
    ("00-" + "0" * 32 + "-" + "2" * 16 + "-01", False),   # all-zero trace id is invalid (W3C)
    ("00-" + "1" * 31 + "-" + "2" * 16 + "-01", False),
    ("00-" + "x" * 32 + "-" + "2" * 16 + "-01", False),
    ("garbage", False),
])
def test_parse_traceparent(value, ok):
    assert (parse_traceparent(value) is not None) is ok


# -- content types: protobuf, protobuf's JSON mapping, and what is neither ---------------------
JSON = [("content-type", b"application/json")]


def doc(value, headers=(), topic="llmops.documents", timestamp_ms=0):
    return Record(topic=topic, partition=0, offset=1, key=b"d1", value=value, headers=list(headers),
                  timestamp_ms=timestamp_ms)


def test_a_message_without_a_type_header_is_typed_by_its_topic():
    ev = events_pb2.DocumentEvent(id="d1", text="otters hold hands")
    assert decode(doc(ev.SerializeToString()), events_pb2.DocumentEvent) == ev   # no headers at all


@pytest.mark.parametrize("content_type", [b"application/x-protobuf", b"application/protobuf",
                                          b"Application/X-Protobuf", b"application/x-protobuf; proto=llmops.v1"])
def test_protobuf_content_types(content_type):
    ev = events_pb2.DocumentEvent(id="d1", text="t")
    assert decode(doc(ev.SerializeToString(), [("content-type", content_type)]), events_pb2.DocumentEvent) == ev


@pytest.mark.parametrize("content_type", [b"application/json", b"application/json; charset=utf-8",
                                          b"application/json;charset=UTF-8", b'application/json; charset="utf-8"'])
def test_json_documents_are_parsed_by_protobufs_json_mapping(content_type):
    value = b'{"id": "d1", "text": "otters hold hands", "collection": "kb", "metadata": {"lang": "en"}}'
    ev = decode(doc(value, [("content-type", content_type)]), events_pb2.DocumentEvent)
    assert ev == events_pb2.DocumentEvent(id="d1", text="otters hold hands", collection="kb", metadata={"lang": "en"})


def test_header_names_are_case_insensitive():
    ev = decode(doc(b'{"id": "d1", "text": "t"}', [("Content-Type", b"application/json")]), events_pb2.DocumentEvent)
    assert ev.id == "d1"


def test_json_takes_camel_case_and_proto_names_and_rfc3339_timestamps():
    value = (b'{"traceId": "' + b"a" * 32 + b'", "root_span_id": "' + b"b" * 16 + b'", "timestamp": "2025-01-02T03:04:05Z",'
             b' "contexts": [{"documentId": "d1", "text": "t"}], "usage": {"promptTokens": 3}, "latencyMs": 1.5}')
    ev = decode(doc(value, JSON, topic="llmops.completions"), events_pb2.CompletionEvent)
    assert ev.trace_id == "a" * 32 and ev.root_span_id == "b" * 16 and ev.usage.prompt_tokens == 3
    assert ev.contexts[0].document_id == "d1" and ev.timestamp.seconds == 1735787045 and ev.latency_ms == 1.5


def test_a_json_document_with_the_json_content_type_is_not_read_as_protobuf():
    with pytest.raises(UndecodableMessage) as info:
        decode(doc(b'{"id": "d1", "txt": "typo"}', JSON), events_pb2.DocumentEvent)
    assert str(info.value) == ('JSON llmops.v1.DocumentEvent does not match protobuf\'s JSON mapping: '
                               'unknown field "txt" in llmops.v1.DocumentEvent')
    assert "protobuf:" not in str(info.value) and "Error parsing" not in str(info.value)


@pytest.mark.parametrize("value, reason", [
    (b"\xff\xfe{}", "JSON llmops.v1.DocumentEvent is not valid UTF-8: byte b'\\xff' at position 0"),
    (b'{"id": "d1",', "not valid JSON: Expecting property name enclosed in double quotes"),
    (b"", "not valid JSON: Expecting value"),
    (b'["d1"]', "JSON value is an array, not an object; a llmops.v1.DocumentEvent is a JSON object"),
    (b'"d1"', "JSON value is a string, not an object"),
    (b"null", "JSON value is null, not an object"),
    (b'{"id": "d1", "id": "d2"}', "duplicate key 'id' in a JSON object"),
    (b'{"id": 7}', "Failed to parse id field"),
    (b'{"id": "d1", "metadata": {"lang": 1}}', "Failed to parse metadata field"),
])
def test_bad_json_says_what_is_wrong(value, reason):
    with pytest.raises(UndecodableMessage) as info:
        decode(doc(value, JSON), events_pb2.DocumentEvent)
    assert reason in str(info.value)


def test_an_unknown_nested_field_names_its_message_and_where():
    value = b'{"traceId": "' + b"a" * 32 + b'", "contexts": [{"text": "t", "score2": 1}]}'
    with pytest.raises(UndecodableMessage,
                       match=r'unknown field "score2" in llmops\.v1\.Context \(at CompletionEvent\.contexts\[0\]\)'):
        decode(doc(value, JSON, topic="llmops.completions"), events_pb2.CompletionEvent)


def test_a_json_charset_other_than_utf8_is_refused():
    with pytest.raises(UndecodableMessage, match="charset 'latin-1' is not accepted; JSON must be UTF-8"):
        decode(doc(b'{"id": "d1"}', [("content-type", b"application/json; charset=latin-1")]), events_pb2.DocumentEvent)


def test_a_text_plain_value_is_refused_for_its_content_type_not_parsed_as_protobuf():
    assert events_pb2.DocumentEvent.FromString(b"hi").id == ""   # "hi" is a valid protobuf (an unknown field) ...
    with pytest.raises(UndecodableMessage) as info:                # ... but it was not sent as one
        decode(doc(b"hi", [("content-type", b"text/plain")]), events_pb2.DocumentEvent)
    assert str(info.value) == ("content-type 'text/plain' is not accepted; send application/x-protobuf "
                               "or application/json")


def test_json_is_not_accepted_on_a_topic_that_is_no_input_topic():
    value = b'{"id": "r1", "monitor": "m"}'
    with pytest.raises(UndecodableMessage, match="^JSON is not accepted on this topic"):
        decode(doc(value, JSON, topic="llmops.retrain"), events_pb2.RetrainEvent)


def test_json_sent_as_protobuf_gets_a_hint():
    with pytest.raises(UndecodableMessage, match="not a valid llmops.v1.DocumentEvent protobuf.*looks like JSON: "
                                                 "send it with the header content-type: application/json"):
        decode(doc(b'{"id": "d1", "text": "t"}'), events_pb2.DocumentEvent)


def test_json_payloads_are_those_of_the_input_topics():
    from llmops.common.envelope import JSON_PAYLOADS
    from llmops.common.topics import INPUT_TOPICS, TOPICS

    assert JSON_PAYLOADS == {f"llmops.v1.{TOPICS[t][1]}" for t in INPUT_TOPICS}


# -- completions: the Kafka record's timestamp stands in for a missing one ----------------------
def test_a_completion_without_timestamp_takes_the_records():
    from llmops.common.events import read_event

    value = b'{"traceId": "' + b"a" * 32 + b'", "prompt": "q", "answer": "a"}'
    ev = read_event(doc(value, JSON, topic="llmops.completions", timestamp_ms=1_700_000_000_123),
                    events_pb2.CompletionEvent)
    assert ev.timestamp.ToMilliseconds() == 1_700_000_000_123
    own = events_pb2.CompletionEvent(trace_id="a" * 32)
    own.timestamp.FromMilliseconds(1_000)
    kept = read_event(doc(own.SerializeToString(), topic="llmops.completions", timestamp_ms=1_700_000_000_123),
                      events_pb2.CompletionEvent)
    assert kept.timestamp.ToMilliseconds() == 1_000    # its own timestamp wins


def test_a_completion_without_any_timestamp_is_rejected():
    from llmops.common.events import read_event

    with pytest.raises(UndecodableMessage, match="CompletionEvent has no timestamp, and neither has its Kafka record"):
        read_event(doc(events_pb2.CompletionEvent(trace_id="a" * 32).SerializeToString(), topic="llmops.completions"),
                   events_pb2.CompletionEvent)
