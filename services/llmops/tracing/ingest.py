"""Consumer of spans, completions, scores and feedback: validates each event and writes batches
to the trace store. Invalid events go to the DLQ with the reason; a failing batch is retried one
event at a time so that one bad row cannot park its neighbours."""
from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict

from llmops.common import metrics
from llmops.common.envelope import Record, UndecodableMessage, decode
from llmops.common.stream import Rejected
from llmops.tracing.store import TraceStore
from llmops.v1 import events_pb2

log = logging.getLogger(__name__)

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
SPAN_ID = re.compile(r"^[0-9a-f]{16}$")


def _check_trace_id(trace_id: str, what: str) -> None:
    if not TRACE_ID.match(trace_id):
        raise UndecodableMessage(f"{what}.trace_id {trace_id[:64]!r} is not 32 lowercase hex characters")


def validate_span(ev: events_pb2.SpanEvent) -> events_pb2.SpanEvent:
    _check_trace_id(ev.trace_id, "SpanEvent")
    if not SPAN_ID.match(ev.span_id):
        raise UndecodableMessage(f"SpanEvent.span_id {ev.span_id[:64]!r} is not 16 lowercase hex characters")
    if ev.parent_span_id and not SPAN_ID.match(ev.parent_span_id):
        raise UndecodableMessage(f"SpanEvent.parent_span_id {ev.parent_span_id[:64]!r} is not 16 hex characters")
    if not ev.name:
        raise UndecodableMessage("SpanEvent has no name")
    if not ev.HasField("start_time"):
        raise UndecodableMessage("SpanEvent has no start_time")
    if not ev.HasField("end_time"):
        ev.end_time.CopyFrom(ev.start_time)
    return ev


def validate_completion(ev: events_pb2.CompletionEvent) -> events_pb2.CompletionEvent:
    _check_trace_id(ev.trace_id, "CompletionEvent")
    if not ev.HasField("timestamp"):
        raise UndecodableMessage("CompletionEvent has no timestamp")
    return ev


def validate_score(ev: events_pb2.ScoreEvent) -> events_pb2.ScoreEvent:
    _check_trace_id(ev.trace_id, "ScoreEvent")
    if not ev.score.name or not ev.score.evaluator:
        raise UndecodableMessage("ScoreEvent.score needs a name and an evaluator")
    return ev


def validate_feedback(ev: events_pb2.FeedbackEvent) -> events_pb2.FeedbackEvent:
    _check_trace_id(ev.trace_id, "FeedbackEvent")
    if not ev.feedback.id:
        raise UndecodableMessage("FeedbackEvent.feedback has no id")
    if not ev.feedback.trace_id:
        ev.feedback.trace_id = ev.trace_id
    return ev


class TraceIngestor:
    def __init__(self, store: TraceStore, topic_prefix: str = "llmops.") -> None:
        self.store = store
        metrics.FEEDBACK_SCORES.labels("user")   # exported from the start: the first feedback is an increase
        metrics.FEEDBACK_NEGATIVE.labels("user")
        self.kinds = {
            f"{topic_prefix}spans": (events_pb2.SpanEvent, validate_span, store.write_spans),
            f"{topic_prefix}completions": (events_pb2.CompletionEvent, validate_completion, store.write_completions),
            f"{topic_prefix}scores": (events_pb2.ScoreEvent, validate_score, store.write_scores),
            f"{topic_prefix}feedback": (events_pb2.FeedbackEvent, validate_feedback,
                                         lambda evs: store.write_feedback([e.feedback for e in evs])),
        }

    @property
    def topics(self) -> list[str]:
        return list(self.kinds)

    async def handle(self, records: list[Record]) -> list[Rejected]:
        rejected: list[Rejected] = []
        batches: dict[str, list[tuple[Record, object]]] = defaultdict(list)
        for r in records:
            kind = self.kinds.get(r.topic)
            if kind is None:
                rejected.append(Rejected(r, f"tracing does not consume topic {r.topic!r}", "UnexpectedTopic"))
                continue
            cls, validate, _ = kind
            try:
                batches[r.topic].append((r, validate(decode(r, cls))))
            except UndecodableMessage as exc:
                rejected.append(Rejected(r, str(exc)))
        # completions before spans is not required (writes commute), but spans first keeps counts fresh
        for topic, items in batches.items():
            write = self.kinds[topic][2]
            try:
                await asyncio.to_thread(write, [ev for _, ev in items])
                self._stored(topic, [ev for _, ev in items])
            except Exception:
                log.warning("batch write of %d %s events failed; retrying one by one", len(items), topic, exc_info=True)
                for r, ev in items:
                    try:
                        await asyncio.to_thread(write, [ev])
                        self._stored(topic, [ev])
                    except Exception as exc:
                        rejected.append(Rejected(r, f"trace store write failed: {exc}", type(exc).__name__))
        return rejected

    def _stored(self, topic: str, events: list) -> None:
        """Metrics of what reached the store (a redelivered feedback event counts again)."""
        if topic.endswith("spans"):
            metrics.SPANS_STORED.inc(len(events))
        elif topic.endswith("feedback"):
            for ev in events:
                name = ev.feedback.name or "user"
                if ev.feedback.score < 0:
                    metrics.FEEDBACK_NEGATIVE.labels(name).inc()
                else:
                    metrics.FEEDBACK_SCORES.labels(name).observe(ev.feedback.score)
