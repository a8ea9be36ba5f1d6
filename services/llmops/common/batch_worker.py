"""The raw aiokafka batch consumer: a consumer-group member behind the same
:class:`~llmops.common.stream.BatchConsumer` protocol as the faust batch agents, built for a
high-volume sink (the trace store's ingest).

Two stages run at once: a fetch stage polls the broker into a bounded queue, and a write stage
hands what is queued (several fetches merged into one larger batch) to the consumer, delivers
its rejections to the DLQ and only then commits the offsets of exactly those records. So the
broker is read while the store writes, a crash replays (at least once) and never skips, and a
full queue pauses fetching (the member keeps polling, so it stays in its group).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from llmops.common import metrics
from llmops.common.batch_handling import BatchConsumer, BatchHeld, handle_batch
from llmops.common.bus import DeadLetterQueue
from llmops.common.envelope import Record
from llmops.common.liveness import ConsumerProgress
from llmops.common.retry import Backoff
from llmops.common.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class _Fetched:
    epoch: int                                   # the assignment it was fetched under
    records: list[Record]
    offsets: dict = field(default_factory=dict)  # TopicPartition -> next offset to commit
    size: int = 0                                # bytes of keys and values


class KafkaBatchWorker:
    """A raw aiokafka consumer-group member behind the same :class:`BatchConsumer` protocol, for a
    high-volume sink where faust's per-event cost is the limit (the trace store's ingest).

    Same guarantees as :func:`~llmops.common.stream.batch_agent`: a batch is handed to
    ``consumer.handle``, what it rejects goes to the DLQ (awaited), and only then are that batch's
    offsets committed. Transient failures hold the batch, poison records alone go to the DLQ
    (:func:`~llmops.common.batch_handling.handle_batch`). Offsets are
    committed under the consumer group ``group``. ``start()`` returns once the member has joined
    its group and holds its partitions; ``progress`` (a :class:`ConsumerProgress`) tells the
    runtime's watchdog whether it is ok, retrying or dead.

    ``max_batch``: records per fetch; ``max_write``: records per write (queued fetches are merged
    up to it); ``queued``: fetches held ahead of the writer before fetching pauses, and at most
    ``queued_bytes`` of them (the consumer's memory stays bounded in bytes, whatever the records'
    size; default: half of ``LLMOPS_CONSUMER_BUFFER_BYTES``).

    ``co_partitioned``: the topics are keyed alike with as many partitions (completions, scores
    and feedback by trace id), and each member gets the same partition numbers of all of them.

    ``on_assigned`` / ``on_revoked`` are awaited with the ``TopicPartition`` set of each
    rebalance (the whole new assignment, and what was taken away), inside the rebalance: a
    consumer that owns state per partition (the drift monitors) loads it before the first record
    of a new partition is handed to it, and lets it go after the batch in hand is written.
    """

    def __init__(self, settings: Settings, group: str, topics: list[str], consumer: BatchConsumer,
                 dlq_factory: Callable[[], DeadLetterQueue], *, name: str, max_batch: int = 2000,
                 within_ms: int = 50, max_write: int = 8000, queued: int = 8, queued_bytes: int | None = None,
                 backoff_first_s: float = 0.2, backoff_max_s: float = 10.0,
                 on_assigned: Callable[[set], Awaitable[None]] | None = None,
                 on_revoked: Callable[[set], Awaitable[None]] | None = None, co_partitioned: bool = False) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor
        from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        from llmops.common.kafka import client_options

        self.group, self.topics, self.consumer, self.name = group, topics, consumer, name
        self.max_batch, self.within_ms, self.max_write = max_batch, within_ms, max_write
        self.progress = ConsumerProgress(name)
        self._dlq_factory = dlq_factory
        self._on_assigned, self._on_revoked = on_assigned, on_revoked
        self.backoff_first_s, self.backoff_max_s = backoff_first_s, backoff_max_s
        session_ms = settings.kafka_session_timeout_ms
        self._session_s = session_ms / 1000
        self._kafka = AIOKafkaConsumer(
            **client_options(settings), group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 5), max_poll_records=max_batch,
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
            metadata_max_age_ms=15_000,      # a topic re-created after a broker restart is seen soon
            # co-partitioned topics (keyed alike, as many partitions): the range assignor gives each
            # member the same partition numbers of every topic, so all of one key's records meet
            partition_assignment_strategy=(RangePartitionAssignor,) if co_partitioned else (
                RoundRobinPartitionAssignor,),
            # a static member (KIP-345) under ``llmops up``: a restart takes the dead member's place
            # instead of waiting out its session; the name is unique within each group
            group_instance_id=settings.kafka_group_instance_id or None,
        )
        self._queue: asyncio.Queue[_Fetched] = asyncio.Queue(maxsize=max(1, queued))
        self._max_queued_bytes = queued_bytes or settings.consumer_buffer_bytes // 2
        self._queued_bytes = 0
        self._fetcher: asyncio.Task | None = None
        self._writer: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()         # the writer holds no batch
        self._idle.set()
        self._epoch = 0
        self._in_hand = 0
        self._paused = False
        self._stopping = False
        self._stop_deadline = float("inf")

    async def start(self, timeout_s: float = 120.0) -> None:
        from aiokafka import ConsumerRebalanceListener

        worker = self

        class Rebalance(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                await worker._revoked()
                if worker._on_revoked is not None:
                    await worker._rebalance_hook(worker._on_revoked, revoked, "revoked")

            async def on_partitions_assigned(self, assigned):
                if worker._on_assigned is not None:
                    await worker._rebalance_hook(worker._on_assigned, assigned, "assigned")
                worker._assigned()

        self._kafka.subscribe(self.topics, listener=Rebalance())
        await self._kafka.start()
        self._fetcher = asyncio.create_task(self._fetch(), name=f"{self.name}-fetch")  # its first poll joins
        self._writer = asyncio.create_task(self._write(), name=f"{self.name}-write")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: not in group {self.group} after {timeout_s:.0f}s") from None

    # -- rebalancing ------------------------------------------------------------------------------
    async def _rebalance_hook(self, hook, partitions, what: str) -> None:
        """A hook that fails leaves this member's state unlike its assignment: the consumer is
        dead (its service exits and is restarted), never silently on with the wrong partitions."""
        try:
            await hook(set(partitions))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the consumer's death
            log.exception("%s: the partitions-%s hook failed", self.name, what)
            self.progress.died(f"partitions-{what} hook failed: {exc!r}")

    def _assigned(self) -> None:
        self._epoch += 1      # positions restart from the committed offsets
        self._paused = False
        self.progress.joined()
        self._ready.set()

    async def _revoked(self) -> None:
        """Queued fetches are dropped (uncommitted: whoever gets the partitions reads them again);
        the batch being written gets a moment to finish and commit while the partitions are ours."""
        self._epoch += 1
        while not self._queue.empty():
            dropped = self._queue.get_nowait()
            self._in_hand -= len(dropped.records)
            self._queued_bytes -= dropped.size
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(1.0, self._session_s / 2))

    # -- the fetch stage --------------------------------------------------------------------------
    async def _fetch(self) -> None:
        backoff = Backoff(first_s=0.5, max_s=5.0)
        while not self._stopping:
            try:
                self._pause_when_full()
                batches = await self._kafka.getmany(timeout_ms=self.within_ms, max_records=self.max_batch)
                self.progress.beat()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker away, a rebalance, a restart: poll again
                delay = backoff.next_delay()
                log.warning("%s: fetch failed (%s: %s); polling again in %.1fs", self.name, type(exc).__name__,
                            exc, delay)
                await asyncio.sleep(delay)
                continue
            if not batches or self._stopping:
                continue
            records: list[Record] = []
            offsets = {}
            size = 0
            for tp, msgs in batches.items():
                for m in msgs:
                    headers = m.headers   # a tuple of (name, value) pairs; a null value reads as empty
                    if headers and any(v is None for _, v in headers):
                        headers = tuple((k, v if v is not None else b"") for k, v in headers)
                    records.append(Record(m.topic, m.partition, m.offset, m.key, m.value, headers, m.timestamp or 0))
                    size += m.serialized_value_size
                offsets[tp] = msgs[-1].offset + 1
            if records:
                self._in_hand += len(records)
                self._queued_bytes += size
                self.progress.fetched(self._in_hand)
                self._queue.put_nowait(_Fetched(self._epoch, records, offsets, size))   # room: _pause_when_full

    def _pause_when_full(self) -> None:
        """The fetcher is the queue's only producer: while the queue is full, the assigned
        partitions are paused and ``getmany`` returns nothing (it still polls, so the member stays
        in its group); they resume as soon as there is room for one more fetch."""
        full = self._queue.full() or self._queued_bytes >= self._max_queued_bytes
        if full != self._paused:
            parts = self._kafka.assignment()
            if full:
                self._kafka.pause(*parts)
            else:
                self._kafka.resume(*parts)
            self._paused = full

    # -- the write stage --------------------------------------------------------------------------
    async def _write(self) -> None:
        dlq = self._dlq_factory()
        while True:
            if self._stopping and self._queue.empty():
                return
            try:
                first = await asyncio.wait_for(self._queue.get(), 0.2)
            except TimeoutError:
                continue
            self._queued_bytes -= first.size
            if first.epoch != self._epoch:
                self._in_hand -= len(first.records)
                continue
            batch = _Fetched(first.epoch, list(first.records), dict(first.offsets))
            while len(batch.records) < self.max_write and not self._queue.empty():
                nxt = self._queue.get_nowait()
                self._queued_bytes -= nxt.size
                if nxt.epoch != batch.epoch:
                    self._in_hand -= len(nxt.records)
                    continue
                batch.records += nxt.records
                batch.offsets.update(nxt.offsets)      # later fetches of a partition end further on
            self._idle.clear()
            try:
                await self._write_batch(batch, dlq)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # a bug of the worker itself: say so, so the process is restarted
                log.exception("%s: write stage failed", self.name)
                self.progress.died(f"write stage failed: {exc!r}")
                return
            finally:
                self._in_hand -= len(batch.records)
                self.progress.in_hand = max(0, self._in_hand)
                self._idle.set()

    async def _write_batch(self, batch: _Fetched, dlq: DeadLetterQueue) -> None:
        from aiokafka.errors import KafkaError

        try:
            await handle_batch(self.consumer, batch.records, dlq, self.progress, backoff_first_s=self.backoff_first_s,
                               backoff_max_s=self.backoff_max_s, group=self.group, name=self.name,
                               stopping=lambda: batch.epoch != self._epoch or (
                                   self._stopping and time.monotonic() >= self._stop_deadline))
        except BatchHeld as exc:   # revoked, or stopping while the store is away: redelivered, not committed
            log.warning("%s: %s; %d records left uncommitted for redelivery", self.name, exc, len(batch.records))
            return
        try:
            await self._kafka.commit(batch.offsets)
        except KafkaError as exc:     # e.g. a rebalance took the partitions: they are replayed, never skipped
            log.warning("%s: commit after %d records failed (%s); they will be redelivered", self.name,
                        len(batch.records), exc)
        self.progress.in_hand = max(0, self._in_hand - len(batch.records))   # what is queued behind it
        per_topic: dict[str, int] = {}
        for r in batch.records:
            per_topic[r.topic] = per_topic.get(r.topic, 0) + 1
        for topic, n in per_topic.items():
            metrics.EVENTS_CONSUMED.labels(topic, self.group).inc(n)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop fetching, write and commit what is queued within ``grace_s`` (a batch held by a
        store that is away is given up, uncommitted, when the grace is over), then leave the group."""
        self._stopping = True
        self._stop_deadline = time.monotonic() + max(0.0, grace_s - 2.0)
        for task in (self._fetcher, self._writer):
            if task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task), max(0.1, grace_s))
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:  # a task that died has logged why (and marked its progress)
                log.debug("%s: a stage ended with an error", self.name, exc_info=True)
        self._fetcher = self._writer = None
        await self._kafka.stop()
