"""InferenceService: protobuf in, engine call, protobuf out."""
from __future__ import annotations

from llmops.common.errors import FailedPrecondition
from llmops.common.server import incoming_trace
from llmops.backends.protocol import ChatTurn
from llmops.inference.deployment_admin import DeploymentAdmin
from llmops.inference.engine import GenerateInput, GenerateResult, InferenceEngine, RetrievalRequest
from llmops.inference.limits import DEFAULT_LIMITS, InputLimits, check_generate_request
from llmops.inference.params import validate_parameters
from llmops.inference.prompts import PromptRegistry, PromptTemplate
from llmops.v1 import inference_pb2, inference_pb2_grpc

DEFAULT_RAG_TOP_K = 3
DEFAULT_ALPHA = 0.5


def to_input(req: inference_pb2.GenerateRequest, default_max_new_tokens: int,
             deadline_s: float | None = None, limits: InputLimits = DEFAULT_LIMITS) -> GenerateInput:
    check_generate_request(req, limits)   # what the request's events could never carry: refused here
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
        parent=incoming_trace.get(), deadline_s=deadline_s,
        explicit=frozenset(f.name for f, _ in req.parameters.ListFields()),
    )


def to_response(res: GenerateResult) -> inference_pb2.GenerateResponse:
    return inference_pb2.GenerateResponse(
        trace_id=res.trace_id, text=res.text, model=res.model, finish_reason=res.finish_reason,
        usage=res.usage(), contexts=res.contexts, latency_ms=res.latency_ms, prompt_template=res.template.name,
        prompt_version=res.template.version,
        tokens=[inference_pb2.TokenLogprob(id=t.id, text=t.text, logprob=t.logprob) for t in res.tokens],
        deployment=res.deployment, deployment_version=res.deployment_version, arm=res.arm, attempts=res.attempts,
        route_revision=res.route_revision,
    )


def template_pb(t: PromptTemplate) -> inference_pb2.PromptTemplate:
    return inference_pb2.PromptTemplate(name=t.name, version=t.version, system=t.system, user=t.user,
                                        labels=list(t.labels), created_at=t.created_at)


def _remaining(context) -> float | None:
    """What is left of the client's gRPC deadline, less a margin so the answer gets back in time."""
    left = context.time_remaining()
    return None if left is None else max(0.0, left - CLIENT_DEADLINE_MARGIN_S)


CLIENT_DEADLINE_MARGIN_S = 0.02


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, engine: InferenceEngine, prompts: PromptRegistry, default_max_new_tokens: int,
                 admin: DeploymentAdmin | None = None, limits: InputLimits = DEFAULT_LIMITS) -> None:
        self.engine = engine
        self.limits = limits
        self.prompts = prompts
        self.default_max_new_tokens = default_max_new_tokens
        self.admin = admin

    def _admin(self) -> DeploymentAdmin:
        if self.admin is None:
            raise FailedPrecondition("this inference server has no deployment registry")
        return self.admin

    async def Generate(self, request, context):
        res = await self.engine.generate(to_input(request, self.default_max_new_tokens, _remaining(context),
                                                  self.limits))
        return to_response(res)

    async def GenerateStream(self, request, context):
        index = 0
        async for item in self.engine.generate_stream(to_input(request, self.default_max_new_tokens,
                                                                _remaining(context), self.limits)):
            if isinstance(item, GenerateResult):
                yield inference_pb2.GenerateStreamResponse(trace_id=item.trace_id, index=index, final=True,
                                                           summary=to_response(item))
            else:
                yield inference_pb2.GenerateStreamResponse(token=item.text, index=index)
                index += 1

    async def ListModels(self, request, context):
        out = []
        router = self.engine.router
        for name in router.route_names():
            d = router.primary_of(name)
            info = inference_pb2.ModelInfo(id=name, backend=d.backend, is_default=name == router.default_route)
            lim = await router.limits(d)   # None: a primary that is down is still a model; limits 0 = unknown
            if lim is not None:
                info.max_input_tokens, info.max_total_tokens = lim.max_input_tokens, lim.max_total_tokens
            out.append(info)
        return inference_pb2.ListModelsResponse(models=out)

    async def ListPromptTemplates(self, request, context):
        return inference_pb2.ListPromptTemplatesResponse(templates=[template_pb(t) for t in self.prompts.list(request.name)])

    async def RegisterPromptTemplate(self, request, context):
        if self.admin is None:
            return template_pb(self.prompts.register(request.name, request.system, request.user, list(request.labels)))
        return template_pb(await self.admin.register_prompt(request.name, request.system, request.user,
                                                            list(request.labels)))

    # -- deployments and routes ----------------------------------------------------------------
    async def RegisterDeployment(self, request, context):
        return await self._admin().register_deployment(request, request.created_by)

    async def GetDeployment(self, request, context):
        return await self._admin().get_deployment(request)

    async def ListDeployments(self, request, context):
        return inference_pb2.ListDeploymentsResponse(
            deployments=await self._admin().list_deployments(request.name, request.all_versions))

    async def SetRoute(self, request, context):
        return await self._admin().set_route(
            request.route, request.changed_by, request.reason,
            request.expected_revision if request.HasField("expected_revision") else None)

    async def GetRoute(self, request, context):
        return await self._admin().get_route(request.name, request.revision)

    async def ListRoutes(self, request, context):
        return inference_pb2.ListRoutesResponse(routes=await self._admin().list_routes(request.name))

    async def Rollback(self, request, context):
        return await self._admin().rollback(request.route, request.to_revision, request.changed_by, request.reason)

    async def SetPromptLabel(self, request, context):
        return template_pb(await self._admin().set_prompt_label(request.name, request.version, request.label))
