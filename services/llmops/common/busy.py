"""A host-local "the request path is generating" signal, so that background model work (the
judge) can give the CPU to requests on a small machine.

The request path never waits on it: it takes a shared ``flock`` without blocking and goes on
whether or not it got it. Background work takes the lock exclusively before each model call,
waiting (up to a limit, so it still makes progress under saturation) until no generation is in
flight. It only couples processes that share a data directory on one host; across hosts it is a
no-op.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import AsyncIterator, Iterator


class BusySignal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._holders = 0
        self._shared = False
        self._retry: asyncio.Task | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def _try_share(self) -> bool:
        try:
            fcntl.flock(self._open(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            self._shared = True
        except OSError:
            self._shared = False
        return self._shared

    async def _keep_trying(self) -> None:
        """A judge call held the lock when the generation began: take it as soon as that call
        ends, so that the next judge call waits for this generation."""
        while self._holders and not self._try_share():
            await asyncio.sleep(0.005)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Held by the request path while it generates; never blocks. Call it on the event loop."""
        if self._holders == 0 and not self._try_share():
            self._retry = asyncio.get_running_loop().create_task(self._keep_trying())
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if self._holders == 0:
                if self._retry is not None:
                    self._retry.cancel()
                    self._retry = None
                if self._shared:
                    fcntl.flock(self._open(), fcntl.LOCK_UN)
                    self._shared = False

    @contextlib.asynccontextmanager
    async def idle(self, max_wait_s: float, poll_s: float = 0.02) -> AsyncIterator[float]:
        """Wait until nothing generates (at most ``max_wait_s``), hold that during the block, and
        yield the seconds waited."""
        fd = self._open()
        start = time.monotonic()
        got = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except OSError:
                if time.monotonic() - start >= max_wait_s:
                    break
                await asyncio.sleep(poll_s)
        try:
            yield time.monotonic() - start
        finally:
            if got:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
