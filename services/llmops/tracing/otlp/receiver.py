"""The OTLP receiver's use case, behind both transports: map an export request's spans, hand them
(and the completions that are complete) to Kafka, and say which spans were rejected.

The reply goes back only after the broker has acknowledged every event, so an export that got a
success is in Kafka; when Kafka cannot take it the export fails with a retryable status
(UNAVAILABLE / 503) and the exporter sends it again — the trace store, the judges and drift are
idempotent per span and per trace, so a retry adds nothing twice. Completions that wait for their
retrieval spans are published by a sweeper task; one whose publication failed is retried there.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from llmops.common import metrics
from llmops.common.bus import EventPublisher, EventTooLarge, OutgoingEvent
from llmops.common.envelope import traceparent
from llmops.common.errors import ResourceExhausted, Unavailable
from llmops.tracing.otlp.assembler import CompletionAssembler
from llmops.tracing.otlp.spans import MappedSpan, RejectedSpan, map_span, resource_of
from llmops.v1 import events_pb2

log = logging.getLogger(__name__)

MAX_REASONS = 3   # rejection reasons quoted in partial_success.error_message


@dataclass(frozen=True)
class ExportResult:
    accepted: int
    rejected: int
    message: str = ""

    def response(self) -> trace_service_pb2.ExportTraceServiceResponse:
        resp = trace_service_pb2.ExportTraceServiceResponse()
        if self.rejected or self.message:
            resp.partial_success.rejected_spans = self.rejected
            resp.partial_success.error_message = self.message
        return resp


def map_request(request: trace_service_pb2.ExportTraceServiceRequest) -> tuple[list[MappedSpan], int, list[str]]:
    """(mapped spans, number rejected, the first few reasons)."""
    mapped: list[MappedSpan] = []
    rejected = 0
    reasons: list[str] = []
    for rs in request.resource_spans:
        resource = resource_of(rs)
        for ss in rs.scope_spans:
            scope_name, scope_version = ss.scope.name, ss.scope.version
            for span in ss.spans:
                try:
                    mapped.append(map_span(span, resource, scope_name, scope_version))
                except RejectedSpan as exc:
                    rejected += 1
                    if len(reasons) < MAX_REASONS:
                        reasons.append(str(exc))
    return mapped, rejected, reasons


class OtlpReceiver:
    def __init__(self, publisher: EventPublisher, topic_prefix: str, assembler: CompletionAssembler,
                 sweep_s: float = 0.25, max_in_flight: int = 16) -> None:
        self.publisher = publisher
        self.max_in_flight = max_in_flight   # exports handled at once; more get a retryable "busy"
        self.in_flight = 0
        self.assembler = assembler
        self.spans_topic = f"{topic_prefix}spans"
        self.completions_topic = f"{topic_prefix}completions"
        self.sweep_s = sweep_s
        self._unsent: list[events_pb2.CompletionEvent] = []
        self._sweeper: asyncio.Task | None = None

    async def export(self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> ExportResult:
        if self.in_flight >= self.max_in_flight:     # a flood waits at the exporter, not in this process
            metrics.OTLP_REQUESTS.labels(transport, "busy").inc()
            raise ResourceExhausted(f"{self.in_flight} exports are being handled (LLMOPS_OTLP_MAX_CONCURRENT_EXPORTS); retry")
        self.in_flight += 1
        try:
            return await self._export(request, transport)
        finally:
            self.in_flight -= 1

    async def _export(self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> ExportResult:
        mapped, rejected, reasons = map_request(request)
        ready = self.assembler.add(mapped)
        out: list[OutgoingEvent] = [
            (self.spans_topic, s.trace_id, s.event, traceparent(s.trace_id, s.span_id)) for s in mapped
        ]
        out += [self._completion(c) for c in ready]
        try:
            if out:
                try:
                    await self.publisher.send_many(out)
                except EventTooLarge as exc:   # deterministic: those are refused, the rest is sent
                    big = set(exc.indexes)
                    n_spans = len(mapped)
                    rejected += sum(1 for i in big if i < n_spans)
                    if len(reasons) < MAX_REASONS:
                        reasons.append(str(exc))
                    self._too_large([c for j, c in enumerate(ready) if n_spans + j in big])
                    mapped = [s for i, s in enumerate(mapped) if i not in big]
                    ready = [c for j, c in enumerate(ready) if n_spans + j not in big]
                    out = [o for i, o in enumerate(out) if i not in big]
                    if out:
                        await self.publisher.send_many(out)
        except Exception as exc:  # the broker did not take them: the exporter retries this request
            self._unsent.extend(ready)   # the assembler has let them go; the sweeper re-sends them
            metrics.OTLP_REQUESTS.labels(transport, "unavailable").inc()
            log.warning("OTLP export of %d spans not handed to Kafka: %s", len(mapped), exc)
            raise Unavailable(f"cannot hand the spans to Kafka right now ({type(exc).__name__}); retry") from None
        self._count(ready)
        metrics.OTLP_SPANS.labels(transport, "accepted").inc(len(mapped))
        if rejected:
            metrics.OTLP_SPANS.labels(transport, "rejected").inc(rejected)
        metrics.OTLP_REQUESTS.labels(transport, "partial" if rejected else "ok").inc()
        message = ""
        if rejected:
            more = f" (and {rejected - len(reasons)} more)" if rejected > len(reasons) else ""
            message = f"{rejected} span(s) rejected: " + "; ".join(reasons) + more
        return ExportResult(len(mapped), rejected, message)

    def _completion(self, c: events_pb2.CompletionEvent) -> OutgoingEvent:
        return (self.completions_topic, c.trace_id, c, traceparent(c.trace_id, c.root_span_id))

    def _too_large(self, completions: list[events_pb2.CompletionEvent]) -> None:
        """Completions no Kafka message can carry: counted undelivered (too_large), never retried."""
        if completions:
            metrics.EVENTS_UNDELIVERED.labels(self.completions_topic, "too_large").inc(len(completions))
            log.error("%d OTLP completions larger than LLMOPS_KAFKA_MAX_MESSAGE_BYTES not published (e.g. trace %s)",
                      len(completions), completions[0].trace_id)

    def _count(self, completions: list[events_pb2.CompletionEvent]) -> None:
        for c in completions:
            metrics.OTLP_COMPLETIONS.labels(c.metadata.get("convention", "")).inc()

    # -- completions that waited for their contexts ------------------------------------------------
    async def flush(self, items: list[events_pb2.CompletionEvent]) -> bool:
        batch = self._unsent + items
        self._unsent = []
        if not batch:
            return True
        try:
            try:
                await self.publisher.send_many([self._completion(c) for c in batch])
            except EventTooLarge as exc:   # those can never be sent: counted, the rest sent now
                self._too_large([batch[i] for i in exc.indexes])
                batch = [c for i, c in enumerate(batch) if i not in set(exc.indexes)]
                if batch:
                    await self.publisher.send_many([self._completion(c) for c in batch])
        except Exception as exc:  # transient: kept and sent again on the next sweep
            self._unsent = batch
            log.warning("%d OTLP completions not handed to Kafka yet (%s); retrying", len(batch), exc)
            return False
        self._count(batch)
        return True

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            await self.flush(self.assembler.due())
            metrics.OTLP_WAITING.set(self.assembler.waiting)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="otlp-completions")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        if not await self.flush(self.assembler.drain()):
            log.error("%d OTLP completions were not delivered before shutdown", len(self._unsent))
