"""The event bus against the real embedded broker."""
import asyncio

from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.envelope import Record, traceparent
from llmops.common.topics import TOPICS, ensure_topics
from llmops.v1 import events_pb2
from tests.support import consume, make_settings


def test_publish_delivers_protobuf_with_type_and_traceparent_headers(kafka, tmp_path):
    s = make_settings(tmp_path, kafka)

    async def run():
        await ensure_topics(s)
        bus = EventBus(s)
        await bus.start()
        for i in range(50):
            ev = events_pb2.SpanEvent(trace_id=f"{i:032x}", span_id=f"{i:016x}", name=f"s{i}")
            assert bus.publish(s.topic("spans"), ev.trace_id, ev, traceparent(ev.trace_id, ev.span_id))
        await bus.flush()
        await bus.stop()
        return bus.stats

    stats = asyncio.run(run())
    assert stats.published == 50 and stats.undelivered == 0
    msgs = consume(kafka, s.topic("spans"), want=50)
    assert len(msgs) == 50
    got = {events_pb2.SpanEvent.FromString(m.value).name for m in msgs}
    assert got == {f"s{i}" for i in range(50)}
    m = msgs[0]
    h = dict(m.headers)
    assert h["llmops-type"] == b"llmops.v1.SpanEvent"
    ev = events_pb2.SpanEvent.FromString(m.value)
    assert m.key == ev.trace_id.encode() and h["traceparent"].decode().split("-")[1] == ev.trace_id


def test_topics_are_created_with_the_configured_partitions(kafka, tmp_path):
    from aiokafka.admin import AIOKafkaAdminClient

    s = make_settings(tmp_path, kafka, topic_partitions=2)

    async def run():
        await ensure_topics(s)
        await ensure_topics(s)  # idempotent
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            names = set(await admin.list_topics())
            desc = await admin.describe_topics([s.topic("spans")])
        finally:
            await admin.close()
        return names, desc

    names, desc = asyncio.run(run())
    assert {s.topic(t) for t in TOPICS} <= names
    assert len(desc[0]["partitions"]) == 2


def test_the_request_path_never_waits_and_counts_what_it_cannot_deliver(kafka, tmp_path):
    s = make_settings(tmp_path, kafka, publish_queue_size=5)

    async def run():
        bus = EventBus(s)
        ev = events_pb2.SpanEvent(trace_id="a" * 32, span_id="b" * 16, name="x")
        before_start = bus.publish(s.topic("spans"), "k", ev)   # not started: counted, not raised
        await ensure_topics(s)
        await bus.start()
        results = [bus.publish(s.topic("spans"), "k", ev) for _ in range(20)]  # no await: buffer overflows
        await bus.flush()
        await bus.stop()
        return before_start, results, bus.stats

    before, results, stats = asyncio.run(run())
    assert before is False
    assert results[:5] == [True] * 5 and results.count(False) == 15
    assert stats.undelivered_by_reason == {"bus_not_started": 1, "buffer_full": 15}
    assert stats.published == 5


def test_dead_letter_keeps_the_bytes_and_says_why(kafka, tmp_path):
    s = make_settings(tmp_path, kafka)

    async def run():
        await ensure_topics(s)
        bus = EventBus(s)
        await bus.start()
        rec = Record(topic=s.topic("spans"), partition=0, offset=42, key=b"key1", value=b"\x00garbage",
                     headers=[("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")])
        await DeadLetterQueue(bus, "grp").send(rec, "not a valid llmops.v1.SpanEvent protobuf")
        await bus.stop()

    asyncio.run(run())
    (m,) = consume(kafka, s.topic("dlq"), want=1)
    h = dict(m.headers)
    assert m.key == b"key1" and m.value == b"\x00garbage"
    assert h["dlq-reason"] == b"not a valid llmops.v1.SpanEvent protobuf"
    assert h["dlq-source-topic"] == s.topic("spans").encode() and h["dlq-source-offset"] == b"42"
    assert h["dlq-consumer-group"] == b"grp" and "traceparent" in h


def test_lag_monitor_reports_uncommitted_messages_per_group(kafka, tmp_path):
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from llmops.common import metrics
    from llmops.common.lag import LagMonitor
    from tests.support import produce

    s = make_settings(tmp_path, kafka)           # one partition per topic
    topic = s.topic("completions")
    produce(kafka, topic, [(b"k", b"v%d" % i, []) for i in range(7)])

    async def run():
        await ensure_topics(s)
        c = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=f"{s.topic_prefix}busy", enable_auto_commit=False)
        c.assign([TopicPartition(topic, 0)])
        await c.start()
        await c.commit({TopicPartition(topic, 0): OffsetAndMetadata(5, "")})
        await c.stop()
        mon = LagMonitor(s, {f"{s.topic_prefix}busy": [topic], f"{s.topic_prefix}idle": [topic]})
        await mon.start()
        try:
            return await mon.measure()
        finally:
            await mon.stop()

    lag = asyncio.run(run())
    assert lag == {(topic, f"{s.topic_prefix}busy"): 2, (topic, f"{s.topic_prefix}idle"): 7}
    assert metrics.CONSUMER_LAG.labels(topic, f"{s.topic_prefix}busy")._value.get() == 2
