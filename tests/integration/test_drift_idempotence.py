"""Drift output survives crashes and redeliveries, on the real embedded broker and a real SQLite
store: window, reference and retrain-event ids come from the window itself, a judged window is
saved with its monitor's state before anything is published, and what was saved is published
after a restart. A crash between the save and the publish, a redelivery of the whole input and a
restart give exactly one retrain event on the topic and in ListRetrainEvents; a crash after the
publish (before it was marked) republishes the same id, which the store keeps once."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from llmops.common.bus import EventBus
from llmops.common.topics import ensure_topics
from llmops.drift.engine import DriftEngine
from llmops.drift.features import Observation
from llmops.drift.monitor_config import MonitorSpec
from llmops.drift.store import DriftStore
from llmops.v1 import events_pb2
from tests.support import make_settings

WINDOW = 20


class CrashOnce(Exception):
    """The injected failure: what a process killed at that step would leave behind."""


class PublisherFailingOnce:
    """The real bus, but the first batch that carries a retrain event fails, as if the process
    died after the save and before the publish."""

    def __init__(self, bus: EventBus) -> None:
        self.bus, self.failed = bus, 0

    async def send_many(self, messages):
        if not self.failed and any(isinstance(m[2], events_pb2.RetrainEvent) for m in messages):
            self.failed += 1
            raise CrashOnce("killed before the retrain event was published")
        await self.bus.send_many(messages)


class StoreFailingOnce:
    """The real store, with one step that fails the first time it is called."""

    def __init__(self, store: DriftStore, step: str) -> None:
        self.store, self.step, self.failed = store, step, 0

    def __getattr__(self, name):
        fn = getattr(self.store, name)
        if name != self.step:
            return fn

        def once(*args, **kwargs):
            if not self.failed:
                self.failed += 1
                raise CrashOnce(f"killed at {name}")
            return fn(*args, **kwargs)
        return once


def window(start: int, *, shifted: bool) -> list[Observation]:
    """WINDOW completions; a shifted window has longer prompts, worse retrieval and other answers."""
    rng = np.random.default_rng(start)
    rows = []
    for i in range(WINDOW):
        features = {"prompt_chars": float(rng.normal(400 if shifted else 120, 15)),
                    "answer_chars": float(rng.normal(900 if shifted else 300, 40)),
                    "prompt_tokens": float(rng.normal(60, 8)), "completion_tokens": float(rng.normal(48, 6)),
                    "latency_ms": float(rng.normal(1200, 100)),
                    "retrieval_top_score": float(rng.normal(0.2 if shifted else 0.6, 0.05)),
                    "finish_reason": "length" if shifted else "eos_token"}
        rows.append(Observation(trace_id=f"{start + i:032x}", ts_us=1_700_000_000_000_000 + (start + i) * 1000,
                                has_completion=True, model="m", prompt=("긴 질문 " if shifted else "q ") * (i + 1),
                                answer="a", features=features,
                                embedding=rng.normal(3.0 if shifted else 0.0, 1.0, 8).astype(np.float32)))
    return rows


INPUT = [window(0, shifted=False), window(100, shifted=True)]   # the reference, then a drifted window


def spec() -> MonitorSpec:
    return MonitorSpec("m", window_size=WINDOW, consecutive=1, cooldown_s=3600)


def engine(store, sender, tmp_path, prefix: str = "llmops.") -> DriftEngine:
    return DriftEngine([spec()], store, None, sender, {}, reports_dir=tmp_path / "reports", sweep_interval_s=3600,
                       topic_prefix=prefix)


async def feed(e: DriftEngine, rows: list[Observation]) -> None:
    """The rows as the monitor's partition delivers them (each a copy: the engine keeps what it takes)."""
    await e.observe([("m", Observation(**{**r.__dict__, "scores": dict(r.scores)}), {}) for r in rows])


