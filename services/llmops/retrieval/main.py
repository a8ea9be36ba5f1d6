"""Composition root of the retrieval service: the one place that wires real parts together."""
from __future__ import annotations

import asyncio

from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.lag import LagMonitor
from llmops.common.runtime import ServiceParts, streaming_parts
from llmops.common.settings import Settings
from llmops.common.stream import batch_agent, make_app
from llmops.retrieval.api import RetrievalServicer
from llmops.retrieval.embedder import SentenceTransformerEmbedder
from llmops.retrieval.ingest import DocumentIngestor
from llmops.retrieval.lance import LanceVectorStore
from llmops.retrieval.retriever import Retriever
from llmops.v1 import retrieval_pb2, retrieval_pb2_grpc


def build_retriever(settings: Settings) -> Retriever:
    embedder = SentenceTransformerEmbedder(settings.resolved_embedding_model)
    store = LanceVectorStore(settings.resolved_vector_db)
    return Retriever(embedder, store, default_collection=settings.default_collection,
                     chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)


async def build(settings: Settings) -> ServiceParts:
    retriever = await asyncio.to_thread(build_retriever, settings)
    bus = EventBus(settings)
    app = make_app(settings, "retrieval")
    batch_agent(app, [settings.topic("documents")], DocumentIngestor(retriever),
                lambda: DeadLetterQueue(bus, app.conf.id), name="ingest_documents", max_batch=64, within_s=0.2)
    servicer = RetrievalServicer(retriever)
    return streaming_parts(
        settings, bus, app,
        register=lambda s: retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, s.server),
        service_names=[retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name],
        companions=[LagMonitor(settings, {app.conf.id: [settings.topic("documents")]})],
    )
