"""Records the spans of one request as ``SpanEvent``s with W3C ids."""
from __future__ import annotations

import secrets
import time
from contextlib import contextmanager
from typing import Iterator

from llmops.v1 import common_pb2, events_pb2


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def _ts(ns: int):
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromNanoseconds(ns)
    return t


class SpanRecorder:
    def __init__(self, trace_id: str, service: str) -> None:
        self.trace_id = trace_id
        self.service = service
        self.spans: list[events_pb2.SpanEvent] = []

    def start(self, name: str, parent: str = "", **attributes) -> events_pb2.SpanEvent:
        span = events_pb2.SpanEvent(trace_id=self.trace_id, span_id=new_span_id(), parent_span_id=parent,
                                    name=name, service=self.service, start_time=_ts(time.time_ns()))
        span.attributes.update({k: str(v) for k, v in attributes.items()})
        self.spans.append(span)
        return span

    @staticmethod
    def end(span: events_pb2.SpanEvent, error: BaseException | None = None, **attributes) -> None:
        span.end_time.CopyFrom(_ts(time.time_ns()))
        span.attributes.update({k: str(v) for k, v in attributes.items()})
        if error is None:
            span.status = common_pb2.SPAN_STATUS_OK
        else:
            span.status = common_pb2.SPAN_STATUS_ERROR
            span.status_message = f"{type(error).__name__}: {error}"[:2000]

    @contextmanager
    def span(self, name: str, parent: str = "", **attributes) -> Iterator[events_pb2.SpanEvent]:
        s = self.start(name, parent, **attributes)
        try:
            yield s
        except BaseException as exc:
            self.end(s, exc)
            raise
        else:
            self.end(s)

    def close_open(self, error: BaseException | None) -> None:
        """End every span still open (an error cut the request short)."""
        for s in self.spans:
            if not s.HasField("end_time"):
                self.end(s, error)
