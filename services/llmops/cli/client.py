"""A small synchronous client for the platform's gRPC services (the CLI, the demo, the benchmarks)."""
from __future__ import annotations

import grpc

from llmops.common.channels import channel
from llmops.common.settings import Settings
from llmops.v1 import (drift_pb2_grpc, inference_pb2, inference_pb2_grpc, judging_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc,
                       tracing_pb2, tracing_pb2_grpc)


class Client:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channels: dict[str, grpc.Channel] = {}

    def channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            self._channels[service] = channel(self.settings.grpc_target(service))
        return self._channels[service]

    @property
    def inference(self) -> inference_pb2_grpc.InferenceServiceStub:
        return inference_pb2_grpc.InferenceServiceStub(self.channel("inference"))

    @property
    def retrieval(self) -> retrieval_pb2_grpc.RetrievalServiceStub:
        return retrieval_pb2_grpc.RetrievalServiceStub(self.channel("retrieval"))

    @property
    def tracing(self) -> tracing_pb2_grpc.TracingServiceStub:
        return tracing_pb2_grpc.TracingServiceStub(self.channel("tracing"))

    @property
    def judging(self) -> judging_pb2_grpc.JudgingServiceStub:
        return judging_pb2_grpc.JudgingServiceStub(self.channel("judging"))

    @property
    def drift(self) -> drift_pb2_grpc.DriftServiceStub:
        return drift_pb2_grpc.DriftServiceStub(self.channel("drift"))

    def generate(self, prompt: str, *, timeout: float = 300, **options) -> inference_pb2.GenerateResponse:
        """``Generate`` with the request :func:`generate_request` builds from ``options``."""
        return self.inference.Generate(generate_request(prompt, **options), timeout=timeout)

    def upsert(self, documents: list[retrieval_pb2.Document], collection: str = "", timeout: float = 600):
        return self.retrieval.Upsert(retrieval_pb2.UpsertRequest(collection=collection, documents=documents),
                                     timeout=timeout)

    def get_trace(self, trace_id: str, timeout: float = 10) -> tracing_pb2.Trace:
        return self.tracing.GetTrace(tracing_pb2.GetTraceRequest(trace_id=trace_id), timeout=timeout)

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()


def generate_request(prompt: str, *, rag: bool = False, max_new_tokens: int | None = None,
                     temperature: float | None = None, model: str = "", collection: str = "", top_k: int = 3,
                     **fields) -> inference_pb2.GenerateRequest:
    """A ``GenerateRequest``: unset parameters keep the server's defaults; ``rag`` retrieves
    ``top_k`` contexts from ``collection`` (the default one when empty)."""
    req = inference_pb2.GenerateRequest(prompt=prompt, model=model, **fields)
    if max_new_tokens is not None:
        req.parameters.max_new_tokens = max_new_tokens
    if temperature is not None:
        req.parameters.temperature = temperature
    if rag:
        req.retrieval.enabled = True
        req.retrieval.top_k = top_k
        req.retrieval.collection = collection
    return req
