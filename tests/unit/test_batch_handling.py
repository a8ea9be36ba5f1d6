"""handle_batch: transient failures hold the batch, poison records alone go to the DLQ, DLQ send
failures never end the consumer. Fake consumers and a fake DLQ; no I/O, no real sleeping."""
from __future__ import annotations

import asyncio

import pytest
from llmops.common.batch_handling import BatchHeld, Rejected, handle_batch
from llmops.common.envelope import Record
from llmops.common.liveness import OK, RETRYING, ConsumerProgress
from llmops.common.retry import Transient


def records(n: int, topic: str = "t") -> list[Record]:
    return [Record(topic=topic, partition=0, offset=i, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[])
            for i in range(n)]


class FakeDlq:
    def __init__(self, fail_transiently: int = 0, refuse: Exception | None = None, refuse_times: int = 0):
        self.sent: list[tuple[Record, str, str]] = []
        self.attempts = 0
        self.fail_transiently = fail_transiently
        self.refuse, self.refuse_times = refuse, refuse_times

    async def send(self, record: Record, reason: str, error: str = "UndecodableMessage") -> None:
        self.attempts += 1
        if self.fail_transiently > 0:
            self.fail_transiently -= 1
            raise ConnectionError("broker away")
        if self.refuse is not None and self.refuse_times > 0:
            self.refuse_times -= 1
            raise self.refuse
        self.sent.append((record, reason, error))


class Store:
    """A consumer that stores values; ``poison`` values raise a deterministic error whenever they are in the batch."""

    def __init__(self, transient_failures: int = 0, poison: frozenset[bytes] = frozenset(), reject=frozenset()):
        self.calls: list[list[int]] = []
        self.stored: list[bytes] = []
        self.transient_failures = transient_failures
        self.poison, self.reject = poison, reject

    async def handle(self, batch: list[Record]) -> list[Rejected]:
        self.calls.append([r.offset for r in batch])
        if self.transient_failures > 0:
            self.transient_failures -= 1
            raise Transient("database is restarting")
        bad = [r for r in batch if r.value in self.poison]
        if bad:
            raise ValueError(f"cannot store {bad[0].value!r}")
        out = []
        for r in batch:
            if r.value in self.reject:
                out.append(Rejected(r, "not a CompletionEvent"))
            else:
                self.stored.append(r.value)
        return out


async def no_sleep(_s: float) -> None:
    await asyncio.sleep(0)


def run(coro):
    return asyncio.run(coro)


def test_a_transient_failure_holds_the_batch_then_handles_it_whole_without_dead_letters():
    store, dlq, progress = Store(transient_failures=3), FakeDlq(), ConsumerProgress("t")
    states = []

    class Watch(ConsumerProgress):
        def retrying(self, reason):
            super().retrying(reason)
            states.append((self.state, self.in_hand))

    progress = Watch("t")
    out = run(handle_batch(store, records(10), dlq, progress, sleep=no_sleep))
    assert store.calls == [list(range(10))] * 4          # the same ten records each time, never split
    assert store.stored == [f"v{i}".encode() for i in range(10)]
    assert dlq.sent == [] and out.dead_lettered == 0 and out.retries == 3
    assert states == [(RETRYING, 10)] * 3                  # health saw the hold, with the batch in hand
    assert progress.state == OK and progress.handled == 10 and progress.in_hand == 0


def test_stopping_while_held_raises_and_dead_letters_nothing():
    store, dlq, progress = Store(transient_failures=10**6), FakeDlq(), ConsumerProgress("t")
    calls = {"n": 0}

    def stopping() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(BatchHeld):
        run(handle_batch(store, records(4), dlq, progress, stopping=stopping, sleep=no_sleep))
    assert dlq.sent == [] and store.stored == []
    assert progress.state == RETRYING and progress.handled == 0 and progress.in_hand == 4


def test_only_the_poison_record_goes_to_the_dlq_its_neighbours_are_stored():
    store, dlq, progress = Store(poison=frozenset({b"v5"})), FakeDlq(), ConsumerProgress("t")
    out = run(handle_batch(store, records(16), dlq, progress, sleep=no_sleep))
    assert [(r.offset, reason, err) for r, reason, err in dlq.sent] == [
        (5, "handler failed: ValueError: cannot store b'v5'", "ValueError")]
    assert sorted(store.stored) == sorted(f"v{i}".encode() for i in range(16) if i != 5)
    assert out.dead_lettered == 1 and progress.handled == 16 and progress.state == OK
    assert len(store.calls) <= 2 * 4 + 1                   # bisected (16 → 8 → 4 → 2 → 1), not one by one


