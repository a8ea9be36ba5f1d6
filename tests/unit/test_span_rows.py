"""Spans made the trace store's rows straight from their Kafka bytes (the ingest's fast path,
attributes read as raw map entries) give exactly the rows the general path gives (SpanEvent
parsed, then ``span_row``), and what that path cannot read goes the general way, with the same
reasons for what is invalid."""
from __future__ import annotations

import json

import pytest
from llmops.common.envelope import Record, encode, traceparent
from llmops.tracing.ingest import TraceIngestor
from llmops.tracing.store import SpanWire, SqlTraceStore
from llmops.v1 import common_pb2, events_pb2

TRACE = "0af7651916cd43dd8448eb211c80319c"


def span(attributes: dict[str, str], span_id: str = "b7ad6b7169203331", **fields) -> events_pb2.SpanEvent:
    sp = events_pb2.SpanEvent(trace_id=TRACE, span_id=span_id, name="generation", service="inference",
                              attributes=attributes, status=common_pb2.SPAN_STATUS_OK, **fields)
    sp.start_time.FromMicroseconds(1_700_000_000_123_456)
    sp.end_time.FromMicroseconds(1_700_000_000_223_456)
    return sp


def general_row(raw: bytes) -> tuple:
    return SqlTraceStore.span_row(events_pb2.SpanEvent.FromString(raw))


def wire_row(raw: bytes) -> tuple:
    return SqlTraceStore.wire_span_row(SpanWire.FromString(raw))


def same(a: tuple, b: tuple) -> bool:
    return a[:9] == b[:9] and json.loads(a[9]) == json.loads(b[9])


@pytest.mark.parametrize("attributes", [
    {},
    {"model": "chat", "rag": "True"},
    {"query": "what is the refund policy " * 20, "k" * 300: "v"},          # lengths past one varint byte
    {"": "empty key", "empty value": ""},
    {"unicode": "héllo wörld ✓ 日本", "quote\"back\\slash": "line\nbreak\ttab"},
    {f"k{i}": str(i) for i in range(50)},
])
def test_rows_from_the_wire_are_the_general_rows(attributes):
    raw = span(attributes, parent_span_id="00f067aa0ba902b7", status_message="ok").SerializeToString()
    assert same(wire_row(raw), general_row(raw))
    assert same(wire_row(raw), general_row(raw))          # again, from the attribute cache


def test_a_key_given_twice_keeps_its_last_value_as_a_protobuf_map_does():
    # two messages' bytes one after the other parse as one (merged): the second "model" entry wins
    raw = span({"model": "a", "x": "1"}).SerializeToString() + span({"model": "b"}).SerializeToString()
    assert json.loads(general_row(raw)[9]) == {"model": "b", "x": "1"}
    assert same(wire_row(raw), general_row(raw))


def test_an_entry_the_fast_path_cannot_read_raises_value_error():
    wire = SpanWire.FromString(span({}).SerializeToString())
    wire.attributes.append(b"\x1a\x01x")                  # field 3 in a map entry
    with pytest.raises(ValueError):
        SqlTraceStore.wire_span_row(wire)
    wire.attributes[0] = b"\x0a\x05ab"                    # truncated
    with pytest.raises(ValueError):
        SqlTraceStore.wire_span_row(wire)
    wire.attributes[0] = b"\x0a\x02\xff\xfe"              # not UTF-8
    with pytest.raises(ValueError):
        SqlTraceStore.wire_span_row(wire)


class RowStore:
    span_row = staticmethod(SqlTraceStore.span_row)
    wire_span_row = staticmethod(SqlTraceStore.wire_span_row)

    def write_span_rows(self, rows): return len(rows)
    def write_spans(self, spans): return len(spans)
    def write_completions(self, items): return len(items)
    def write_scores(self, items): return len(items)
    def write_feedback(self, items): return len(items)


class GeneralStore(RowStore):
    wire_span_row = None


def records(events_and_values) -> list[Record]:
    out = []
    for i, (value, headers) in enumerate(events_and_values):
        out.append(Record("llmops.spans", 0, i, TRACE.encode(), value, tuple(headers)))
    return out


def test_the_ingest_fast_path_decodes_and_rejects_as_the_general_path():
    good = span({"model": "chat", "query": "q" * 200})
    bad_id = span({}, span_id="not-hex")
    bad_entry = SpanWire.FromString(span({}).SerializeToString())
    bad_entry.attributes.append(b"\x0a\x02\xff\xfe")       # an attribute that is not UTF-8
    items = [encode(good, traceparent(TRACE, good.span_id)), encode(bad_id),
             (bad_entry.SerializeToString(), encode(good)[1]),
             (good.SerializeToString(), [("content-type", b"application/x-protobuf")]),   # no type header
             (json.dumps({"traceId": TRACE}).encode(), [("content-type", b"application/json")])]
    fast_rejected, fast = TraceIngestor(RowStore(), "llmops.").decode(records(items))
    slow_rejected, slow = TraceIngestor(GeneralStore(), "llmops.").decode(records(items))
    assert [r.offset for r, _ in fast["llmops.spans"]] == [r.offset for r, _ in slow["llmops.spans"]] == [0, 3]
    assert all(same(a, b) for (_, a), (_, b) in zip(fast["llmops.spans"], slow["llmops.spans"]))
    assert ([(r.record.offset, r.reason) for r in fast_rejected]
            == [(r.record.offset, r.reason) for r in slow_rejected])
    assert sorted(r.record.offset for r in fast_rejected) == [1, 2, 4]
