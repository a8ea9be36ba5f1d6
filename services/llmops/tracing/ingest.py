"""Consumer of spans, completions, scores and feedback: validates each event and writes batches
to the trace store. Invalid events go to the DLQ with the reason; a store that is away or busy
holds the batch (the error is raised, the consumer retries it); a batch the store refuses for
good is halved until only the refused rows are left, so one bad row cannot park its neighbours."""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from google.protobuf.message import DecodeError

from llmops.common import metrics
from llmops.common.envelope import CONTENT_TYPE, CONTENT_TYPE_HEADER, TYPE_HEADER, Record, UndecodableMessage
from llmops.common.events import VALIDATORS, read_event, validate_completion
from llmops.common.retry import is_transient
from llmops.common.stream import Rejected
from llmops.tracing.store import SpanWire, TraceStore
from llmops.v1 import events_pb2

log = logging.getLogger(__name__)

_PROTOBUF_HEADER = (CONTENT_TYPE_HEADER, CONTENT_TYPE)


def _validator(cls):
    """What :func:`~llmops.common.events.read_event` checks after decoding (a completion without
    a timestamp takes its record's, which the fast path does not have: it goes the general way)."""
    if cls is events_pb2.CompletionEvent:
        def completion(ev):
            if not ev.HasField("timestamp"):
                raise DecodeError("no timestamp: read it with its record")
            return validate_completion(ev)
        return completion
    return VALIDATORS.get(cls, lambda ev: ev)


class TraceIngestor:
    def __init__(self, store: TraceStore, topic_prefix: str = "llmops.") -> None:
        self.store = store
        metrics.FEEDBACK_SCORES.labels("user")   # exported from the start: the first feedback is an increase
        metrics.FEEDBACK_NEGATIVE.labels("user")
        # spans, the bulk, are made the store's rows while they are decoded (on the event loop), so
        # the write's thread runs little more than the SQL, mostly outside the GIL
        span_rows = getattr(store, "write_span_rows", None) and getattr(store, "span_row", None)
        self._to_row = {events_pb2.SpanEvent: store.span_row} if span_rows else {}
        # and, when the store can, straight from their bytes (attributes as raw map entries)
        self._spans_topic = f"{topic_prefix}spans"
        self._wire_span_row = getattr(store, "wire_span_row", None) if span_rows else None
        self.kinds = {
            f"{topic_prefix}spans": (events_pb2.SpanEvent, store.write_span_rows if span_rows else store.write_spans),
            f"{topic_prefix}completions": (events_pb2.CompletionEvent, store.write_completions),
            f"{topic_prefix}scores": (events_pb2.ScoreEvent, store.write_scores),
            f"{topic_prefix}feedback": (events_pb2.FeedbackEvent,
                                         lambda evs: store.write_feedback([e.feedback for e in evs])),
        }

        self._type_headers = {cls: (TYPE_HEADER, cls.DESCRIPTOR.full_name.encode()) for cls, _ in self.kinds.values()}
        self._validators = {cls: _validator(cls) for cls, _ in self.kinds.values()}

    @property
    def topics(self) -> list[str]:
        return list(self.kinds)

    async def handle(self, records: list[Record]) -> list[Rejected]:
        """Decode, validate and store ``records``; return what is poison (with the reason).

        A store failure that may pass (:func:`~llmops.common.retry.is_transient`: the database is
        locked, restarting or unreachable) raises, so the consumer holds the whole batch and
        retries it with backoff: nothing is dead-lettered and nothing committed meanwhile (what a
        retry writes again is stored once: every write is idempotent). A deterministic failure
        is narrowed down by halving the batch, so only the rows the store refuses go to the DLQ."""
        rejected, batches = self.decode(records)
        for topic, items in batches.items():
            rejected += await self._write(topic, items)
        return rejected

    def decode(self, records: list[Record]) -> tuple[list[Rejected], dict[str, list[tuple[Record, object]]]]:
        """The events of ``records`` by topic (spans as the store's rows when it takes rows), and
        what cannot be decoded (no I/O)."""
        rejected: list[Rejected] = []
        batches: dict[str, list[tuple[Record, object]]] = defaultdict(list)
        kinds = self.kinds
        spans_topic, wire_row = self._spans_topic, self._wire_span_row
        if wire_row is not None:
            spans = batches[spans_topic]
            parse_wire, validate_span = SpanWire.FromString, self._validators[events_pb2.SpanEvent]
            span_type = self._type_headers[events_pb2.SpanEvent]
        for r in records:
            if wire_row is not None and r.topic == spans_topic:
                # the bulk: a span in the platform's envelope, parsed, validated and made a row at once;
                # anything this path cannot read goes the general way below, which words the reason
                h = r.headers
                if r.value is not None and len(h) >= 2 and h[0] == _PROTOBUF_HEADER and h[1] == span_type:
                    try:
                        spans.append((r, wire_row(validate_span(parse_wire(r.value)))))
                        continue
                    except UndecodableMessage as exc:      # parsed, and invalid
                        rejected.append(Rejected(r, str(exc)))
                        continue
                    except (DecodeError, ValueError):
                        pass
            kind = kinds.get(r.topic)
            if kind is None:
                rejected.append(Rejected(r, f"tracing does not consume topic {r.topic!r}", "UnexpectedTopic"))
                continue
            cls = kind[0]
            try:
                # the platform's own envelope (exactly its two headers first): parse and validate
                # directly, without re-reading the headers; anything else (JSON, other producers,
                # bytes that do not parse) goes the general way, which also words the reason
                h = r.headers
                if (r.value is not None and len(h) >= 2 and h[0] == _PROTOBUF_HEADER
                        and h[1] == self._type_headers[cls]):
                    try:
                        ev = self._validators[cls](cls.FromString(r.value))
                    except DecodeError:
                        ev = read_event(r, cls)
                else:
                    ev = read_event(r, cls)
                to_row = self._to_row.get(cls)
                batches[r.topic].append((r, ev if to_row is None else to_row(ev)))
            except UndecodableMessage as exc:
                rejected.append(Rejected(r, str(exc)))
        if wire_row is not None and not spans:
            del batches[spans_topic]
        return rejected, batches

    async def _write(self, topic: str, items: list[tuple[Record, object]]) -> list[Rejected]:
        write = self.kinds[topic][1]
        try:
            stored = await asyncio.to_thread(write, [ev for _, ev in items])
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(items) == 1:
                return [Rejected(items[0][0], f"trace store write failed: {exc}", type(exc).__name__)]
            log.warning("batch write of %d %s events failed (%s); narrowing it down", len(items), topic,
                        type(exc).__name__)
            half = len(items) // 2
            return await self._write(topic, items[:half]) + await self._write(topic, items[half:])
        self._stored(topic, [ev for _, ev in items], stored)
        return []

    def _stored(self, topic: str, events: list, stored: int) -> None:
        """Metrics of what reached the store: new spans (a redelivered span is not counted again; a
        redelivered feedback event is)."""
        if topic.endswith("spans"):
            metrics.SPANS_STORED.inc(stored)
        elif topic.endswith("feedback"):
            for ev in events:
                name = metrics.FEEDBACK_NAME(ev.feedback.name or "user")   # client-chosen: bounded
                if ev.feedback.score < 0:
                    metrics.FEEDBACK_NEGATIVE.labels(name).inc()
                else:
                    metrics.FEEDBACK_SCORES.labels(name).observe(ev.feedback.score)
