"""JudgingService: protobuf in, evaluators, protobuf out."""
from __future__ import annotations

from llmops.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from llmops.judging.catalog import Catalog
from llmops.judging.embedding_tier import EmbeddingCache
from llmops.judging.evaluator import Sample
from llmops.judging.judge_model import JudgeError
from llmops.judging.online import Sender, events_for, judge_once, observe, score_pb
from llmops.judging.pairwise import PairwiseJudge
from llmops.tracing.api import check_trace_id
from llmops.v1 import common_pb2, events_pb2, judging_pb2, judging_pb2_grpc

MAX_TEXT = 100_000


def _check_text(value: str, field: str, required: bool = True) -> None:
    if required and not value.strip():
        raise InvalidArgument(f"{field} is empty")
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"{field} is {len(value)} characters; the limit is {MAX_TEXT}")


class JudgingServicer(judging_pb2_grpc.JudgingServiceServicer):
    def __init__(self, catalog: Catalog, cache: EmbeddingCache | None, pairwise: PairwiseJudge | None,
                 sender: Sender, topic_prefix: str = "llmops.") -> None:
        self.catalog = catalog
        self.cache = cache
        self.pairwise = pairwise
        self.sender = sender
        self.topic_prefix = topic_prefix

    def _evaluators(self, request) -> list[str]:
        names = list(dict.fromkeys(request.evaluators))
        if not names:
            return self.catalog.defaults_for_request(bool(request.reference), bool(request.contexts))
        unknown = [n for n in names if n not in self.catalog]
        if unknown:
            raise InvalidArgument(f"unknown evaluator(s) {', '.join(map(repr, unknown))}; ListEvaluators lists "
                                  f"them: {', '.join(self.catalog.names)}")
        for n in names:
            ev = self.catalog.get(n)
            if ev.needs_reference and not request.reference.strip():
                raise InvalidArgument(f"evaluator {n!r} needs a reference answer; set reference")
            if ev.needs_contexts and not request.contexts:
                raise InvalidArgument(f"evaluator {n!r} needs contexts; set contexts")
        return names

    async def Score(self, request, context):
        _check_text(request.question, "question")
        _check_text(request.answer, "answer")
        _check_text(request.reference, "reference", required=False)
        for i, c in enumerate(request.contexts):
            _check_text(c, f"contexts[{i}]")
        if request.trace_id:
            check_trace_id(request.trace_id)
        names = self._evaluators(request)
        sample = Sample(question=request.question, answer=request.answer, contexts=tuple(request.contexts),
                        reference=request.reference, trace_id=request.trace_id)
        outcomes = await judge_once(self.catalog, names, sample, self.cache)
        observe(outcomes)
        if request.trace_id:
            completion = events_pb2.CompletionEvent(trace_id=request.trace_id)
            try:
                await self.sender.send_many(events_for(outcomes, {request.trace_id: completion}, self.topic_prefix))
            except Exception as exc:
                raise Unavailable(f"scores were computed but could not be attached to the trace: {exc}") from None
        return judging_pb2.ScoreResponse(scores=[score_pb(o.evaluator, o.judgement) for o in outcomes])

    async def ListEvaluators(self, request, context):
        out = judging_pb2.ListEvaluatorsResponse()
        for name in self.catalog.names:
            ev = self.catalog.get(name)
            out.evaluators.add(name=name, version=ev.version, tier=ev.tier, description=ev.description,
                               settings=self.catalog.settings_of(name), metric=ev.metric,
                               needs_reference=ev.needs_reference, scale=ev.scale,
                               needs_contexts=ev.needs_contexts)
        return out

    async def Compare(self, request, context):
        _check_text(request.question, "question")
        _check_text(request.answer_a, "answer_a")
        _check_text(request.answer_b, "answer_b")
        if self.pairwise is None:
            raise FailedPrecondition("no judge model is configured (LLMOPS_JUDGE_BACKEND=none)")
        try:
            v = await self.pairwise.compare(request.question, request.answer_a, request.answer_b,
                                            tuple(request.contexts), request.reference)
        except JudgeError as exc:
            raise Unavailable(f"the judge model failed: {exc}") from None
        pt, ct = v.usage
        return judging_pb2.CompareResponse(
            winner=v.winner, consistent=v.consistent, winner_ab=v.winner_ab, winner_ba=v.winner_ba, p_a=v.p_a,
            p_b=v.p_b, p_tie=v.p_tie, judge_model=self.pairwise.judge.name,
            usage=common_pb2.Usage(prompt_tokens=pt, completion_tokens=ct, total_tokens=pt + ct))
