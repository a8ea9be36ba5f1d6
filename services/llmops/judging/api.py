"""JudgingService: protobuf in, one use case of :class:`OnDemandJudge`, protobuf out."""
from __future__ import annotations

from llmops.judging.evaluator import Sample
from llmops.judging.on_demand import OnDemandJudge
from llmops.judging.online import score_pb
from llmops.v1 import common_pb2, judging_pb2, judging_pb2_grpc


class JudgingServicer(judging_pb2_grpc.JudgingServiceServicer):
    def __init__(self, judge: OnDemandJudge) -> None:
        self.judge = judge

    async def Score(self, request, context):
        sample = Sample(question=request.question, answer=request.answer, contexts=tuple(request.contexts),
                        reference=request.reference, trace_id=request.trace_id)
        outcomes = await self.judge.score(sample, request.evaluators)
        return judging_pb2.ScoreResponse(scores=[score_pb(o.evaluator, o.judgement) for o in outcomes])

    async def ListEvaluators(self, request, context):
        return judging_pb2.ListEvaluatorsResponse(evaluators=[
            judging_pb2.EvaluatorInfo(name=e.name, version=e.evaluator.version, tier=e.evaluator.tier,
                                      description=e.evaluator.description, settings=e.settings,
                                      metric=e.evaluator.metric, needs_reference=e.evaluator.needs_reference,
                                      scale=e.evaluator.scale, needs_contexts=e.evaluator.needs_contexts)
            for e in self.judge.evaluators()])

    async def Compare(self, request, context):
        v = await self.judge.compare(request.question, request.answer_a, request.answer_b, tuple(request.contexts),
                                     request.reference)
        pt, ct = v.usage
        return judging_pb2.CompareResponse(
            winner=v.winner, consistent=v.consistent, winner_ab=v.winner_ab, winner_ba=v.winner_ba, p_a=v.p_a,
            p_b=v.p_b, p_tie=v.p_tie, judge_model=self.judge.judge_name,
            usage=common_pb2.Usage(prompt_tokens=pt, completion_tokens=ct, total_tokens=pt + ct))
