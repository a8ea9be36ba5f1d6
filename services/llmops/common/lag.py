"""Consumer lag, measured the way an operator would: the topic's end offsets minus the group's
committed offsets, per (topic, group). Exported as ``llmops_consumer_lag_messages``. The same
round trip tells whether the broker answers: ``llmops_broker_up`` and ``llmops_broker_roundtrip_seconds``.

Each group's committed offsets are also its :class:`ConsumerProgress` (``lag:<group>``, in
``progress``): records in hand = its lag, progress = its committed offsets moved (or no lag). The
runtime's watchdog reads it, so a consumer stuck with lag growing behind it is seen from outside
its loop, whatever kind of consumer it is."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from llmops.common import metrics
from llmops.common.kafka import client_options
from llmops.common.liveness import ConsumerProgress
from llmops.common.settings import Settings

log = logging.getLogger(__name__)


class LagMonitor:
    def __init__(self, settings: Settings, groups: dict[str, list[str]], interval_s: float = 5.0) -> None:
        self.settings = settings
        self.groups = groups            # group id -> topics it consumes
        self.interval_s = interval_s
        self.last: dict[tuple[str, str], int] = {}
        self.progress = [ConsumerProgress(f"lag:{g}") for g in groups]
        self._committed: dict[str, int] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(**client_options(self.settings))
        self._consumer = AIOKafkaConsumer(**client_options(self.settings), enable_auto_commit=False)
        await self._admin.start()
        await self._consumer.start()
        for p in self.progress:
            p.joined()
        self._task = asyncio.create_task(self._loop(), name="consumer-lag")

    async def stop(self) -> None:
        if self._task is not None:
            # Python 3.11's wait_for can swallow a cancel that lands as measure() completes: the loop
            # would then go on for ever (seen as a hung stop), so cancel until the task has ended
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for client in (self._consumer, self._admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    await (client.stop() if isinstance(client, AIOKafkaConsumer) else client.close())

    async def measure(self) -> dict[tuple[str, str], int]:
        """{(topic, group): messages not yet committed}."""
        assert self._admin is not None and self._consumer is not None, "start() first"
        await self._consumer.topics()  # refresh metadata so that partitions_for_topic knows every topic
        out: dict[tuple[str, str], int] = {}
        for (group, topics), progress in zip(self.groups.items(), self.progress):
            group_lag = group_committed = 0
            for topic in topics:
                parts = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or ())]
                if not parts:
                    continue
                # partitions named explicitly: Tansu cannot answer the "all partitions" form
                committed = await self._admin.list_consumer_group_offsets(group, partitions=parts)
                ends = await self._consumer.end_offsets(parts)
                lag = 0
                for tp in parts:
                    meta = committed.get(tp)
                    done = meta.offset if meta is not None and meta.offset >= 0 else 0
                    lag += max(0, ends[tp] - done)
                    group_committed += done
                out[(topic, group)] = lag
                group_lag += lag
                metrics.CONSUMER_LAG.labels(topic, group).set(lag)
            before = self._committed.get(group)
            self._committed[group] = group_committed
            if group_lag == 0 or before is None or group_committed != before:
                progress.progressed(max(0, group_committed - (before or 0)))
            else:
                progress.beat()
            progress.in_hand = group_lag
        self.last = out
        return out

    async def _loop(self) -> None:
        while True:
            t0 = time.perf_counter()
            try:
                await asyncio.wait_for(self.measure(), timeout=max(self.interval_s * 2, 10.0))
                metrics.BROKER_UP.set(1)
                metrics.BROKER_ROUNDTRIP.observe(time.perf_counter() - t0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker hiccup must not kill the monitor
                metrics.BROKER_UP.set(0)
                for p in self.progress:   # unknown while the broker does not answer: no stall is judged on it
                    p.in_hand, p.last_progress = 0, p.clock()
                log.warning("could not measure consumer lag: %s", exc or type(exc).__name__)
            await asyncio.sleep(self.interval_s)
