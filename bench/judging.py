"""Judging benchmarks.

1. Throughput per tier, in completions per second, next to the raw embedder's sentences per
   second measured in the same run (interleaved rounds, medians). The raw embedder is the
   ceiling of the cheap tier; the goal is the cheap tier at >= 50% of it, counting the sentences
   the cheap tier had to embed.
2. Judge lag under sustained load: the whole stack (retrieval, tracing, judging, inference) with
   back-to-back RAG requests (the inference service's maximum rate on this machine), then the
   judge delay histograms and the consumer lag of both judge groups.
3. Agreement of each evaluator with the labels of tests/data/judge_labelled.jsonl (AUC and
   pairwise accuracy), and of the safety flags with tests/data/safety_labelled.jsonl (accuracy).
   Goal: cheap faithfulness AUC >= 0.9.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.common import bench_settings, percentile, report
from llmops.common.settings import packaged_embedder, packaged_gguf
from llmops.judging.agreement import agreement, load_labelled
from llmops.judging.catalog import build_catalog
from llmops.judging.embedding_tier import EmbeddingCache
from llmops.judging.evaluator import Sample
from llmops.judging.judge_model import JudgeModel
from llmops.judging.online import CHEAP_TIERS, CompletionJudge
from llmops.judging import safety

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def _samples(items, copy: int) -> list[Sample]:
    return [Sample(it.question, it.grounded_answer, it.contexts, trace_id=f"{copy:08x}{i:024x}")
            for i, it in enumerate(items)]


async def throughput(embedder, judge, items, rounds: int = 3) -> tuple[list[list], dict]:
    """The cheap tier on cold caches vs the raw embedder on exactly the texts the tier embedded
    (same texts, same batch size), interleaved; medians of ``rounds``."""
    raw, cheap, cheap_sent = [], [], []
    for r in range(rounds):
        cache = EmbeddingCache(embedder)            # cold: nothing is reused across rounds
        judge_cheap = CompletionJudge(build_catalog(cache, None), CHEAP_TIERS, sender=None, cache=cache)
        samples = _samples(items, r)
        t0 = time.perf_counter()
        outcomes = await judge_cheap.judge(samples)
        dt = time.perf_counter() - t0
        assert all(o.judgement.ok for o in outcomes), [o.judgement.error for o in outcomes if not o.judgement.ok]
        cheap.append(len(samples) / dt)
        cheap_sent.append(cache.embedded / dt)
        texts = cache.cached_texts()                # what the tier had to embed
        t0 = time.perf_counter()
        embedder.embed(texts)
        raw.append(len(texts) / (time.perf_counter() - t0))
    raw_s, cheap_c, cheap_s = (statistics.median(x) for x in (raw, cheap, cheap_sent))
    rows = [["raw embedder (MiniLM)", "-", raw_s, 1.0],
            ["cheap tier (triad + safety)", cheap_c, cheap_s, cheap_s / raw_s]]
    llm_catalog = build_catalog(EmbeddingCache(embedder), judge)
    few = _samples(items[:6], 99)
    for name in ("rag.faithfulness.llm", "rubric.helpfulness"):
        t0 = time.perf_counter()
        js = await llm_catalog.get(name).evaluate(few)
        dt = time.perf_counter() - t0
        calls = sum(len(j.calls) for j in js)
        rows.append([f"LLM tier: {name}", len(few) / dt, f"{calls / len(few):.1f} calls/completion", "-"])
    return rows, {"raw_sentences_per_s": raw_s, "cheap_completions_per_s": cheap_c,
                  "cheap_sentences_per_s": cheap_s, "cheap_share_of_ceiling": cheap_s / raw_s,
                  "goal_cheap_share": 0.5, "goal_met": cheap_s / raw_s >= 0.5}


async def agreement_table(embedder, judge, items, llm_items: int) -> tuple[list[list], dict]:
    catalog = build_catalog(EmbeddingCache(embedder), judge)
    rows, out = [], {}
    names = ["rag.faithfulness.cheap", "rag.answer_relevancy.cheap", "rag.context_relevancy.cheap",
             "reference.token_f1", "reference.rouge_l", "reference.bleu", "reference.exact_match",
             "rag.faithfulness.llm", "rag.answer_relevancy.llm", "rag.context_relevancy.llm",
             "rubric.correctness", "rubric.helpfulness"]
    for name in names:
        ev = catalog.get(name)
        subset = items if ev.tier != "llm" else items[:llm_items]
        t0 = time.perf_counter()
        a, _, _ = await agreement(ev, subset)
        rows.append([name, ev.metric, a.n, a.auc, a.pairwise_accuracy, a.errors, time.perf_counter() - t0])
        out[name] = {"auc": a.auc, "accuracy": a.pairwise_accuracy, "n": a.n, "errors": a.errors}
    labelled = [json.loads(line) for line in (DATA / "safety_labelled.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    for kind, find in (("pii", safety.find_pii), ("injection", safety.find_injection)):
        acc = sum(bool(find(x["text"])) == x[kind] for x in labelled) / len(labelled)
        rows.append([f"safety.{kind}", "flag", len(labelled), "-", acc, 0, 0.0])
        out[f"safety.{kind}"] = {"accuracy": acc, "n": len(labelled)}
    return rows, out


async def faithfulness_sensitivity(embedder, items) -> tuple[list[list], dict]:
    """The cheap faithfulness's constants were chosen on the labelled set that measures it; this
    shows how much the AUC depends on them, on the whole set and on its two halves."""
    from llmops.judging.embedding_tier import Faithfulness

    cache = EmbeddingCache(embedder)
    variants = [("default", {}), ("no semantic part", {"semantic_weight": 0.0}),
                ("semantic weight 0.4", {"semantic_weight": 0.4}),
                ("penalties 0.2 / 0.5", {"number_penalty": 0.2, "name_penalty": 0.5}),
                ("no number/name penalties", {"number_penalty": 1.0, "name_penalty": 1.0}),
                ("window 1 sentence", {"window": 1}), ("window 3 sentences", {"window": 3})]
    rows, out = [], {}
    for label, kw in variants:
        ev = Faithfulness(cache, **kw)
        aucs = [(await agreement(ev, part))[0].auc for part in (items, items[::2], items[1::2])]
        rows.append([label, *aucs])
        out[label] = aucs
    return rows, out


def _scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _histogram_quantiles(family, tier: str) -> tuple[int, float, float]:
    """(count, ~p50, ~p95) from a Prometheus histogram's buckets (upper bounds)."""
    buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples
                     if s.name.endswith("_bucket") and s.labels.get("tier") == tier)
    count = buckets[-1][1] if buckets else 0
    def q(p):
        return next((le for le, c in buckets if c >= p * count), float("nan")) if count else float("nan")
    return int(count), q(0.5), q(0.95)


