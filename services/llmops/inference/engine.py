"""The request path: validate, retrieve, render a versioned prompt, generate, then hand spans and
the ``CompletionEvent`` to the event bus (which never blocks). No gRPC types in or out here,
except the event protobufs that are the platform's contract."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
import math
from typing import AsyncIterator, Awaitable, Callable, ContextManager


from llmops.common import metrics
from llmops.common.bus import EventPublisher
from llmops.common.envelope import traceparent
from llmops.common.errors import DeadlineExceeded, InvalidArgument, NotFound, RateLimited, Unavailable
from llmops.common.logging import trace_context
from llmops.backends.protocol import ChatTurn, Generation, GenerationParams, ModelBackend, TokenOut
from llmops.common.pricing import ModelPrice, PriceTable
from llmops.inference.prompts import PromptRegistry, PromptTemplate
from llmops.inference.params import with_defaults
from llmops.inference.retrieval_client import RetrievalClient
from llmops.inference.router import Router
from llmops.inference.routing import (ARM_PRIMARY, ARM_SHADOW, RATE_LIMITED, TIMEOUT, UNAVAILABLE, Plan,
                                      key_of)
from llmops.common.spans import SpanRecorder, new_trace_id
from llmops.v1 import common_pb2, events_pb2, inference_pb2

log = logging.getLogger(__name__)

ROLES = {"system", "user", "assistant"}
MAX_RETRIEVAL_TOP_K = 20


class RequestCancelled(Exception):
    """Recorded on the spans of a request whose client cancelled it."""


@dataclass(frozen=True)
class RetrievalRequest:
    top_k: int = 3
    alpha: float = 0.5
    collection: str = ""
    filters: dict[str, str] = field(default_factory=dict)


@dataclass
class GenerateInput:
    prompt: str = ""
    messages: list[ChatTurn] = field(default_factory=list)
    model: str = ""
    params: GenerationParams = field(default_factory=GenerationParams)
    retrieval: RetrievalRequest | None = None
    session_id: str = ""
    user_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    template_name: str = ""
    template_version: int | None = None
    parent: tuple[str, str] | None = None   # (trace_id, span_id) from the caller's traceparent; span_id "": a root
    attributes: dict[str, str] = field(default_factory=dict)   # extra attributes of the root span (the door)
    deadline_s: float | None = None   # time the client still waits (its gRPC deadline); None: no deadline
    explicit: frozenset[str] | None = None   # parameters the client set (None: those not None)


@dataclass
class GenerateResult:
    trace_id: str
    text: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    contexts: list[common_pb2.Context]
    latency_ms: float
    template: PromptTemplate
    tokens: list[TokenOut]
    cost_usd: float | None = None   # None: the model has no price
    deployment: str = ""            # the deployment version that answered
    deployment_version: int = 0
    arm: str = ARM_PRIMARY
    attempts: int = 1
    route_revision: int = 0
    fallback: bool = False
    shadow_of: str = ""

    def usage(self) -> common_pb2.Usage:
        u = common_pb2.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                             total_tokens=self.prompt_tokens + self.completion_tokens)
        if self.cost_usd is not None:
            u.cost_usd = self.cost_usd
        return u


@dataclass
class _Prepared:
    """The request rendered for one deployment (its backend's chat template, its prompt)."""
    deployment: inference_pb2.Deployment
    backend: ModelBackend
    template: PromptTemplate
    rendered: str
    prompt_tokens: int
    params: GenerationParams


@dataclass
class _Served:
    gen: Generation
    prep: _Prepared
    attempts: int
    fallback: bool


class _AttemptTimeout(Exception):
    pass


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, _AttemptTimeout):
        return TIMEOUT
    if isinstance(exc, RateLimited):
        return RATE_LIMITED
    if isinstance(exc, Unavailable):
        return UNAVAILABLE
    return "error"


