"""The trace store alone, under concurrent writers: spans per second written straight into the
store (no Kafka) by 1 and by 4 writer threads, each with its own connection, with a third of the
batches redelivered (as a rebalance would), on SQLite and PostgreSQL, side by side in one run, in
batches of the size the tracing service writes, with spans shaped like the inference service's.

This tells how much of trace_ingest's rate the store itself allows, and whether more tracing
workers sharing one PostgreSQL help. Every run checks that each span was stored exactly once."""
from __future__ import annotations

import random
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from llmops.tracing.store import SqlTraceStore

from bench.common import report
from bench.trace_ingest import POSTGRES, make_spans

BATCH = 8000   # what the tracing service writes per transaction at most (KafkaBatchWorker max_write)


def run_one(backend: str, writers: int, n: int) -> list:
    schema = None
    if backend == "postgresql":
        schema = f"llmops_bench_{uuid.uuid4().hex[:8]}"
        with sa.create_engine(POSTGRES).begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='llmops-bench-')}/traces.db"
    # writers queue for SQLite's one write lock: wait as long as that takes (the tracing service
    # retries a write whose lock wait ran out; a bare store call would fail)
    store = SqlTraceStore(url, write_lock_timeout_s=120)
    try:
        spans = make_spans(n)
        batches = [spans[i:i + BATCH] for i in range(0, len(spans), BATCH)]
        rng = random.Random(1)
        batches += rng.sample(batches, len(batches) // 3)   # redeliveries
        rng.shuffle(batches)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(store.write_spans, batches))
        elapsed = time.perf_counter() - t0
        stored = store.count_spans()
        assert stored == len(spans), f"{stored} stored of {len(spans)}"
        delivered = sum(len(b) for b in batches)
    finally:
        store.close()
        if schema:
            with sa.create_engine(POSTGRES).begin() as c:
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    return [backend, writers, len(spans), delivered, elapsed, len(spans) / elapsed]


def run(n: int = 100_000) -> dict:
    rows = [run_one(b, w, n) for b in ("sqlite", "postgresql") for w in (1, 4)]
    rate = {(r[0], r[1]): r[5] for r in rows}
    extra = {"batch": BATCH, "ratio_4_to_1": {b: rate[(b, 4)] / rate[(b, 1)] for b in ("sqlite", "postgresql")}}
    report("trace_store", "Trace store alone: spans/s written by 1 and 4 concurrent writers (1/3 of batches redelivered)",
           ["store", "writers", "spans", "delivered", "seconds", "spans/s"], rows, extra)
    print("4 writers / 1 writer: " + ", ".join(f"{b} {v:.2f}x" for b, v in extra["ratio_4_to_1"].items()))
    return extra


if __name__ == "__main__":
    run()
