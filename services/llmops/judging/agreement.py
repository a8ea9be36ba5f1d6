"""Agreement of evaluators with human labels: does an evaluator order labelled examples the way
the labels do? Reported as ROC AUC (the probability that a random good example outscores a random
bad one). Used by the tests and the benchmark; a team can run it on its own labelled set.

A labelled RAG item (JSONL) holds a question, its contexts, off-topic contexts, a reference, and a
grounded, a fabricated and an off-topic answer. Each metric gets its own good/bad pairs:

- faithfulness: grounded answer (good) vs fabricated answer (bad), same contexts;
- answer relevancy: grounded answer (good) vs off-topic answer (bad);
- context relevancy: the item's contexts (good) vs off-topic contexts (bad);
- reference metrics: grounded answer (good) vs fabricated answer (bad), against the reference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sklearn.metrics import roc_auc_score

from llmops.judging.evaluator import Evaluator, Judgement, Sample


@dataclass(frozen=True)
class LabelledItem:
    id: str
    question: str
    contexts: tuple[str, ...]
    offtopic_contexts: tuple[str, ...]
    reference: str
    grounded_answer: str
    fabricated_answer: str
    offtopic_answer: str


def load_labelled(path: str | Path) -> list[LabelledItem]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            o = json.loads(line)
            out.append(LabelledItem(o["id"], o["question"], tuple(o["contexts"]), tuple(o["offtopic_contexts"]),
                                    o["reference"], o["grounded_answer"], o["fabricated_answer"], o["offtopic_answer"]))
    return out


def pairs_for(metric: str, items: Sequence[LabelledItem]) -> tuple[list[Sample], list[Sample]]:
    """(good samples, bad samples) that ``metric`` should tell apart."""
    good, bad = [], []
    for it in items:
        base = dict(question=it.question, contexts=it.contexts, reference=it.reference, trace_id=it.id)
        if metric == "context_relevancy":
            good.append(Sample(answer=it.grounded_answer, **base))
            bad.append(Sample(answer=it.grounded_answer, **{**base, "contexts": it.offtopic_contexts}))
        elif metric == "answer_relevancy":
            good.append(Sample(answer=it.grounded_answer, **base))
            bad.append(Sample(answer=it.offtopic_answer, **base))
        else:  # faithfulness, rubrics and reference metrics: grounded vs fabricated
            good.append(Sample(answer=it.grounded_answer, **base))
            bad.append(Sample(answer=it.fabricated_answer, **base))
    return good, bad


@dataclass
class Agreement:
    evaluator: str
    metric: str
    auc: float
    pairwise_accuracy: float     # share of items where the good example scored strictly higher
    n: int
    errors: int


async def agreement(ev: Evaluator, items: Sequence[LabelledItem]) -> tuple[Agreement, list[Judgement], list[Judgement]]:
    good, bad = pairs_for(ev.metric, items)
    jg, jb = await ev.evaluate(good), await ev.evaluate(bad)
    ok = [(g.value, b.value) for g, b in zip(jg, jb) if g.ok and b.ok]
    errors = sum(1 for j in jg + jb if not j.ok)
    if not ok:
        return Agreement(ev.name, ev.metric, float("nan"), float("nan"), 0, errors), jg, jb
    labels = [1] * len(ok) + [0] * len(ok)
    values = [g for g, _ in ok] + [b for _, b in ok]
    auc = float(roc_auc_score(labels, values)) if len(set(values)) > 1 else 0.5
    acc = sum(g > b for g, b in ok) / len(ok)
    return Agreement(ev.name, ev.metric, auc, acc, len(ok), errors), jg, jb