def test_several_poison_records_and_returned_rejections_all_reach_the_dlq_once():
    store = Store(poison=frozenset({b"v0", b"v7"}), reject=frozenset({b"v3"}))
    dlq = FakeDlq()
    run(handle_batch(store, records(9), dlq, ConsumerProgress("t"), sleep=no_sleep))
    assert sorted(r.offset for r, *_ in dlq.sent) == [0, 3, 7]
    assert sorted(store.stored) == sorted(f"v{i}".encode() for i in (1, 2, 4, 5, 6, 8))


def test_a_dlq_send_failing_transiently_is_retried_until_it_is_delivered():
    store, dlq, progress = Store(reject=frozenset({b"v1"})), FakeDlq(fail_transiently=4), ConsumerProgress("t")
    out = run(handle_batch(store, records(3), dlq, progress, sleep=no_sleep))
    assert [r.offset for r, *_ in dlq.sent] == [1] and dlq.attempts == 5
    assert out.retries == 4 and progress.state == OK and progress.handled == 3


def test_a_dlq_refusing_the_record_gets_it_without_its_value_and_never_crashes():
    from aiokafka.errors import MessageSizeTooLargeError

    store = Store(reject=frozenset({b"v0", b"v1"}))
    dlq = FakeDlq(refuse=MessageSizeTooLargeError("too large"), refuse_times=3)
    out = run(handle_batch(store, records(2), dlq, ConsumerProgress("t"), sleep=no_sleep))
    # v0: refused twice (with and without its value): lost, but logged and counted; v1: refused once, then
    # sent without its value (its source offset and reason kept)
    assert [(r.offset, r.value) for r, *_ in dlq.sent] == [(1, None)]
    assert "value dropped" in dlq.sent[0][1]
    assert out.dead_lettered == 1 and out.dlq_lost == 1 and out.handled == 2


def test_a_transient_failure_in_a_split_half_holds_only_until_it_passes():
    class Flaky(Store):
        async def handle(self, batch):
            if len(batch) == 2 and batch[0].offset == 2 and not getattr(self, "flaked", False):
                self.flaked = True
                self.calls.append([r.offset for r in batch])
                raise ConnectionResetError("server closed the connection")
            return await super().handle(batch)

    store, dlq = Flaky(poison=frozenset({b"v0"})), FakeDlq()
    run(handle_batch(store, records(4), dlq, ConsumerProgress("t"), sleep=no_sleep))
    assert [r.offset for r, *_ in dlq.sent] == [0]
    assert sorted(store.stored) == [b"v1", b"v2", b"v3"]


def test_an_empty_batch_does_nothing():
    store, progress = Store(), ConsumerProgress("t")
    out = run(handle_batch(store, [], FakeDlq(), progress))
    assert store.calls == [] and out.handled == 0 and progress.handled == 0


def test_document_ingest_holds_its_batch_while_the_vector_store_is_away_and_stores_it_after():
    from llmops.common.envelope import encode
    from llmops.retrieval.ingest import DocumentIngestor
    from llmops.v1 import events_pb2

    class VectorStoreAway:
        default_collection = "default"

        def __init__(self):
            self.down, self.upserted = 2, []

        async def wait_open(self):   # the retriever's store opens in the start's loading step
            return None

        async def upsert(self, collection, docs, source=""):
            if self.down:
                self.down -= 1
                raise ConnectionRefusedError("vector store unreachable")
            self.upserted += [d.id for d in docs]

    value, headers = encode(events_pb2.DocumentEvent(id="d1", text="returns are free"))
    retriever = VectorStoreAway()
    dlq, progress = FakeDlq(), ConsumerProgress("retrieval")
    out = run(handle_batch(DocumentIngestor(retriever), [Record("documents", 0, 0, b"d1", value, headers)], dlq,
                           progress, sleep=no_sleep))
    assert retriever.upserted == ["d1"] and dlq.sent == [] and out.retries == 2
