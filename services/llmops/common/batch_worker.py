"""The raw aiokafka batch consumer: a consumer-group member behind the same
:class:`~llmops.common.stream.BatchConsumer` protocol as the faust batch agents."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

from llmops.common import metrics
from llmops.common.bus import DeadLetterQueue
from llmops.common.envelope import Record
from llmops.common.settings import Settings
from llmops.common.stream import BatchConsumer, Rejected, deliver_rejections

log = logging.getLogger(__name__)


class KafkaBatchWorker:
    """A raw aiokafka consumer-group member behind the same :class:`BatchConsumer` protocol, for a
    high-volume sink where faust's per-event cost is the limit (the trace store's ingest).

    Same guarantees as :func:`batch_agent`: a batch is handed to ``consumer.handle``, what it rejects
    goes to the DLQ (awaited), and only then are the batch's offsets committed, so a crash replays
    (at least once) and never skips. A handler that raises parks the batch on the DLQ. Offsets are
    committed under the consumer group ``group`` (the faust app's id, so offsets carry over).
    ``start()`` returns once the member has joined its group and holds its partitions.
    """

    def __init__(self, settings: Settings, group: str, topics: list[str], consumer: BatchConsumer,
                 dlq_factory: Callable[[], DeadLetterQueue], *, name: str, max_batch: int = 2000,
                 within_ms: int = 50) -> None:
        from aiokafka import AIOKafkaConsumer

        from llmops.common.kafka import client_options

        self.group, self.topics, self.consumer, self.name = group, topics, consumer, name
        self.max_batch, self.within_ms = max_batch, within_ms
        self._dlq_factory = dlq_factory
        session_ms = settings.kafka_session_timeout_ms
        self._kafka = AIOKafkaConsumer(
            **client_options(settings), group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 5), max_poll_records=max_batch,
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
        )
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    async def start(self, timeout_s: float = 120.0) -> None:
        from aiokafka import ConsumerRebalanceListener

        ready = self._ready

        class Joined(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):   # offsets are committed after every batch
                return None

            async def on_partitions_assigned(self, assigned):
                ready.set()

        self._kafka.subscribe(self.topics, listener=Joined())
        await self._kafka.start()
        self._task = asyncio.create_task(self._run(), name=self.name)   # its first poll joins the group
        try:
            await asyncio.wait_for(ready.wait(), timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{self.name}: not in group {self.group} after {timeout_s:.0f}s") from None

    async def _run(self) -> None:
        from aiokafka.errors import KafkaError

        dlq = self._dlq_factory()
        while not self._stopping:
            try:
                batches = await self._kafka.getmany(timeout_ms=self.within_ms, max_records=self.max_batch)
            except KafkaError as exc:     # transient (a rebalance, the broker away): poll again
                log.warning("%s: fetch failed (%s); retrying", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            records = [Record(topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value,
                              headers=[(k, bytes(v) if v is not None else b"") for k, v in (m.headers or ())],
                              timestamp_ms=int(m.timestamp or 0))
                       for msgs in batches.values() for m in msgs]
            if not records:
                continue
            try:
                rejected = await self.consumer.handle(records)
            except Exception as exc:  # the consumer must survive anything: park the batch, go on
                log.exception("%s: batch of %d failed; sending it to the DLQ", self.name, len(records))
                rejected = [Rejected(r, f"handler failed: {exc!r}", type(exc).__name__) for r in records]
            await deliver_rejections(rejected, dlq)
            try:
                await self._kafka.commit()
            except KafkaError as exc:     # e.g. a rebalance took the partitions: they are replayed, never skipped
                log.warning("%s: commit after %d records failed (%s); they will be redelivered", self.name,
                            len(records), exc)
            per_topic: dict[str, int] = {}
            for r in records:
                per_topic[r.topic] = per_topic.get(r.topic, 0) + 1
            for topic, n in per_topic.items():
                metrics.EVENTS_CONSUMED.labels(topic, self.group).inc(n)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Finish the batch in hand (commit it), then leave the group."""
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, grace_s)
            except asyncio.TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await self._kafka.stop()
