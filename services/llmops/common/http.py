"""HTTP doors beside a service's gRPC server: an aiohttp application served on its own port in the
service's event loop, started and stopped with the service (a ``companion`` of
:func:`llmops.common.runtime.streaming_parts`).

aiohttp is already in the dependency set (faust-streaming's web layer), runs in the same loop as
grpc.aio and the faust worker, and handles keep-alive, chunked bodies and streaming responses, so
the doors do not hand-roll any HTTP.
"""
from __future__ import annotations

import logging

from aiohttp import web

log = logging.getLogger(__name__)


class HttpDoor:
    """One aiohttp application on ``host:port``; ``port`` 0 binds a free port (see :attr:`port`)."""

    def __init__(self, name: str, app: web.Application, host: str, port: int, **server_options) -> None:
        self.name = name
        self.server_options = server_options    # e.g. auto_decompress=False: the door bounds decompression itself
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, **self.server_options)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise RuntimeError(f"{self.name}: cannot bind {self.host}:{self.port} ({exc.strerror or exc})") from None
        self._runner = runner
        if runner.addresses:            # the bound port, when 0 was asked
            self.port = runner.addresses[0][1]
        log.info("%s listening on http://%s:%d", self.name, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
