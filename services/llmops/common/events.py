"""The platform's events, read off Kafka: decode a record and check what every consumer of that
event relies on. Tracing, judging and drift all read these events; they share one definition of
a valid event and of a trace id, so that a message one of them accepts no other one rejects.

A consumed event that fails a check raises :class:`UndecodableMessage` (it goes to the DLQ with
the reason); a trace id in an RPC request that fails it raises :class:`InvalidArgument`.
"""
from __future__ import annotations

import re
from typing import Callable, TypeVar

from google.protobuf.message import Message

from llmops.common.envelope import Record, UndecodableMessage, decode
from llmops.common.errors import InvalidArgument
from llmops.v1 import events_pb2

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
SPAN_ID = re.compile(r"^[0-9a-f]{16}$")

M = TypeVar("M", bound=Message)


def is_trace_id(value: str) -> bool:
    """32 lowercase hex characters (a W3C trace id, as every service writes it)."""
    return bool(TRACE_ID.match(value))


def check_trace_id(trace_id: str, field: str = "trace_id") -> str:
    """The trace id of an RPC request, or INVALID_ARGUMENT saying what is wrong with it."""
    if not trace_id:
        raise InvalidArgument(f"{field} is empty")
    if not is_trace_id(trace_id):
        raise InvalidArgument(f"{field} {trace_id[:64]!r} is not a trace id (32 lowercase hex characters)")
    return trace_id


def _event_trace_id(trace_id: str, what: str) -> None:
    if not is_trace_id(trace_id):
        raise UndecodableMessage(f"{what}.trace_id {trace_id[:64]!r} is not 32 lowercase hex characters")


def validate_span(ev: events_pb2.SpanEvent) -> events_pb2.SpanEvent:
    _event_trace_id(ev.trace_id, "SpanEvent")
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


def validate_completion(ev: events_pb2.CompletionEvent, record: Record | None = None) -> events_pb2.CompletionEvent:
    """A completion without a timestamp happened when its Kafka record was written (a producer
    outside the platform seldom sets one)."""
    _event_trace_id(ev.trace_id, "CompletionEvent")
    if not ev.HasField("timestamp"):
        if record is None or record.timestamp_ms <= 0:
            raise UndecodableMessage("CompletionEvent has no timestamp, and neither has its Kafka record")
        ev.timestamp.FromMilliseconds(record.timestamp_ms)
    return ev


def validate_score(ev: events_pb2.ScoreEvent) -> events_pb2.ScoreEvent:
    _event_trace_id(ev.trace_id, "ScoreEvent")
    if not ev.score.name or not ev.score.evaluator:
        raise UndecodableMessage("ScoreEvent.score needs a name and an evaluator")
    return ev


def validate_feedback(ev: events_pb2.FeedbackEvent) -> events_pb2.FeedbackEvent:
    _event_trace_id(ev.trace_id, "FeedbackEvent")
    if not ev.feedback.id:
        raise UndecodableMessage("FeedbackEvent.feedback has no id")
    if not ev.feedback.trace_id:
        ev.feedback.trace_id = ev.trace_id
    return ev


def validate_retrain(ev: events_pb2.RetrainEvent) -> events_pb2.RetrainEvent:
    if not ev.id:
        raise UndecodableMessage("RetrainEvent has no id")
    return ev


VALIDATORS: dict[type, Callable] = {
    events_pb2.SpanEvent: validate_span,
    events_pb2.CompletionEvent: validate_completion,
    events_pb2.ScoreEvent: validate_score,
    events_pb2.FeedbackEvent: validate_feedback,
    events_pb2.RetrainEvent: validate_retrain,
}


def read_event(record: Record, cls: type[M]) -> M:
    """``record`` decoded as ``cls`` and checked; :class:`UndecodableMessage` says why not."""
    msg = decode(record, cls)
    if cls is events_pb2.CompletionEvent:
        return validate_completion(msg, record)
    validate = VALIDATORS.get(cls)
    return validate(msg) if validate is not None else msg
