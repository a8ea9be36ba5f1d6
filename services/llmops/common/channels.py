"""gRPC channel options, one set for every server and client of the platform, and the channels
built with them (the CLI's client, the inference service's retrieval client, the retrain
listener, the health checks)."""
from __future__ import annotations

import grpc

MESSAGE_LIMIT = 64 * 1024 * 1024   # bytes: an upsert of many documents, a trace with many spans

#: what both ends of every channel agree on
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
]
#: a server also refuses to share its port with another process
SERVER_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)]


def channel(target: str) -> grpc.Channel:
    """A blocking channel to a platform service."""
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def aio_channel(target: str) -> grpc.aio.Channel:
    """An asyncio channel to a platform service."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