def sustained_lag(duration_s: float, **overrides) -> tuple[list[list], dict]:
    from llmops.cli.client import Client
    from llmops.cli.stack import Stack
    from llmops.v1 import retrieval_pb2

    s = bench_settings(**overrides)
    stack = Stack(s, on_progress=lambda m: None)
    asyncio.run(stack.start())
    try:
        client = Client(s)
        items = load_labelled(DATA / "judge_labelled.jsonl")
        docs = [retrieval_pb2.Document(id=f"{it.id}:{j}", text=c) for it in items for j, c in enumerate(it.contexts)]
        client.upsert(docs)
        lags: dict[str, list[float]] = {"judging": [], "judging-llm": []}
        latencies, n = [], 0
        t_end = time.monotonic() + duration_s
        while time.monotonic() < t_end:
            it = items[n % len(items)]
            t0 = time.perf_counter()
            client.generate(it.question, rag=True, max_new_tokens=48)
            latencies.append(time.perf_counter() - t0)
            n += 1
            fams = _scrape(s.metrics_port("judging"))
            for x in fams.get("llmops_consumer_lag_messages").samples if "llmops_consumer_lag_messages" in fams else []:
                if x.labels["topic"] == s.topic("completions"):
                    lags[x.labels["group"].removeprefix(s.topic_prefix)].append(x.value)
        load_s = duration_s
        time.sleep(8)  # let the cheap tier finish the tail and the lag monitor take a reading
        fams = _scrape(s.metrics_port("judging"))
        p50 = percentile(latencies, 0.5)
        rows, extra = [], {"requests": n, "rate_per_s": n / load_s, "p50_request_s": p50}
        setup = "LLM judge off" if overrides.get("judge_backend") == "none" else "LLM judge on (25% sample)"
        for tier, group in (("cheap", "judging"), ("llm", "judging-llm")):
            if group not in lags or (tier == "llm" and overrides.get("judge_backend") == "none"):
                continue
            count, d50, d95 = _histogram_quantiles(fams["llmops_judge_delay_seconds"], tier)
            max_lag = max(lags[group], default=float("nan"))
            end_lag = lags[group][-1] if lags[group] else float("nan")
            rows.append([setup, tier, n, n / load_s, p50, count, d50, d95, max_lag, end_lag])
            extra[tier] = {"judged": count, "delay_p50_s_le": d50, "delay_p95_s_le": d95, "max_lag": max_lag,
                           "lag_at_end_of_load": end_lag}
    finally:
        asyncio.run(stack.stop())
    return rows, extra


