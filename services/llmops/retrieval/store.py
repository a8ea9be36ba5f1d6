"""The vector store protocol, and relative score fusion shared by stores that search twice.

Hybrid search follows Weaviate's ``relativeScoreFusion``: the vector and keyword result lists are
each min-max normalised to [0, 1], then combined as ``alpha * vector + (1 - alpha) * keyword``;
``alpha = 1`` is vector only, ``alpha = 0`` keyword only. A store that runs hybrid search itself
(Weaviate) gets the same semantics from the server.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

COLLECTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
FILTER_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class ChunkRecord:
    id: str               # "<document id>#<chunk index>"
    document_id: str
    chunk: int
    text: str
    vector: np.ndarray
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Hit:
    id: str
    document_id: str
    text: str
    metadata: dict[str, str]
    score: float = 0.0              # fused, in [0, 1]
    vector_similarity: float = 0.0
    keyword_score: float = 0.0


class VectorStore(Protocol):
    def ensure_collection(self, name: str, dim: int) -> None: ...
    def has_collection(self, name: str) -> bool: ...
    def collections(self) -> list[tuple[str, int, int]]: ...   # (name, chunks, documents)
    def replace_documents(self, collection: str, document_ids: Sequence[str], chunks: Sequence[ChunkRecord]) -> None: ...
    def delete_documents(self, collection: str, document_ids: Sequence[str]) -> int: ...
    def search(self, collection: str, query: str, vector: np.ndarray | None, alpha: float, k: int,
               filters: dict[str, str]) -> list[Hit]: ...


def relative_score_fusion(vector_hits: list[Hit], keyword_hits: list[Hit], alpha: float, k: int) -> list[Hit]:
    def normalised(hits: list[Hit], attr: str) -> dict[str, float]:
        if not hits:
            return {}
        vals = [getattr(h, attr) for h in hits]
        lo, hi = min(vals), max(vals)
        return {h.id: (1.0 if hi == lo else (getattr(h, attr) - lo) / (hi - lo)) for h in hits}

    vn = normalised(vector_hits, "vector_similarity")
    kn = normalised(keyword_hits, "keyword_score")
    merged: dict[str, Hit] = {}
    for h in vector_hits + keyword_hits:
        m = merged.setdefault(h.id, Hit(h.id, h.document_id, h.text, h.metadata))
        m.vector_similarity = max(m.vector_similarity, h.vector_similarity)
        m.keyword_score = max(m.keyword_score, h.keyword_score)
    for m in merged.values():
        m.score = alpha * vn.get(m.id, 0.0) + (1 - alpha) * kn.get(m.id, 0.0)
    ranked = sorted(merged.values(), key=lambda h: (-h.score, -h.vector_similarity, h.id))
    return ranked[:k]
