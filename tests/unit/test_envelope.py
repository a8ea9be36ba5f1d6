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
