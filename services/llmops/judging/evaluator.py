"""What an evaluator is: it reads a :class:`Sample` (question, answer, contexts, reference) and
returns one :class:`Judgement` per sample. Evaluators work on batches so that the cheap tier can
embed a whole batch of completions in one model call.

Every evaluator writes one score name (``metric``) under its own ``name`` and ``version``; the
trace store keys scores by (trace_id, evaluator, version, name), so a redelivered completion
overwrites its scores instead of adding to them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

TIERS = ("cheap", "llm", "reference", "safety")


@dataclass(frozen=True)
class Sample:
    question: str
    answer: str
    contexts: tuple[str, ...] = ()
    reference: str = ""
    trace_id: str = ""
    model: str = ""
    prompt_template: str = ""
    prompt_version: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    deployment: str = ""            # the deployment (version) that answered, for metric labels
    deployment_version: int = 0


@dataclass(frozen=True)
class JudgeCall:
    """One call to the judge model, traced as a span of the trace it judges."""
    purpose: str              # e.g. "claim 2/3", "score", "order AB"
    model: str
    start_ns: int
    end_ns: int
    prompt_tokens: int
    completion_tokens: int
    error: str = ""


@dataclass
class Judgement:
    value: float
    explanation: str = ""
    error: str = ""                                   # set: the evaluator failed; value is meaningless
    calls: list[JudgeCall] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error

    @classmethod
    def failed(cls, error: str, calls: list[JudgeCall] | None = None) -> "Judgement":
        return cls(value=0.0, explanation=error, error=error, calls=list(calls or []))

    def __post_init__(self) -> None:
        if not self.error and not math.isfinite(self.value):
            self.error = f"evaluator produced a non-finite value ({self.value})"
            self.explanation = self.explanation or self.error
            self.value = 0.0


class Evaluator(Protocol):
    name: str              # unique, e.g. "rag.faithfulness.cheap"
    metric: str            # the score name it writes, e.g. "faithfulness"
    version: str
    tier: str              # one of TIERS
    description: str
    needs_reference: bool
    needs_contexts: bool   # meaningless without retrieved contexts: skipped online, refused by Score
    scale: str             # "0-1" | "1-5" | "flag"

    def settings(self) -> dict[str, str]: ...

    async def evaluate(self, samples: Sequence[Sample]) -> list[Judgement]: ...


def clip01(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else float(x)
