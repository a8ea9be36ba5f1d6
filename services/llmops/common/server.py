"""gRPC server bootstrap shared by the five services.

Every server gets: the standard health service (NOT_SERVING until its service says it is ready),
server reflection (v1 and v1alpha), an interceptor that maps domain errors to status codes and
records request metrics, an incoming W3C ``traceparent`` in a context variable, Prometheus
``/metrics`` on its own port, and a graceful stop (stop accepting, drain in-flight RPCs; the
runtime, :mod:`llmops.common.runtime`, runs it on SIGTERM/SIGINT).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from llmops.common import metrics
from llmops.common.channels import SERVER_OPTIONS
from llmops.common.errors import LlmopsError
from llmops.common.logging import current_trace_id
from llmops.common.envelope import parse_traceparent
from llmops.common.reflection import enable_server_reflection
from llmops.common.settings import Settings

log = logging.getLogger(__name__)

#: (trace_id, parent span id) from the caller's ``traceparent`` metadata, if any.
incoming_trace: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "llmops_incoming_trace", default=None
)

def _code_name(context) -> str:
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "OK" if code in (None, 0) else str(code)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps :class:`LlmopsError` to its status, anything else to INTERNAL without a stack trace
    on the wire (the trace is logged), and records ``llmops_grpc_*`` metrics."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/llmops."):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        service = self.service
        tp = ""
        for k, v in details.invocation_metadata or ():
            if k == "traceparent":
                tp = v if isinstance(v, str) else v.decode()

        async def guard(context, body):
            start = time.perf_counter()
            code = "OK"
            parsed = parse_traceparent(tp) if tp else None
            token = incoming_trace.set(parsed)
            try:
                return await body()
            except grpc.aio.AbortError:
                code = _code_name(context)
                raise
            except LlmopsError as exc:
                code = exc.code.name
                await context.abort(exc.code, str(exc) or exc.code.name)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception:
                code = "INTERNAL"
                log.exception("%s/%s failed", service, method)
                tid = current_trace_id.get()
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"internal error in {service}.{method}" + (f" (trace_id={tid})" if tid else "")
                    + "; the service log has the details",
                )
            finally:
                incoming_trace.reset(token)
                metrics.GRPC_REQUESTS.labels(service, method, code).inc()
                metrics.GRPC_LATENCY.labels(service, method).observe(time.perf_counter() - start)

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                return await guard(context, lambda: inner(request, context))

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request, context):
                # a coroutine that writes (not a generator), so errors map the same way mid-stream
                async def body():
                    async for item in inner_stream(request, context):
                        await context.write(item)

                await guard(context, body)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class GrpcServer:
    """One service's gRPC server with health and reflection."""

    def __init__(self, service: str, settings: Settings, service_full_names: list[str]) -> None:
        self.service = service
        self.settings = settings
        self.names = service_full_names
        self.server = grpc.aio.server(
            interceptors=[ErrorMappingInterceptor(service)], options=SERVER_OPTIONS,
            maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_server_reflection([*self.names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name],
                                 self.server)
        self.port = 0

    def bind(self, port: int | None = None) -> int:
        port = self.settings.grpc_port(self.service) if port is None else port
        self.port = self.server.add_insecure_port(f"{self.settings.host}:{port}")
        if self.port == 0:
            raise RuntimeError(f"{self.service}: cannot bind {self.settings.host}:{port} (in use?)")
        return self.port

    async def start(self) -> None:
        if not self.port:
            self.bind()
        await self.server.start()
        await self.set_serving(False)
        log.info("%s gRPC server listening on %s:%d", self.service, self.settings.host, self.port)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.names):
            await self.health.set(name, status)
        metrics.SERVICE_READY.labels(self.service).set(1 if serving else 0)

    async def stop(self, grace_s: float | None = None) -> None:
        await self.set_serving(False)
        await self.server.stop(self.settings.grpc_grace_seconds if grace_s is None else grace_s)
