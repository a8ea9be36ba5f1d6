"""The publisher's books against the real embedded broker: one request's spans and completion are
one unit (buffered, delivered or counted undelivered together); the buffer is bounded in events and
in bytes; an event too large for the producer is refused with its unit; drops are logged as one line
per interval with counts; stop() ends within its budget and counts what it could not deliver."""
import asyncio
import contextlib
import logging
import re
import time
from collections import defaultdict

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from llmops.common import metrics
from llmops.common.broker import EmbeddedBroker
from llmops.common.bus import EventBus
from llmops.common.envelope import traceparent
from llmops.common.topics import ensure_topics
from llmops.v1 import events_pb2
from tests.support import consume_until, free_port, make_settings

SPANS_PER_UNIT = 3


def request_unit(s, i: int, answer_bytes: int = 100):
    """What the inference engine publishes for one request: its spans, then its completion."""
    tid = f"{i + 1:032x}"
    out = []
    for j in range(SPANS_PER_UNIT):
        sp = events_pb2.SpanEvent(trace_id=tid, span_id=f"{i * 16 + j + 1:016x}", name=f"step{j}")
        out.append((s.topic("spans"), tid, sp, traceparent(tid, sp.span_id)))
    ev = events_pb2.CompletionEvent(trace_id=tid, model="m", prompt="q", answer="a" * answer_bytes)
    out.append((s.topic("completions"), tid, ev, traceparent(tid, out[0][2].span_id)))
    return out


def read_traces(kafka, s, want: int) -> dict[str, list[str]]:
    """Every event on the spans and completions topics, by trace id (read until ``want`` in all)."""
    by_trace: dict[str, list[str]] = defaultdict(list)
    for topic, cls in ((s.topic("spans"), events_pb2.SpanEvent), (s.topic("completions"), events_pb2.CompletionEvent)):
        share = want * (SPANS_PER_UNIT if cls is events_pb2.SpanEvent else 1) // (SPANS_PER_UNIT + 1)
        msgs = consume_until(kafka, topic, lambda out, n=share: len(out) >= n, what=f"{share} events") if share else []
        for m in msgs:
            by_trace[cls.FromString(m.value).trace_id].append(topic)
    return by_trace


def undelivered(topic: str, reason: str) -> float:
    return metrics.EVENTS_UNDELIVERED.labels(topic, reason)._value.get()


def test_a_full_buffer_refuses_whole_units_so_every_trace_is_whole_or_absent(kafka, tmp_path):
    s = make_settings(tmp_path, kafka, publish_queue_size=22)   # 5 units of 4 events, and 2 slots over

    async def run():
        await ensure_topics(s)
        bus = EventBus(s)
        await bus.start()
        results = [bus.publish_unit(request_unit(s, i)) for i in range(40)]   # no await: the buffer fills
        await bus.flush()
        await bus.stop()
        return results, bus.stats

    before = undelivered(s.topic("completions"), "buffer_full")
    results, stats = asyncio.run(run())
    assert results[:5] == [True] * 5 and results.count(True) == 5   # the 6th unit does not fit in 2 slots
    assert (stats.units_published, stats.units_undelivered) == (5, 35)
    assert stats.published == 20 and stats.undelivered_by_reason == {"buffer_full": 35 * 4}
    assert undelivered(s.topic("completions"), "buffer_full") - before == 35
    by_trace = read_traces(kafka, s, stats.published)
    assert len(by_trace) == 5
    assert all(sorted(topics) == sorted([s.topic("spans")] * 3 + [s.topic("completions")])
               for topics in by_trace.values())
    accepted = {f"{i + 1:032x}" for i, ok in enumerate(results) if ok}
    assert set(by_trace) == accepted