def run(llm_items: int = 24, load_s: float = 60.0) -> dict:
    from llmops.backends.llama_cpp import LlamaCppBackend
    from llmops.embedding import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(packaged_embedder())
    judge = JudgeModel(LlamaCppBackend(packaged_gguf(), "judge", n_ctx=2048, n_threads=2))
    items = load_labelled(DATA / "judge_labelled.jsonl")
    rows, extra = asyncio.run(throughput(embedder, judge, items))
    report("judge_throughput", "Judge throughput per tier (cheap tier vs the raw embedder, same run)",
           ["path", "completions/s", "sentences/s", "share of embedder"], rows, extra)
    arows, aextra = asyncio.run(agreement_table(embedder, judge, items, llm_items))
    report("judge_agreement", f"Evaluator agreement with labels (LLM tier on the first {llm_items} items)",
           ["evaluator", "metric", "pairs", "AUC", "accuracy", "errors", "seconds"], arows,
           {"evaluators": aextra, "goal_faithfulness_auc": 0.9,
            "goal_met": aextra["rag.faithfulness.cheap"]["auc"] >= 0.9})
    srows, sextra = asyncio.run(faithfulness_sensitivity(embedder, items))
    report("judge_faithfulness_sensitivity", "Cheap faithfulness AUC by setting (all items, even, odd)",
           ["setting", "AUC all", "AUC even items", "AUC odd items"], srows, {"variants": sextra})
    judge.backend.close()
    off_rows, off = sustained_lag(load_s, judge_backend="none")
    on_rows, on = sustained_lag(load_s)
    ratio = on["p50_request_s"] / off["p50_request_s"]
    report("judge_lag", f"Judge lag under sustained load ({load_s:.0f} s of back-to-back RAG requests each); "
           f"request p50 with the LLM judge / without: {ratio:.3f}",
           ["setup", "tier", "requests", "req/s", "request p50 s", "judged", "delay p50 <= s", "delay p95 <= s",
            "max lag", "lag at end"], off_rows + on_rows,
           {"llm_judge_off": off, "llm_judge_on": on, "request_p50_ratio_on_off": ratio})
    return {**extra, "agreement": aextra, "lag": {"off": off, "on": on, "ratio": ratio}}


if __name__ == "__main__":
    run()
