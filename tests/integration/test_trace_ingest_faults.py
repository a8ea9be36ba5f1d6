"""The tracing sink under store faults, on the real broker and the real SQLite and PostgreSQL:
a store that refuses writes for a while holds the batch (progress ``retrying``, nothing
dead-lettered, nothing committed) and stores everything exactly once when it comes back; a
poison record among good ones is the only one dead-lettered."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import psycopg
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from llmops.common.batch_worker import KafkaBatchWorker
from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.envelope import traceparent
from llmops.common.liveness import OK, RETRYING
from llmops.common.topics import ensure_topics
from llmops.tracing.ingest import TraceIngestor
from llmops.tracing.store import SqlTraceStore
from llmops.v1 import common_pb2, events_pb2

from tests.support import make_settings

pytestmark = pytest.mark.integration

PG_DSN = "host=127.0.0.1 user=postgres dbname=test"


def spans_of(n_traces: int, first: int = 1, per_trace: int = 4) -> list[events_pb2.SpanEvent]:
    out = []
    for t in range(first, first + n_traces):
        tid = f"{t:032x}"
        for k in range(per_trace):
            sp = events_pb2.SpanEvent(trace_id=tid, span_id=f"{k + 1:016x}", name=f"step{k}", service="inference",
                                      attributes={"k": str(k)}, status=common_pb2.SPAN_STATUS_OK)
            sp.start_time.FromMicroseconds(1_000_000 * t + k)
            sp.end_time.FromMicroseconds(1_000_000 * t + k + 10)
            out.append(sp)
    return out


async def until(cond, timeout_s: float, what: str, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


class Sink:
    """The tracing service's ingest path as main.py wires it, on a store the test opened."""

    def __init__(self, settings, store: SqlTraceStore) -> None:
        self.settings, self.store = settings, store
        self.bus = EventBus(settings)
        self.group = f"{settings.topic_prefix}tracing"
        self.worker: KafkaBatchWorker | None = None

    async def start(self) -> Sink:
        await ensure_topics(self.settings)
        await self.bus.start()
        return await self.start_worker()

    async def start_worker(self) -> Sink:
        ingestor = TraceIngestor(self.store, self.settings.topic_prefix)
        self.worker = KafkaBatchWorker(self.settings, self.group, ingestor.topics, ingestor,
                                       lambda: DeadLetterQueue(self.bus, self.group), name="ingest_traces",
                                       max_batch=100, within_ms=20, backoff_first_s=0.1, backoff_max_s=0.5)
        await self.worker.start(60)
        return self

    async def publish(self, spans) -> None:
        for sp in spans:
            assert self.bus.publish(self.settings.topic("spans"), sp.trace_id, sp, traceparent(sp.trace_id, sp.span_id))
        await self.bus.flush(30)

    async def dead_letters(self) -> list:
        """Every record on the DLQ topic (one partition: isolated settings)."""
        c = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False,
                             group_id=None)
        await c.start()
        try:
            tp = TopicPartition(self.settings.topic("dlq"), 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            end = (await c.end_offsets([tp]))[tp]
            out = []
            while await c.position(tp) < end:
                for msgs in (await c.getmany(tp, timeout_ms=500)).values():
                    out += msgs
            return out
        finally:
            await c.stop()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop(10)
        await self.bus.stop()


def span_counts(store: SqlTraceStore) -> dict[str, tuple[int, int]]:
    """trace id -> (span_count on the trace, spans stored)."""
    with store.engine.connect() as conn:
        return {tid: (n, stored) for tid, n, stored in conn.execute(sa.text(
            "SELECT t.trace_id, t.span_count, count(s.span_id) FROM traces t JOIN spans s USING (trace_id) "
            "GROUP BY t.trace_id, t.span_count"))}


@pytest.fixture
def settings(kafka, tmp_path):
    return make_settings(tmp_path, kafka)


async def _held_then_stored(sink: Sink, release, reason_has: tuple[str, ...]) -> None:
    spans = spans_of(60)
    await sink.publish(spans)
    progress = sink.worker.progress
    await until(lambda: progress.state == RETRYING, 30, "the ingest to hold its batch (retrying)")
    assert any(t in progress.reason.lower() for t in reason_has), progress.reason
    assert progress.in_hand > 0
    assert sink.store.count_spans() == 0
    # it keeps holding (several retries), and dead-letters nothing meanwhile
    await until(lambda: time.monotonic() - progress.retrying_since > 1.5 and progress.state == RETRYING, 10,
                "the batch to stay held")
    assert await sink.dead_letters() == []
    release()
    await until(lambda: sink.store.count_spans() == len(spans) and progress.state == OK, 30,
                "every span stored once the store is back")
    assert progress.in_hand == 0 and progress.handled >= len(spans)
    assert set(span_counts(sink.store).values()) == {(4, 4)}
    assert await sink.dead_letters() == []
    # a full redelivery (as after a crash) adds nothing
    await sink.publish(spans)
    await until(lambda: progress.handled >= 2 * len(spans), 30, "the redelivery to be handled")
    assert sink.store.count_spans() == len(spans) and set(span_counts(sink.store).values()) == {(4, 4)}


async def test_a_locked_sqlite_store_holds_the_batch_and_stores_it_once_after(settings, tmp_path):
    path = tmp_path / "traces.db"
    store = SqlTraceStore(f"sqlite:///{path}", write_lock_timeout_s=0.2)
    sink = await Sink(settings, store).start()
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")       # another writer holds the database
        await _held_then_stored(sink, lambda: locker.execute("ROLLBACK"), ("database is locked",))
    finally:
        locker.close()
        await sink.stop()
        store.close()


@pytest.mark.postgres
async def test_a_locked_postgresql_table_holds_the_batch_and_stores_it_once_after(settings, postgres_url):
    store = SqlTraceStore(postgres_url, write_lock_timeout_s=0.2)
    schema = postgres_url.rsplit("%3D", 1)[1]
    sink = await Sink(settings, store).start()
    locker = psycopg.connect(PG_DSN)
    try:
        locker.execute(f'LOCK TABLE "{schema}".spans IN EXCLUSIVE MODE')   # writes wait, reads go on
        await _held_then_stored(sink, locker.rollback, ("lock timeout",))
    finally:
        locker.close()
        await sink.stop()
        store.close()


@pytest.mark.postgres
async def test_the_writers_connection_killed_mid_write_is_retried_not_dead_lettered(settings, postgres_url):
    """pg_terminate_backend of the connection that is writing (as a PostgreSQL restart does)."""
    store = SqlTraceStore(postgres_url + "&application_name=llmops-ingest-under-test", write_lock_timeout_s=30)
    schema = postgres_url.rsplit("%3D", 1)[1]
    sink = await Sink(settings, store).start()
    locker = psycopg.connect(PG_DSN, autocommit=False)
    admin = psycopg.connect(PG_DSN, autocommit=True)
    try:
        locker.execute(f'LOCK TABLE "{schema}".spans IN EXCLUSIVE MODE')   # keeps the write in flight
        spans = spans_of(30)
        await sink.publish(spans)
        waiting = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'llmops-ingest-under-test' "
                   "AND wait_event_type = 'Lock'")
        pids = await until(lambda: admin.execute(waiting).fetchall(), 30, "the writer to wait inside its write")
        for (pid,) in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        progress = sink.worker.progress
        await until(lambda: progress.state == RETRYING, 30, "the ingest to hold its batch")
        assert "terminat" in progress.reason.lower() or "closed" in progress.reason.lower(), progress.reason
        locker.rollback()
        await until(lambda: store.count_spans() == len(spans) and progress.state == OK, 30, "every span stored")
        assert set(span_counts(store).values()) == {(4, 4)}
        assert await sink.dead_letters() == []
    finally:
        locker.close()
        admin.close()
        await sink.stop()
        store.close()


