"""Pairwise judge, MT-Bench style (Zheng et al. 2023): which of two answers to one question is
better? LLM judges favour whichever answer they read first, so the judge is asked in both
orders. Only a winner that survives the swap counts; a verdict that flips with the order is
position bias and is reported as a tie, with ``consistent=False``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from llmops.judging.evaluator import JudgeCall
from llmops.judging.judge_model import JudgeModel

SYSTEM = ("Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
          "assistants to the user question displayed below. Choose the assistant that follows the user's "
          "instructions and answers the user's question better, considering helpfulness, relevance, "
          "accuracy and level of detail. Do not let the order of the responses or their length influence "
          "you. Output your final verdict: A if assistant A is better, B if assistant B is better, "
          "C for a tie.")

CHOICES = {"A": ("A", "[[A", "[A"), "B": ("B", "[[B", "[B"), "tie": ("C", "[[C", "[C")}
SWAP = {"A": "B", "B": "A", "tie": "tie"}


@dataclass
class PairwiseVerdict:
    winner: str              # "A" | "B" | "tie"
    consistent: bool
    winner_ab: str           # with A shown first
    winner_ba: str           # with B shown first, mapped back to A/B
    p_a: float
    p_b: float
    p_tie: float
    calls: list[JudgeCall] = field(default_factory=list)

    @property
    def usage(self) -> tuple[int, int]:
        return sum(c.prompt_tokens for c in self.calls), sum(c.completion_tokens for c in self.calls)


def combine(ab: dict[str, float], ba_swapped: dict[str, float]) -> tuple[str, bool, str, str, dict[str, float]]:
    """Merge the two orders. ``ba_swapped`` is already in A/B terms (the B-first run's "A" is B)."""
    w_ab = max(ab, key=ab.get)
    w_ba = max(ba_swapped, key=ba_swapped.get)
    mean = {k: (ab[k] + ba_swapped[k]) / 2 for k in ab}
    consistent = w_ab == w_ba
    return (w_ab if consistent else "tie"), consistent, w_ab, w_ba, mean


class PairwiseJudge:
    def __init__(self, judge: JudgeModel) -> None:
        self.judge = judge

    def prompt(self, question: str, first: str, second: str, contexts: tuple[str, ...] = (),
               reference: str = "") -> str:
        parts = [f"[User Question]\n{question}"]
        if contexts:
            parts.append("[Retrieved Context]\n" + self.judge.fit("\n\n".join(contexts), 400))
        if reference:
            parts.append(f"[Reference Answer]\n{reference}")
        parts.append(f"[The Start of Assistant A's Answer]\n{self.judge.fit(first, 350)}\n"
                     "[The End of Assistant A's Answer]")
        parts.append(f"[The Start of Assistant B's Answer]\n{self.judge.fit(second, 350)}\n"
                     "[The End of Assistant B's Answer]")
        return self.judge.render(SYSTEM, "\n\n".join(parts), answer_prefix="Final verdict: ")

    async def compare(self, question: str, answer_a: str, answer_b: str, contexts: tuple[str, ...] = (),
                      reference: str = "") -> PairwiseVerdict:
        ab = await self.judge.choose(self.prompt(question, answer_a, answer_b, contexts, reference),
                                     CHOICES, "order AB")
        ba = await self.judge.choose(self.prompt(question, answer_b, answer_a, contexts, reference),
                                     CHOICES, "order BA")
        ba_swapped = {SWAP[k]: v for k, v in ba.probs.items()}
        winner, consistent, w_ab, w_ba, mean = combine(ab.probs, ba_swapped)
        return PairwiseVerdict(winner, consistent, w_ab, w_ba, mean["A"], mean["B"], mean["tie"],
                               ab.calls + ba.calls)
