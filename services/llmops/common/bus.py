"""The event bus: one aiokafka producer per process (batching, ``acks=all``) behind two doors.

* :meth:`EventBus.publish_unit` is for the request path. One request's events (its spans and its
  ``CompletionEvent``) are one *unit*: buffered whole or refused whole, then delivered, or counted
  as undelivered, together. It never waits on Kafka: the unit goes into a buffer bounded in events
  (``LLMOPS_PUBLISH_QUEUE_SIZE``) and in bytes (``LLMOPS_PUBLISH_BUFFER_BYTES``) that a background
  task drains into the producer; a unit counts against both bounds until the broker has
  acknowledged (or failed) all of it. An event larger than the producer sends
  (``LLMOPS_KAFKA_MAX_MESSAGE_BYTES``) is refused with its unit at once (reason ``too_large``),
  never left to fail in the producer. :meth:`EventBus.publish` is a unit of one event.
* What the request path cannot deliver is counted exactly, per event
  (``llmops_events_undelivered_total{topic,reason}``) and per unit
  (``llmops_publish_units_total{outcome}``), and logged as one line per interval with the counts
  (:class:`DropLog`), never one line per event and never dropped silently.
* :meth:`EventBus.stop` is bounded by the time the runtime gives it: it delivers what it can
  within it, counts everything it could not (reason ``shutdown``: what was buffered, and what the
  producer held unacknowledged) and logs one summary line.
* :meth:`EventBus.send` and :meth:`EventBus.send_many` await delivery. Consumers use them (DLQ,
  derived events), so that a message is acknowledged only after what it produced is safely in Kafka.

A unit is not a Kafka transaction (the embedded broker has none): its events go to the producer in
order and each is acknowledged on its own. Before any event of a unit is handed over, the topics'
metadata is checked, so a broker that is away fails a unit before it starts rather than halfway. A
unit the broker took only part of is counted undelivered (its unacknowledged events by reason, its
acknowledged ones as published, because they are in Kafka).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from google.protobuf.message import Message

from llmops.common import metrics
from llmops.common.envelope import Record, encode
from llmops.common.kafka import producer_options
from llmops.common.settings import Settings

log = logging.getLogger(__name__)

#: (topic, key, message, traceparent): one event for :meth:`EventPublisher.publish_unit` and ``send_many``
OutgoingEvent = tuple[str, str, Message, str]

DELIVERED = "delivered"
#: why events were not delivered (the ``reason`` label)
BUS_NOT_STARTED, BUFFER_FULL, TOO_LARGE, SEND_FAILED, DELIVERY_FAILED, CANCELLED, SHUTDOWN = (
    "bus_not_started", "buffer_full", "too_large", "send_failed", "delivery_failed", "cancelled", "shutdown")


class EventTooLarge(MessageSizeTooLargeError):
    """Events of a ``send_many`` larger than the producer sends: none of the batch was sent.
    ``indexes`` are their positions in it, so a caller can refuse those and send the rest; as
    aiokafka's own error, it is deterministic (not retriable)."""

    def __init__(self, message: str, indexes: list[int]) -> None:
        super().__init__(message)
        self.indexes = indexes


class EventPublisher(Protocol):
    """The port every service publishes through; :class:`EventBus` is its Kafka adapter."""

    def publish(self, topic: str, key: str, message: Message, traceparent: str = "") -> bool:
        """The request path's door for one event: a unit of one."""
        ...

    def publish_unit(self, events: Sequence[OutgoingEvent]) -> bool:
        """The request path's door: buffer all of ``events`` without waiting, or none of them
        (False, and every event counted undelivered)."""
        ...

    async def publish_unit_acked(self, events: Sequence[OutgoingEvent], wait_s: float) -> bool:
        """As :meth:`publish_unit`, then wait up to ``wait_s`` for the broker to acknowledge every
        event of the unit: True once it has. False when refused, undelivered, or not acknowledged in
        time (the unit is still delivered or counted later, as any other)."""
        ...

    async def send_many(self, messages: list[OutgoingEvent]) -> None:
        """The consumers' door: deliver all of them, acknowledged by the broker, or raise."""
        ...


@dataclass
class BusStats:
    published: int = 0                      # events acknowledged by the broker
    undelivered: int = 0                    # events counted undelivered
    undelivered_by_reason: dict[str, int] = field(default_factory=dict)
    units_published: int = 0                # units every event of which was acknowledged
    units_undelivered: int = 0              # units with at least one event undelivered
    shutdown: dict[str, float] = field(default_factory=dict)   # the last stop(): budget, took, counts


