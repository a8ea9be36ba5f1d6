"""The request path: validate, retrieve, render a versioned prompt, generate, then hand spans and
the ``CompletionEvent`` to the event bus (which never blocks). No gRPC types in or out here,
except the event protobufs that are the platform's contract."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, ContextManager


from llmops.common import metrics
from llmops.common.bus import EventPublisher
from llmops.common.envelope import traceparent
from llmops.common.errors import InvalidArgument, NotFound
from llmops.common.logging import trace_context
from llmops.backends.protocol import ChatTurn, Generation, GenerationParams, ModelBackend, TokenOut
from llmops.common.pricing import PriceTable
from llmops.inference.prompts import PromptRegistry, PromptTemplate
from llmops.inference.retrieval_client import RetrievalClient
from llmops.common.spans import SpanRecorder, new_trace_id
from llmops.v1 import common_pb2, events_pb2

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

    def usage(self) -> common_pb2.Usage:
        u = common_pb2.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                             total_tokens=self.prompt_tokens + self.completion_tokens)
        if self.cost_usd is not None:
            u.cost_usd = self.cost_usd
        return u


@dataclass
class _Prepared:
    backend: ModelBackend
    template: PromptTemplate
    question: str
    rendered: str
    contexts: list[common_pb2.Context]
    prompt_tokens: int


class InferenceEngine:
    def __init__(self, backends: dict[str, ModelBackend], default_model: str, prompts: PromptRegistry,
                 retrieval: RetrievalClient | None, publisher: EventPublisher, topic_prefix: str = "llmops.",
                 busy: Callable[[], ContextManager] = contextlib.nullcontext, prices: PriceTable | None = None) -> None:
        if default_model not in backends:
            raise ValueError(f"default model {default_model!r} is not among the backends")
        self.backends = backends
        self.default_model = default_model
        self.prompts = prompts
        self.retrieval = retrieval
        self.publisher = publisher
        self.spans_topic = f"{topic_prefix}spans"
        self.completions_topic = f"{topic_prefix}completions"
        self.prices = prices or PriceTable()
        self.busy = busy   # held while a request runs (see llmops.common.busy): local judges wait for it

    def backend(self, name: str) -> ModelBackend:
        name = name or self.default_model
        if name not in self.backends:
            raise NotFound(f"model {name!r} not found; available: {', '.join(sorted(self.backends))}")
        return self.backends[name]

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

    async def _prepare(self, req: GenerateInput, rec: SpanRecorder, root: str) -> _Prepared:
        question, history = self._conversation(req)
        backend = self.backend(req.model)
        template_name = req.template_name or ("rag" if req.retrieval else "chat")
        template = self.prompts.resolve(template_name, req.template_version)
        contexts: list[common_pb2.Context] = []
        if req.retrieval is not None:
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
        with rec.span("prompt", root, template=template.name, version=template.version) as span:
            turns: list[ChatTurn] = []
            if template.system and not any(m.role == "system" for m in history):
                turns.append(ChatTurn("system", template.system))
            turns += history
            turns.append(ChatTurn("user", template.render_user(question, [c.text for c in contexts])))
            rendered = backend.render_chat(turns)
            prompt_tokens = backend.count_tokens(rendered)
            span.attributes["prompt_tokens"] = str(prompt_tokens)
            limits = backend.limits()
            if prompt_tokens + req.params.max_new_tokens > limits.max_total_tokens:
                raise InvalidArgument(
                    f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. Given: "
                    f"{prompt_tokens} `inputs` tokens and {req.params.max_new_tokens} `max_new_tokens`"
                )
        return _Prepared(backend, template, question, rendered, contexts, prompt_tokens)

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
        with trace_context(trace_id), self.busy():
            root = rec.start("generate_stream" if stream else "generate", req.parent[1] if req.parent else "",
                             model=req.model or self.default_model, session_id=req.session_id,
                             user_id=req.user_id, rag=req.retrieval is not None)
            root.attributes.update({k: v for k, v in req.attributes.items() if k not in root.attributes})
            error: BaseException | None = None
            try:
                prep = await self._prepare(req, rec, root.span_id)
                gen_span = rec.start("generation", root.span_id, model=prep.backend.name,
                                     backend=prep.backend.kind, max_new_tokens=req.params.max_new_tokens,
                                     sampling=req.params.sampling)
                g0 = time.perf_counter()
                gen: Generation | None = None
                if stream:
                    async for item in prep.backend.generate_stream(prep.rendered, req.params):
                        if isinstance(item, Generation):
                            gen = item
                        else:
                            yield item
                else:
                    gen = await prep.backend.generate(prep.rendered, req.params)
                assert gen is not None
                cost = self.prices.cost(prep.backend.name, gen.prompt_tokens, gen.completion_tokens)
                rec.end(gen_span, prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                        finish_reason=gen.finish_reason, **({} if cost is None else {"cost_usd": f"{cost:.8f}"}))
                latency_ms = (time.perf_counter() - t0) * 1000
                metrics.GENERATION_LATENCY.labels(prep.backend.name).observe(time.perf_counter() - g0)
                metrics.TOKENS.labels(prep.backend.name, "prompt").inc(gen.prompt_tokens)
                metrics.TOKENS.labels(prep.backend.name, "completion").inc(gen.completion_tokens)
                if cost is not None:
                    metrics.COST.labels(prep.backend.name).inc(cost)
                result = GenerateResult(
                    trace_id=trace_id, text=gen.text, model=prep.backend.name, finish_reason=gen.finish_reason,
                    prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                    contexts=prep.contexts, latency_ms=latency_ms, template=prep.template, tokens=gen.tokens,
                    cost_usd=cost,
                )
                rec.end(root, prompt_template=prep.template.name, prompt_version=prep.template.version,
                        finish_reason=gen.finish_reason, latency_ms=f"{latency_ms:.1f}")
                self._publish_completion(req, prep, result, root.span_id)
                yield result
            except (GeneratorExit, asyncio.CancelledError):
                error = RequestCancelled("the client went away before the response was complete")
                raise
            except BaseException as exc:
                error = exc
                raise
            finally:
                rec.close_open(error)
                self._publish_spans(rec, root.span_id)

    # -- events -------------------------------------------------------------------------------
    def _publish_spans(self, rec: SpanRecorder, root_span: str) -> None:
        tp = traceparent(rec.trace_id, root_span)
        for s in rec.spans:
            self.publisher.publish(self.spans_topic, rec.trace_id, s, tp)

    def _publish_completion(self, req: GenerateInput, prep: _Prepared, res: GenerateResult, root_span: str) -> None:
        ev = events_pb2.CompletionEvent(
            trace_id=res.trace_id, model=res.model, prompt=prep.question, contexts=res.contexts, answer=res.text,
            usage=res.usage(), latency_ms=res.latency_ms, prompt_template=prep.template.name, prompt_version=prep.template.version,
            session_id=req.session_id, user_id=req.user_id, metadata=req.metadata,
            finish_reason=res.finish_reason, rendered_prompt=prep.rendered,
            retrieval_top_score=max((c.vector_similarity for c in res.contexts), default=0.0),
            root_span_id=root_span,
        )
        ev.timestamp.GetCurrentTime()
        self.publisher.publish(self.completions_topic, res.trace_id, ev, traceparent(res.trace_id, root_span))
