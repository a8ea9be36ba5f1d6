"""The platform's own spans and judge scores, exported over OTLP to any backend (an OpenTelemetry
collector, Jaeger, Tempo, Phoenix, Langfuse) when LLMOPS_OTLP_EXPORT_ENDPOINT is set.

A consumer group of its own in the tracing service reads the spans and scores topics, so a slow or
absent backend never holds up the trace store: its lag grows (``llmops_consumer_lag_messages``)
and it catches up when the backend is back. A failed export is retried with backoff, never
dead-lettered; an undecodable message goes to the DLQ like everywhere else.

* Spans of the platform's services (inference, retrieval, tracing, judging, drift) go out with the
  GenAI conventions' names and attributes: the generation as ``chat {model}`` (kind CLIENT,
  ``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.*``,
  ``gen_ai.response.finish_reasons``), the retrieval as ``retrieval {collection}``, judge-model
  calls as ``chat {judge model}``; the platform's own attributes stay beside them. Spans that came
  in over OTLP (an app's own) are not sent back out.
* Each judge score goes out as a ``gen_ai.evaluation.result`` event (``gen_ai.evaluation.name``,
  ``gen_ai.evaluation.score.value``, ``gen_ai.evaluation.explanation``) on a span
  ``evaluation {name}`` under the judge span that produced it. Its span id is derived from the
  score's natural key, so a replay exports the same span again, which backends keep once.

The OpenTelemetry SDK's own OTLP exporters do the sending (retries, gzip, headers, TLS).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from llmops.common import metrics
from llmops.common.envelope import Record, UndecodableMessage
from llmops.common.events import read_event
from llmops.common.settings import SERVICES, Settings, key_value_pairs
from llmops.common.stream import Rejected
from llmops.v1 import common_pb2, events_pb2

log = logging.getLogger(__name__)

SCOPE = InstrumentationScope("llmops", "0.1.0")
_STATUS = {common_pb2.SPAN_STATUS_OK: StatusCode.OK, common_pb2.SPAN_STATUS_ERROR: StatusCode.ERROR}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def make_exporter(settings: Settings) -> SpanExporter:
    headers = {k.lower(): v for k, v in key_value_pairs(settings.otlp_export_headers, 'headers').items()}
    endpoint = settings.otlp_export_endpoint
    if settings.otlp_export_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression as GrpcCompression
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        secure = endpoint.startswith("https://")
        return GrpcExporter(endpoint=endpoint, insecure=not secure, headers=headers,
                            timeout=settings.otlp_export_timeout_s, compression=GrpcCompression.Gzip)
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=settings.otlp_export_timeout_s,
                            compression=Compression.Gzip)


def _ctx(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=_SAMPLED)


def _int(v: str) -> int | str:
    try:
        return int(v)
    except ValueError:
        return v


def genai_view(ev: events_pb2.SpanEvent) -> tuple[str, SpanKind, dict]:
    """(name, kind, attributes) of a platform span, in the GenAI conventions' terms."""
    a: dict = dict(ev.attributes)
    name, kind = ev.name, SpanKind.INTERNAL
    if ev.name == "generation":
        model = a.get("model", "")
        name, kind = f"chat {model}".strip(), SpanKind.CLIENT
        a.update({"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.response.model": model,
                  "gen_ai.provider.name": a.get("backend", "llmops")})
        if "max_new_tokens" in a:
            a["gen_ai.request.max_tokens"] = _int(a["max_new_tokens"])
        if "prompt_tokens" in a:
            a["gen_ai.usage.input_tokens"] = _int(a["prompt_tokens"])
        if "completion_tokens" in a:
            a["gen_ai.usage.output_tokens"] = _int(a["completion_tokens"])
        if a.get("finish_reason"):
            a["gen_ai.response.finish_reasons"] = [a["finish_reason"]]
    elif ev.name == "retrieval" and ev.service == "inference":
        collection = a.get("collection", "default")
        name, kind = f"retrieval {collection}", SpanKind.CLIENT
        a.update({"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": collection})
        if "top_k" in a:
            a["gen_ai.request.top_k"] = _int(a["top_k"])
        if "query" in a:
            a["gen_ai.retrieval.query.text"] = a["query"]
    elif ev.name == "judge.call":
        model = a.get("judge.model", "")
        name, kind = f"chat {model}".strip(), SpanKind.CLIENT
        a.update({"gen_ai.operation.name": "chat", "gen_ai.request.model": model})
        for ours, theirs in (("llm.usage.prompt_tokens", "gen_ai.usage.input_tokens"),
                             ("llm.usage.completion_tokens", "gen_ai.usage.output_tokens")):
            if ours in a:
                a[theirs] = _int(a[ours])
    elif ev.name in ("generate", "generate_stream"):
        kind = SpanKind.SERVER
        if a.get("model"):
            a["gen_ai.request.model"] = a["model"]
        for ours, theirs in (("session_id", "session.id"), ("user_id", "user.id")):
            if a.get(ours):
                a[theirs] = a[ours]
    return name, kind, a


