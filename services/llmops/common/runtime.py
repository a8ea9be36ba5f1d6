"""Runs one service process: logging, metrics, the gRPC server first, then its parts (event bus,
faust worker), SERVING once they are ready, and an orderly stop on SIGTERM."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from llmops.common.logging import configure_logging
from llmops.common.metrics import serve_metrics
from llmops.common.server import GrpcServer, serve_until_stopped
from llmops.common.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServiceParts:
    """What a composition root hands the runtime."""
    register: Callable[[GrpcServer], None]            # adds servicers to the server
    service_names: list[str]                          # full names, for health and reflection
    start: Callable[[], Awaitable[None]]              # after the gRPC server is up
    stop: Callable[[], Awaitable[None]]
    ready: asyncio.Event = field(default_factory=asyncio.Event)


async def run_service(name: str, settings: Settings, build: Callable[[Settings], Awaitable[ServiceParts]],
                      stop_event: asyncio.Event | None = None) -> None:
    configure_logging(name, settings.log_level, settings.log_format)
    serve_metrics(settings.host, settings.metrics_port(name))
    parts = await build(settings)
    server = GrpcServer(name, settings, parts.service_names)
    parts.register(server)

    async def start() -> None:
        await parts.start()
        await parts.ready.wait()

    await serve_until_stopped(server, start, parts.stop, stop_event)