def test_the_buffer_is_bounded_in_bytes_and_frees_as_the_broker_acknowledges(kafka, tmp_path):
    s = make_settings(tmp_path, kafka, publish_buffer_bytes=64 * 1024)

    async def run():
        await ensure_topics(s)
        bus = EventBus(s)
        await bus.start()
        first = [bus.publish_unit(request_unit(s, i, answer_bytes=10_000)) for i in range(20)]
        await bus.flush()
        later = bus.publish_unit(request_unit(s, 100, answer_bytes=10_000))   # room again once acknowledged
        await bus.flush()
        await bus.stop()
        return first, later, bus.stats

    first, later, stats = asyncio.run(run())
    accepted = first.count(True)
    assert 1 <= accepted < 20 and first == [True] * accepted + [False] * (20 - accepted)
    assert accepted * 10_000 <= 64 * 1024 < (accepted + 1) * 11_500   # a unit: 10 KB of answer and its spans
    assert later is True
    assert stats.units_published == accepted + 1 and stats.units_undelivered == 20 - accepted
    assert stats.undelivered_by_reason == {"buffer_full": (20 - accepted) * 4}


def test_an_event_too_large_for_the_producer_is_refused_with_its_unit(kafka, tmp_path):
    s = make_settings(tmp_path, kafka, kafka_max_message_bytes=16 * 1024)

    async def run():
        await ensure_topics(s)
        bus = EventBus(s)
        await bus.start()
        big = bus.publish_unit(request_unit(s, 0, answer_bytes=20_000))
        small = bus.publish_unit(request_unit(s, 1))
        await bus.flush()
        with pytest.raises(MessageSizeTooLargeError, match="LLMOPS_KAFKA_MAX_MESSAGE_BYTES"):
            await bus.send_many(request_unit(s, 2, answer_bytes=20_000))   # nothing of it is sent
        await bus.stop()
        return big, small, bus.stats

    big, small, stats = asyncio.run(run())
    assert (big, small) == (False, True)
    assert stats.undelivered_by_reason == {"too_large": 4} and (stats.units_published, stats.units_undelivered) == (1, 1)
    by_trace = read_traces(kafka, s, 4)
    assert set(by_trace) == {f"{2:032x}"} and len(by_trace[f"{2:032x}"]) == 4


def test_drops_are_logged_as_one_line_per_interval_with_counts(kafka, tmp_path, caplog):
    s = make_settings(tmp_path, kafka, publish_queue_size=4)
    lines = lambda: [r.getMessage() for r in caplog.records if "not delivered in the last" in r.getMessage()]  # noqa: E731

    async def run():
        await ensure_topics(s)
        bus = EventBus(s, drop_log_interval_s=0.5)
        await bus.start()
        assert bus.publish_unit(request_unit(s, 0))
        for i in range(1, 31):                 # 30 units refused: 120 events
            assert not bus.publish_unit(request_unit(s, i))
        assert len(lines()) == 1               # the first drop at once, the rest held for the interval
        deadline = time.monotonic() + 5
        while len(lines()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await bus.flush()
        await bus.stop()

    with caplog.at_level(logging.ERROR, logger="llmops.common.bus"):
        asyncio.run(run())
    got = lines()
    assert len(got) == 2, got
    counts = [tuple(map(int, re.match(r"(\d+) events in (\d+) units", line).groups())) for line in got]
    assert counts == [(4, 1), (116, 29)]
    assert f"{s.topic('spans')}/buffer_full=87" in got[1] and f"{s.topic('completions')}/buffer_full=29" in got[1]


@contextlib.contextmanager
def own_broker(tmp_path):
    """An embedded broker of the test's own (the test stops it), and settings on it."""
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "broker.log")
    asyncio.run(broker.start())
    try:
        yield broker, make_settings(tmp_path, broker.bootstrap)
    finally:
        broker.stop()


