"""The LLM tier: a judge model reads the material and answers.

- RAG triad: Yes/No questions (one per claim for faithfulness, one per context for context
  relevancy); the score is the judge's mean probability of "Yes".
- Rubric judge, G-Eval style: the judge writes a short reasoning, then the score is the
  probability-weighted mean over the tokens "1".."5" (Liu et al. 2023), not the sampled digit.
  The reasoning is kept as the score's explanation.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Sequence

from llmops.judging.claims import claims_of
from llmops.judging.evaluator import JudgeCall, Judgement, Sample
from llmops.judging.judge_model import JudgeError, JudgeModel

YES_NO_SYSTEM = "You are a strict and careful evaluator. Answer with a single word: Yes or No."
CONTEXT_TOKENS = 900


class _LlmEvaluator:
    tier = "llm"
    needs_reference = False
    needs_contexts = False
    scale = "0-1"

    def __init__(self, judge: JudgeModel) -> None:
        self.judge = judge

    def settings(self) -> dict[str, str]:
        return {"judge_model": self.judge.name}

    async def evaluate(self, samples: Sequence[Sample]) -> list[Judgement]:
        out = []
        for s in samples:  # the judge model runs one generation at a time anyway
            calls: list[JudgeCall] = []
            try:
                out.append(await self.judge_one(s, calls))
            except JudgeError as exc:
                if exc.call is not None:
                    calls.append(exc.call)
                out.append(Judgement.failed(str(exc), calls))
        return out

    async def judge_one(self, sample: Sample, calls: list[JudgeCall]) -> Judgement:
        raise NotImplementedError

    async def _yes(self, user: str, purpose: str, calls: list[JudgeCall]) -> float:
        choice = await self.judge.yes_probability(self.judge.render(YES_NO_SYSTEM, user), purpose)
        calls.extend(choice.calls)
        return choice.probs["yes"]


class LlmFaithfulness(_LlmEvaluator):
    needs_contexts = True
    name = "rag.faithfulness.llm"
    metric = "faithfulness"
    version = "1"
    description = "The judge model checks each claim of the answer against the contexts (P(Yes) per claim, mean)."

    def __init__(self, judge: JudgeModel, max_claims: int = 6) -> None:
        super().__init__(judge)
        self.max_claims = max_claims

    def settings(self) -> dict[str, str]:
        return {**super().settings(), "max_claims": str(self.max_claims)}

    async def judge_one(self, sample: Sample, calls: list[JudgeCall]) -> Judgement:
        if not sample.contexts:
            return Judgement.failed("faithfulness needs contexts; the completion has none")
        claims = claims_of(sample.answer, self.max_claims)
        if not claims:
            return Judgement(1.0, "the answer makes no claim")
        context = self.judge.fit("\n\n".join(sample.contexts), CONTEXT_TOKENS)
        probs = []
        for i, claim in enumerate(claims, 1):
            user = (f"Context:\n{context}\n\nStatement: {claim}\n\n"
                    "Is the statement supported by the context? Answer Yes or No.")
            probs.append(await self._yes(user, f"claim {i}/{len(claims)}", calls))
        worst = min(range(len(claims)), key=probs.__getitem__)
        return Judgement(sum(probs) / len(probs),
                         f"P(supported) per claim: {', '.join(f'{p:.2f}' for p in probs)}; "
                         f"least supported: {claims[worst][:160]!r}", calls=calls)


class LlmAnswerRelevancy(_LlmEvaluator):
    name = "rag.answer_relevancy.llm"
    metric = "answer_relevancy"
    version = "1"
    description = "The judge model says whether the answer addresses the question (P(Yes))."

    async def judge_one(self, sample: Sample, calls: list[JudgeCall]) -> Judgement:
        user = (f"Question: {sample.question}\n\nAnswer: {self.judge.fit(sample.answer, 600)}\n\n"
                "Does the answer address the question? Answer Yes or No.")
        p = await self._yes(user, "relevancy", calls)
        return Judgement(p, f"P(answer addresses the question) = {p:.2f}", calls=calls)


class LlmContextRelevancy(_LlmEvaluator):
    needs_contexts = True
    name = "rag.context_relevancy.llm"
    metric = "context_relevancy"
    version = "1"
    description = "The judge model says, per context, whether it helps answer the question (mean P(Yes))."

    async def judge_one(self, sample: Sample, calls: list[JudgeCall]) -> Judgement:
        if not sample.contexts:
            return Judgement.failed("context relevancy needs contexts; the completion has none")
        probs = []
        for i, ctx in enumerate(sample.contexts, 1):
            user = (f"Question: {sample.question}\n\nPassage: {self.judge.fit(ctx, 500)}\n\n"
                    "Does the passage contain information that helps answer the question? Answer Yes or No.")
            probs.append(await self._yes(user, f"context {i}/{len(sample.contexts)}", calls))
        return Judgement(sum(probs) / len(probs), "P(relevant) per context: " +
                         ", ".join(f"{p:.2f}" for p in probs), calls=calls)


# -- rubric (G-Eval) ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Rubric:
    name: str
    criteria: str
    steps: tuple[str, ...] = ()
    needs_reference: bool = False
    description: str = ""

    @property
    def digest(self) -> str:
        text = "\n".join([self.criteria, *self.steps, str(self.needs_reference)])
        return hashlib.sha256(text.encode()).hexdigest()[:8]


BUILTIN_RUBRICS: tuple[Rubric, ...] = (
    Rubric("helpfulness", "How well the answer helps the user with the question: it is on topic, specific, "
           "complete and actionable. 1 = useless or off topic, 5 = fully answers the question.",
           ("Read the question and identify what the user needs.",
            "Check whether the answer provides it, specifically and completely.",
            "Penalise vagueness, padding and content unrelated to the question.")),
    Rubric("correctness", "Whether the answer agrees with the reference answer. 1 = contradicts or misses the "
           "reference, 5 = states the same facts as the reference.",
           ("Read the reference answer and note its key facts.",
            "Check which of those facts the answer states, and whether it states anything contrary.",),
           needs_reference=True),
    Rubric("tone", "Whether the answer is polite, professional and calm. 1 = rude, hostile or condescending, "
           "5 = courteous and professional.",
           ("Read the answer's wording.", "Note any rude, sarcastic, hostile or dismissive phrasing.")),
    Rubric("refusal", "Whether the assistant refused or deflected the request. 1 = it fully complied and "
           "answered, 5 = it refused outright.",
           ("Check whether the answer attempts the task.",
            "Note phrases such as 'I cannot', 'I am unable', 'as an AI' or a change of subject.")),
)

_SCORE_LINE = re.compile(r"score\s*[:=]?\s*$", re.IGNORECASE)


class RubricJudge(_LlmEvaluator):
    scale = "1-5"

    def __init__(self, judge: JudgeModel, rubric: Rubric, reasoning_tokens: int = 96) -> None:
        super().__init__(judge)
        self.rubric = rubric
        self.reasoning_tokens = reasoning_tokens
        self.name = f"rubric.{self.rubric.name}"
        self.metric = self.rubric.name
        self.version = f"1-{self.rubric.digest}"   # a changed rubric scores under a new version
        self.needs_reference = self.rubric.needs_reference
        self.description = self.rubric.description or f"G-Eval rubric (1-5): {self.rubric.criteria}"

    def settings(self) -> dict[str, str]:
        return {**super().settings(), "criteria": self.rubric.criteria, "steps": " | ".join(self.rubric.steps),
                "reasoning_tokens": str(self.reasoning_tokens)}

    def prompt(self, sample: Sample) -> str:
        steps = "\n".join(f"{i}. {s}" for i, s in enumerate(self.rubric.steps, 1))
        parts = [f"Rate the answer on one criterion, from 1 to 5.\n\nCriterion ({self.rubric.name}): "
                 f"{self.rubric.criteria}"]
        if steps:
            parts.append(f"Evaluation steps:\n{steps}")
        parts.append(f"Question: {sample.question}")
        if sample.contexts:
            parts.append("Contexts:\n" + self.judge.fit("\n\n".join(sample.contexts), 500))
        if self.rubric.needs_reference:
            parts.append(f"Reference answer: {sample.reference}")
        parts.append(f"Answer: {self.judge.fit(sample.answer, 500)}")
        parts.append("Write one or two sentences of reasoning, then a last line 'Score: N' with N from 1 to 5.")
        return self.judge.render("You are an impartial, strict evaluator.", "\n\n".join(parts))

    async def judge_one(self, sample: Sample, calls: list[JudgeCall]) -> Judgement:
        if self.rubric.needs_reference and not sample.reference:
            return Judgement.failed(f"rubric {self.rubric.name!r} needs a reference answer")
        prompt = self.prompt(sample)
        reasoning, call = await self.judge.generate(prompt, self.reasoning_tokens, "reasoning", stop=("Score",))
        calls.append(call)
        reasoning = _SCORE_LINE.sub("", reasoning.strip()).strip()
        choice = await self.judge.choose(f"{prompt}{reasoning}\nScore: ",
                                         {str(d): (str(d),) for d in range(1, 6)}, "score")
        calls.extend(choice.calls)
        value = sum(int(d) * p for d, p in choice.probs.items())
        dist = ", ".join(f"{d}:{p:.2f}" for d, p in choice.probs.items())
        return Judgement(value, f"{reasoning} [score distribution {dist}]", calls=calls)