async def test_a_worker_stopped_while_holding_a_batch_commits_nothing(settings, tmp_path):
    """The batch held when the worker stops is not committed: the next worker receives it again."""
    path = tmp_path / "traces.db"
    store = SqlTraceStore(f"sqlite:///{path}", write_lock_timeout_s=0.2)
    sink = await Sink(settings, store).start()
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        spans = spans_of(25)
        await sink.publish(spans)
        await until(lambda: sink.worker.progress.state == RETRYING, 30, "the batch to be held")
        t0 = time.monotonic()
        await sink.worker.stop(grace_s=3)
        assert time.monotonic() - t0 < 10          # a held batch does not keep the stop waiting past its grace
        locker.execute("ROLLBACK")
        assert store.count_spans() == 0
        await sink.start_worker()                  # the same group: resumes from the committed offsets
        await until(lambda: store.count_spans() == len(spans), 60, "the successor to store the held batch")
        assert set(span_counts(store).values()) == {(4, 4)}
        assert await sink.dead_letters() == []
    finally:
        locker.close()
        await sink.stop()
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_only_the_poison_records_among_good_ones_go_to_the_dlq(settings, tmp_path, backend, request):
    url = f"sqlite:///{tmp_path}/traces.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = SqlTraceStore(url)
    sink = await Sink(settings, store).start()
    try:
        good = spans_of(20)
        topic = settings.topic("spans")
        await sink.publish(good[:40])
        await sink.bus.send_raw(topic, b"x" * 32, b"\xff\x00 not a span", [("content-type", b"application/x-protobuf")])
        poison = 1
        if backend == "postgresql":   # a row the store itself refuses: longer than spans.name's varchar(200)
            bad = spans_of(1, first=99)[0]
            bad.name = "n" * 300
            await sink.publish([bad])
            poison += 1
        await sink.publish(good[40:])
        await until(lambda: store.count_spans() == len(good), 30, "the good spans to be stored")
        letters = []

        async def all_dead():
            letters[:] = await sink.dead_letters()
            return len(letters) >= poison

        deadline = time.monotonic() + 30
        while not await all_dead():
            assert time.monotonic() < deadline, f"{len(letters)} dead letters of {poison}"
            await asyncio.sleep(0.1)
        assert len(letters) == poison
        errors = sorted(dict(m.headers)["dlq-error"].decode() for m in letters)
        assert errors == (["UndecodableMessage"] if poison == 1 else ["DataError", "UndecodableMessage"]), errors
        assert all(dict(m.headers)["dlq-source-topic"].decode() == topic for m in letters)
        assert set(span_counts(store).values()) == {(4, 4)}
        assert sink.worker.progress.state == OK
    finally:
        await sink.stop()
        store.close()


