"""Drift under overload, as `llmops serve drift` runs it on the real embedded broker, MiniLM,
Evidently and SQLite: a backlog of completions far beyond what drift can embed (2 KB prompts, as
fast as a producer writes them). Drift may be slower than its input, but it never stops: its
group keeps committing progress on completions, and windows keep being judged while the backlog
lasts (the soak run saw the opposite: one close held the join for minutes, stage 2 starved behind
stage 1, and the sweeper judged windows only once no join entry was due, which a backlog never
allows)."""
from __future__ import annotations

import asyncio
import random
import time

from aiokafka import AIOKafkaProducer
from llmops.cli.workloads import python_prompts, synthetic_completion
from llmops.common.envelope import Record, encode
from llmops.drift.engine import DriftEngine
from llmops.drift.main import build as build_drift
from llmops.drift.monitor_config import load_specs
from llmops.drift.store import DriftStore
from llmops.v1 import common_pb2

from tests.integration.dlq_support import _committed
from tests.support import ServiceThread, make_settings, wait_until

WINDOW = 10
BACKLOG = 20_000


def big_completion(rng: random.Random, prompts: list[str]):
    p = rng.choice(prompts)
    c = synthetic_completion(((p + " ") * (2000 // (len(p) + 1) + 1))[:2000], rng)
    c.contexts.extend([common_pb2.Context(id=f"d{j}#0", document_id=f"d{j}", text="context " * 60, score=0.5)
                       for j in range(3)])
    return c


async def publish_backlog(s, n: int) -> None:
    p = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, enable_idempotence=False, acks="all",
                         linger_ms=20, max_batch_size=1 << 20, max_request_size=4 << 20)
    await p.start()
    rng, prompts, pending = random.Random(3), python_prompts(), []
    try:
        for _ in range(n):
            c = big_completion(rng, prompts)
            value, headers = encode(c)
            pending.append(await p.send(s.topic("completions"), value, key=c.trace_id.encode(), headers=headers))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await p.stop()


def committed_completions(s) -> int:
    offsets = asyncio.run(_committed(s, f"{s.topic_prefix}drift", [s.topic("completions")]))
    return sum(offsets.values())


def judged_windows(store: DriftStore) -> int:
    import sqlalchemy as sa
    with store.engine.connect() as c:
        return int(c.execute(sa.text("select count(*) from drift_windows")).scalar())


class Sent:
    """The engine's publisher: acknowledges at once."""

    def __init__(self) -> None:
        self.events = []

    async def send_many(self, items) -> None:
        self.events += items

    async def send_raw(self, *a) -> None:
        raise AssertionError("no observations topic here")


def test_the_join_and_the_windows_move_on_under_a_backlog(embedder, tmp_path):
    """The engine as the service wires it, stage 2 in-process: a backlog of completions pushed
    into the join as fast as it takes them. The join stays bounded (stage 1 waits for room), the
    handler never waits behind a close's embedding for long, and windows are judged while due
    entries remain (before: the sweeper held the join lock across each close's embedding and
    judged windows only once no entry was due)."""
    s = make_settings(tmp_path, "127.0.0.1:9", drift_window_size=WINDOW, drift_join_wait_s=0.2)
    store = DriftStore(s.drift_db_url)
    sent = Sent()
    table: dict = {}
    engine = DriftEngine(load_specs(s), store, embedder.embed, sent, table, reports_dir=s.drift_reports_dir,
                         topic_prefix=s.topic_prefix, join_wait_s=0.2, sweep_interval_s=0.2, max_pending=512)
    rng, prompts = random.Random(5), python_prompts()

    def batch(start: int, n: int) -> list[Record]:
        out = []
        for i in range(start, start + n):
            c = big_completion(rng, prompts)
            value, headers = encode(c)
            out.append(Record(s.topic("completions"), 0, i, c.trace_id.encode(), value, headers))
        return out

    async def run() -> tuple[int, int, float, int]:
        await engine.start()
        fed, slowest, most_pending = 0, 0.0, 0
        deadline = time.monotonic() + 600
        try:
            while judged_windows(store) < 4:   # the first window is the reference
                assert time.monotonic() < deadline, f"{judged_windows(store)} windows after {fed} completions fed"
                t = time.monotonic()
                assert await engine.handle(batch(fed, 64)) == []
                slowest = max(slowest, time.monotonic() - t)
                fed += 64
                most_pending = max(most_pending, len(table))
            return fed, most_pending, slowest, judged_windows(store)
        finally:
            await engine.stop()

    fed, most_pending, slowest, windows = asyncio.run(run())
    print(f"engine under a backlog: {fed} fed, {windows} windows, at most {most_pending} pending, "
          f"slowest handle {slowest:.1f} s")
    assert windows >= 4
    assert most_pending <= 512 + 64            # bounded: stage 1 waited for room
    assert fed > 512                           # and it went on once closes made room
    assert sent.events, "the judged windows were published"
    store.close()


def test_a_backlog_beyond_capacity_is_slow_not_stuck(kafka, tmp_path):
    s = make_settings(tmp_path, kafka, drift_window_size=WINDOW, drift_join_wait_s=0.5)
    drift = ServiceThread("drift", s, build_drift).start()
    store = DriftStore(s.drift_db_url)
    try:
        asyncio.run(publish_backlog(s, BACKLOG))
        t0 = time.monotonic()
        # the first window is the reference; then judged windows, while the backlog is far from done
        wait_until(lambda: judged_windows(store) >= 3, timeout_s=420, interval_s=2,
                   what="3 windows judged under the backlog")
        first, windows = committed_completions(s), judged_windows(store)
        assert first < BACKLOG, "the backlog is beyond drift's capacity: it cannot be done yet"
        # and it goes on: more commits and more windows, not a single burst before a stall
        wait_until(lambda: committed_completions(s) > first and judged_windows(store) > windows,
                   timeout_s=300, interval_s=2, what="committed progress and another window")
        print(f"drift under a backlog: {committed_completions(s)} completions committed and "
              f"{judged_windows(store)} windows in {time.monotonic() - t0:.0f} s")
        assert drift.thread.is_alive() and drift.error is None
    finally:
        store.close()
        drift.stop()
