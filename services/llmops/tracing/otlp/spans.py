"""OTLP spans into ``SpanEvent``s (pure: no I/O).

* Trace and span ids are kept (hex). A span whose ids are not 16 / 8 bytes, or are all zero, or
  that has no name or start time, is rejected (it counts in the reply's ``partial_success``).
* Attributes are flattened to the ``SpanEvent``'s string map: strings as they are, numbers and
  booleans as text, arrays (and arrays of maps) as JSON, nested maps as dotted keys, bytes as
  base64. Resource attributes (other than ``service.name``, which becomes ``SpanEvent.service``)
  are kept under ``resource.``; the span kind as ``otel.span_kind``, the instrumentation scope as
  ``otel.scope.name``/``otel.scope.version``, span events as JSON in ``otel.events``.
* Limits: :data:`MAX_ATTRIBUTES` attributes per span and :data:`MAX_VALUE_CHARS` characters per
  value; what is cut is counted in ``otel.dropped_attributes_count`` / ``otel.truncated_values``.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace

from llmops.v1 import common_pb2, events_pb2

MAX_ATTRIBUTES = 256
MAX_VALUE_CHARS = 65_536
MAX_EVENTS = 128
MAX_NAME_CHARS = 200     # the trace store's span name column

_KINDS = {0: "", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: common_pb2.SPAN_STATUS_UNSET, 1: common_pb2.SPAN_STATUS_OK, 2: common_pb2.SPAN_STATUS_ERROR}
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


class RejectedSpan(ValueError):
    """A span that cannot become a ``SpanEvent``; its message says why."""


def any_value(v) -> object:
    """An OTLP ``AnyValue`` as a Python value (None when unset)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Flattened:
    values: dict[str, str] = field(default_factory=dict)
    dropped: int = 0
    truncated: int = 0


def flatten(key_values, out: Flattened, prefix: str = "") -> Flattened:
    values = out.values
    for kv in key_values:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "string_value":        # the common case, kept short
            text = v.string_value
        elif kind == "kvlist_value":
            flatten(v.kvlist_value.values, out, f"{prefix}{kv.key}.")
            continue
        else:
            text = as_text(any_value(v))
        key = prefix + kv.key if prefix else kv.key
        if len(values) >= MAX_ATTRIBUTES and key not in values:
            out.dropped += 1
            continue
        if len(text) > MAX_VALUE_CHARS:
            text = text[:MAX_VALUE_CHARS]
            out.truncated += 1
        values[key] = text
    return out


def flat_dict(key_values) -> dict[str, str]:
    return flatten(key_values, Flattened()).values


@dataclass
class Resource:
    """What every span of one ``ResourceSpans`` shares."""
    service: str
    attributes: dict[str, str]      # with the ``resource.`` prefix, service.name left out


def resource_of(resource_spans) -> Resource:
    attrs = flat_dict(resource_spans.resource.attributes)
    service = attrs.pop("service.name", "") or "unknown_service"
    return Resource(service=service[:100], attributes={f"resource.{k}": v for k, v in attrs.items()})


@dataclass
class MappedSpan:
    """One OTLP span as the platform's event, with what LLM-shape detection reads."""
    event: events_pb2.SpanEvent
    attributes: dict[str, str]                   # the span's own attributes, flattened
    events: list[tuple[str, dict[str, str]]]     # span events: (name, attributes)
    start_ns: int
    end_ns: int
    resource: Resource

    @property
    def trace_id(self) -> str:
        return self.event.trace_id

    @property
    def span_id(self) -> str:
        return self.event.span_id

    @property
    def is_root(self) -> bool:
        return not self.event.parent_span_id


def map_span(span: otlp_trace.Span, resource: Resource, scope_name: str, scope_version: str) -> MappedSpan:
    """``span`` as a :class:`MappedSpan`, or :class:`RejectedSpan` saying what is wrong with it."""
    tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
    if len(tid) != 16 or tid == _ZERO_TRACE:
        raise RejectedSpan(f"span {span.name[:80]!r}: trace_id must be 16 bytes and not all zero (got {len(tid)})")
    if len(sid) != 8 or sid == _ZERO_SPAN:
        raise RejectedSpan(f"span {span.name[:80]!r}: span_id must be 8 bytes and not all zero (got {len(sid)})")
    if pid and (len(pid) != 8 or pid == _ZERO_SPAN):
        pid = b""    # an invalid parent is treated as none, as OTel SDKs do
    if not span.name:
        raise RejectedSpan(f"span {sid.hex()}: name is empty")
    if not span.start_time_unix_nano:
        raise RejectedSpan(f"span {sid.hex()} ({span.name[:80]!r}): start_time_unix_nano is 0")
    start_ns = span.start_time_unix_nano
    end_ns = max(span.end_time_unix_nano, start_ns)

    own = flatten(span.attributes, Flattened())
    stored = {**resource.attributes, **own.values}
    dropped, truncated = own.dropped + span.dropped_attributes_count, own.truncated
    events: list[tuple[str, dict[str, str]]] = []
    if span.events:
        for e in span.events[:MAX_EVENTS]:
            events.append((e.name, flat_dict(e.attributes)))
        stored["otel.events"] = json.dumps(
            [{"name": n, "time_unix_nano": e.time_unix_nano, "attributes": a}
             for (n, a), e in zip(events, span.events)], ensure_ascii=False, separators=(",", ":"))[:MAX_VALUE_CHARS]
    if len(span.events) > MAX_EVENTS or span.dropped_events_count:
        stored["otel.dropped_events_count"] = str(len(span.events) - len(events) + span.dropped_events_count)
    if span.links:
        stored["otel.links"] = json.dumps([{"trace_id": lk.trace_id.hex(), "span_id": lk.span_id.hex()}
                                           for lk in span.links], separators=(",", ":"))[:MAX_VALUE_CHARS]
    kind = _KINDS.get(span.kind, "")
    if kind:
        stored["otel.span_kind"] = kind
    if scope_name:
        stored["otel.scope.name"] = scope_name
    if scope_version:
        stored["otel.scope.version"] = scope_version
    if dropped:
        stored["otel.dropped_attributes_count"] = str(dropped)
    if truncated:
        stored["otel.truncated_values"] = str(truncated)

    ev = events_pb2.SpanEvent(
        trace_id=tid.hex(), span_id=sid.hex(), parent_span_id=pid.hex() if pid else "",
        name=span.name[:MAX_NAME_CHARS], service=resource.service,
        status=_STATUS.get(span.status.code, common_pb2.SPAN_STATUS_UNSET),
        status_message=span.status.message[:2000],
        start_time=Timestamp(seconds=start_ns // 1_000_000_000, nanos=start_ns % 1_000_000_000),
        end_time=Timestamp(seconds=end_ns // 1_000_000_000, nanos=end_ns % 1_000_000_000),
        attributes=stored,
    )
    return MappedSpan(ev, own.values, events, start_ns, end_ns, resource)
