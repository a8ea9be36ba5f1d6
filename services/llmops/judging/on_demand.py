"""The judging service's on-demand use cases (the gRPC API): score one answer with named
evaluators (and attach the scores to its trace), compare two answers with the pairwise judge,
and describe the evaluators. The online judge (:mod:`.online`) runs the same evaluators on the
stream; both record the same metrics and publish the same events."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from llmops.common.bus import EventPublisher
from llmops.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from llmops.common.events import check_trace_id
from llmops.judging.catalog import Catalog
from llmops.judging.embedding_tier import EmbeddingCache
from llmops.judging.evaluator import Evaluator, Sample
from llmops.judging.online import Outcome, events_for, judge_once, observe
from llmops.judging.pairwise import PairwiseJudge, PairwiseVerdict
from llmops.v1 import events_pb2

MAX_TEXT = 100_000   # characters of a question, an answer, a reference or one context
MAX_CONTEXTS = 50    # contexts of one request: each is embedded, and judged once per context in the LLM tier


def check_text(value: str, field: str, required: bool = True) -> None:
    if required and not value.strip():
        raise InvalidArgument(f"{field} is empty")
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"{field} is {len(value)} characters; the limit is {MAX_TEXT}")


def check_contexts(contexts: Sequence[str]) -> None:
    if len(contexts) > MAX_CONTEXTS:
        raise InvalidArgument(f"contexts holds {len(contexts)} items; the limit is {MAX_CONTEXTS}")
    for i, c in enumerate(contexts):
        check_text(c, f"contexts[{i}]")


@dataclass(frozen=True)
class EvaluatorInfo:
    name: str
    evaluator: Evaluator
    settings: dict[str, str]


class OnDemandJudge:
    def __init__(self, catalog: Catalog, cache: EmbeddingCache | None, pairwise: PairwiseJudge | None,
                 publisher: EventPublisher, topic_prefix: str = "llmops.") -> None:
        self.catalog = catalog
        self.cache = cache
        self.pairwise = pairwise
        self.publisher = publisher
        self.topic_prefix = topic_prefix

    def evaluators(self) -> list[EvaluatorInfo]:
        return [EvaluatorInfo(n, self.catalog.get(n), self.catalog.settings_of(n)) for n in self.catalog.names]

    def _chosen(self, sample: Sample, requested: Sequence[str]) -> list[str]:
        names = list(dict.fromkeys(requested))
        if not names:
            return self.catalog.defaults_for_request(bool(sample.reference), bool(sample.contexts))
        unknown = [n for n in names if n not in self.catalog]
        if unknown:
            raise InvalidArgument(f"unknown evaluator(s) {', '.join(map(repr, unknown))}; ListEvaluators lists "
                                  f"them: {', '.join(self.catalog.names)}")
        for n in names:
            ev = self.catalog.get(n)
            if ev.needs_reference and not sample.reference.strip():
                raise InvalidArgument(f"evaluator {n!r} needs a reference answer; set reference")
            if ev.needs_contexts and not sample.contexts:
                raise InvalidArgument(f"evaluator {n!r} needs contexts; set contexts")
        return names

    async def score(self, sample: Sample, evaluators: Sequence[str] = ()) -> list[Outcome]:
        """Run ``evaluators`` (default: those that fit the sample) on one answer. With a trace id,
        the scores (and judge spans) are published to that trace before this returns."""
        check_text(sample.question, "question")
        check_text(sample.answer, "answer")
        check_text(sample.reference, "reference", required=False)
        check_contexts(sample.contexts)
        if sample.trace_id:
            check_trace_id(sample.trace_id)
        start_ns = time.time_ns()
        outcomes = await judge_once(self.catalog, self._chosen(sample, evaluators), sample, self.cache)
        end_ns = time.time_ns()
        observe(outcomes)
        if sample.trace_id:
            completion = events_pb2.CompletionEvent(trace_id=sample.trace_id)
            try:
                await self.publisher.send_many(events_for(outcomes, {sample.trace_id: completion}, self.topic_prefix,
                                                          label="on-demand", start_ns=start_ns, end_ns=end_ns))
            except Exception as exc:
                raise Unavailable(f"scores were computed but could not be attached to the trace: {exc}") from None
        return outcomes

    async def compare(self, question: str, answer_a: str, answer_b: str, contexts: tuple[str, ...] = (),
                      reference: str = "") -> PairwiseVerdict:
        """Which answer is better, asked in both orders (a judge failure is UNAVAILABLE)."""
        check_text(question, "question")
        check_text(answer_a, "answer_a")
        check_text(answer_b, "answer_b")
        check_text(reference, "reference", required=False)
        check_contexts(contexts)
        if self.pairwise is None:
            raise FailedPrecondition("no judge model is configured (LLMOPS_JUDGE_BACKEND=none)")
        return await self.pairwise.compare(question, answer_a, answer_b, contexts, reference)

    @property
    def judge_name(self) -> str:
        return self.pairwise.judge.name if self.pairwise else ""
