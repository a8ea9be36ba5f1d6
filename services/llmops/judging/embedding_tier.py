"""The cheap tier of the RAG triad: sentence embeddings plus lexical support, no generation.

It is meant for 100% of traffic, so a batch of completions is embedded in one model call (see
:class:`EmbeddingCache`), and texts seen before (the same retrieved chunk serves many requests)
are not embedded again.

- faithfulness: each clause of the answer gets a support in [0, 1] from its best semantic match
  among the context sentences and from its content-word pairs found together in the contexts;
  numbers and names missing from the contexts are penalised. The score is the mean support, the
  expected share of supported claims.
- answer relevancy: cosine similarity of question and answer.
- context relevancy: per context, the best cosine similarity of the question with one of its
  sentences; the score is the mean over contexts.
"""
from __future__ import annotations

import asyncio
import sys
import threading
from collections import OrderedDict
from typing import Iterable, Sequence

import numpy as np

from llmops.judging.claims import claims_of, clauses_of, content_terms, split_sentences, term_set
from llmops.judging.evaluator import Judgement, Sample, clip01
from llmops.embedding import Embedder


def entry_bytes(text: str, vec: np.ndarray) -> int:
    """What one cached vector holds in memory: its data, its text and their Python objects."""
    return vec.nbytes + sys.getsizeof(text) + _ENTRY_OVERHEAD


_ENTRY_OVERHEAD = 200   # the ndarray header (~112 bytes) and the OrderedDict node and slot