class _Outgoing(NamedTuple):   # a tuple: built for every event on the request path
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    size: int          # bytes on the wire (aiokafka's own estimate, which max_request_size is checked against)


class _Unit:
    """One request's events and where each of them is: ``outcomes[i]`` None while pending."""
    __slots__ = ("detail", "drops", "failed", "held", "items", "nbytes", "outcomes", "resolved", "sent", "settled")

    def __init__(self, items: list[_Outgoing], nbytes: int) -> None:
        self.items = items
        self.nbytes = nbytes
        self.sent = 0                                   # items handed to the producer
        self.outcomes: list[str | None] = [None] * len(items)
        self.resolved = 0
        self.failed: str | None = None                  # the first reason one of its events was not delivered
        self.held = False                               # counted against the buffer's bounds
        self.drops: Counter[tuple[str, str]] | None = None   # undelivered events by (topic, reason)
        self.detail = ""                                # what went wrong first, for the log
        self.settled: asyncio.Event | None = None       # set once every event is resolved (publish_unit_acked)

    @property
    def key(self) -> str:
        k = next((i.key for i in self.items if i.key), b"")
        return k.decode(errors="replace")


def _why(exc: BaseException) -> str:
    text = str(exc)
    return text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}".rstrip(": ")


class DropLog:
    """Undelivered events, logged as at most one line per ``interval_s`` with the counts:
    ``N events in M units not delivered in the last T s: topic/reason=n, ...``. The first drop
    after a quiet interval is logged at once; later ones are summed and logged when the interval
    ends (or at :meth:`flush`). The metrics count every event; this only keeps the log readable."""

    EXAMPLES = 3

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = logger
        self.interval_s = interval_s
        self.clock = clock
        self._last_line = -float("inf")
        self._since = clock()
        self._events: Counter[tuple[str, str]] = Counter()
        self._units = 0
        self._examples: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self.lines = 0

    def add(self, counts: Counter[tuple[str, str]], example: str = "") -> None:
        """One unit's undelivered events, as (topic, reason) counts."""
        if not counts:
            return
        self._events.update(counts)
        self._units += 1
        if example and len(self._examples) < self.EXAMPLES:
            self._examples.append(example)
        now = self.clock()
        if now - self._last_line >= self.interval_s:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:   # no loop: the next drop or flush() logs it
                return
            self._timer = loop.call_later(self._last_line + self.interval_s - now, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._events:
            return
        now = self.clock()
        n = sum(self._events.values())
        parts = ", ".join(f"{t}/{r}={c}" for (t, r), c in sorted(self._events.items()))
        self.log.error("%d events in %d units not delivered in the last %.1f s: %s%s", n, self._units,
                       now - self._since, parts, f" (e.g. {'; '.join(self._examples)})" if self._examples else "")
        self.lines += 1
        self._events.clear()
        self._units = 0
        self._examples = []
        self._last_line = self._since = now


class EventBus:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer | None = None, *,
                 drop_log_interval_s: float = 10.0) -> None:
        self.settings = settings
        self._producer = producer or AIOKafkaProducer(**producer_options(settings))
        self.max_events = settings.publish_queue_size
        self.max_bytes = settings.publish_buffer_bytes
        self.max_message_bytes = settings.kafka_max_message_bytes
        self._buffer: deque[_Unit] = deque()
        self._buffered_events = 0    # in units not yet handed to the producer
        self._held_events = 0        # of units buffered or awaiting acknowledgement
        self._held_bytes = 0
        self._in_flight: set[_Unit] = set()    # handed (partly) to the producer, not resolved
        self._current: _Unit | None = None     # the unit the drainer is handing over
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._drainer: asyncio.Task | None = None
        self._state = "new"          # new → running → stopping → stopped
        self._aborting = False       # stop() gave up on what the producer still held
        self._refused_stopping = 0   # events refused while stop() ran
        self.drops = DropLog(log, drop_log_interval_s)
        self._published: dict = {}   # metric children by topic (labels() is a lookup under a lock)
        self._units_delivered = metrics.PUBLISH_UNITS.labels(DELIVERED)
        self._drained = 0
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
        self._state = "running"
        self._drainer = asyncio.create_task(self._drain(), name="event-bus-drain")

    @property
    def _started(self) -> bool:
        return self._state == "running"

    async def stop(self, timeout_s: float = 10.0) -> BusStats:
        """Deliver what is held within ``timeout_s`` (the whole stop, producer close included),
        then count what is left undelivered (reason ``shutdown``) and log one summary line."""
        if self._state != "running":
            return self.stats
        self._state = "stopping"     # from now on publish_unit refuses (reason shutdown)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + max(0.0, timeout_s)
        reserve = min(1.0, 0.2 * timeout_s)   # for closing the producer once the buffer is empty
        before = self.stats.undelivered_by_reason.get(SHUTDOWN, 0)
        held_at_stop = self._held_events
        # 1. let the drainer hand everything over and the broker acknowledge it
        while self._held_events and loop.time() < deadline - reserve:
            self._idle.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), deadline - reserve - loop.time())
        # 2. stop handing over: what was never handed is counted now
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drainer
            self._drainer = None
        current, self._current = self._current, None
        left = ([current] if current is not None else []) + list(self._buffer)
        self._buffer.clear()
        buffered = sum(len(u.items) - u.sent for u in left)
        for unit in left:
            self._resolve(unit, range(unit.sent, len(unit.items)), SHUTDOWN)
        self._buffered_events = 0
        # 3. close the producer: it flushes what it holds, within what is left of the budget
        abort_reserve = min(0.5, 0.1 * timeout_s)   # for cutting the producer short, within the budget
        closing = asyncio.create_task(self._producer.stop(), name="event-bus-producer-stop")
        done, _ = await asyncio.wait({closing}, timeout=max(0.0, deadline - abort_reserve - loop.time()))
        if not done:
            # the broker does not acknowledge: end the producer's sender task, so that stop() goes on
            # to close the connections; what the producer held is counted below
            self._aborting = True
            sender = getattr(getattr(self._producer, "_sender", None), "sender_task", None)
            if sender is not None and not sender.done():
                sender.cancel()
            done, _ = await asyncio.wait({closing}, timeout=max(0.05, deadline - loop.time()))
            if not done:
                closing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(closing, 0.1)
        if closing.done() and not closing.cancelled() and closing.exception() is not None:
            log.warning("closing the Kafka producer: %s", _why(closing.exception()))
        # 4. what the producer held unacknowledged: counted too
        for unit in list(self._in_flight):
            self._resolve(unit, [i for i in range(unit.sent) if unit.outcomes[i] is None], SHUTDOWN)
        self._state = "stopped"
        self.drops.flush()
        refused = self._refused_stopping
        lost = self.stats.undelivered_by_reason.get(SHUTDOWN, 0) - before - refused   # of those held at stop
        took = loop.time() - t0
        self.stats.shutdown = {"budget_s": timeout_s, "took_s": round(took, 3), "held": held_at_stop,
                               "undelivered": lost, "never_sent": buffered, "unacknowledged": lost - buffered,
                               "refused_while_stopping": refused}
        (log.error if lost or refused else log.info)(
            "event bus stopped in %.2f s (budget %.2f s): %d of the %d events held at stop not delivered "
            "(%d never handed to the producer, %d unacknowledged), %d refused while stopping; since start "
            "%d events published, %d undelivered %s", took, timeout_s, lost, held_at_stop, buffered, lost - buffered,
            refused, self.stats.published, self.stats.undelivered, dict(sorted(self.stats.undelivered_by_reason.items())))
        return self.stats

    # -- request path --------------------------------------------------------------------------
    def publish(self, topic: str, key: str, message: Message, traceparent: str = "") -> bool:
        """Buffer one event (a unit of one) without waiting. False (and counted) when it cannot."""
        return self.publish_unit(((topic, key, message, traceparent),))

    def publish_unit(self, events: Sequence[OutgoingEvent]) -> bool:
        """Buffer all of ``events`` as one unit without waiting, or none of them: False, and every
        event counted undelivered with the reason (bus not started or stopping, a full buffer, an
        event too large for the producer)."""
        return self._enqueue(events) is not False

    async def publish_unit_acked(self, events: Sequence[OutgoingEvent], wait_s: float) -> bool:
        """Buffer ``events`` as one unit (:meth:`publish_unit`), then wait up to ``wait_s`` until the
        broker acknowledged all of them. The request path answers after this, so a process killed
        after its answer loses none of that request's events; a broker too slow to acknowledge in
        ``wait_s`` delays no answer further (the unit is delivered or counted later, as any other)."""
        unit = self._enqueue(events, acked=True)
        if unit is False:
            return False
        if unit is True:
            return True
        try:
            await asyncio.wait_for(unit.settled.wait(), max(0.0, wait_s))
        except TimeoutError:
            metrics.PUBLISH_ACK_TIMEOUTS.inc()
            return False
        return unit.failed is None

    def _enqueue(self, events: Sequence[OutgoingEvent], acked: bool = False) -> _Unit | bool:
        """The unit buffered (or True: no events), or False: refused, and counted."""
        items = []
        nbytes = biggest = 0
        big: _Outgoing | None = None
        for topic, key, message, tp in events:
            value, headers = encode(message, tp)
            k = key.encode() if key else None
            item = _Outgoing(topic, k, value, headers, DefaultRecordBatchBuilder.estimate_size_in_bytes(k, value, headers))
            items.append(item)
            nbytes += item.size
            if item.size > biggest:
                big, biggest = item, item.size
        if not items:
            return True
        unit = _Unit(items, nbytes)
        if acked:
            unit.settled = asyncio.Event()
        if self._state != "running":
            if self._state == "stopping":
                self._refused_stopping += len(items)
            return self._refuse(unit, BUS_NOT_STARTED if self._state == "new" else SHUTDOWN)
        if big is not None and big.size > self.max_message_bytes:
            return self._refuse(unit, TOO_LARGE, f"{big.topic} event of {big.size} bytes > "
                                                 f"LLMOPS_KAFKA_MAX_MESSAGE_BYTES={self.max_message_bytes}")
        if len(items) > self.max_events or unit.nbytes > self.max_bytes:
            return self._refuse(unit, TOO_LARGE, f"{len(items)} events of {unit.nbytes} bytes: larger than "
                                                 "the whole publish buffer")
        if self._held_events + len(items) > self.max_events or self._held_bytes + unit.nbytes > self.max_bytes:
            return self._refuse(unit, BUFFER_FULL)
        unit.held = True
        self._held_events += len(items)
        self._held_bytes += unit.nbytes
        self._idle.clear()
        self._buffer.append(unit)
        self._buffered_events += len(items)
        self._wakeup.set()
        return unit

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything published so far is delivered or counted as undelivered."""
        async def idle() -> None:
            while self._held_events:
                self._idle.clear()
                await self._idle.wait()
        await asyncio.wait_for(idle(), timeout_s)

    def _refuse(self, unit: _Unit, reason: str, detail: str = "") -> bool:
        self._resolve(unit, range(len(unit.items)), reason, detail)
        return False

    async def _drain(self) -> None:
        while True:
            while not self._buffer:
                self._wakeup.clear()
                await self._wakeup.wait()
            unit = self._buffer.popleft()
            self._buffered_events -= len(unit.items)
            self._current = unit
            self._in_flight.add(unit)
            self._drained += 1
            if not self._buffer or self._drained % 128 == 0:
                self._gauges()
            try:
                if len(unit.items) > 1:
                    # metadata first: a broker that is away fails the unit before any of it is sent
                    for topic in {i.topic for i in unit.items}:
                        await self._producer.partitions_for(topic)
                for n, item in enumerate(unit.items):
                    fut = await self._producer.send(item.topic, item.value, key=item.key, headers=item.headers)
                    unit.sent = n + 1
                    fut.add_done_callback(lambda f, u=unit, i=n: self._acked(u, i, f))
            except asyncio.CancelledError:
                raise   # stop(): it counts the rest of this unit
            except Exception as exc:  # noqa: BLE001 - any send failure is counted with its unit
                self._resolve(unit, range(unit.sent, len(unit.items)), SEND_FAILED, _why(exc))
            self._current = None
            self._maybe_settle(unit)

    def _acked(self, unit: _Unit, i: int, fut: asyncio.Future) -> None:
        if unit.outcomes[i] is not None:   # already counted (stop() gave up on it)
            return
        if fut.cancelled():
            self._resolve(unit, (i,), SHUTDOWN if self._aborting else CANCELLED)
        elif fut.exception() is not None:
            self._resolve(unit, (i,), SHUTDOWN if self._aborting else DELIVERY_FAILED, _why(fut.exception()))
        else:
            item = unit.items[i]
            unit.outcomes[i] = DELIVERED
            unit.resolved += 1
            self.stats.published += 1
            self._published_metric(item.topic).inc()
            self._maybe_settle(unit)

    def _resolve(self, unit: _Unit, indexes, reason: str, detail: str = "") -> None:
        """Count events of ``unit`` undelivered (those not counted yet), then settle it if it is done."""
        counts: Counter[tuple[str, str]] = Counter()
        for i in indexes:
            if unit.outcomes[i] is not None:
                continue
            item = unit.items[i]
            unit.outcomes[i] = reason
            unit.resolved += 1
            counts[(item.topic, reason)] += 1
            metrics.EVENTS_UNDELIVERED.labels(item.topic, reason).inc()
        n = sum(counts.values())
        if n:
            unit.failed = unit.failed or reason
            if unit.drops is None:
                unit.drops = counts
            else:
                unit.drops.update(counts)
            unit.detail = unit.detail or detail
            self.stats.undelivered += n
            self.stats.undelivered_by_reason[reason] = self.stats.undelivered_by_reason.get(reason, 0) + n
        self._maybe_settle(unit)

    def _maybe_settle(self, unit: _Unit) -> None:
        if unit.resolved < len(unit.items) or unit is self._current:
            return
        if unit.held:
            unit.held = False
            self._held_events -= len(unit.items)
            self._held_bytes -= unit.nbytes
            self._in_flight.discard(unit)
            if not self._held_events:
                self._idle.set()
                self._gauges()
        if unit.settled is not None:
            unit.settled.set()
        if unit.failed is None:
            self.stats.units_published += 1
            self._units_delivered.inc()
        else:
            self.stats.units_undelivered += 1
            metrics.PUBLISH_UNITS.labels(unit.failed).inc()
            self.drops.add(unit.drops, f"trace {unit.key}" + (f": {unit.detail}" if unit.detail else ""))

    def _published_metric(self, topic: str):
        child = self._published.get(topic)
        if child is None:
            child = self._published[topic] = metrics.EVENTS_PUBLISHED.labels(topic)
        return child

    def _gauges(self) -> None:
        metrics.PUBLISH_QUEUE_DEPTH.set(self._buffered_events)
        metrics.PUBLISH_BUFFER_BYTES.set(self._held_bytes)

    # -- consumer path ---------------------------------------------------------------------------
    def _encoded(self, topic: str, key: str, message: Message, traceparent: str) -> tuple[bytes | None, bytes, list, int]:
        value, headers = encode(message, traceparent)
        k = key.encode() if key else None
        return k, value, headers, DefaultRecordBatchBuilder.estimate_size_in_bytes(k, value, headers)

    def _too_large(self, what: str, size: int) -> str:
        return f"{what} is {size} bytes; LLMOPS_KAFKA_MAX_MESSAGE_BYTES is {self.max_message_bytes}"

    def _checked(self, topic: str, key: str, message: Message, traceparent: str) -> tuple[bytes | None, bytes, list]:
        k, value, headers, size = self._encoded(topic, key, message, traceparent)
        if size > self.max_message_bytes:   # deterministic: retrying cannot help (not retriable)
            raise EventTooLarge(self._too_large(f"a {type(message).__name__} for {topic} (key {key[:64]!r})", size), [0])
        return k, value, headers

    async def send(self, topic: str, key: str, message: Message, traceparent: str = "") -> None:
        """Send and wait for the broker's acknowledgement."""
        k, value, headers = self._checked(topic, key, message, traceparent)
        await self._producer.send_and_wait(topic, value, key=k, headers=headers)
        self.stats.published += 1
        metrics.EVENTS_PUBLISHED.labels(topic).inc()

    async def send_many(self, messages: list[OutgoingEvent]) -> None:
        """Send (topic, key, message, traceparent) items in one batch and wait until the broker
        has acknowledged all of them; raises if any could not be delivered. One too large for the
        producer raises :class:`EventTooLarge` (naming all such) before any of them is sent."""
        checked, big = [], []
        for n, (topic, key, message, tp) in enumerate(messages):
            k, value, headers, size = self._encoded(topic, key, message, tp)
            checked.append((topic, k, value, headers))
            if size > self.max_message_bytes:
                big.append((n, f"a {type(message).__name__} for {topic} (key {key[:64]!r})", size))
        if big:
            first = big[0]
            raise EventTooLarge(self._too_large(first[1], first[2]) + (f" (and {len(big) - 1} more)" if len(big) > 1
                                                                       else ""), [n for n, *_ in big])
        futures = []
        for topic, k, value, headers in checked:
            futures.append(await self._producer.send(topic, value, key=k, headers=headers))
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
