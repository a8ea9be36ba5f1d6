"""A faust batch agent run on a thread of its own against the real broker, for the DLQ and
transient-failure tests: the agent's consumer is a plain object the test steers."""
from __future__ import annotations

import asyncio
import threading
import time

from llmops.common.batch_handling import Rejected
from llmops.common.envelope import Record
from llmops.common.retry import Transient
from llmops.common.settings import Settings


class SteeredStore:
    """A sink the test steers: ``failing`` makes every batch fail transiently; a value in
    ``poison`` fails deterministically (ValueError) whenever it is in the batch, until ``fixed``."""

    def __init__(self, failing: bool = False, poison: frozenset[bytes] = frozenset()) -> None:
        self.failing, self.poison, self.fixed = failing, poison, False
        self.stored: list[tuple[str, int, int, bytes, list]] = []   # (topic, partition, offset, value, headers)
        self.calls: list[int] = []                                   # batch sizes handed in
        self.transient_failures = 0
        self.first_failure = 0.0

    async def handle(self, records: list[Record]) -> list[Rejected]:
        self.calls.append(len(records))
        if self.failing:
            self.transient_failures += 1
            self.first_failure = self.first_failure or time.monotonic()
            raise Transient("could not connect to server: the trace store is restarting")
        bad = [r for r in records if r.value in self.poison and not self.fixed]
        if bad:
            raise ValueError(f"the store refuses {bad[0].value!r}")
        for r in records:
            self.stored.append((r.topic, r.partition, r.offset, r.value, list(r.headers)))
        return []

    def values(self) -> list[bytes]:
        return [s[3] for s in self.stored]


class AgentThread:
    """make_app + batch_agent + run_worker on a thread with its own loop, as a service runs them."""

    def __init__(self, settings: Settings, service: str, topics: list[str], store, *, max_batch: int = 100) -> None:
        self.settings, self.service, self.topics, self.store, self.max_batch = settings, service, topics, store, max_batch
        self.loop: asyncio.AbstractEventLoop | None = None
        self.progress = None
        self.group = ""
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name=f"agent-{service}", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            from llmops.common.bus import DeadLetterQueue, EventBus
            from llmops.common.stream import batch_agent, make_app, run_worker

            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            bus = EventBus(self.settings)
            await bus.start()
            app = make_app(self.settings, self.service)
            self.group = app.conf.id
            self.progress = batch_agent(app, self.topics, self.store, lambda: DeadLetterQueue(bus, app.conf.id),
                                        name="sink", max_batch=self.max_batch, within_s=0.05,
                                        backoff_first_s=0.05, backoff_max_s=0.2)
            joined = asyncio.Event()
            worker = await run_worker(app, joined)
            await asyncio.wait_for(joined.wait(), 90)
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await asyncio.wait_for(worker.stop(), 30)
                await bus.stop()

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self._ready.set()

    def start(self, timeout_s: float = 120.0) -> AgentThread:
        self.thread.start()
        if not self._ready.wait(timeout_s) or self.error:
            raise RuntimeError(f"agent {self.service} did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        if self.loop and self._stop:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(60)
        assert not self.thread.is_alive(), "the worker did not stop within 60 s"
        if self.error:
            raise self.error


async def _committed(settings: Settings, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from llmops.common.kafka import client_options

    # a group member that never subscribes: it only asks the coordinator for the group's offsets
    c = AIOKafkaConsumer(**client_options(settings), group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        out = {}
        for topic in topics:
            for p in sorted(c.partitions_for_topic(topic) or ()):
                off = await c.committed(TopicPartition(topic, p))
                if off is not None:
                    out[(topic, p)] = off
        return out
    finally:
        await c.stop()


def committed(settings: Settings, group: str, topic: str) -> int:
    """The consumer group's committed offset (the next to read) of partition 0 of ``topic``; 0 when none."""
    return asyncio.run(_committed(settings, group, [topic])).get((topic, 0), 0)
