"""Composition root of the retrieval service: the one place that wires real parts together."""
from __future__ import annotations

import asyncio

from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.lag import LagMonitor
from llmops.common.runtime import ServiceParts, streaming_parts
from llmops.common.settings import Settings
from llmops.common.stream import batch_agent, make_app
from llmops.retrieval.api import RetrievalServicer
from llmops.embedding import LoadingEmbedder
from llmops.retrieval.ingest import DocumentIngestor
from llmops.retrieval.retriever import Retriever
from llmops.retrieval.store import VectorStore
from llmops.v1 import retrieval_pb2, retrieval_pb2_grpc


def build_vector_store(settings: Settings) -> VectorStore:
    """LanceDB on local disk by default; Weaviate when LLMOPS_VECTOR_STORE=weaviate."""
    if settings.vector_store == "weaviate":
        if not settings.weaviate_url:
            raise ValueError("LLMOPS_VECTOR_STORE=weaviate needs LLMOPS_WEAVIATE_URL (e.g. http://weaviate:8080)")
        from llmops.retrieval.weaviate_store import WeaviateVectorStore  # the client is only imported when used

        return WeaviateVectorStore(settings.weaviate_url, grpc_port=settings.weaviate_grpc_port,
                                   api_key=settings.weaviate_api_key, tenant=settings.weaviate_tenant)
    from llmops.retrieval.lance import LanceVectorStore  # lancedb's import is 1.5 s: in the start's loading thread

    return LanceVectorStore(settings.resolved_vector_db)


def build_retriever(settings: Settings) -> Retriever:
    """The retriever, its model loading in a thread of its own and its store not open yet:
    :func:`open_retriever` opens both (the service does it alongside its group join)."""
    return Retriever(LoadingEmbedder(settings.resolved_embedding_model), None,
                     default_collection=settings.default_collection, chunk_size=settings.chunk_size,
                     chunk_overlap=settings.chunk_overlap, open_now=False)


async def open_retriever(retriever: Retriever, settings: Settings) -> None:
    """The vector store (lancedb's import, the connection) while the model loads, then the default
    collection (its dimension is the model's)."""
    store = await asyncio.to_thread(build_vector_store, settings)
    await retriever.embedder.loaded()
    await asyncio.to_thread(retriever.open, store)


async def build(settings: Settings) -> ServiceParts:
    retriever = build_retriever(settings)
    bus = EventBus(settings)
    app = make_app(settings, "retrieval")
    batch_agent(app, [settings.topic("documents")], DocumentIngestor(retriever),
                lambda: DeadLetterQueue(bus, app.conf.id), name="ingest_documents", max_batch=64, within_s=0.2)
    servicer = RetrievalServicer(retriever)
    return streaming_parts(
        settings, bus, app,
        register=lambda s: retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, s.server),
        service_names=[retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name],
        close=lambda: getattr(retriever.store, "close", lambda: None)(),  # Weaviate holds HTTP and gRPC connections
        companions=[LagMonitor(settings, {app.conf.id: [settings.topic("documents")]})],
        loading=[lambda: open_retriever(retriever, settings)],   # alongside the group join
    )