def test_stop_with_the_broker_gone_returns_within_its_budget_and_counts_everything(tmp_path, caplog):
    with own_broker(tmp_path) as (broker, s):
        async def run():
            await ensure_topics(s)
            bus = EventBus(s)
            await bus.start()
            assert bus.publish_unit(request_unit(s, 0))
            await bus.flush()                          # delivered while the broker is up
            broker.stop()
            accepted = [bus.publish_unit(request_unit(s, i)) for i in range(1, 11)]   # handed, never acknowledged
            ev = events_pb2.SpanEvent(trace_id="f" * 32, span_id="e" * 16, name="x")
            accepted.append(bus.publish(f"{s.topic_prefix}unknown", ev.trace_id, ev))   # stuck on its metadata
            accepted += [bus.publish_unit(request_unit(s, i)) for i in range(11, 14)]  # behind it: never handed
            t0 = time.monotonic()
            stats = await bus.stop(2.0)
            return accepted, time.monotonic() - t0, stats

        with caplog.at_level(logging.INFO, logger="llmops.common.bus"):
            accepted, took, stats = asyncio.run(run())
    assert all(accepted)
    assert took < 2.0 + 0.3, f"stop() took {took:.2f} s for a 2 s budget"
    assert stats.published == 4 and stats.undelivered_by_reason == {"shutdown": 53}
    assert (stats.units_published, stats.units_undelivered) == (1, 14)
    assert {k: stats.shutdown[k] for k in ("held", "undelivered", "never_sent", "unacknowledged")} == {
        "held": 53, "undelivered": 53, "never_sent": 13, "unacknowledged": 40}
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event bus stopped")]
    assert len(summary) == 1, summary
    assert "53 of the 53 events held at stop not delivered (13 never handed to the producer, 40 unacknowledged)" \
        in summary[0]


def test_an_otlp_span_too_large_for_a_kafka_message_is_rejected_and_the_rest_of_the_export_stored(kafka, tmp_path):
    """Before, send_many failed with the producer's error, the export got UNAVAILABLE and the
    exporter retried it for ever; now that span is rejected (partial success) and the rest sent."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2 as otlp_common
    from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace

    from llmops.tracing.otlp.assembler import CompletionAssembler
    from llmops.tracing.otlp.receiver import OtlpReceiver

    s = make_settings(tmp_path, kafka, kafka_max_message_bytes=16 * 1024)
    trace = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")

    def otlp_span(n: int, value: str) -> otlp_trace.Span:
        return otlp_trace.Span(trace_id=trace, span_id=n.to_bytes(8, "big"), name=f"op{n}",
                               start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_100_000_000,
                               attributes=[otlp_common.KeyValue(key="v", value=otlp_common.AnyValue(string_value=value))])

    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=otlp_common.AnyValue(string_value="app"))
    rs.scope_spans.add().spans.extend([otlp_span(1, "small"), otlp_span(2, "x" * 30_000), otlp_span(3, "small")])

    async def run():
        await ensure_topics(s)
        bus = EventBus(s)
        await bus.start()
        try:
            return await OtlpReceiver(bus, s.topic_prefix, CompletionAssembler()).export(req, "grpc")
        finally:
            await bus.stop()

    result = asyncio.run(run())
    assert (result.accepted, result.rejected) == (2, 1)
    assert "LLMOPS_KAFKA_MAX_MESSAGE_BYTES is 16384" in result.message
    names = {events_pb2.SpanEvent.FromString(m.value).name
             for m in consume_until(kafka, s.topic("spans"), lambda out: len(out) >= 2, what="2 spans")}
    assert names == {"op1", "op3"}


def test_an_acked_unit_returns_once_the_broker_has_it_and_never_waits_past_its_bound(tmp_path):
    """publish_unit_acked (the request path answers after it): True once the broker acknowledged
    every event of the unit, so its events are already published when it returns; with the broker
    gone it returns False after its wait, and the unit is still counted when the bus stops."""
    with own_broker(tmp_path) as (broker, s):
        async def run():
            await ensure_topics(s)
            bus = EventBus(s)
            await bus.start()
            ok = await bus.publish_unit_acked(request_unit(s, 0), wait_s=10.0)
            published_at_return = bus.stats.published
            broker.stop()
            timeouts = metrics.PUBLISH_ACK_TIMEOUTS._value.get()
            t0 = time.monotonic()
            late = await bus.publish_unit_acked(request_unit(s, 1), wait_s=0.5)
            waited = time.monotonic() - t0
            counted = metrics.PUBLISH_ACK_TIMEOUTS._value.get() - timeouts
            stats = await bus.stop(1.0)
            return ok, published_at_return, late, waited, counted, stats

        ok, published_at_return, late, waited, counted, stats = asyncio.run(run())
    assert ok and published_at_return == SPANS_PER_UNIT + 1
    assert late is False and 0.5 <= waited < 1.5 and counted == 1
    assert stats.units_undelivered == 1 and stats.undelivered == SPANS_PER_UNIT + 1