def span_of(ev: events_pb2.SpanEvent, resources: dict[str, Resource]) -> ReadableSpan:
    name, kind, attrs = genai_view(ev)
    status = _STATUS.get(ev.status)
    return ReadableSpan(
        name=name, context=_ctx(ev.trace_id, ev.span_id),
        parent=_ctx(ev.trace_id, ev.parent_span_id) if ev.parent_span_id else None,
        resource=resources[ev.service], attributes=attrs, kind=kind,
        status=Status(status, ev.status_message or None) if status is StatusCode.ERROR else Status(status or StatusCode.UNSET),
        start_time=ev.start_time.ToNanoseconds(), end_time=ev.end_time.ToNanoseconds(), instrumentation_scope=SCOPE,
    )


def score_span_id(ev: events_pb2.ScoreEvent) -> str:
    """A span id from the score's natural key (trace, evaluator, version, name): stable across replays."""
    key = f"{ev.trace_id}/{ev.score.evaluator}/{ev.score.version}/{ev.score.name}".encode()
    sid = hashlib.sha256(key).hexdigest()[:16]
    return sid if sid != "0" * 16 else "1" * 16


def score_span(ev: events_pb2.ScoreEvent, resource: Resource, fallback_ns: int) -> ReadableSpan:
    sc = ev.score
    at = sc.created_at.ToNanoseconds() if sc.HasField("created_at") else fallback_ns
    attrs = {"gen_ai.evaluation.name": sc.name, "gen_ai.evaluation.score.value": float(sc.value)}
    if sc.explanation:
        attrs["gen_ai.evaluation.explanation"] = sc.explanation
    ok = sc.status != common_pb2.SCORE_STATUS_ERROR
    if not ok:
        attrs["error.type"] = "evaluation_failed"
    span_attrs = {**attrs, "llmops.evaluator": sc.evaluator, "llmops.evaluator.version": sc.version,
                  "llmops.tier": ev.tier, "gen_ai.request.model": ev.model,
                  "llmops.prompt_template": ev.prompt_template, "llmops.prompt_version": ev.prompt_version}
    if ev.deployment:   # served through a route: which deployment version (and arm) the score judges
        span_attrs.update({"llmops.route": ev.route, "llmops.route_revision": ev.route_revision,
                           "llmops.deployment": ev.deployment, "llmops.deployment_version": ev.deployment_version,
                           "llmops.arm": ev.arm})
    return ReadableSpan(
        name=f"evaluation {sc.name}", context=_ctx(ev.trace_id, score_span_id(ev)),
        parent=_ctx(ev.trace_id, ev.span_id) if ev.span_id else None, resource=resource, attributes=span_attrs,
        events=[Event("gen_ai.evaluation.result", attrs, timestamp=at)], kind=SpanKind.INTERNAL,
        status=Status(StatusCode.OK if ok else StatusCode.ERROR), start_time=at, end_time=at,
        instrumentation_scope=SCOPE,
    )


class OtlpExportConsumer:
    """Batch consumer (see :mod:`llmops.common.stream`) of the spans and scores topics."""

    def __init__(self, exporter: SpanExporter, topic_prefix: str, resource_attributes: dict[str, str],
                 max_backoff_s: float = 30.0) -> None:
        self.exporter = exporter
        self.spans_topic = f"{topic_prefix}spans"
        self.scores_topic = f"{topic_prefix}scores"
        self.resources = {svc: Resource.create({**resource_attributes, "service.name": f"llmops-{svc}"})
                          for svc in SERVICES}
        self.max_backoff_s = max_backoff_s
        self.exported = 0

    @property
    def topics(self) -> list[str]:
        return [self.spans_topic, self.scores_topic]

    def convert(self, records: list[Record]) -> tuple[list[ReadableSpan], list[Rejected]]:
        spans: list[ReadableSpan] = []
        rejected: list[Rejected] = []
        for r in records:
            try:
                if r.topic == self.spans_topic:
                    ev = read_event(r, events_pb2.SpanEvent)
                    if ev.service in self.resources:      # the platform's own, not an app's (OTLP ingest)
                        spans.append(span_of(ev, self.resources))
                elif r.topic == self.scores_topic:
                    sc = read_event(r, events_pb2.ScoreEvent)
                    spans.append(score_span(sc, self.resources["judging"], r.timestamp_ms * 1_000_000))
            except UndecodableMessage as exc:
                rejected.append(Rejected(r, str(exc)))
        return spans, rejected

    async def handle(self, records: list[Record]) -> list[Rejected]:
        spans, rejected = self.convert(records)
        backoff = 0.5
        while spans:
            result = await asyncio.to_thread(self.exporter.export, spans)
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
                metrics.OTLP_EXPORTED.labels("exported").inc(len(spans))
                break
            metrics.OTLP_EXPORTED.labels("retried").inc(len(spans))
            log.warning("OTLP export of %d spans failed; retrying in %.1fs", len(spans), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
        return rejected

    def close(self) -> None:
        self.exporter.shutdown()
