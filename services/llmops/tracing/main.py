"""Composition root of the tracing service."""
from __future__ import annotations

import asyncio
import gc

from llmops.common.batch_worker import KafkaBatchWorker
from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.lag import LagMonitor
from llmops.common.runtime import ServiceParts, streaming_parts
from llmops.common.settings import Settings, key_value_pairs
from llmops.common.stream import batch_agent, make_app
from llmops.tracing.api import TracingServicer
from llmops.tracing.ingest import TraceIngestor
from llmops.tracing.otlp.assembler import CompletionAssembler
from llmops.tracing.otlp.doors import OtlpDoors
from llmops.tracing.otlp.export import OtlpExportConsumer, make_exporter
from llmops.tracing.otlp.receiver import OtlpReceiver
from llmops.tracing.retention import TracePruner
from llmops.tracing.store import SqlTraceStore
from llmops.tracing.traces import Traces
from llmops.v1 import tracing_pb2, tracing_pb2_grpc

#: the cyclic collector's thresholds in the tracing process (CPython's default: 700, 10, 10)
COLLECTOR_THRESHOLDS = (50_000, 20, 100)


async def build(settings: Settings) -> ServiceParts:
    # The ingest makes a few dozen short-lived, acyclic objects per span (records, rows, strings)
    # and holds tens of thousands of them queued: at the default thresholds the collector ran about
    # 1,150 times per 100,000 spans and took a fifth to a quarter of the sink's time (1.1-1.4 s of
    # 4.5-5.5 s here); collecting after 50,000 allocations, 0.2-0.45 s in all. What the runtime
    # freezes after start-up is left out of every collection either way.
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    store = await asyncio.to_thread(SqlTraceStore, settings.trace_db_url)
    bus = EventBus(settings)
    group = f"{settings.topic_prefix}tracing"
    ingestor = TraceIngestor(store, settings.topic_prefix)
    # the trace store's sink is the platform's highest-volume consumer: a raw batch consumer
    # (faust's per-event cost was its limit) that fetches while it writes, writes up to 8,000
    # records per transaction and commits the offsets of each batch once it is stored
    ingest = KafkaBatchWorker(settings, group, ingestor.topics, ingestor, lambda: DeadLetterQueue(bus, group),
                              name="ingest_traces", max_batch=2000, within_ms=50, max_write=8000, queued=8)
    servicer = TracingServicer(Traces(store, bus, settings.topic_prefix))
    receiver = OtlpReceiver(bus, settings.topic_prefix, CompletionAssembler(
        wait_s=settings.otlp_context_wait_s, max_traces=settings.otlp_max_pending_traces),
        max_in_flight=settings.otlp_max_concurrent_exports)
    otlp = OtlpDoors(receiver, settings.host, settings.otlp_grpc_port, settings.otlp_http_port,
                     settings.otlp_max_body_bytes)
    apps, groups, closers = [], {group: ingestor.topics}, [store.close]
    if settings.otlp_export_endpoint:   # a consumer group of its own: a slow backend never holds up the store
        export_app = make_app(settings, "tracing-export")
        exporter = OtlpExportConsumer(make_exporter(settings), settings.topic_prefix,
                                      key_value_pairs(settings.otlp_export_resource, 'resource'))
        batch_agent(export_app, exporter.topics, exporter, lambda: DeadLetterQueue(bus, export_app.conf.id),
                    name="export_otlp", max_batch=512, within_s=0.2)
        apps.append(export_app)
        groups[export_app.conf.id] = exporter.topics
        closers.append(exporter.close)

    def close() -> None:
        for c in closers:
            c()

    return streaming_parts(
        settings, bus, apps,
        register=lambda s: tracing_pb2_grpc.add_TracingServiceServicer_to_server(servicer, s.server),
        service_names=[tracing_pb2.DESCRIPTOR.services_by_name["TracingService"].full_name],
        close=close, companions=[ingest, LagMonitor(settings, groups), otlp,
                                 TracePruner(store, settings.trace_retention_days)],
    )