async def read_topic(bootstrap: str, topic: str, done, timeout_s: float = 30.0) -> list:
    """The messages of ``topic`` from its start until ``done(messages)``; fails at the deadline."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await c.start()
    out: list = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done(out):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out on {topic}: {len(out)} messages read")
            for msgs in (await c.getmany(timeout_ms=200)).values():
                out.extend(msgs)
        return out
    finally:
        await c.stop()


@pytest.fixture
async def broker(kafka, tmp_path):
    s = make_settings(tmp_path, kafka)
    await ensure_topics(s, ["drift", "retrain"])
    bus = EventBus(s)
    await bus.start()
    yield s, bus
    await bus.stop()


# the sweeper sleeps an hour after its first pass: the tests call each step themselves
async def judge_all(e: DriftEngine, rounds) -> None:
    for rows in rounds:
        await feed(e, rows)
        await e.close_windows()


async def clean_run(tmp_path) -> tuple[list[str], list[str], str]:
    """The same input through an engine that nothing interrupts: (window ids, retrain ids, reference id)."""
    class Quiet:
        async def send_many(self, messages):
            return None

    store = DriftStore(f"sqlite:///{tmp_path / 'clean.db'}")
    e = engine(store, Quiet(), tmp_path / "clean")
    await e.start()
    try:
        await judge_all(e, INPUT)
        return ([w.report_id for w in store.windows_of("m")], [r.id for r in store.list_retrain("m", 50)[0]],
                e.monitors["m"].reference.reference_id)
    finally:
        await e.stop()
        store.close()


async def test_a_crash_between_save_and_publish_then_redelivery_and_restart_give_one_retrain_event(broker, tmp_path):
    s, bus = broker
    windows, retrains, ref_id = await clean_run(tmp_path)
    assert len(windows) == 1 and len(retrains) == 1, "the input drifts once: one window report, one retrain event"

    store = DriftStore(f"sqlite:///{tmp_path / 'drift.db'}")
    first = engine(store, PublisherFailingOnce(bus), tmp_path, s.topic_prefix)
    await first.start()
    await judge_all(first, INPUT)                              # the retrain event is saved; its publish fails
    [saved] = store.list_retrain("m", 50)[0]
    assert saved.id == retrains[0] and store.unpublished("m"), "saved before the publish, and waiting for it"
    assert first.monitors["m"].reference.reference_id == ref_id
    await first.stop()                                         # the process dies here

    second = engine(store, bus, tmp_path, s.topic_prefix)                    # the restart: same store, the broker works
    await second.start()
    try:
        for rows in INPUT:                                     # the whole input delivered again
            await feed(second, rows)
        assert await second.close_windows() == []              # no window twice: the monitor took each row once
        on_topic = await read_topic(s.bootstrap_servers, s.topic("retrain"), lambda ms: len(ms) >= 1)
        assert [events_pb2.RetrainEvent.FromString(m.value).id for m in on_topic] == retrains
        assert store.unpublished("m") == []
        # a marker window after it: once its report is on the drift topic, anything sent before is too
        await feed(second, window(200, shifted=False))
        await second.close_windows()
        new = [w.report_id for w in store.windows_of("m") if w.report_id not in windows]
        assert len(new) == 1, (windows, [(w.report_id, w.window_size) for w in store.windows_of("m")])
        marker = new[0]
        drift = await read_topic(s.bootstrap_servers, s.topic("drift"),
                                 lambda ms: any(events_pb2.DriftReportEvent.FromString(m.value).report_id == marker
                                                for m in ms))
        reports = [events_pb2.DriftReportEvent.FromString(m.value).report_id for m in drift]
        assert reports == [*windows, marker]                   # each window report once, in order
        retrain = await read_topic(s.bootstrap_servers, s.topic("retrain"), lambda ms: len(ms) >= 1)
        assert [events_pb2.RetrainEvent.FromString(m.value).id for m in retrain] == retrains   # exactly one
        listed, _ = await second.list_retrain_events("m")
        assert [e.id for e in listed] == retrains
        assert second.monitors["m"].retrain_count == 1
    finally:
        await second.stop()
        store.close()


async def test_a_crash_before_the_save_judges_the_same_window_again_under_the_same_ids(broker, tmp_path):
    s, bus = broker
    windows, retrains, _ = await clean_run(tmp_path)
    real = DriftStore(f"sqlite:///{tmp_path / 'drift.db'}")
    store = StoreFailingOnce(real, "commit_window")
    e = engine(store, bus, tmp_path, s.topic_prefix)
    await e.start()
    try:
        await feed(e, INPUT[0])
        with pytest.raises(CrashOnce):                         # the reference is not saved: nothing is lost
            await e.close_windows()
        assert len(e.monitors["m"].current) == WINDOW and e.monitors["m"].reference is None
        await e.close_windows()                                # judged again
        await feed(e, INPUT[1])
        await e.close_windows()
        assert [w.report_id for w in real.windows_of("m")] == windows
        assert [r.id for r in real.list_retrain("m", 50)[0]] == retrains
    finally:
        await e.stop()
        real.close()


async def test_a_crash_after_the_publish_republishes_the_same_id_and_the_store_keeps_it_once(broker, tmp_path):
    s, bus = broker
    real = DriftStore(f"sqlite:///{tmp_path / 'drift.db'}")
    store = StoreFailingOnce(real, "mark_published")           # published, then killed before it was marked
    e = engine(store, bus, tmp_path, s.topic_prefix)
    await e.start()
    try:
        await feed(e, INPUT[0])
        await e.close_windows()
        await feed(e, INPUT[1])
        with pytest.raises(CrashOnce):
            await e.close_windows()
        await e.publish_pending()                              # the sweeper's retry (or the restart's)
        [saved] = real.list_retrain("m", 50)[0]
        on_topic = await read_topic(s.bootstrap_servers, s.topic("retrain"), lambda ms: len(ms) >= 2)
        assert [events_pb2.RetrainEvent.FromString(m.value).id for m in on_topic] == [saved.id, saved.id]
        real.save_retrain(events_pb2.RetrainEvent.FromString(on_topic[1].value))   # a consumer storing it again
        assert [x.id for x in (await e.list_retrain_events("m"))[0]] == [saved.id]
        assert real.unpublished("m") == []
    finally:
        await e.stop()
        real.close()
