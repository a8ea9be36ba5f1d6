"""The retrieval domain: validate, chunk, embed, store, search. No gRPC or Kafka here."""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Sequence

from llmops.common import metrics
from llmops.common.errors import InvalidArgument, NotFound, Unavailable
from llmops.retrieval.chunking import chunk_text
from llmops.embedding import Embedder
from llmops.retrieval.store import COLLECTION_NAME, FILTER_KEY, ChunkRecord, Hit, VectorStore

log = logging.getLogger(__name__)

MAX_TOP_K = 100
MAX_QUERY_CHARS = 4096


@dataclass(frozen=True)
class DocumentIn:
    id: str
    text: str
    metadata: dict[str, str] = field(default_factory=dict)


def check_collection(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"collection {name!r} is not a valid name: start with a letter, then letters, digits, '_' or '-', "
            "at most 63 characters"
        )
    return name


def check_filters(filters: dict[str, str]) -> dict[str, str]:
    for k in filters:
        if not FILTER_KEY.match(k):
            raise InvalidArgument(f"filter key {k!r} is not valid: letters, digits, '_', '.', '-' (1-64 chars)")
    return dict(filters)


class Retriever:
    def __init__(self, embedder: Embedder, store: VectorStore | None, *, default_collection: str = "default",
                 chunk_size: int = 800, chunk_overlap: int = 120, open_now: bool = True) -> None:
        self.embedder = embedder
        self.store = store            # None until open(store): the service opens it while it starts
        self.default_collection = check_collection(default_collection)
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self._opened = threading.Event()
        if open_now:
            self.open()

    def open(self, store: VectorStore | None = None) -> None:
        """Take ``store`` (if given) and make sure the default collection exists. That needs the
        embedder's dimension, so with a model still loading (the service's start) this waits for it:
        call it from a worker thread. Until it is done a search, a delete or a listing is UNAVAILABLE
        (the default collection is not known yet, not missing) and an upsert waits for it."""
        if store is not None:
            self.store = store
        if self.store is None:
            raise ValueError("no vector store to open")
        self.store.ensure_collection(self.default_collection, self.embedder.dim)
        self._opened.set()

    @property
    def opened(self) -> bool:
        return self._opened.is_set()

    async def wait_open(self) -> None:
        """Until :meth:`open` is done (a batch of documents may come while the service starts)."""
        while not self._opened.is_set():
            await asyncio.sleep(0.05)

    def _check_open(self) -> None:
        if not self._opened.is_set():
            raise Unavailable("retrieval is starting: its embedding model and vector store are still loading")

    def _collection(self, name: str) -> str:
        return check_collection(name or self.default_collection)

    def prepare(self, docs: Sequence[DocumentIn]) -> tuple[list[str], list[ChunkRecord]]:
        """Chunk and embed (CPU bound: call from a worker thread)."""
        ids: list[str] = []
        pending: list[tuple[DocumentIn, int, str]] = []
        for d in docs:
            ids.append(d.id)
            for c in chunk_text(d.text, self.chunk_size, self.chunk_overlap):
                pending.append((d, c.index, c.text))
        vectors = self.embedder.embed([p[2] for p in pending])
        chunks = [
            ChunkRecord(id=f"{d.id}#{i}", document_id=d.id, chunk=i, text=text, vector=vectors[n],
                        metadata={**d.metadata, "chunk": str(i)})
            for n, (d, i, text) in enumerate(pending)
        ]
        return ids, chunks

    async def upsert(self, collection: str, docs: Sequence[DocumentIn], source: str = "grpc") -> tuple[int, int]:
        """Replace each document's chunks (idempotent by document id). Returns (documents, chunks)."""
        collection = self._collection(collection)
        if not docs:
            raise InvalidArgument("no documents given")
        latest: dict[str, DocumentIn] = {}
        for n, d in enumerate(docs):
            if not d.id.strip():
                raise InvalidArgument(f"document {n} has an empty id")
            if not d.text.strip():
                raise InvalidArgument(f"document {d.id!r} has no text")
            latest[d.id] = d  # the last version of a repeated id wins
        await self.wait_open()
        ids, chunks = await asyncio.to_thread(self.prepare, list(latest.values()))
        self.store.ensure_collection(collection, self.embedder.dim)
        await asyncio.to_thread(self.store.replace_documents, collection, ids, chunks)
        metrics.DOCUMENTS_INGESTED.labels(metrics.COLLECTION(collection), source).inc(len(ids))
        return len(ids), len(chunks)

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        collection = self._collection(collection)
        self._check_open()
        if not ids or any(not i.strip() for i in ids):
            raise InvalidArgument("give at least one non-empty document id to delete")
        if not self.store.has_collection(collection):
            raise NotFound(f"collection {collection!r} does not exist")
        return await asyncio.to_thread(self.store.delete_documents, collection, list(ids))

    async def search(self, query: str, top_k: int = 5, alpha: float = 0.5, collection: str = "",
                     filters: dict[str, str] | None = None) -> list[Hit]:
        if not query.strip():
            raise InvalidArgument("query is empty: give the text to search for")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
        if top_k < 0 or top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        if not 0.0 <= alpha <= 1.0:
            raise InvalidArgument(f"alpha must be in [0, 1] (0 = keyword only, 1 = vector only), got {alpha}")
        collection = self._collection(collection)
        filters = check_filters(filters or {})
        self._check_open()
        if not self.store.has_collection(collection):
            raise NotFound(f"collection {collection!r} does not exist")
        vector = (await asyncio.to_thread(self.embedder.embed, [query]))[0] if alpha > 0 else None
        hits = await asyncio.to_thread(self.store.search, collection, query, vector, alpha, top_k or 5, filters)
        metrics.RETRIEVAL_HITS.labels(metrics.COLLECTION(collection)).observe(len(hits))
        if hits:
            metrics.RETRIEVAL_TOP_SCORE.labels(metrics.COLLECTION(collection)).observe(hits[0].score)
        return hits

    def collections(self) -> list[tuple[str, int, int]]:
        self._check_open()
        return self.store.collections()