class InferenceEngine:
    """Serves a request over its route's plan: the arm (primary or canary), then each candidate
    deployment in order, each with the route's retries (exponential backoff, full jitter), a
    per-attempt timeout and the request's deadline (the route's, and the client's gRPC deadline);
    a deployment whose circuit is open is skipped. Every attempt is a span. A shadow copy, when
    the route samples one, runs after the answer is ready, on its own trace."""

    def __init__(self, router: Router, prompts: PromptRegistry, retrieval: RetrievalClient | None,
                 publisher: EventPublisher, topic_prefix: str = "llmops.",
                 busy: Callable[[], ContextManager] = contextlib.nullcontext, prices: PriceTable | None = None,
                 max_shadows: int = 4, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 ack_wait_s: float = 0.0) -> None:
        self.router = router
        self.prompts = prompts
        self.retrieval = retrieval
        self.publisher = publisher
        self.spans_topic = f"{topic_prefix}spans"
        self.completions_topic = f"{topic_prefix}completions"
        self.prices = prices or PriceTable()
        self.busy = busy   # held while a request runs (see llmops.common.busy): local judges wait for it
        self.max_shadows = max_shadows
        self._shadows: set[asyncio.Task] = set()
        self._sleep = sleep
        self.ack_wait_s = ack_wait_s   # > 0: a request is answered once the broker has its events

    @property
    def default_model(self) -> str:
        return self.router.default_route

    # -- validation and preparation ------------------------------------------------------------
    def _conversation(self, req: GenerateInput) -> tuple[str, list[ChatTurn]]:
        """(question, history before it)."""
        if req.prompt and req.messages:
            raise InvalidArgument("set either `prompt` or `messages`, not both")
        if req.messages:
            for n, m in enumerate(req.messages):
                if m.role not in ROLES:
                    raise InvalidArgument(f"messages[{n}].role is {m.role!r}; use system, user or assistant")
                if not m.content.strip():
                    raise InvalidArgument(f"messages[{n}].content is empty")
            if req.messages[-1].role != "user":
                raise InvalidArgument("the last message must have role `user`")
            return req.messages[-1].content, list(req.messages[:-1])
        if not req.prompt.strip():
            raise InvalidArgument("prompt is empty: set `prompt` (or `messages`) to the text to answer")
        return req.prompt, []

    async def _retrieve(self, req: GenerateInput, question: str, rec: SpanRecorder, root: str) -> list[common_pb2.Context]:
        if req.retrieval is None:
            return []
        r = req.retrieval
        if not 0 < r.top_k <= MAX_RETRIEVAL_TOP_K:
            raise InvalidArgument(f"retrieval.top_k must be between 1 and {MAX_RETRIEVAL_TOP_K}, got {r.top_k}")
        if not 0.0 <= r.alpha <= 1.0:
            raise InvalidArgument(f"retrieval.alpha must be in [0, 1], got {r.alpha}")
        if self.retrieval is None:
            raise InvalidArgument("retrieval is not configured on this inference server")
        with rec.span("retrieval", root, top_k=r.top_k, alpha=r.alpha, collection=r.collection or "default",
                      query=question[:500]) as span:
            contexts = await self.retrieval.search(question, r.top_k, r.alpha, r.collection, r.filters,
                                                   traceparent(rec.trace_id, span.span_id))
            span.attributes["hits"] = str(len(contexts))
            span.attributes["document_ids"] = ",".join(c.document_id for c in contexts)
            if contexts:
                span.attributes["top_score"] = f"{contexts[0].score:.4f}"
        return contexts

    def _template(self, req: GenerateInput, d: inference_pb2.Deployment) -> PromptTemplate:
        """The request's template if it names one, else the deployment's, else rag/chat; the
        deployment's version applies to its own template when the request names no version."""
        name = req.template_name or d.prompt_template or ("rag" if req.retrieval else "chat")
        version = req.template_version
        if version is None and d.HasField("prompt_version") and name == (d.prompt_template or name):
            version = d.prompt_version
        return self.prompts.resolve(name, version)

    async def _prepare(self, req: GenerateInput, d: inference_pb2.Deployment, question: str, history: list[ChatTurn],
                       contexts: list[common_pb2.Context], rec: SpanRecorder, root: str) -> _Prepared:
        backend = await self.router.backend(d)
        template = self._template(req, d)
        params = with_defaults(req.params, d.default_parameters if d.HasField("default_parameters") else None,
                               req.explicit)
        with rec.span("prompt", root, template=template.name, version=template.version, deployment=d.name) as span:
            turns: list[ChatTurn] = []
            if template.system and not any(m.role == "system" for m in history):
                turns.append(ChatTurn("system", template.system))
            turns += history
            turns.append(ChatTurn("user", template.render_user(question, [c.text for c in contexts])))
            if getattr(backend, "renders_locally", lambda: False)():   # no call to a server: quick
                rendered = backend.render_chat(turns)
                prompt_tokens = backend.count_tokens(rendered)
                limits = backend.limits()
            else:   # a remote backend may ask its server (a blocking HTTP call): never on the event loop
                rendered, prompt_tokens, limits = await asyncio.to_thread(_render_and_count, backend, turns)
            span.attributes["prompt_tokens"] = str(prompt_tokens)
            if prompt_tokens + params.max_new_tokens > limits.max_total_tokens:
                raise InvalidArgument(
                    f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. Given: "
                    f"{prompt_tokens} `inputs` tokens and {params.max_new_tokens} `max_new_tokens`"
                )
        return _Prepared(d, backend, template, rendered, prompt_tokens, params)

    # -- generation ---------------------------------------------------------------------------
    async def generate(self, req: GenerateInput) -> GenerateResult:
        result: GenerateResult | None = None
        async for item in self._run(req, stream=False):
            if isinstance(item, GenerateResult):
                result = item
        assert result is not None
        return result

    def generate_stream(self, req: GenerateInput) -> AsyncIterator[TokenOut | GenerateResult]:
        return self._run(req, stream=True)

    async def _run(self, req: GenerateInput, stream: bool) -> AsyncIterator[TokenOut | GenerateResult]:
        trace_id = req.parent[0] if req.parent else new_trace_id()
        rec = SpanRecorder(trace_id, "inference")
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        with trace_context(trace_id), self.busy():
            route_name = req.model or self.router.default_route
            root = rec.start("generate_stream" if stream else "generate", req.parent[1] if req.parent else "",
                             model=route_name, session_id=req.session_id, user_id=req.user_id,
                             rag=req.retrieval is not None)
            root.attributes.update({k: v for k, v in req.attributes.items() if k not in root.attributes})
            error: BaseException | None = None
            plan: Plan | None = None
            last: inference_pb2.Deployment | None = None
            question = ""
            completion: events_pb2.CompletionEvent | None = None   # published with the spans, as one unit
            published = False
            try:
                question, history = self._conversation(req)
                plan = self.router.plan(route_name, req.session_id, req.user_id)
                root.attributes.update(route=plan.route.name, route_revision=str(plan.route.revision), arm=plan.arm)
                deadline = self._deadline(plan.route, req, loop.time())
                contexts = await self._retrieve(req, question, rec, root.span_id)
                served: _Served | None = None
                async for item in self._serve(plan, req, question, history, contexts, rec, root.span_id, deadline,
                                              stream):
                    if isinstance(item, _Served):
                        served = item
                    elif isinstance(item, inference_pb2.Deployment):
                        last = item
                    else:
                        yield item
                assert served is not None
                gen, prep = served.gen, served.prep
                d = prep.deployment
                latency_ms = (time.perf_counter() - t0) * 1000
                cost = self._cost(d, route_name, gen)
                result = GenerateResult(
                    trace_id=trace_id, text=gen.text, model=route_name, finish_reason=gen.finish_reason,
                    prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                    contexts=contexts, latency_ms=latency_ms, template=prep.template, tokens=gen.tokens,
                    cost_usd=cost, deployment=d.name, deployment_version=d.version, arm=plan.arm,
                    attempts=served.attempts, route_revision=plan.route.revision, fallback=served.fallback,
                )
                rec.end(root, prompt_template=prep.template.name, prompt_version=prep.template.version,
                        finish_reason=gen.finish_reason, latency_ms=f"{latency_ms:.1f}", deployment=d.name,
                        deployment_version=d.version, attempts=served.attempts)
                metrics.ROUTE_REQUESTS.labels(route_name, d.name, str(d.version), plan.arm, "ok").inc()
                if served.fallback:
                    metrics.ROUTE_FALLBACKS.labels(route_name).inc()
                completion = self._completion(req, question, prep, result, root.span_id)
                if plan.shadow is not None:
                    self._start_shadow(plan, req, question, history, contexts, trace_id)
                if self.ack_wait_s > 0:   # durable before the answer: a kill after it loses nothing
                    rec.close_open(None)
                    published = True
                    await self.publisher.publish_unit_acked(self._request_unit(rec, root.span_id, completion),
                                                            self.ack_wait_s)
                yield result
            except (GeneratorExit, asyncio.CancelledError):
                error = RequestCancelled("the client went away before the response was complete")
                raise
            except BaseException as exc:
                error = exc
                if plan is not None and not isinstance(exc, (InvalidArgument, NotFound)):
                    d = last or plan.candidates[0]
                    metrics.ROUTE_REQUESTS.labels(route_name, d.name, str(d.version), plan.arm, "error").inc()
                    if plan.route.HasField("canary"):   # a rollout counts failed requests per arm
                        completion = self._failure(req, question, plan, d, exc, rec.trace_id, root.span_id,
                                                   (time.perf_counter() - t0) * 1000)
                raise
            finally:
                if not published:
                    rec.close_open(error)
                    self._publish_request(rec, root.span_id, completion)

    @staticmethod
    def _deadline(route: inference_pb2.Route, req: GenerateInput, now: float) -> float:
        """When the request must end (loop time): the route's deadline and the client's, the sooner."""
        limits = [x for x in (route.deadline_s or None, req.deadline_s) if x is not None]
        return now + min(limits) if limits else math.inf

    async def _serve(self, plan: Plan, req: GenerateInput, question: str, history: list[ChatTurn],
                     contexts: list[common_pb2.Context], rec: SpanRecorder, root: str, deadline: float,
                     stream: bool) -> AsyncIterator:
        """Try each candidate deployment with the route's retries; yields the deployment being tried
        (for the failure accounting), tokens when streaming, and finally a :class:`_Served`.
        Retries and fallbacks happen only before the first token is out."""
        loop = asyncio.get_running_loop()
        route = plan.route
        failures: list[str] = []
        bugs: list[BaseException] = []   # failures that are not a backend being away: re-raised as they are
        attempts = 0
        for n_candidate, d in enumerate(plan.candidates):
            yield d
            label = (route.name, d.name, str(d.version))
            if not self.router.allow(d):
                metrics.ROUTE_ATTEMPTS.labels(*label, "circuit_open").inc()
                span = rec.start("generation", root, deployment=d.name, deployment_version=d.version,
                                 backend=d.backend, arm=plan.arm, outcome="circuit_open", wait_ms="0")
                rec.end(span)
                failures.append(f"{d.name}@{d.version}: circuit open")
                continue
            prep: _Prepared | None = None
            for n in range(1, plan.retry.attempts + 1):
                wait = plan.retry.backoff(n - 1, self.router.rng) if n > 1 else 0.0
                if loop.time() + wait >= deadline:
                    metrics.ROUTE_ATTEMPTS.labels(*label, "deadline").inc()
                    raise DeadlineExceeded(
                        f"route {route.name!r}: the deadline passed after {attempts} attempt(s) "
                        f"({'; '.join(failures) or 'none finished'}); not retried past it")
                if wait:
                    await self._sleep(wait)
                attempts += 1
                budget = deadline - loop.time()
                timeout = min(route.attempt_timeout_s or math.inf, budget)
                attrs = dict(deployment=d.name, deployment_version=d.version, backend=d.backend, arm=plan.arm,
                             attempt=n, wait_ms=f"{wait * 1000:.1f}", fallback=n_candidate > 0)
                span = None
                g0 = time.perf_counter()
                tokens_out = 0
                try:
                    gen: Generation | None = None
                    if prep is None:   # rendering and counting may ask the server: a server away fails the attempt
                        prep = await self._prepare(req, d, question, history, contexts, rec, root)
                    span = rec.start("generation", root, **attrs)
                    if stream:
                        async for item in _with_first_timeout(prep.backend.generate_stream(prep.rendered, prep.params),
                                                              timeout, budget):
                            if isinstance(item, Generation):
                                gen = item
                            else:
                                tokens_out += 1
                                yield item
                    else:
                        gen = await _within(prep.backend.generate(prep.rendered, prep.params), timeout, budget)
                    assert gen is not None
                except (InvalidArgument, NotFound, DeadlineExceeded) as exc:
                    self.router.abandon(route, d)   # a half-open trial must not stay in flight for good
                    if span is None and not isinstance(exc, DeadlineExceeded):
                        raise   # the request itself is wrong (e.g. too long for this model): no attempt was made
                    rec.end(span or rec.start("generation", root, **attrs), exc,
                            outcome="rejected" if not isinstance(exc, DeadlineExceeded) else "deadline")
                    metrics.ROUTE_ATTEMPTS.labels(*label, "deadline" if isinstance(exc, DeadlineExceeded)
                                                  else "error").inc()
                    raise
                except Exception as exc:
                    if span is None:   # the server failed while the prompt was being prepared
                        span = rec.start("generation", root, **attrs)
                    kind = _failure_kind(exc)
                    if kind == "error":
                        bugs.append(exc)
                    self.router.record(route, d, ok=False)
                    metrics.ROUTE_ATTEMPTS.labels(*label, kind).inc()
                    rec.end(span, exc, outcome=kind)
                    failures.append(f"{d.name}@{d.version} attempt {n}: {kind}: {exc}")
                    log.warning("route %s: %s@%d attempt %d failed (%s): %s", route.name, d.name, d.version, n, kind, exc)
                    if tokens_out:   # the client has part of an answer: no retry can replace it
                        raise
                    if kind in plan.retry.retry_on and n < plan.retry.attempts:
                        continue
                    break
                except BaseException:   # cancelled: the client went away (or the stream was closed)
                    self.router.abandon(route, d)
                    raise
                self.router.record(route, d, ok=True)
                metrics.ROUTE_ATTEMPTS.labels(*label, "ok").inc()
                metrics.GENERATION_LATENCY.labels(d.name).observe(time.perf_counter() - g0)
                metrics.TOKENS.labels(d.name, "prompt").inc(gen.prompt_tokens)
                metrics.TOKENS.labels(d.name, "completion").inc(gen.completion_tokens)
                cost = self._cost(d, route.name, gen)
                if cost is not None:
                    metrics.COST.labels(d.name).inc(cost)
                rec.end(span, outcome="ok", prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                        finish_reason=gen.finish_reason, model=d.name,
                        **({} if cost is None else {"cost_usd": f"{cost:.8f}"}))
                yield _Served(gen, prep, attempts, fallback=n_candidate > 0 and key_of(d) != key_of(plan.candidates[0]))
                return
        if bugs and len(bugs) == attempts:
            raise bugs[-1]   # no deployment was merely away: an internal error, not UNAVAILABLE
        raise Unavailable(f"route {route.name!r}: every deployment failed: {'; '.join(failures)}")

    def _cost(self, d: inference_pb2.Deployment, route: str, gen: Generation) -> float | None:
        if d.HasField("prompt_price_per_m") or d.HasField("completion_price_per_m"):
            return ModelPrice(d.prompt_price_per_m, d.completion_price_per_m).cost(gen.prompt_tokens,
                                                                                 gen.completion_tokens)
        for name in (d.name, route):
            c = self.prices.cost(name, gen.prompt_tokens, gen.completion_tokens)
            if c is not None:
                return c
        return None

    # -- shadows ------------------------------------------------------------------------------
    def _start_shadow(self, plan: Plan, req: GenerateInput, question: str, history: list[ChatTurn],
                      contexts: list[common_pb2.Context], of_trace: str) -> None:
        d = plan.shadow
        assert d is not None
        label = (plan.route.name, d.name, str(d.version))
        if len(self._shadows) >= self.max_shadows:   # the shadow never slows or queues live traffic
            metrics.SHADOW_REQUESTS.labels(*label, "skipped").inc()
            return
        task = asyncio.create_task(self._shadow(plan, d, req, question, history, contexts, of_trace),
                                   name=f"shadow-{of_trace}")
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(self, plan: Plan, d: inference_pb2.Deployment, req: GenerateInput, question: str,
                      history: list[ChatTurn], contexts: list[common_pb2.Context], of_trace: str) -> None:
        """The shadow's copy: its own trace and completion (arm ``shadow``), never returned."""
        await asyncio.sleep(0)   # after the live answer is on its way
        trace_id = new_trace_id()
        rec = SpanRecorder(trace_id, "inference")
        t0 = time.perf_counter()
        label = (plan.route.name, d.name, str(d.version))
        error: BaseException | None = None
        completion: events_pb2.CompletionEvent | None = None
        with trace_context(trace_id), self.busy():
            root = rec.start("shadow", "", model=plan.route.name, route=plan.route.name, arm=ARM_SHADOW,
                             shadow_of=of_trace, deployment=d.name, deployment_version=d.version)
            try:
                prep = await self._prepare(req, d, question, history, contexts, rec, root.span_id)
                span = rec.start("generation", root.span_id, deployment=d.name, deployment_version=d.version,
                                 backend=d.backend, arm=ARM_SHADOW, attempt=1, wait_ms="0")
                timeout = plan.route.attempt_timeout_s or plan.route.deadline_s or math.inf
                gen = await _within(prep.backend.generate(prep.rendered, prep.params), timeout, math.inf)
                rec.end(span, outcome="ok", prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                        finish_reason=gen.finish_reason)
                latency_ms = (time.perf_counter() - t0) * 1000
                result = GenerateResult(
                    trace_id=trace_id, text=gen.text, model=plan.route.name, finish_reason=gen.finish_reason,
                    prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens, contexts=contexts,
                    latency_ms=latency_ms, template=prep.template, tokens=[], cost_usd=self._cost(d, plan.route.name, gen),
                    deployment=d.name, deployment_version=d.version, arm=ARM_SHADOW, attempts=1,
                    route_revision=plan.route.revision, shadow_of=of_trace)
                rec.end(root, latency_ms=f"{latency_ms:.1f}", prompt_template=prep.template.name,
                        prompt_version=prep.template.version)
                completion = self._completion(req, question, prep, result, root.span_id)
                metrics.SHADOW_REQUESTS.labels(*label, "ok").inc()
            except asyncio.CancelledError:
                error = RequestCancelled("the shadow copy was cancelled at shutdown")
                raise
            except Exception as exc:   # a shadow's failure is traced and counted, never the client's
                error = exc
                metrics.SHADOW_REQUESTS.labels(*label, "error").inc()
                log.warning("route %s: shadow %s@%d failed: %s", plan.route.name, d.name, d.version, exc)
            finally:
                rec.close_open(error)
                self._publish_request(rec, root.span_id, completion)

    async def drain_shadows(self, timeout_s: float = 10.0) -> None:
        """Let running shadow copies finish (at shutdown), cancelling what is left after ``timeout_s``."""
        pending = set(self._shadows)
        if not pending:
            return
        done, left = await asyncio.wait(pending, timeout=timeout_s)
        for t in left:
            t.cancel()
        if left:
            await asyncio.wait(left, timeout=5)

    # -- events -------------------------------------------------------------------------------
    def _publish_request(self, rec: SpanRecorder, root_span: str,
                         completion: events_pb2.CompletionEvent | None) -> None:
        """A request's spans and its completion, as one unit: delivered together, or counted as
        undelivered together (the bus never waits on Kafka)."""
        self.publisher.publish_unit(self._request_unit(rec, root_span, completion))

    def _request_unit(self, rec: SpanRecorder, root_span: str,
                      completion: events_pb2.CompletionEvent | None) -> list:
        tp = traceparent(rec.trace_id, root_span)
        unit = [(self.spans_topic, rec.trace_id, s, tp) for s in rec.spans]
        if completion is not None:
            unit.append((self.completions_topic, completion.trace_id, completion, tp))
        return unit

    def _completion(self, req: GenerateInput, question: str, prep: _Prepared, res: GenerateResult,
                    root_span: str) -> events_pb2.CompletionEvent:
        ev = events_pb2.CompletionEvent(
            trace_id=res.trace_id, model=res.model, prompt=question, contexts=res.contexts, answer=res.text,
            usage=res.usage(), latency_ms=res.latency_ms, prompt_template=prep.template.name, prompt_version=prep.template.version,
            session_id=req.session_id, user_id=req.user_id, metadata=req.metadata,
            finish_reason=res.finish_reason, rendered_prompt=prep.rendered,
            retrieval_top_score=max((c.vector_similarity for c in res.contexts), default=0.0),
            root_span_id=root_span, route=res.model, route_revision=res.route_revision, deployment=res.deployment,
            deployment_version=res.deployment_version, arm=res.arm, attempts=res.attempts, fallback=res.fallback,
            shadow_of=res.shadow_of,
        )
        ev.timestamp.GetCurrentTime()
        return ev

    def _failure(self, req: GenerateInput, question: str, plan: Plan, d: inference_pb2.Deployment,
                 exc: BaseException, trace_id: str, root_span: str, latency_ms: float) -> events_pb2.CompletionEvent:
        """A failed request of a route under a rollout, as a completion with ``error`` and no answer:
        the rollout monitor counts it against its arm; judges and drift windows leave it out."""
        ev = events_pb2.CompletionEvent(
            trace_id=trace_id, model=plan.route.name, prompt=question, latency_ms=latency_ms,
            session_id=req.session_id, user_id=req.user_id, metadata=req.metadata, root_span_id=root_span,
            route=plan.route.name, route_revision=plan.route.revision, deployment=d.name,
            deployment_version=d.version, arm=plan.arm, error=f"{type(exc).__name__}: {exc}"[:1000])
        ev.timestamp.GetCurrentTime()
        return ev


