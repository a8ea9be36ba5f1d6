"""Composition root of the inference service."""
from __future__ import annotations

import asyncio

from llmops.common.bus import EventBus
from llmops.common.busy import BusySignal
from llmops.common.http import HttpDoor
from llmops.common.runtime import ServiceParts
from llmops.common.settings import Settings
from llmops.common.topics import ensure_topics
from llmops.inference.api import InferenceServicer
from llmops.backends import open_backend, spec_from_settings
from llmops.backends.protocol import ModelBackend
from llmops.inference.engine import InferenceEngine
from llmops.inference.gateway import OpenAIGateway
from llmops.inference.prompts import PromptRegistry
from llmops.inference.retrieval_client import GrpcRetrievalClient
from llmops.v1 import inference_pb2, inference_pb2_grpc


def load_backend(settings: Settings) -> ModelBackend:
    """The model backend LLMOPS_MODEL_BACKEND names: the embedded GGUF, or a TGI / OpenAI-compatible server."""
    local = {"model_path": settings.resolved_model_path, "n_threads": settings.model_threads}
    return open_backend(spec_from_settings(settings, settings.model_backend, settings.model_name,
                                           **(local if settings.model_backend == "llama_cpp" else {})))


async def build(settings: Settings) -> ServiceParts:
    backend = await asyncio.to_thread(load_backend, settings)
    prompts = PromptRegistry(settings.resolved_prompt_db)
    bus = EventBus(settings)
    retrieval = GrpcRetrievalClient(settings.grpc_target("retrieval"))
    busy = BusySignal(settings.busy_signal_path)
    engine = InferenceEngine({backend.name: backend}, backend.name, prompts, retrieval, bus, settings.topic_prefix,
                             busy=busy.busy, prices=settings.price_table)
    servicer = InferenceServicer(engine, prompts, settings.default_max_new_tokens)
    gateway = None
    if settings.inference_http_port:
        gateway = HttpDoor("inference OpenAI-compatible gateway",
                           OpenAIGateway(engine, settings.default_max_new_tokens, settings.inference_http_max_body_bytes,
                                         settings.inference_http_max_concurrent).app(),
                           settings.host, settings.inference_http_port)
    ready = asyncio.Event()

    async def start() -> None:
        await ensure_topics(settings)
        await bus.start()
        if gateway is not None:
            await gateway.start()   # after the bus: its requests publish spans and completions
        ready.set()  # the request path needs no consumer

    async def stop() -> None:
        if gateway is not None:
            await gateway.stop()    # first: no new HTTP request once the bus stops
        await bus.stop()
        await retrieval.close()
        backend.close()

    return ServiceParts(
        register=lambda s: inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, s.server),
        service_names=[inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name],
        start=start, stop=stop, ready=ready,
    )
