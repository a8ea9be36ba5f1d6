"""Composition root of the inference service: the deployment store and the config feed that keep
every replica's routes current, the router and its model backends, the engine, the rollout
decisions consumer, the gRPC servicer and the OpenAI-compatible gateway."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from llmops.backends import BackendSpec, open_backend
from llmops.backends.protocol import ModelBackend
from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.busy import BusySignal
from llmops.common.config_feed import ConfigFeed
from llmops.common.http import HttpDoor
from llmops.common.runtime import ServiceParts
from llmops.common.settings import Settings
from llmops.common.batch_worker import KafkaBatchWorker
from llmops.common.topics import ensure_topics
from llmops.inference.api import InferenceServicer
from llmops.inference.config_store import DeploymentStore
from llmops.inference.deployment_admin import DeploymentAdmin
from llmops.inference.engine import InferenceEngine
from llmops.inference.gateway import OpenAIGateway
from llmops.inference.limits import InputLimits
from llmops.inference.prompts import PromptRegistry
from llmops.inference.retrieval_client import GrpcRetrievalClient
from llmops.inference.rollout_decisions import GROUP, RolloutDecisions
from llmops.inference.router import Router
from llmops.inference.routing import RouteTable
from llmops.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)


def settings_deployment(settings: Settings) -> inference_pb2.Deployment:
    """The deployment LLMOPS_MODEL_* describe: what a fresh install serves as its default route."""
    url = {"tgi": settings.tgi_url, "openai": settings.openai_base_url}.get(settings.model_backend, "")
    if settings.model_backend != "llama_cpp" and not url:
        env = "LLMOPS_TGI_URL" if settings.model_backend == "tgi" else "LLMOPS_OPENAI_BASE_URL"
        raise ValueError(f"the {settings.model_backend} model backend needs its server's URL: set {env}")
    return inference_pb2.Deployment(
        name=settings.model_name, backend=settings.model_backend, url=url,
        model_path=settings.model_path if settings.model_backend == "llama_cpp" else "",
        remote_model=(settings.openai_model or settings.model_name) if settings.model_backend == "openai" else "",
        description="the model LLMOPS_MODEL_BACKEND / LLMOPS_MODEL_* configure")


def backend_spec(settings: Settings, d: inference_pb2.Deployment) -> BackendSpec:
    """How a deployment version's backend is opened. Its bearer token comes from the environment
    variable it names (``api_key_env``), else from the backend kind's setting."""
    if d.backend == "llama_cpp":
        return BackendSpec("llama_cpp", d.name, model_path=d.model_path or settings.resolved_model_path,
                           n_ctx=settings.model_ctx, n_threads=settings.model_threads)
    key = os.environ.get(d.api_key_env, "") if d.api_key_env else (
        settings.openai_api_key if d.backend == "openai" else settings.tgi_api_key)
    return BackendSpec(d.backend, d.name, n_ctx=settings.model_ctx, url=d.url, api_key=key,
                       timeout_s=d.timeout_s or settings.backend_timeout_s, remote_model=d.remote_model or d.name)


def load_backend(settings: Settings) -> ModelBackend:
    """The backend of the deployment LLMOPS_MODEL_* configure (the default route's first version)."""
    return open_backend(backend_spec(settings, settings_deployment(settings)))


async def build(settings: Settings) -> ServiceParts:
    bootstrap = settings_deployment(settings)   # a configuration error stops the start here

    async def open_deployment(d: inference_pb2.Deployment) -> ModelBackend:
        return await asyncio.to_thread(open_backend, backend_spec(settings, d))

    store = await asyncio.to_thread(DeploymentStore, settings.deployment_db_url)
    prompts = PromptRegistry(settings.resolved_prompt_db)
    bus = EventBus(settings)
    router = Router(RouteTable(), open_deployment, settings.model_name)
    admin = DeploymentAdmin(store, router, prompts, bus, settings.topic("config"))
    feed = ConfigFeed(settings, admin.apply_records, name="inference-config-feed")
    group = f"{settings.topic_prefix}{GROUP}"   # stacks sharing a broker under other prefixes never share it
    decisions = KafkaBatchWorker(settings, group, [settings.topic("deployments")], RolloutDecisions(admin),
                                 lambda: DeadLetterQueue(bus, group), name="inference-rollout-decisions",
                                 max_batch=100, within_ms=200)
    retrieval = GrpcRetrievalClient(settings.grpc_target("retrieval"))
    busy = BusySignal(settings.busy_signal_path)
    engine = InferenceEngine(router, prompts, retrieval, bus, settings.topic_prefix, busy=busy.busy,
                             prices=settings.price_table, max_shadows=settings.shadow_max_concurrent,
                             ack_wait_s=settings.publish_ack_wait_s)
    limits = InputLimits.for_message_bytes(settings.kafka_max_message_bytes)   # what one event can carry
    servicer = InferenceServicer(engine, prompts, settings.default_max_new_tokens, admin, limits)
    gateway = None
    if settings.inference_http_port:
        gateway = HttpDoor("inference OpenAI-compatible gateway",
                           OpenAIGateway(engine, settings.default_max_new_tokens, settings.inference_http_max_body_bytes,
                                         settings.inference_http_max_concurrent, limits).app(),
                           settings.host, settings.inference_http_port)
    ready = asyncio.Event()
    joining: list[asyncio.Task] = []

    async def start() -> None:
        await ensure_topics(settings)
        await bus.start()
        await admin.load()          # the store's state, then what the topic holds beyond it
        await feed.start()
        await admin.bootstrap(bootstrap, settings.model_name)
        await router.backend(router.primary_of(settings.model_name))   # the default model is loaded before serving
        # the decisions consumer joins its group in the background (on the embedded broker a join
        # takes half the session timeout): serving does not wait for it
        joining.append(asyncio.create_task(decisions.start(), name="inference-rollout-decisions-join"))
        if gateway is not None:
            await gateway.start()   # after the bus: its requests publish spans and completions
        ready.set()

    async def stop() -> None:
        if gateway is not None:
            await gateway.stop()    # first: no new HTTP request once the bus stops
        await engine.drain_shadows(min(10.0, parts.time_left() / 4))
        for t in joining:
            if not t.done():
                t.cancel()
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            await decisions.stop()
        await feed.stop()
        # the publisher gets what is left of the stop budget (less a second for the rest), so that it
        # counts and reports what it cannot flush rather than being cut short uncounted
        await bus.stop(timeout_s=parts.time_left(1.0) if parts.stop_deadline else 10.0)
        await retrieval.close()
        router.close()
        await asyncio.to_thread(store.close)

    parts = ServiceParts(
        register=lambda s: inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, s.server),
        service_names=[inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name],
        start=start, stop=stop, ready=ready,
        progress=[decisions.progress],   # the runtime's watchdog: a dead decisions consumer ends the process
    )
    return parts
