"""InferenceService: protobuf in, engine call, protobuf out."""
from __future__ import annotations

from llmops.common.server import incoming_trace
from llmops.backends.protocol import ChatTurn
from llmops.inference.engine import GenerateInput, GenerateResult, InferenceEngine, RetrievalRequest
from llmops.inference.params import validate_parameters
from llmops.inference.prompts import PromptRegistry, PromptTemplate
from llmops.v1 import inference_pb2, inference_pb2_grpc

DEFAULT_RAG_TOP_K = 3
DEFAULT_ALPHA = 0.5


def to_input(req: inference_pb2.GenerateRequest, default_max_new_tokens: int) -> GenerateInput:
    params = validate_parameters(req.parameters, default_max_new_tokens)
    retrieval = None
    if req.retrieval.enabled:
        r = req.retrieval
        retrieval = RetrievalRequest(top_k=r.top_k or DEFAULT_RAG_TOP_K,
                                     alpha=r.alpha if r.HasField("alpha") else DEFAULT_ALPHA,
                                     collection=r.collection, filters=dict(r.filters))
    return GenerateInput(
        prompt=req.prompt, messages=[ChatTurn(m.role, m.content) for m in req.messages], model=req.model,
        params=params, retrieval=retrieval, session_id=req.session_id, user_id=req.user_id,
        metadata=dict(req.metadata), template_name=req.prompt_template,
        template_version=req.prompt_version if req.HasField("prompt_version") else None,
        parent=incoming_trace.get(),
    )


def to_response(res: GenerateResult) -> inference_pb2.GenerateResponse:
    return inference_pb2.GenerateResponse(
        trace_id=res.trace_id, text=res.text, model=res.model, finish_reason=res.finish_reason,
        usage=res.usage(), contexts=res.contexts, latency_ms=res.latency_ms, prompt_template=res.template.name,
        prompt_version=res.template.version,
        tokens=[inference_pb2.TokenLogprob(id=t.id, text=t.text, logprob=t.logprob) for t in res.tokens],
    )


def template_pb(t: PromptTemplate) -> inference_pb2.PromptTemplate:
    return inference_pb2.PromptTemplate(name=t.name, version=t.version, system=t.system, user=t.user,
                                        labels=list(t.labels), created_at=t.created_at)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, engine: InferenceEngine, prompts: PromptRegistry, default_max_new_tokens: int) -> None:
        self.engine = engine
        self.prompts = prompts
        self.default_max_new_tokens = default_max_new_tokens

    async def Generate(self, request, context):
        res = await self.engine.generate(to_input(request, self.default_max_new_tokens))
        return to_response(res)

    async def GenerateStream(self, request, context):
        index = 0
        async for item in self.engine.generate_stream(to_input(request, self.default_max_new_tokens)):
            if isinstance(item, GenerateResult):
                yield inference_pb2.GenerateStreamResponse(trace_id=item.trace_id, index=index, final=True,
                                                           summary=to_response(item))
            else:
                yield inference_pb2.GenerateStreamResponse(token=item.text, index=index)
                index += 1

    async def ListModels(self, request, context):
        out = []
        for name, b in sorted(self.engine.backends.items()):
            lim = b.limits()
            out.append(inference_pb2.ModelInfo(id=name, backend=b.kind, max_input_tokens=lim.max_input_tokens,
                                               max_total_tokens=lim.max_total_tokens,
                                               is_default=name == self.engine.default_model))
        return inference_pb2.ListModelsResponse(models=out)

    async def ListPromptTemplates(self, request, context):
        return inference_pb2.ListPromptTemplatesResponse(templates=[template_pb(t) for t in self.prompts.list(request.name)])

    async def RegisterPromptTemplate(self, request, context):
        return template_pb(self.prompts.register(request.name, request.system, request.user, list(request.labels)))
