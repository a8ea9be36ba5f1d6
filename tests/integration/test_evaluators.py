"""Evaluators on a hand-labelled set (tests/data/judge_labelled.jsonl, 48 items over 11 domains):
each metric must order good above bad examples, not just return a number. Real MiniLM and
SmolLM2 (llama.cpp); the LLM tier's quality is reported by `make bench`, here it must work."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmops.judging.agreement import agreement, load_labelled, pairs_for
from llmops.judging.catalog import build_catalog
from llmops.judging.embedding_tier import EmbeddingCache
from llmops.judging.evaluator import Sample
from llmops.judging.judge_model import JudgeModel

LABELLED = load_labelled(Path(__file__).parents[1] / "data" / "judge_labelled.jsonl")


@pytest.fixture(scope="module")
def catalog(embedder, llama):
    return build_catalog(EmbeddingCache(embedder), JudgeModel(llama))


@pytest.mark.parametrize("name, min_auc, min_accuracy", [
    ("rag.faithfulness.cheap", 0.90, 0.85),
    ("rag.answer_relevancy.cheap", 0.95, 0.95),
    ("rag.context_relevancy.cheap", 0.98, 0.98),
    # surface overlap with a short reference is a weak detector of fabrication (a fabricated
    # answer reuses most of the reference's words); it must still lean the right way
    ("reference.token_f1", 0.62, 0.75),
    ("reference.rouge_l", 0.62, 0.75),
    ("reference.bleu", 0.62, 0.75),
])
async def test_metric_orders_labelled_examples(catalog, name, min_auc, min_accuracy):
    result, _, _ = await agreement(catalog.get(name), LABELLED)
    assert result.errors == 0 and result.n == len(LABELLED)
    assert result.auc >= min_auc, f"{name}: AUC {result.auc:.3f}"
    assert result.pairwise_accuracy >= min_accuracy, f"{name}: accuracy {result.pairwise_accuracy:.3f}"


@pytest.mark.parametrize("name", ["reference.token_f1", "reference.rouge_l", "reference.bleu"])
async def test_reference_metrics_separate_answers_from_off_topic_ones(catalog, name):
    ev = catalog.get(name)
    good = await ev.evaluate([Sample(i.question, i.grounded_answer, reference=i.reference) for i in LABELLED])
    bad = await ev.evaluate([Sample(i.question, i.offtopic_answer, reference=i.reference) for i in LABELLED])
    wins = sum(g.value > b.value for g, b in zip(good, bad))
    assert wins >= 0.9 * len(LABELLED), f"{name}: grounded beat off-topic on {wins}/{len(LABELLED)}"


async def test_faithfulness_names_the_unsupported_claim(catalog):
    ev = catalog.get("rag.faithfulness.cheap")
    item = next(i for i in LABELLED if i.id == "geo-danube-1")
    [good, bad] = await ev.evaluate([Sample(item.question, item.grounded_answer, item.contexts),
                                     Sample(item.question, item.fabricated_answer, item.contexts)])
    assert good.value > bad.value
    assert "unsupported" in bad.explanation
    [none] = await ev.evaluate([Sample(item.question, item.grounded_answer, ())])
    assert not none.ok and "needs contexts" in none.error


async def test_exact_match_on_references(catalog):
    ev = catalog.get("reference.exact_match")
    out = await ev.evaluate([Sample("q", "The AssertionError.", reference="AssertionError"),
                             Sample("q", "ValueError", reference="AssertionError")])
    assert [j.value for j in out] == [1.0, 0.0]


async def test_llm_tier_judges_with_probabilities_and_traced_calls(catalog):
    items = LABELLED[:3]
    for name in ("rag.faithfulness.llm", "rag.answer_relevancy.llm", "rag.context_relevancy.llm"):
        ev = catalog.get(name)
        good, bad = pairs_for(ev.metric, items)
        for j in await ev.evaluate(good + bad):
            assert j.ok, j.error
            assert 0.0 <= j.value <= 1.0
            assert j.calls and all(c.prompt_tokens > 0 and c.completion_tokens == 1 for c in j.calls)
    [j] = await catalog.get("rubric.helpfulness").evaluate([Sample(items[0].question, items[0].grounded_answer)])
    assert j.ok and 1.0 <= j.value <= 5.0 and "score distribution" in j.explanation
    assert [c.purpose for c in j.calls] == ["reasoning", "score"]
