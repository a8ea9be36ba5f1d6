"""The two OTLP transports in front of :class:`OtlpReceiver`, per the OTLP specification.

* **OTLP/gRPC** — ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` on its own port
  (default 4317). Kafka not taking the spans → UNAVAILABLE (retryable); rejected spans →
  ``partial_success``.
* **OTLP/HTTP** — ``POST /v1/traces`` (default port 4318), bodies ``application/x-protobuf`` or
  ``application/json`` (OTLP's JSON: hex trace and span ids, camelCase or snake_case field names,
  unknown fields ignored), ``Content-Encoding`` gzip, deflate or none. The reply has the request's content
  type. 400 (malformed body, with a ``google.rpc.Status`` saying what is wrong), 413 (body over
  LLMOPS_OTLP_MAX_BODY_BYTES, compressed or not), 415 (other content types or encodings),
  429 with ``Retry-After`` (more than LLMOPS_OTLP_MAX_CONCURRENT_EXPORTS exports at once) and 503
  with ``Retry-After`` (Kafka not taking the spans); both retryable (gRPC: UNAVAILABLE).
"""
from __future__ import annotations

import base64
import json
import logging
import zlib

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from llmops.common.errors import InvalidArgument, ResourceExhausted, Unavailable
from llmops.common.http import HttpDoor
from llmops.tracing.otlp.receiver import OtlpReceiver

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# -- OTLP/gRPC ----------------------------------------------------------------------------------
class OtlpTraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    async def Export(self, request, context):
        try:
            result = await self.receiver.export(request, "grpc")
        except (Unavailable, ResourceExhausted) as exc:   # both retryable for OTLP exporters
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception:
            log.exception("OTLP/gRPC export failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the OTLP receiver; the tracing log has the details")
        return result.response()


