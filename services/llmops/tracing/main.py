"""Composition root of the tracing service."""
from __future__ import annotations

import asyncio

from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.lag import LagMonitor
from llmops.common.runtime import ServiceParts, streaming_parts
from llmops.common.settings import Settings
from llmops.common.stream import batch_agent, make_app
from llmops.tracing.api import TracingServicer
from llmops.tracing.ingest import TraceIngestor
from llmops.tracing.store import SqlTraceStore
from llmops.tracing.traces import Traces
from llmops.v1 import tracing_pb2, tracing_pb2_grpc


async def build(settings: Settings) -> ServiceParts:
    store = await asyncio.to_thread(SqlTraceStore, settings.trace_db_url)
    bus = EventBus(settings)
    app = make_app(settings, "tracing")
    ingestor = TraceIngestor(store, settings.topic_prefix)
    batch_agent(app, ingestor.topics, ingestor, lambda: DeadLetterQueue(bus, app.conf.id),
                name="ingest_traces", max_batch=1000, within_s=0.05)
    servicer = TracingServicer(Traces(store, bus, settings.topic_prefix))
    return streaming_parts(
        settings, bus, app,
        register=lambda s: tracing_pb2_grpc.add_TracingServiceServicer_to_server(servicer, s.server),
        service_names=[tracing_pb2.DESCRIPTOR.services_by_name["TracingService"].full_name],
        close=store.close, companions=[LagMonitor(settings, {app.conf.id: ingestor.topics})],
    )
