"""How inference reaches the retrieval service: gRPC ``RetrievalService.Search``."""
from __future__ import annotations

from typing import Protocol

import grpc

from llmops.common.channels import aio_channel
from llmops.common.errors import InvalidArgument, NotFound, Unavailable
from llmops.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc


class RetrievalClient(Protocol):
    async def search(self, query: str, top_k: int, alpha: float, collection: str, filters: dict[str, str],
                     traceparent: str = "") -> list[common_pb2.Context]: ...


class GrpcRetrievalClient:
    def __init__(self, target: str, timeout_s: float = 30.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.channel = aio_channel(target)
        self.stub = retrieval_pb2_grpc.RetrievalServiceStub(self.channel)

    async def search(self, query, top_k, alpha, collection, filters, traceparent=""):
        req = retrieval_pb2.SearchRequest(query=query, top_k=top_k, alpha=alpha, collection=collection,
                                          filters=filters)
        md = (("traceparent", traceparent),) if traceparent else None
        try:
            resp = await self.stub.Search(req, timeout=self.timeout_s, metadata=md)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(f"retrieval: {exc.details()}") from None
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"retrieval: {exc.details()}") from None
            raise Unavailable(f"retrieval service at {self.target} is unavailable: {code.name} {exc.details()}") from None
        return list(resp.results)

    async def close(self) -> None:
        await self.channel.close()
