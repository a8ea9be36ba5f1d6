"""The drift repartition, with the engine's parts in memory: a closed join entry goes out on
drift-observations keyed by each monitor whose scope it matches; a score that closes after its
completion goes out keyed by the same monitors; the owner of a monitor takes each trace id once,
in the order its partition delivered them, and a redelivery changes nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from llmops.common.envelope import Record, encode
from llmops.drift.engine import DriftEngine, monitor_partition, observation_message, read_observation_message
from llmops.drift.features import Observation
from llmops.drift.monitor_config import MonitorSpec, Scope
from llmops.v1 import common_pb2, events_pb2

TOPIC = "llmops.drift-observations"
SPECS = [MonitorSpec("small", scope=Scope(model="small"), window_size=10), MonitorSpec("all", window_size=10)]


class MemoryStore:
    """``upsert`` by trace id (a later close merges its scores) and a monitor's rows, in memory."""

    def __init__(self) -> None:
        self.obs: dict[str, Observation] = {}
        self.rows: dict[tuple[str, str], int] = {}

    def upsert(self, items):
        out = []
        for o in items:
            old = self.obs.get(o.trace_id)
            if old is None or (o.has_completion and not old.has_completion):
                o.scores = {**(old.scores if old else {}), **o.scores}
                self.obs[o.trace_id] = o
                out.append((o, "new" if o.has_completion else "orphan"))
            else:
                old.scores.update(o.scores)
                out.append((old, "merged" if old.has_completion else "orphan"))
        return out

    def restore(self, monitor) -> None:
        """A monitor taken over: nothing was saved of it before."""

    def add_rows(self, monitor, rows):
        added = set()
        for tid, pos, _ts in rows:
            if (monitor, tid) not in self.rows:
                self.rows[(monitor, tid)] = pos
                added.add(tid)
        return added


class Wire:
    """The bus: what the join stage sends on drift-observations."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send_raw(self, topic, key, value, headers):
        self.sent.append((topic, key, value))


def completion(tid: str, model: str) -> events_pb2.CompletionEvent:
    ev = events_pb2.CompletionEvent(trace_id=tid, model=model, prompt=f"question {tid[:4]}", answer="an answer")
    ev.timestamp.FromMicroseconds(1_700_000_000_000_000 + int(tid[:6], 16))
    return ev


def score(tid: str, value: float) -> events_pb2.ScoreEvent:
    return events_pb2.ScoreEvent(trace_id=tid, model="small", score=common_pb2.Score(
        name="faithfulness", evaluator="rag.faithfulness.cheap", value=value, status=common_pb2.SCORE_STATUS_OK))


def record(topic: str, key: bytes, value: bytes, offset: int = 0, headers=None) -> Record:
    return Record(topic=topic, partition=0, offset=offset, key=key, value=value, headers=headers or [])


def join_stage(store: MemoryStore, wire: Wire, table: dict) -> DriftEngine:
    return DriftEngine(SPECS, store, lambda texts: [[1.0, 0.0] for _ in texts], wire, table,
                       reports_dir=Path("unused-reports"), observations_topic=TOPIC, observation_partitions=2)


async def close(e: DriftEngine, events) -> None:
    assert await e.handle([record(f"llmops.{kind}", ev.trace_id.encode(), encode(ev)[0], headers=encode(ev)[1])
                           for kind, ev in events]) == []
    await e.sweep(force=True)


def test_an_observation_message_round_trips_with_its_embedding_and_the_partition_is_the_producers():
    o = Observation(trace_id="a" * 32, ts_us=5, has_completion=True, model="m", prompt="p", scores={"score_x": 0.5},
                    embedding=np.array([0.25, -1.0], dtype=np.float32), route="r", arm="canary")
    name, back, arrived = read_observation_message(observation_message("all", o, {"score_x": 0.5}))
    assert (name, arrived) == ("all", {"score_x": 0.5})
    assert back.embedding.tolist() == [0.25, -1.0] and back.embedding.dtype == np.float32
    assert {**back.__dict__, "embedding": None} == {**o.__dict__, "embedding": None}
    from aiokafka.partitioner import DefaultPartitioner
    for m in ("all", "small", "m-a", "chat"):
        assert monitor_partition(m, 2) == DefaultPartitioner()(m.encode(), [0, 1], [0, 1])


async def test_a_late_score_follows_its_completion_to_its_monitors_and_the_owner_takes_each_trace_once():
    store, wire, table = MemoryStore(), Wire(), {}
    join = join_stage(store, wire, table)
    tid_small, tid_big = "1" * 32, "2" * 32
    await close(join, [("completions", completion(tid_small, "small")), ("completions", completion(tid_big, "big"))])
    first = [(topic, key.decode(), read_observation_message(value)[1].trace_id) for topic, key, value in wire.sent]
    assert sorted(first) == sorted([(TOPIC, "small", tid_small), (TOPIC, "all", tid_small), (TOPIC, "all", tid_big)])
    assert table == {}                                         # handed on, so closed

    wire.sent.clear()
    await close(join, [("scores", score(tid_small, 0.4))])    # after its completion's close: merged in the store
    late = [(key.decode(), *read_observation_message(value)) for _topic, key, value in wire.sent]
    assert sorted(k for k, *_ in late) == ["all", "small"]    # keyed by the same monitors as its completion
    assert all(o.trace_id == tid_small and arrived == {"score_faithfulness": 0.4} and o.has_completion
               for _k, _n, o, arrived in late)

    # the owner of both monitors: the first messages, the late ones, then all of them again
    owner_store = MemoryStore()
    owner = DriftEngine(SPECS, owner_store, None, Wire(), {}, reports_dir=Path("unused-reports"),
                        observations_topic=TOPIC, observation_partitions=2)
    msgs = [observation_message(n, o, {}) for n, o in
            [("small", store.obs[tid_small]), ("all", store.obs[tid_small]), ("all", store.obs[tid_big])]]
    late_msgs = [observation_message(k, o, arrived) for k, _n, o, arrived in late]
    for batch in (msgs, late_msgs, msgs + late_msgs):
        assert await owner.handle([record(TOPIC, b"k", v, i) for i, v in enumerate(batch)]) == []
    small, every = owner.monitors["small"], owner.monitors["all"]
    assert owner.owned == {"small", "all"}
    assert list(small.current) == [tid_small] and list(every.current) == [tid_small, tid_big]
    assert every.pos == {tid_small: 1, tid_big: 2} and every.next_pos == 3
    assert small.current[tid_small].scores == {"score_faithfulness": 0.4}   # the late score joined its row
    assert small.extra == [] and set(owner_store.rows) == {("all", tid_big), ("all", tid_small), ("small", tid_small)}


async def test_a_worker_drops_what_it_fetched_for_a_partition_it_no_longer_holds():
    owner = DriftEngine(SPECS, MemoryStore(), None, Wire(), {}, reports_dir=Path("unused-reports"),
                        observations_topic=TOPIC, observation_partitions=2)
    mine = monitor_partition("all", 2)
    await owner.assign({mine})
    assert "all" in owner.owned
    await owner.revoke({mine})
    assert "all" not in owner.owned
    o = Observation(trace_id="3" * 32, ts_us=1, has_completion=True, model="x")
    await owner.observe([("all", o, {})])
    assert "all" not in owner.owned and owner.monitors["all"].current == {}
