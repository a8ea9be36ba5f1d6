"""Domain errors. Domain code raises these; the gRPC interceptor maps them to status codes."""
from __future__ import annotations

import grpc


class LlmopsError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(LlmopsError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LlmopsError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(LlmopsError):
    code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(LlmopsError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(LlmopsError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class AlreadyExists(LlmopsError):
    code = grpc.StatusCode.ALREADY_EXISTS


class RateLimited(ResourceExhausted):
    """A model server answered 429: retried by a route that retries ``rate_limited``."""


class DeadlineExceeded(LlmopsError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
