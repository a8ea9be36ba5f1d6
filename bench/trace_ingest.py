"""Trace ingestion: spans per second from publish until stored and queryable, through Kafka and
the tracing service (faust agent, batched idempotent writes), for SQLite and PostgreSQL.

Goal: at least 5,000 spans/s on this machine."""
from __future__ import annotations

import asyncio
import time
import uuid

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp

from bench.common import bench_settings, report
from llmops.common.bus import EventBus
from llmops.common.envelope import traceparent
from llmops.common.topics import ensure_topics
from llmops.cli.stack import Stack
from llmops.tracing.store import SqlTraceStore
from llmops.v1 import events_pb2

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_spans(n: int, spans_per_trace: int = 4) -> list[events_pb2.SpanEvent]:
    now = Timestamp()
    now.GetCurrentTime()
    out = []
    for i in range(n // spans_per_trace):
        tid = uuid.uuid4().hex
        for j in range(spans_per_trace):
            out.append(events_pb2.SpanEvent(trace_id=tid, span_id=uuid.uuid4().hex[:16], name=f"step{j}",
                                            service="bench", start_time=now, end_time=now,
                                            attributes={"model": "m", "i": str(i)}))
    return out


async def publish_all(s, spans) -> float:
    bus = EventBus(s)
    await ensure_topics(s)
    await bus.start()
    t0 = time.perf_counter()
    for sp in spans:
        while not bus.publish(s.topic("spans"), sp.trace_id, sp, traceparent(sp.trace_id, sp.span_id)):
            await asyncio.sleep(0.001)  # buffer full: let the drainer catch up (the bench must not lose any)
    await bus.flush(120)
    elapsed = time.perf_counter() - t0
    await bus.stop()
    assert bus.stats.undelivered == bus.stats.undelivered_by_reason.get("buffer_full", 0)
    return elapsed


def run_one(backend: str, n: int) -> list:
    schema = None
    overrides = {}
    if backend == "postgresql":
        schema = f"llmops_bench_{uuid.uuid4().hex[:8]}"
        eng = sa.create_engine(POSTGRES)
        with eng.begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        overrides["trace_db"] = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    s = bench_settings(**overrides, publish_queue_size=50_000)
    stack = Stack(s, services=("tracing",), on_progress=lambda m: None)
    asyncio.run(stack.start())
    store = SqlTraceStore(s.trace_db_url, run_migrations=False)
    try:
        spans = make_spans(n)
        t0 = time.perf_counter()
        publish_s = asyncio.run(publish_all(s, spans))
        while store.count_spans() < len(spans):
            if time.perf_counter() - t0 > 300:
                raise TimeoutError(f"only {store.count_spans()} of {len(spans)} spans stored after 300 s")
            time.sleep(0.05)
        total_s = time.perf_counter() - t0
        # queryable: a trace from the end of the stream comes back whole
        last = spans[-1].trace_id
        assert store.get_trace(last) is not None and len(store.get_trace(last).spans) == 4
    finally:
        store.close()
        asyncio.run(stack.stop())
        if schema:
            with sa.create_engine(POSTGRES).begin() as c:
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    return [backend, len(spans), publish_s, total_s, len(spans) / total_s]


def run(n: int = 40_000) -> dict:
    rows = [run_one("sqlite", n), run_one("postgresql", n)]
    extra = {"goal_spans_per_s": 5000, "goal_met": {r[0]: r[4] >= 5000 for r in rows}}
    report("trace_ingest", "Trace ingestion: publish -> Kafka -> tracing service -> store (queryable)",
           ["store", "spans", "publish s", "stored s", "spans/s"], rows, extra)
    return extra


if __name__ == "__main__":
    run()
