"""Transient versus poison in a faust batch agent on the real broker: a store that is away holds
the batch (retried, nothing dead-lettered, nothing committed) until it is back, or until the
worker stops, and then its successor receives the batch again."""
from __future__ import annotations

import asyncio
import time

from llmops.cli.dlq import read_topic
from llmops.common.liveness import OK, RETRYING
from llmops.common.topics import ensure_topics

from tests.integration.dlq_support import AgentThread, SteeredStore, committed
from tests.support import make_settings, produce, wait_until

#: faust commits acknowledged offsets every broker_commit_interval (2.8 s by default)
COMMIT_INTERVAL_S = 2.8


def _setup(tmp_path, kafka, n: int):
    settings = make_settings(tmp_path, kafka)
    asyncio.run(ensure_topics(settings))
    topic = settings.topic("spans")
    produce(kafka, topic, [(f"k{i}".encode(), f"v{i}".encode(), []) for i in range(n)])
    return settings, topic


def _held_past_commit_intervals(store: SteeredStore, agent: AgentThread, intervals: float = 1.5) -> None:
    wait_until(lambda: agent.progress.state == RETRYING and store.transient_failures >= 3, 60,
               what="the agent retrying the held batch")
    wait_until(lambda: time.monotonic() - store.first_failure > intervals * COMMIT_INTERVAL_S and
               store.transient_failures > 0, 30, what="commit intervals passing while the batch is held")


def test_a_held_batch_is_stored_whole_when_the_store_returns_and_nothing_reaches_the_dlq(tmp_path, kafka):
    settings, topic = _setup(tmp_path, kafka, 20)
    store = SteeredStore(failing=True)
    agent = AgentThread(settings, "hold", [topic], store).start()
    try:
        _held_past_commit_intervals(store, agent)
        assert store.stored == []
        assert committed(settings, agent.group, topic) == 0      # nothing committed while held
        assert agent.progress.reason.startswith("handler failed transiently: Transient: could not connect")
        store.failing = False                                                  # the store is back
        wait_until(lambda: len(store.stored) >= 20, 30, what="all 20 records stored")
        assert sorted(store.values()) == sorted(f"v{i}".encode() for i in range(20))
        assert len(store.stored) == 20                                         # each once
        wait_until(lambda: committed(settings, agent.group, topic) == 20, 30, what="offset 20 committed")
        assert agent.progress.state == OK and agent.progress.handled == 20
    finally:
        agent.stop()
    assert asyncio.run(read_topic(settings, settings.topic("dlq"))) == []     # no dead letters at all


def test_a_worker_stopped_while_holding_commits_nothing_and_its_successor_gets_the_batch(tmp_path, kafka):
    settings, topic = _setup(tmp_path, kafka, 12)
    store = SteeredStore(failing=True)
    agent = AgentThread(settings, "restart", [topic], store).start()
    try:
        _held_past_commit_intervals(store, agent, intervals=1.0)
    finally:
        agent.stop()                                                           # stops while the batch is held
    assert store.stored == []
    assert committed(settings, agent.group, topic) == 0           # the stop committed nothing

    again = SteeredStore()                                                     # restarted, the store is back
    successor = AgentThread(settings, "restart", [topic], again).start()
    try:
        wait_until(lambda: len(again.stored) >= 12, 60, what="the successor storing the 12 records")
        assert sorted(o for _, _, o, _, _ in again.stored) == list(range(12))
        wait_until(lambda: committed(settings, successor.group, topic) == 12, 30, what="offset 12 committed")
    finally:
        successor.stop()
    assert asyncio.run(read_topic(settings, settings.topic("dlq"))) == []


def test_a_poison_record_alone_is_dead_lettered_and_its_neighbours_are_stored(tmp_path, kafka):
    settings, topic = _setup(tmp_path, kafka, 0)
    produce(kafka, topic, [(f"k{i}".encode(), b"poison" if i == 6 else f"v{i}".encode(), [("h", b"1")])
                           for i in range(10)])
    store = SteeredStore(poison=frozenset({b"poison"}))
    agent = AgentThread(settings, "poison", [topic], store).start()
    try:
        wait_until(lambda: len(store.stored) >= 9, 60, what="the 9 good records stored")
        wait_until(lambda: committed(settings, agent.group, topic) == 10, 30, what="offset 10 committed")
    finally:
        agent.stop()
    assert sorted(o for _, _, o, _, _ in store.stored) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    dead = asyncio.run(read_topic(settings, settings.topic("dlq")))
    assert len(dead) == 1 and dead[0].value == b"poison" and dead[0].key == b"k6"
    headers = dict(dead[0].headers)
    assert headers["dlq-source-offset"] == b"6" and headers["dlq-error"] == b"ValueError"
    assert b"the store refuses" in headers["dlq-reason"] and headers["h"] == b"1"
