"""The event bus: one aiokafka producer per process (batching, ``acks=all``) behind two doors.

* :meth:`EventBus.publish` is for the request path. It never waits on Kafka: the event goes into a
  bounded buffer that a background task drains into the producer. What cannot be buffered or
  delivered is counted (``llmops_events_undelivered_total``) and logged with its trace id, never
  dropped silently.
* :meth:`EventBus.send` awaits delivery. Consumers use it (DLQ, derived events), so that a message
  is acknowledged only after what it produced is safely in Kafka.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message

from llmops.common import metrics
from llmops.common.envelope import Record, encode
from llmops.common.kafka import producer_options
from llmops.common.settings import Settings

log = logging.getLogger(__name__)

#: (topic, key, message, traceparent): one event for :meth:`EventPublisher.send_many`
OutgoingEvent = tuple[str, str, Message, str]


class EventPublisher(Protocol):
    """The port every service publishes through; :class:`EventBus` is its Kafka adapter."""

    def publish(self, topic: str, key: str, message: Message, traceparent: str = "") -> bool:
        """The request path's door: buffer without waiting; False (and counted) when it cannot."""
        ...

    async def send_many(self, messages: list[OutgoingEvent]) -> None:
        """The consumers' door: deliver all of them, acknowledged by the broker, or raise."""
        ...


@dataclass
class BusStats:
    published: int = 0
    undelivered: int = 0
    undelivered_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class EventBus:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer | None = None) -> None:
        self.settings = settings
        self._producer = producer or AIOKafkaProducer(**producer_options(settings))
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue(maxsize=settings.publish_queue_size)
        self._drainer: asyncio.Task | None = None
        self._in_flight: set[asyncio.Future] = set()
        self._started = False
        self.stats = BusStats()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self._producer.start()
                break
            except Exception as exc:  # broker not up yet: retry until the deadline
                if time.monotonic() > deadline:
                    raise
                log.info("waiting for Kafka at %s (%s)", self.settings.bootstrap_servers, exc)
                await asyncio.sleep(0.5)
        self._started = True
        self._drainer = asyncio.create_task(self._drain(), name="event-bus-drain")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Deliver what is buffered (up to ``timeout_s``), then close the producer."""
        if not self._started:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=timeout_s)
        except asyncio.TimeoutError:
            pass
        if self._drainer:
            self._drainer.cancel()
        left = self._queue.qsize()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            self._count_undelivered(item.topic, "shutdown")
        if left:
            log.error("%d buffered events were not delivered before shutdown", left)
        await self._producer.stop()
        self._started = False

    # -- request path --------------------------------------------------------------------------
    def publish(self, topic: str, key: str, message: Message, traceparent: str = "") -> bool:
        """Buffer an event for delivery without waiting. False (and counted) when it cannot."""
        value, headers = encode(message, traceparent)
        item = _Outgoing(topic, key.encode() if key else None, value, headers)
        if not self._started:
            self._count_undelivered(topic, "bus_not_started", key)
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._count_undelivered(topic, "buffer_full", key)
            return False
        metrics.PUBLISH_QUEUE_DEPTH.set(self._queue.qsize())
        return True

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything published so far is delivered or counted as undelivered."""
        await asyncio.wait_for(self._queue.join(), timeout_s)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=timeout_s)

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                fut = await self._producer.send(item.topic, item.value, key=item.key, headers=item.headers)
            except Exception as exc:
                self._count_undelivered(item.topic, "send_failed", item.key, exc)
            else:
                self._in_flight.add(fut)
                fut.add_done_callback(lambda f, it=item: self._delivered(f, it))
            finally:
                self._queue.task_done()
                metrics.PUBLISH_QUEUE_DEPTH.set(self._queue.qsize())

    def _delivered(self, fut: asyncio.Future, item: _Outgoing) -> None:
        self._in_flight.discard(fut)
        if fut.cancelled():
            self._count_undelivered(item.topic, "cancelled", item.key)
        elif fut.exception() is not None:
            self._count_undelivered(item.topic, "delivery_failed", item.key, fut.exception())
        else:
            self.stats.published += 1
            metrics.EVENTS_PUBLISHED.labels(item.topic).inc()

    def _count_undelivered(self, topic: str, reason: str, key=None, exc: BaseException | None = None) -> None:
        self.stats.undelivered += 1
        self.stats.undelivered_by_reason[reason] = self.stats.undelivered_by_reason.get(reason, 0) + 1
        metrics.EVENTS_UNDELIVERED.labels(topic, reason).inc()
        k = key.decode(errors="replace") if isinstance(key, bytes) else key
        log.error("event not delivered to %s (%s) key=%s %s", topic, reason, k, exc or "")

    # -- consumer path ---------------------------------------------------------------------------
    async def send(self, topic: str, key: str, message: Message, traceparent: str = "") -> None:
        """Send and wait for the broker's acknowledgement."""
        value, headers = encode(message, traceparent)
        await self._producer.send_and_wait(topic, value, key=key.encode() if key else None, headers=headers)
        self.stats.published += 1
        metrics.EVENTS_PUBLISHED.labels(topic).inc()

    async def send_many(self, messages: list[OutgoingEvent]) -> None:
        """Send (topic, key, message, traceparent) items in one batch and wait until the broker
        has acknowledged all of them; raises if any could not be delivered."""
        futures = []
        for topic, key, message, tp in messages:
            value, headers = encode(message, tp)
            futures.append(await self._producer.send(topic, value, key=key.encode() if key else None, headers=headers))
        await asyncio.gather(*futures)
        for topic, *_ in messages:
            self.stats.published += 1
            metrics.EVENTS_PUBLISHED.labels(topic).inc()

    async def send_raw(self, topic: str, key: bytes | None, value: bytes | None, headers) -> None:
        await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))


class DeadLetterQueue:
    """Sends what a consumer could not decode or handle to ``<prefix>dlq``, with the reason.

    The original key, value and headers are kept byte for byte; ``dlq-*`` headers say where the
    message came from and why it is here, so an operator can fix and replay it.
    """

    def __init__(self, bus: EventBus, group: str) -> None:
        self.bus = bus
        self.group = group
        self.topic = bus.settings.topic("dlq")

    async def send(self, record: Record, reason: str, error: str = "UndecodableMessage") -> None:
        headers = [(k, v) for k, v in (record.headers or ()) if not k.startswith("dlq-")]
        headers += [
            ("dlq-reason", reason.encode()[:4096]),
            ("dlq-error", error.encode()),
            ("dlq-source-topic", record.topic.encode()),
            ("dlq-source-partition", str(record.partition).encode()),
            ("dlq-source-offset", str(record.offset).encode()),
            ("dlq-consumer-group", self.group.encode()),
            ("dlq-timestamp-ms", str(int(time.time() * 1000)).encode()),
        ]
        await self.bus.send_raw(self.topic, record.key, record.value, headers)
        metrics.DLQ_MESSAGES.labels(record.topic, self.group, error).inc()
        log.warning(
            "sent %s[%d]@%d to %s: %s", record.topic, record.partition, record.offset, self.topic, reason
        )