async def test_the_ingest_rejoins_after_a_broker_restart(tmp_path):
    """The embedded broker restarted on its port (in memory: its topics and the group's offsets are
    gone, then re-created): the worker keeps its process, rejoins and stores what comes after."""
    from llmops.common.broker import EmbeddedBroker

    from tests.support import free_port

    broker = EmbeddedBroker(free_port(), tmp_path / "broker.log")
    await broker.start()
    settings = make_settings(tmp_path, broker.bootstrap)
    store = SqlTraceStore(f"sqlite:///{tmp_path}/traces.db")
    sink = await Sink(settings, store).start()
    try:
        before = spans_of(10)
        await sink.publish(before)
        await until(lambda: store.count_spans() == len(before), 30, "the spans before the restart")
        broker.stop()
        await broker.start()
        await ensure_topics(settings)           # what the supervisor does after a broker restart
        after = spans_of(10, first=100)
        deadline = time.monotonic() + 90
        while True:   # the producer too reconnects; publish until the broker took them
            try:
                await sink.publish(after)
                break
            except Exception:  # noqa: BLE001 - the bus is still reconnecting
                assert time.monotonic() < deadline
                await asyncio.sleep(0.5)
        await until(lambda: store.count_spans() == len(before) + len(after), 90,
                    "the spans published after the restart")
        assert sink.worker.progress.state == OK
        assert set(span_counts(store).values()) == {(4, 4)}
    finally:
        await sink.stop()
        store.close()
        broker.stop()


async def test_a_second_worker_joining_mid_stream_loses_and_duplicates_nothing(kafka, tmp_path):
    """A rebalance while batches are queued and in flight: the first worker drops what it had
    queued for the partitions it gives up (uncommitted), the second reads them again."""
    settings = make_settings(tmp_path, kafka, topic_partitions=2)
    store = SqlTraceStore(f"sqlite:///{tmp_path}/traces.db")
    first = await Sink(settings, store).start()
    second = Sink(settings, store)
    try:
        spans = spans_of(300)
        await first.publish(spans[:600])
        await second.start()                      # joins: the group rebalances over the two partitions
        await first.publish(spans[600:])
        await until(lambda: store.count_spans() == len(spans), 60, "every span stored by the two workers")
        assert set(span_counts(store).values()) == {(4, 4)}
        assert first.worker.progress.state == OK and second.worker.progress.state == OK
        assert second.worker.progress.handled > 0     # it took over a partition
        assert await first.dead_letters() == []
    finally:
        await second.stop()
        await first.stop()
        store.close()