def _render_and_count(backend: ModelBackend, turns: list[ChatTurn]):
    rendered = backend.render_chat(turns)
    return rendered, backend.count_tokens(rendered), backend.limits()


async def _within(call: Awaitable, timeout: float, budget: float):
    """``call`` within the attempt's ``timeout``; when the request's ``budget`` is what ran out,
    DEADLINE_EXCEEDED (not retried), else an attempt timeout (retried when the route says so)."""
    if math.isinf(timeout):
        return await call
    try:
        return await asyncio.wait_for(call, timeout)
    except asyncio.TimeoutError:
        if timeout >= budget:
            raise DeadlineExceeded(f"the request's deadline ({budget:.3f} s left) passed during the attempt") from None
        raise _AttemptTimeout(f"no answer within the attempt timeout of {timeout:.3f} s") from None


async def _with_first_timeout(stream: AsyncIterator, timeout: float, budget: float) -> AsyncIterator:
    """A stream whose first item must come within ``timeout`` (a stream that has started is not
    retried, so later items are not timed here)."""
    it = stream.__aiter__()
    try:
        first = await _within(it.__anext__(), timeout, budget)
    except StopAsyncIteration:
        return
    except BaseException:
        with contextlib.suppress(Exception):
            await it.aclose()
        raise
    yield first
    async for item in it:
        yield item
