"""The late join's open entries live in the drift store (SQLite and PostgreSQL), not in the broker:
an entry is stored before its batch is acknowledged and forgotten once it is closed, a restarted
engine over the same store closes what the old one held open, and a worker of the join's group
reads and closes only the entries of the partitions it is assigned."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmops.common.envelope import Record, encode
from llmops.drift.engine import DriftEngine
from llmops.drift.join_table import JoinTable
from llmops.drift.monitor_config import MonitorSpec
from llmops.drift.store import DriftStore
from llmops.v1 import common_pb2, events_pb2

TOPIC = "llmops.drift-observations"


class Wire:
    """The bus: what the join sends on drift-observations (trace ids)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_raw(self, topic, key, value, headers):
        import json
        self.sent.append(json.loads(value)["observation"]["trace_id"])


def tid(i: int) -> str:
    return f"{i:032x}"


def completion(i: int) -> events_pb2.CompletionEvent:
    ev = events_pb2.CompletionEvent(trace_id=tid(i), model="m", prompt=f"question {i}", answer="an answer")
    ev.timestamp.FromMicroseconds(1_700_000_000_000_000 + i)
    return ev


def score(i: int, value: float) -> events_pb2.ScoreEvent:
    return events_pb2.ScoreEvent(trace_id=tid(i), model="m", score=common_pb2.Score(
        name="faithfulness", evaluator="rag.faithfulness.cheap", value=value, status=common_pb2.SCORE_STATUS_OK))


def record(kind: str, ev, partition: int, offset: int = 0) -> Record:
    value, headers = encode(ev)
    return Record(topic=f"llmops.{kind}", partition=partition, offset=offset, key=ev.trace_id.encode(), value=value,
                  headers=headers)


def engine(url: str, wire: Wire) -> tuple[DriftEngine, DriftStore]:
    store = DriftStore(url)
    e = DriftEngine([MonitorSpec("all", window_size=10)], store, lambda texts: [[1.0, 0.0] for _ in texts], wire,
                    JoinTable(store), reports_dir=Path("unused-reports"), join_wait_s=3600.0, observations_topic=TOPIC,
                    observation_partitions=2)
    return e, store


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'drift.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


async def test_open_entries_outlive_the_engine_and_close_once_after_a_restart(url):
    wire = Wire()
    first, store = engine(url, wire)
    await first.join_assigned({0, 1})
    assert await first.handle([record("completions", completion(i), i % 2, i) for i in range(6)]) == []
    assert await first.handle([record("scores", score(i, 0.25 * (i % 4)), i % 2, 10 + i) for i in range(0, 6, 2)]) == []
    rows = {t: p for t, p, _ in store.load_join()}
    assert rows == {tid(i): i % 2 for i in range(6)}             # stored before the batch is acknowledged
    assert store.count() == 0 and wire.sent == []                 # nothing closed yet (a long wait)
    store.close()                                                 # the process dies here: memory is gone

    second, store = engine(url, wire)                             # restarted over the same store
    await second.join_assigned({0, 1})
    assert len(second.table) == 6
    await second.sweep(force=True)
    assert store.load_join() == [] and store.count() == 6         # closed, stored, forgotten
    assert sorted(wire.sent) == sorted(tid(i) for i in range(6))  # and handed on, once each
    scores = {o.trace_id: o.scores for o in store.observations_after(0)}
    assert scores[tid(2)] == {"score_faithfulness": 0.5} and scores[tid(1)] == {}   # with what joined before the restart
    store.close()


async def test_a_worker_reads_and_closes_only_the_partitions_it_is_assigned(url):
    wire = Wire()
    writer, store = engine(url, wire)
    await writer.join_assigned({0, 1})
    assert await writer.handle([record("completions", completion(i), i % 2, i) for i in range(8)]) == []
    store.close()

    a, store_a = engine(url, wire)
    b, store_b = engine(url, wire)
    await a.join_assigned({0})
    await b.join_assigned({1})
    assert {k.decode() for k in a.table} == {tid(i) for i in range(0, 8, 2)}
    assert {k.decode() for k in b.table} == {tid(i) for i in range(1, 8, 2)}
    await a.sweep(force=True)
    assert {t for t, _, _ in store_a.load_join()} == {tid(i) for i in range(1, 8, 2)}   # b's are b's to close
    assert sorted(wire.sent) == [tid(i) for i in range(0, 8, 2)]

    # a rebalance: a gives partition 0 up and takes 1; while it is unassigned it closes nothing
    await a.join_revoked()
    await b.join_revoked()
    await a.sweep(force=True)
    assert len(wire.sent) == 4
    await a.join_assigned({1})
    await b.join_assigned(set())
    assert len(b.table) == 0 and len(a.table) == 4
    assert await a.handle([record("scores", score(1, 1.0), 1, 20)]) == []
    await a.sweep(force=True)
    assert store_a.load_join() == [] and sorted(wire.sent) == [tid(i) for i in range(8)]
    assert {o.trace_id: o.scores for o in store_a.observations_after(0)}[tid(1)] == {"score_faithfulness": 1.0}
    store_a.close()
    store_b.close()


async def test_a_store_that_refuses_the_join_holds_the_batch(url, monkeypatch):
    """The write is part of handling the batch: when the store refuses it, handle raises (the
    worker retries the batch with backoff, uncommitted) and memory does not hold what the store
    does not."""
    wire = Wire()
    e, store = engine(url, wire)
    await e.join_assigned({0})

    def refuse(rows):
        raise ConnectionError("the store is away")

    monkeypatch.setattr(store, "save_join", refuse)
    with pytest.raises(ConnectionError):
        await e.handle([record("completions", completion(1), 0)])
    assert len(e.table) == 0
    monkeypatch.undo()
    assert await e.handle([record("completions", completion(1), 0)]) == []
    assert [t for t, _, _ in store.load_join()] == [tid(1)]
    store.close()
