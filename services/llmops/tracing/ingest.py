"""Consumer of spans, completions, scores and feedback: validates each event and writes batches
to the trace store. Invalid events go to the DLQ with the reason; a failing batch is retried one
event at a time so that one bad row cannot park its neighbours."""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from llmops.common import metrics
from llmops.common.envelope import Record, UndecodableMessage
from llmops.common.events import read_event
from llmops.common.stream import Rejected
from llmops.tracing.store import TraceStore
from llmops.v1 import events_pb2

log = logging.getLogger(__name__)


class TraceIngestor:
    def __init__(self, store: TraceStore, topic_prefix: str = "llmops.") -> None:
        self.store = store
        metrics.FEEDBACK_SCORES.labels("user")   # exported from the start: the first feedback is an increase
        metrics.FEEDBACK_NEGATIVE.labels("user")
        self.kinds = {
            f"{topic_prefix}spans": (events_pb2.SpanEvent, store.write_spans),
            f"{topic_prefix}completions": (events_pb2.CompletionEvent, store.write_completions),
            f"{topic_prefix}scores": (events_pb2.ScoreEvent, store.write_scores),
            f"{topic_prefix}feedback": (events_pb2.FeedbackEvent,
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
            try:
                batches[r.topic].append((r, read_event(r, kind[0])))
            except UndecodableMessage as exc:
                rejected.append(Rejected(r, str(exc)))
        # completions before spans is not required (writes commute), but spans first keeps counts fresh
        for topic, items in batches.items():
            write = self.kinds[topic][1]
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
                name = metrics.FEEDBACK_NAME(ev.feedback.name or "user")   # client-chosen: bounded
                if ev.feedback.score < 0:
                    metrics.FEEDBACK_NEGATIVE.labels(name).inc()
                else:
                    metrics.FEEDBACK_SCORES.labels(name).observe(ev.feedback.score)
