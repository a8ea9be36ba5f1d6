"""The OpenAI-compatible HTTP door of the inference service: ``/v1/chat/completions``,
``/v1/completions`` (JSON or server-sent events), ``/v1/models`` and ``/health``, served by
aiohttp (:class:`llmops.common.http.HttpDoor`) in the service's event loop.

A request is read (body size capped), mapped onto ``GenerateInput`` (``openai_shapes``) and run
through the same ``InferenceEngine`` as ``Generate``: the same spans, the same ``CompletionEvent``,
so online judging and drift see it. Errors keep OpenAI's JSON shape
``{"error": {"message", "type", "param", "code"}}`` and its status codes; the domain errors of
``llmops.common.errors`` map onto them here, once.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import grpc
from aiohttp import web

from llmops.common import metrics
from llmops.common.envelope import parse_traceparent
from llmops.common.errors import LlmopsError, NotFound
from llmops.common.spans import new_trace_id
from llmops.inference import openai_shapes as shapes
from llmops.inference.engine import GenerateResult, InferenceEngine
from llmops.inference.limits import DEFAULT_LIMITS, InputLimits

log = logging.getLogger(__name__)

TRACE_HEADER = "x-llmops-trace-id"
TRACE_ID = web.RequestKey("llmops_trace_id", str)   # the request's trace, once the engine is called
SERVICE = "inference"

#: domain error (by its gRPC code) → (HTTP status, OpenAI error type, code)
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", None),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error", "failed_precondition"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error", "not_found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error", "already_exists"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "rate_limit_exceeded"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error", "service_unavailable"),
}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_response(status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
                   trace_id: str = "", headers: dict | None = None) -> web.Response:
    h = dict(headers or {})
    if trace_id:
        h[TRACE_HEADER] = trace_id
    return web.Response(status=status, body=error_body(message, type_, param, code),
                        content_type="application/json", headers=h)


def domain_error(exc: LlmopsError) -> tuple[int, str, str | None, str | None]:
    """(status, type, param, code) of a domain error."""
    status, type_, code = STATUS.get(exc.code, (500, "server_error", None))
    return status, type_, getattr(exc, "param", None), getattr(exc, "code_name", None) or code


class OpenAIGateway:
    """The handlers; :meth:`app` builds the aiohttp application that an ``HttpDoor`` serves."""

    def __init__(self, engine: InferenceEngine, default_max_new_tokens: int, max_body_bytes: int,
                 max_concurrent: int, limits: InputLimits = DEFAULT_LIMITS) -> None:
        self.engine = engine
        self.limits = limits   # what a request's events can carry (as Generate's)
        self.default_max_new_tokens = default_max_new_tokens
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        self.created = int(time.time())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._errors_and_metrics])
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model:.+}", self.get_model)
        app.router.add_get("/health", self.health)
        return app

    # -- routes ----------------------------------------------------------------------------------
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, shapes.parse_chat(await self._json(request), self.default_max_new_tokens,
                                                               self.limits))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, shapes.parse_completion(await self._json(request),
                                                                     self.default_max_new_tokens, self.limits))

    async def list_models(self, request: web.Request) -> web.Response:
        router = self.engine.router
        data = []
        for n in router.route_names():
            d = router.primary_of(n)
            data.append(shapes.model_card(n, d.backend, await router.limits(d), self.created, n == router.default_route))
        return web.Response(body=_dumps({"object": "list", "data": data}), content_type="application/json")

    async def get_model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        router = self.engine.router
        try:
            d = router.primary_of(name)
        except NotFound as exc:
            raise ModelNotFound(str(exc)) from None
        return web.Response(body=_dumps(shapes.model_card(name, d.backend, await router.limits(d), self.created,
                                                          name == router.default_route)),
                            content_type="application/json")

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    # -- the request path ------------------------------------------------------------------------
    async def _json(self, request: web.Request) -> dict:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_body_bytes, actual_size=request.content_length)
        raw = await request.read()   # aiohttp enforces client_max_size on chunked bodies too
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:   # bad JSON or UTF-8; nesting too deep for the parser
            raise shapes.OpenAIRequestError(
                f"We could not parse the JSON body of your request ({exc}). The body must be one JSON object.")
        if not isinstance(body, dict):
            raise shapes.OpenAIRequestError("The request body must be a JSON object.")
        return body

    def _check_model(self, name: str) -> None:
        try:
            self.engine.router.check_model(name)
        except NotFound as exc:
            raise ModelNotFound(str(exc)) from None

    async def _generate(self, request: web.Request, call: shapes.OpenAICall) -> web.StreamResponse:
        inp = call.input
        self._check_model(inp.model)   # an unknown model is a 404 before any span is recorded
        if self.in_flight >= self.max_concurrent:
            return error_response(429, f"The server is busy ({self.in_flight} requests in flight, at most "
                                       f"{self.max_concurrent}); retry shortly.", "rate_limit_error",
                                  code="rate_limit_exceeded", headers={"Retry-After": "1"})
        parent = parse_traceparent(request.headers.get("traceparent", ""))
        # the caller's trace, or a new one with no parent span: known here, so every reply names it
        inp.parent = parent or (new_trace_id(), "")
        request[TRACE_ID] = trace_id = inp.parent[0]
        inp.attributes = {"llmops.door": "openai", "http.route": request.path}
        self.in_flight += 1
        try:
            if call.stream:
                return await self._stream(request, call, trace_id)
            res = await self.engine.generate(inp)
        finally:
            self.in_flight -= 1
        return web.Response(body=_dumps(shapes.full_response(call, res, int(time.time()))),
                            content_type="application/json",
                            headers={TRACE_HEADER: trace_id, DEPLOYMENT_HEADER: f"{res.deployment}@{res.deployment_version}",
                                     ARM_HEADER: res.arm})

    async def _stream(self, request: web.Request, call: shapes.OpenAICall, trace_id: str) -> web.StreamResponse:
        created = int(time.time())
        gen = self.engine.generate_stream(call.input)
        try:
            # validation, retrieval and prompt rendering run before the first token: their errors
            # still get a status code, not an event in a 200 stream
            first = await gen.__anext__()
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache", TRACE_HEADER: trace_id})
            await resp.prepare(request)
            model = call.input.model or self.engine.default_model
            try:
                await self._write_events(resp, call, trace_id, created, model, first, gen)
            except ConnectionError:
                # the client went away: closing the generator (below) stops the generation and
                # records the cancellation on the trace's spans
                log.info("client left the stream of %s before its end", trace_id)
                return resp
            except Exception as exc:   # after the 200: the stream ends with an error event
                if isinstance(exc, LlmopsError) and exc.code in STATUS:
                    _, type_, param, code = domain_error(exc)
                    event = error_body(str(exc), type_, param, code)
                else:
                    log.exception("streamed completion %s failed", trace_id)
                    event = error_body(_internal(trace_id), "server_error")
                with contextlib.suppress(ConnectionError):
                    await resp.write(b"data: " + event + b"\n\n")
            with contextlib.suppress(ConnectionError):
                await resp.write_eof()
            return resp
        finally:
            await gen.aclose()

    async def _write_events(self, resp, call, trace_id, created, model, item, gen) -> None:
        async def send(obj: dict) -> None:
            await resp.write(b"data: " + _dumps(obj) + b"\n\n")

        hold = shapes.StopHoldback(call.stop)
        if call.kind == "chat":
            await send(shapes.chunk(call, trace_id, created, model, "", first=True))
        while not isinstance(item, GenerateResult):
            piece = hold.push(item.text)
            if piece or call.logprobs:
                await send(shapes.chunk(call, trace_id, created, model, piece, tokens=[item]))
            item = await gen.__anext__()
        res = item
        rest = hold.rest(shapes.visible_text(res.text, res.finish_reason, call.stop))
        last = shapes.chunk(call, trace_id, created, model, rest or None, shapes.finish_reason(res.finish_reason))
        last["llmops"] = shapes.llmops_extension(res)
        await send(last)
        if call.include_usage:
            await send(shapes.usage_chunk(call, res, created))
        await resp.write(b"data: [DONE]\n\n")

    # -- errors and metrics, once for every route --------------------------------------------------
    @web.middleware
    async def _errors_and_metrics(self, request: web.Request, handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except LlmopsError as exc:
            status, type_, param, code = domain_error(exc)
            tid = request.get(TRACE_ID, "")
            if exc.code not in STATUS:   # INTERNAL: say no more than for any other bug
                log.exception("%s %s failed (trace_id=%s)", request.method, request.path, tid)
                return error_response(500, _internal(tid), "server_error", trace_id=tid)
            return error_response(status, str(exc) or type(exc).__name__, type_, param, code, tid)
        except web.HTTPRequestEntityTooLarge:
            status = 413
            return error_response(413, f"The request body is larger than {self.max_body_bytes} bytes "
                                       "(LLMOPS_INFERENCE_HTTP_MAX_BODY_BYTES).", "invalid_request_error",
                                  code="request_too_large")
        except web.HTTPException as exc:   # unknown route, wrong method: OpenAI's shape too
            status = exc.status
            message = {404: f"Unknown request URL: {request.method} {request.path}.",
                       405: f"Method {request.method} is not allowed on {request.path}."}.get(exc.status, exc.reason)
            return error_response(exc.status, message, "invalid_request_error",
                                  code="unknown_url" if exc.status == 404 else None,
                                  headers={k: v for k, v in exc.headers.items() if k == "Allow"})
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception:
            tid = request.get(TRACE_ID, "")
            log.exception("%s %s failed (trace_id=%s)", request.method, request.path, tid)
            return error_response(500, _internal(tid), "server_error", trace_id=tid)
        finally:
            resource = getattr(request.match_info.route, "resource", None)
            name = resource.canonical if resource is not None else "unmatched"
            metrics.HTTP_REQUESTS.labels(SERVICE, name, str(status)).inc()
            metrics.HTTP_LATENCY.labels(SERVICE, name).observe(time.perf_counter() - start)


DEPLOYMENT_HEADER = "x-llmops-deployment"   # name@version of the deployment that answered
ARM_HEADER = "x-llmops-arm"                 # primary | canary


class ModelNotFound(NotFound):
    """OpenAI's 404 for an unknown model."""
    param = "model"
    code_name = "model_not_found"


def _internal(trace_id: str) -> str:
    return "internal error in the inference service" + (f" (trace_id={trace_id})" if trace_id else "") + \
        "; the service log has the details"

