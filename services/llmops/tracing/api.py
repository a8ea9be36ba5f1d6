"""TracingService: protobuf in, one use case of :class:`Traces`, protobuf out."""
from __future__ import annotations

from llmops.common.times import request_ts_us
from llmops.tracing.store import TraceQuery
from llmops.tracing.traces import FeedbackIn, Traces
from llmops.v1 import tracing_pb2, tracing_pb2_grpc


def _optional(request, field: str):
    return getattr(request, field) if request.HasField(field) else None


class TracingServicer(tracing_pb2_grpc.TracingServiceServicer):
    def __init__(self, traces: Traces) -> None:
        self.traces = traces

    async def GetTrace(self, request, context):
        return await self.traces.get(request.trace_id)

    async def ListTraces(self, request, context):
        query = TraceQuery(
            start_us=request_ts_us(request, "start_time"),
            end_us=request_ts_us(request, "end_time"),
            session_id=request.session_id, user_id=request.user_id, model=request.model,
            page_size=request.page_size, page_token=request.page_token, score_name=request.score_name,
            evaluator=request.evaluator, min_score=_optional(request, "min_score"),
            max_score=_optional(request, "max_score"), route=request.route, deployment=request.deployment,
            deployment_version=request.deployment_version, arm=request.arm)
        rows, token = await self.traces.list(query)
        return tracing_pb2.ListTracesResponse(traces=rows, next_page_token=token)

    async def SubmitFeedback(self, request, context):
        fb = await self.traces.submit_feedback(FeedbackIn(trace_id=request.trace_id, score=request.score,
                                                          comment=request.comment, user_id=request.user_id,
                                                          name=request.name))
        return tracing_pb2.SubmitFeedbackResponse(feedback=fb)

    async def SaveEvalRun(self, request, context):
        return await self.traces.save_eval_run(request.run)

    async def GetEvalRun(self, request, context):
        return await self.traces.get_eval_run(request.name)

    async def ListEvalRuns(self, request, context):
        runs = await self.traces.list_eval_runs(request.dataset_hash, request.page_size)
        return tracing_pb2.ListEvalRunsResponse(runs=runs)
