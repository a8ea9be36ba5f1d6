"""The judging service's embedding cache is bounded in bytes (vectors and their texts), not in
entries: long texts take their share, least recently used go first, and an evicted vector frees
its memory. The stem cache of the claims keeps only words of natural length."""
from __future__ import annotations

import numpy as np

from llmops.judging.embedding_tier import EmbeddingCache, entry_bytes

DIM = 384


class CountingEmbedder:
    dim = DIM

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        rng = np.random.default_rng(len(self.calls))
        v = rng.normal(size=(len(texts), DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_cache_holds_at_most_its_byte_budget_and_evicts_least_recently_used():
    one = entry_bytes("text 00", np.zeros(DIM, dtype=np.float32))
    cache = EmbeddingCache(CountingEmbedder(), max_bytes=10 * one)
    cache.encode([f"text {i:02d}" for i in range(10)])
    assert len(cache) == 10 and cache.bytes <= cache.max_bytes
    cache.encode(["text 00"])                     # used again: now the most recent
    cache.encode(["text 10", "text 11"])
    assert cache.bytes <= cache.max_bytes
    held = cache.cached_texts()
    assert "text 00" in held and "text 01" not in held and "text 02" not in held
    assert held[-2:] == ["text 10", "text 11"]


def test_long_texts_count_by_their_size_not_as_one_entry():
    small = entry_bytes("x", np.zeros(DIM, dtype=np.float32))
    cache = EmbeddingCache(CountingEmbedder(), max_bytes=200 * small)
    long_texts = [f"{i} " + "lorem ipsum " * 2_000 for i in range(20)]   # ~24 kB each
    cache.encode(long_texts)
    assert cache.bytes <= cache.max_bytes
    assert len(cache) < 20 and cache.evicted == 20 - len(cache)


def test_a_text_larger_than_the_budget_is_embedded_but_not_kept_and_zero_keeps_nothing():
    embedder = CountingEmbedder()
    cache = EmbeddingCache(embedder, max_bytes=10_000)
    out = cache.encode(["y" * 20_000, "short"])
    assert set(out) == {"y" * 20_000, "short"} and cache.cached_texts() == ["short"]
    none = EmbeddingCache(embedder, max_bytes=0)
    assert len(none.encode(["a", "b"])) == 2 and len(none) == 0 and none.bytes == 0


def test_hits_are_not_embedded_again():
    embedder = CountingEmbedder()
    cache = EmbeddingCache(embedder, max_bytes=1 << 20)
    first = cache.encode(["a", "b"])
    again = cache.encode(["b", "a", "c"])
    assert embedder.calls == [["a", "b"], ["c"]]
    assert np.array_equal(first["a"], again["a"])


def test_cached_vectors_do_not_keep_the_batch_matrix_alive():
    cache = EmbeddingCache(CountingEmbedder(), max_bytes=1 << 20)
    out = cache.encode([f"t{i}" for i in range(50)])
    assert all(v.base is None for v in out.values())      # copies, not views into the 50 x 384 batch


def test_the_setting_sizes_the_service_cache(monkeypatch):
    from llmops.common.settings import Settings

    assert Settings().embedding_cache_bytes == 64 * 1024 * 1024
    monkeypatch.setenv("LLMOPS_EMBEDDING_CACHE_BYTES", "1000")
    assert Settings().embedding_cache_bytes == 1000


def test_the_stem_cache_keeps_only_short_words():
    from llmops.judging import claims

    claims._cached_stem.cache_clear()
    long_word = "x" * 10_000
    assert claims.stem("running") == "run" and claims.stem(long_word) == long_word
    assert claims._cached_stem.cache_info().currsize == 1
