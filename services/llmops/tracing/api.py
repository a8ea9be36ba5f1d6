"""TracingService: protobuf in, store call, protobuf out."""
from __future__ import annotations

import asyncio
import math
import uuid

from llmops.common.errors import AlreadyExists, InvalidArgument, NotFound
from llmops.tracing.ingest import TRACE_ID
from llmops.tracing.store import InvalidPageToken, RunNameTaken, TraceQuery, TraceStore, ts_to_us
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
        lo = request.min_score if request.HasField("min_score") else None
        hi = request.max_score if request.HasField("max_score") else None
        if (lo is not None or hi is not None or request.evaluator) and not request.score_name:
            raise InvalidArgument("min_score, max_score and evaluator filter a score: set score_name too")
        if any(v is not None and not math.isfinite(v) for v in (lo, hi)):
            raise InvalidArgument("min_score and max_score must be finite numbers")
        if lo is not None and hi is not None and hi < lo:
            raise InvalidArgument(f"max_score ({hi}) is below min_score ({lo})")
        q = TraceQuery(start_us=start, end_us=end, session_id=request.session_id, user_id=request.user_id,
                       model=request.model, page_size=size, page_token=request.page_token,
                       score_name=request.score_name, evaluator=request.evaluator, min_score=lo, max_score=hi)
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

    async def SaveEvalRun(self, request, context):
        run = request.run
        if not run.name.strip():
            raise InvalidArgument("run.name is empty")
        if len(run.name) > 200:
            raise InvalidArgument("run.name is longer than 200 characters")
        if not run.dataset_hash:
            raise InvalidArgument("run.dataset_hash is empty")
        ids = [i.item_id for i in run.items]
        if len(set(ids)) != len(ids) or not all(ids):
            raise InvalidArgument("every item needs an item_id, unique within the run")
        for i in run.items:
            if i.trace_id:
                check_trace_id(i.trace_id)
        try:
            return await asyncio.to_thread(self.store.save_eval_run, run)
        except RunNameTaken as exc:
            raise AlreadyExists(f"{exc}; choose another --name") from None

    async def GetEvalRun(self, request, context):
        if not request.name:
            raise InvalidArgument("name is empty (a run's name or run_id)")
        run = await asyncio.to_thread(self.store.get_eval_run, request.name)
        if run is None:
            raise NotFound(f"no evaluation run named {request.name!r}")
        return run

    async def ListEvalRuns(self, request, context):
        size = request.page_size or 50
        if size < 0 or size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE}, got {request.page_size}")
        runs = await asyncio.to_thread(self.store.list_eval_runs, request.dataset_hash, size)
        return tracing_pb2.ListEvalRunsResponse(runs=runs)