class OtlpGrpcDoor:
    def __init__(self, receiver: OtlpReceiver, host: str, port: int, max_message_bytes: int) -> None:
        self.host, self.port = host, port
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(OtlpTraceServicer(receiver), self.server)

    async def start(self) -> None:
        bound = self.server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise RuntimeError(f"OTLP/gRPC: cannot bind {self.host}:{self.port} (in use?)")
        self.port = bound
        await self.server.start()
        log.info("OTLP/gRPC listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        await self.server.stop(5.0)


# -- OTLP/HTTP ----------------------------------------------------------------------------------
class BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _hex_to_b64(value: object) -> str:
    """OTLP/JSON ids are hex; protobuf's JSON mapping wants base64. A bad id becomes empty (the
    span is then rejected, counted in partial_success)."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        return ""


def _items(obj: dict, *keys: str) -> list[dict]:
    """The objects of a list field (camelCase or snake_case); anything else is left for the
    protobuf parser to reject with its field name."""
    for k in keys:
        value = obj.get(k)
        if isinstance(value, list):
            return [v for v in value if isinstance(v, dict)]
    return []


def _fix_ids(body: dict) -> None:
    for rs in _items(body, "resourceSpans", "resource_spans"):
        for ss in _items(rs, "scopeSpans", "scope_spans"):
            for span in _items(ss, "spans"):
                for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
                    if key in span:
                        span[key] = _hex_to_b64(span[key])
                for link in _items(span, "links"):
                    for key in ("traceId", "trace_id", "spanId", "span_id"):
                        if key in link:
                            link[key] = _hex_to_b64(link[key])


def parse_json_request(raw: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise BodyError(400, "the JSON body is not valid UTF-8") from None
    except ValueError as exc:
        raise BodyError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BodyError(400, "the JSON body must be an object (an ExportTraceServiceRequest)")
    _fix_ids(body)
    req = trace_service_pb2.ExportTraceServiceRequest()
    try:
        json_format.ParseDict(body, req, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BodyError(400, f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    return req


def parse_protobuf_request(raw: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    req = trace_service_pb2.ExportTraceServiceRequest()
    try:
        req.ParseFromString(raw)
    except DecodeError as exc:
        raise BodyError(400, f"the body is not a protobuf ExportTraceServiceRequest: {exc}") from None
    return req


def gunzip(raw: bytes, limit: int, encoding: str = "gzip") -> bytes:
    """``raw`` decompressed (gzip, or zlib's deflate), refusing more than ``limit`` bytes of output."""
    d = zlib.decompressobj(wbits=(16 if encoding == "gzip" else 0) + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, f"Content-Encoding is {encoding} but the body is not {encoding} data: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise BodyError(413, f"the decompressed body is over {limit} bytes (LLMOPS_OTLP_MAX_BODY_BYTES)")
    if not d.eof:
        raise BodyError(400, "the gzip body is truncated")
    return out


def _reply(message, content_type: str, status: int = 200, headers: dict | None = None) -> web.Response:
    if content_type == JSON:
        body = json_format.MessageToJson(message, indent=None).encode()
    else:
        body = message.SerializeToString()
    return web.Response(body=body, status=status, content_type=content_type, headers=headers)


def _status(code: int, message: str):
    return status_pb2.Status(code=code, message=message)


def otlp_http_app(receiver: OtlpReceiver, max_body_bytes: int) -> web.Application:
    async def export(request: web.Request) -> web.Response:
        ctype = (request.content_type or "").lower()
        reply_type = JSON if ctype == JSON else PROTOBUF
        if ctype not in (PROTOBUF, JSON, "application/protobuf"):
            return _reply(_status(code_pb2.INVALID_ARGUMENT,
                                  f"Content-Type {request.content_type!r} is not supported; send "
                                  f"{PROTOBUF} or {JSON}"), reply_type, 415)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("gzip", "deflate", "identity", ""):
            return _reply(_status(code_pb2.INVALID_ARGUMENT,
                                  f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none"),
                          reply_type, 415)
        try:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise BodyError(413, f"the body is over {max_body_bytes} bytes (LLMOPS_OTLP_MAX_BODY_BYTES)") from None
            if encoding in ("gzip", "deflate"):
                raw = gunzip(raw, max_body_bytes, encoding)
            req = parse_json_request(raw) if reply_type == JSON else parse_protobuf_request(raw)
        except BodyError as exc:
            code = code_pb2.INVALID_ARGUMENT if exc.status == 400 else code_pb2.RESOURCE_EXHAUSTED
            return _reply(_status(code, str(exc)), reply_type, exc.status)
        try:
            result = await receiver.export(req, "http")
        except Unavailable as exc:
            return _reply(_status(code_pb2.UNAVAILABLE, str(exc)), reply_type, 503, {"Retry-After": "1"})
        except ResourceExhausted as exc:
            return _reply(_status(code_pb2.RESOURCE_EXHAUSTED, str(exc)), reply_type, 429, {"Retry-After": "1"})
        except InvalidArgument as exc:
            return _reply(_status(code_pb2.INVALID_ARGUMENT, str(exc)), reply_type, 400)
        except Exception:
            log.exception("OTLP/HTTP export failed")
            return _reply(_status(code_pb2.INTERNAL, "internal error in the OTLP receiver; the tracing log has the details"),
                          reply_type, 500)
        return _reply(result.response(), reply_type)

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post("/v1/traces", export)
    return app


class OtlpDoors:
    """Both transports and the receiver's sweeper, started and stopped with the tracing service."""

    def __init__(self, receiver: OtlpReceiver, host: str, grpc_port: int, http_port: int, max_body_bytes: int) -> None:
        self.receiver = receiver
        self.grpc = OtlpGrpcDoor(receiver, host, grpc_port, max_body_bytes) if grpc_port else None
        self.http = (HttpDoor("OTLP/HTTP", otlp_http_app(receiver, max_body_bytes), host, http_port,
                              auto_decompress=False)   # gunzip() bounds the decompressed size
                     if http_port else None)

    async def start(self) -> None:
        await self.receiver.start()
        if self.grpc is not None:
            await self.grpc.start()
        if self.http is not None:
            await self.http.start()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.grpc is not None:
            await self.grpc.stop()
        await self.receiver.stop()