class EmbeddingCache:
    """Normalised sentence vectors by text, embedded in batches; least recently used evicted
    first once the vectors and their texts hold more than ``max_bytes`` (``LLMOPS_EMBEDDING_CACHE_BYTES``;
    0: nothing is kept). A text whose entry alone exceeds the budget is embedded but not kept.
    Each vector is copied out of the model's batch matrix, so an evicted row frees its memory
    (a row view would keep the whole batch alive)."""

    def __init__(self, embedder: Embedder, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.embedder = embedder
        self.max_bytes = max_bytes
        self._vecs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.embedded = 0       # texts sent to the model (for the benchmark)
        self.evicted = 0

    @property
    def bytes(self) -> int:
        """Bytes the cache holds now (never more than ``max_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._vecs)

    def encode(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = list(dict.fromkeys(t for t in texts if t))
        with self._lock:
            found = {t: self._vecs[t] for t in wanted if t in self._vecs}
            for t in found:
                self._vecs.move_to_end(t)
        missing = [t for t in wanted if t not in found]
        if missing:
            vecs = self.embedder.embed(missing)
            with self._lock:
                for t, row in zip(missing, vecs):
                    v = np.array(row, copy=True)
                    found[t] = v
                    self._keep(t, v)
                self.embedded += len(missing)
        return found

    def _keep(self, text: str, vec: np.ndarray) -> None:
        size = entry_bytes(text, vec)
        if size > self.max_bytes:
            return
        old = self._vecs.pop(text, None)
        if old is not None:
            self._bytes -= entry_bytes(text, old)
        self._vecs[text] = vec
        self._bytes += size
        while self._bytes > self.max_bytes:
            t, v = self._vecs.popitem(last=False)
            self._bytes -= entry_bytes(t, v)
            self.evicted += 1

    def cached_texts(self) -> list[str]:
        """The texts held, least recently used first."""
        with self._lock:
            return list(self._vecs)

    async def prefetch(self, texts: Iterable[str]) -> None:
        await asyncio.to_thread(self.encode, list(texts))


def _cos_matrix(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    return np.stack(a) @ np.stack(b).T   # vectors are normalised


class _EmbeddingEvaluator:
    tier = "cheap"
    needs_reference = False
    needs_contexts = False
    scale = "0-1"

    def __init__(self, cache: EmbeddingCache) -> None:
        self.cache = cache

    def texts(self, sample: Sample) -> list[str]:
        raise NotImplementedError

    def settings(self) -> dict[str, str]:
        return {"embedder": getattr(self.cache.embedder, "name", type(self.cache.embedder).__name__)}

    async def evaluate(self, samples: Sequence[Sample]) -> list[Judgement]:
        texts = [t for s in samples for t in self.texts(s)]
        vecs = await asyncio.to_thread(self.cache.encode, texts)
        return [self.judge(s, vecs) for s in samples]

    def judge(self, sample: Sample, vecs: dict[str, np.ndarray]) -> Judgement:
        raise NotImplementedError


def context_sentences(contexts: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(s for c in contexts for s in split_sentences(c)))


class Faithfulness(_EmbeddingEvaluator):
    needs_contexts = True
    name = "rag.faithfulness.cheap"
    metric = "faithfulness"
    version = "2"
    description = ("Expected share of the answer's claims the contexts support. Each clause is checked: "
                   "its closest context sentence (embeddings), whether its neighbouring content words "
                   "occur together in a context passage, and whether its numbers and names occur at all.")

    def __init__(self, cache: EmbeddingCache, *, semantic_weight: float = 0.2, number_penalty: float = 0.35,
                 name_penalty: float = 0.7, window: int = 2, max_claims: int = 12) -> None:
        super().__init__(cache)
        self.semantic_weight = semantic_weight
        self.number_penalty, self.name_penalty = number_penalty, name_penalty
        self.window = window
        self.max_claims = max_claims

    def settings(self) -> dict[str, str]:
        return {**super().settings(), "semantic_weight": str(self.semantic_weight),
                "number_penalty": str(self.number_penalty), "name_penalty": str(self.name_penalty),
                "window_sentences": str(self.window), "max_claims": str(self.max_claims)}

    def clauses(self, sample: Sample) -> list[str]:
        return [c for claim in claims_of(sample.answer, self.max_claims) for c in clauses_of(claim)]

    def texts(self, sample: Sample) -> list[str]:
        return self.clauses(sample) + context_sentences(sample.contexts)

    def clause_supports(self, sample: Sample, vecs: dict[str, np.ndarray]) -> list[tuple[str, float]]:
        """(clause, support in [0, 1]). Support mixes the best cosine similarity with a context
        sentence and the share of adjacent content-word pairs found together in a window of
        ``window`` context sentences (a fabricated clause tends to recombine the contexts' words);
        every number or name absent from the contexts multiplies it by a penalty."""
        clauses = self.clauses(sample)
        sents = context_sentences(sample.contexts)
        sims = _cos_matrix([vecs[c] for c in clauses], [vecs[s] for s in sents])
        known = set().union(*(term_set(c) for c in sample.contexts))
        windows = [term_set(" ".join(ss[i:i + self.window]))
                   for c in sample.contexts for ss in [split_sentences(c)] for i in range(len(ss))]
        out = []
        for i, clause in enumerate(clauses):
            sem = clip01(float(sims[i].max())) if sims.shape[1] else 0.0
            terms = content_terms(clause)
            stems = [t for t, _ in terms]
            pairs = list(zip(stems, stems[1:]))
            if pairs:
                together = sum(1 for a, b in pairs if any(a in w and b in w for w in windows)) / len(pairs)
            else:
                together = 1.0 if all(t in known for t in stems) else 0.0
            support = self.semantic_weight * sem + (1 - self.semantic_weight) * together
            for t, kind in terms:
                if t not in known and kind != "word":
                    support *= self.number_penalty if kind == "number" else self.name_penalty
            out.append((clause, support))
        return out

    def judge(self, sample: Sample, vecs: dict[str, np.ndarray]) -> Judgement:
        if not sample.contexts:
            return Judgement.failed("faithfulness needs contexts; the completion has none")
        supports = self.clause_supports(sample, vecs)
        if not supports:
            return Judgement(1.0, "the answer makes no claim")
        weak = [f"{c[:120]!r} ({p:.2f})" for c, p in supports if p < 0.5]
        value = float(np.mean([p for _, p in supports]))
        note = f"{len(supports) - len(weak)}/{len(supports)} clauses supported"
        return Judgement(value, note + ("; unsupported: " + "; ".join(weak) if weak else ""))


class AnswerRelevancy(_EmbeddingEvaluator):
    name = "rag.answer_relevancy.cheap"
    metric = "answer_relevancy"
    version = "1"
    description = "Cosine similarity of the question and the answer (sentence embeddings)."

    def texts(self, sample: Sample) -> list[str]:
        return [sample.question, sample.answer]

    def judge(self, sample: Sample, vecs: dict[str, np.ndarray]) -> Judgement:
        if not sample.answer.strip():
            return Judgement(0.0, "empty answer")
        cos = float(vecs[sample.question] @ vecs[sample.answer])
        return Judgement(clip01(cos), f"cosine(question, answer) = {cos:.3f}")


class ContextRelevancy(_EmbeddingEvaluator):
    needs_contexts = True
    name = "rag.context_relevancy.cheap"
    metric = "context_relevancy"
    version = "1"
    description = "Mean over contexts of the best cosine similarity between the question and a context sentence."

    def texts(self, sample: Sample) -> list[str]:
        return [sample.question] + context_sentences(sample.contexts)

    def judge(self, sample: Sample, vecs: dict[str, np.ndarray]) -> Judgement:
        if not sample.contexts:
            return Judgement.failed("context relevancy needs contexts; the completion has none")
        q = vecs[sample.question]
        per = []
        for c in sample.contexts:
            per.append(max((float(q @ vecs[s]) for s in split_sentences(c) if s in vecs), default=0.0))
        value = clip01(float(np.mean(per)))
        return Judgement(value, "per context: " + ", ".join(f"{p:.2f}" for p in per))
