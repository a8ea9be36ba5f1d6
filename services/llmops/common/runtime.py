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


def streaming_parts(settings: Settings, bus, app, register: Callable[[GrpcServer], None], service_names: list[str],
                    close: Callable[[], None] = lambda: None) -> ServiceParts:
    """Parts of a service that consumes with a faust app: topics, then the bus, then the worker;
    ready once the worker has joined its group. Stops in reverse order."""
    from llmops.common.stream import run_worker
    from llmops.common.topics import ensure_topics

    ready = asyncio.Event()
    worker = None

    async def start() -> None:
        nonlocal worker
        await ensure_topics(settings)
        await bus.start()
        worker = await run_worker(app, ready)

    async def stop() -> None:
        if worker is not None:
            await worker.stop()
        await bus.stop()
        close()

    return ServiceParts(register, service_names, start, stop, ready)


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
