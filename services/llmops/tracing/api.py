"""TracingService: protobuf in, store call, protobuf out."""
from __future__ import annotations

import asyncio
import math
import uuid

from llmops.common.errors import InvalidArgument, NotFound
from llmops.tracing.ingest import TRACE_ID
from llmops.tracing.store import InvalidPageToken, TraceQuery, TraceStore, ts_to_us
from llmops.v1 import common_pb2, events_pb2, tracing_pb2, tracing_pb2_grpc

MAX_PAGE = 1000


def check_trace_id(trace_id: str) -> str:
    if not trace_id:
        raise InvalidArgument("trace_id is empty")
    if not TRACE_ID.match(trace_id):
        raise InvalidArgument(f"trace_id {trace_id[:64]!r} is not a trace id (32 lowercase hex characters)")
    return trace_id


class TracingServicer(tracing_pb2_grpc.TracingServiceServicer):
    def __init__(self, store: TraceStore, publisher, topic_prefix: str = "llmops.") -> None:
        self.store = store
        self.publisher = publisher
        self.feedback_topic = f"{topic_prefix}feedback"

    async def GetTrace(self, request, context):
        trace_id = check_trace_id(request.trace_id)
        trace = await asyncio.to_thread(self.store.get_trace, trace_id)
        if trace is None:
            raise NotFound(f"trace {trace_id} not found (spans arrive within seconds of the response)")
        return trace

    async def ListTraces(self, request, context):
        size = request.page_size or 50
        if size < 0 or size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE}, got {request.page_size}")
        start = ts_to_us(request.start_time) if request.HasField("start_time") else 0
        end = ts_to_us(request.end_time) if request.HasField("end_time") else 0
        if start and end and end <= start:
            raise InvalidArgument("end_time must be after start_time")
        q = TraceQuery(start_us=start, end_us=end, session_id=request.session_id, user_id=request.user_id,
                       model=request.model, page_size=size, page_token=request.page_token)
        try:
            rows, token = await asyncio.to_thread(self.store.list_traces, q)
        except InvalidPageToken as exc:
            raise InvalidArgument(str(exc)) from None
        return tracing_pb2.ListTracesResponse(traces=rows, next_page_token=token)

    async def SubmitFeedback(self, request, context):
        trace_id = check_trace_id(request.trace_id)
        if not math.isfinite(request.score):
            raise InvalidArgument("score must be a finite number")
        if not await asyncio.to_thread(self.store.trace_exists, trace_id):
            raise NotFound(f"trace {trace_id} not found")
        fb = common_pb2.Feedback(id=uuid.uuid4().hex, trace_id=trace_id, score=request.score,
                                 comment=request.comment, user_id=request.user_id, name=request.name or "user")
        fb.created_at.GetCurrentTime()
        await asyncio.to_thread(self.store.write_feedback, [fb])
        self.publisher.publish(self.feedback_topic, trace_id, events_pb2.FeedbackEvent(trace_id=trace_id, feedback=fb))
        return tracing_pb2.SubmitFeedbackResponse(feedback=fb)
