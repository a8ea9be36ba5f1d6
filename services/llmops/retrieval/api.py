"""RetrievalService: protobuf in, domain call, protobuf out."""
from __future__ import annotations

import time

from llmops.retrieval.retriever import DocumentIn, Retriever
from llmops.retrieval.store import Hit
from llmops.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc

DEFAULT_TOP_K = 5
DEFAULT_ALPHA = 0.5


def hit_to_context(h: Hit, collection: str) -> common_pb2.Context:
    return common_pb2.Context(id=h.id, document_id=h.document_id, text=h.text, score=h.score,
                              collection=collection, metadata=h.metadata,
                              vector_similarity=h.vector_similarity, keyword_score=h.keyword_score)


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever

    async def Upsert(self, request, context):
        docs = [DocumentIn(d.id, d.text, dict(d.metadata)) for d in request.documents]
        n_docs, n_chunks = await self.retriever.upsert(request.collection, docs)
        return retrieval_pb2.UpsertResponse(documents=n_docs, chunks=n_chunks)

    async def Search(self, request, context):
        t0 = time.perf_counter()
        alpha = request.alpha if request.HasField("alpha") else DEFAULT_ALPHA
        collection = request.collection or self.retriever.default_collection
        hits = await self.retriever.search(request.query, request.top_k or DEFAULT_TOP_K, alpha, collection,
                                           dict(request.filters))
        return retrieval_pb2.SearchResponse(results=[hit_to_context(h, collection) for h in hits],
                                            took_ms=(time.perf_counter() - t0) * 1000)

    async def Delete(self, request, context):
        n = await self.retriever.delete(request.collection, list(request.ids))
        return retrieval_pb2.DeleteResponse(deleted_chunks=n)

    async def ListCollections(self, request, context):
        return retrieval_pb2.ListCollectionsResponse(collections=[
            retrieval_pb2.CollectionInfo(name=n, chunks=c, documents=d) for n, c, d in self.retriever.collections()
        ])
