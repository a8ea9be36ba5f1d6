"""SIGTERM and SIGINT as an :class:`asyncio.Event`, for every long-running command (a service,
the stack, the broker, the retrain listener): each stops in its own order when the event is set."""
from __future__ import annotations

import asyncio
import signal


def install_stop_signals(stop: asyncio.Event) -> bool:
    """Set ``stop`` on SIGTERM or SIGINT. False when signals cannot be handled here (not the
    main thread: a service embedded in a test or a host application is stopped by its owner)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError):
            return False
    return True
