"""Trace retention: the traces that started longer ago than ``LLMOPS_TRACE_RETENTION_DAYS`` are
deleted from the trace store with their spans, scores and feedback, first a few minutes after the
service starts (never in the middle of its start), then every hour."""
from __future__ import annotations

import asyncio
import logging

from llmops.common.times import now_us

log = logging.getLogger(__name__)


class TracePruner:
    name = "trace-retention"

    def __init__(self, store, retention_days: float, *, first_after_s: float = 300.0,
                 interval_s: float = 3600.0) -> None:
        self.store = store
        self.retention_us = int(retention_days * 86_400e6)
        self.first_after_s, self.interval_s = first_after_s, interval_s
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.retention_us > 0:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def prune_once(self) -> dict[str, int]:
        removed = await asyncio.to_thread(self.store.prune, now_us() - self.retention_us)
        if any(removed.values()):
            log.info("trace store: pruned past the retention of %.1f days: %s", self.retention_us / 86_400e6,
                     ", ".join(f"{n} {k}" for k, n in removed.items()))
        return removed

    async def _loop(self) -> None:
        await asyncio.sleep(self.first_after_s)
        while True:
            try:
                await self.prune_once()
            except asyncio.CancelledError:
                raise
            except Exception:   # noqa: BLE001 - a store that is away now is pruned at the next round
                log.warning("trace store: pruning failed; trying again in %.0fs", self.interval_s, exc_info=True)
            await asyncio.sleep(self.interval_s)
