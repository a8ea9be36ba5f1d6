"""The live configuration every replica follows: the compacted topic ``<prefix>config``.

Routes, deployments and prompt labels are written to a store (the source of truth, with their
history) and then published here as :class:`ConfigRecord`s under a key per item
(:func:`config_key`). Compaction keeps the newest record of each key, so the topic *is* the current
state: a replica reads it from the beginning at start-up, and then follows it, so a change made on
any replica reaches every other one within a poll (about 100 ms).

:class:`ConfigFeed` is a group-less consumer: every replica reads every record (a consumer group
would split them). It hands records to ``on_records`` in topic order, and ``start()`` returns
only once it has caught up with the end of the topic as it was at start, so a replica never
serves with a configuration older than what was published before it started.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable

from llmops.common import metrics
from llmops.common.envelope import Record, UndecodableMessage
from llmops.common.events import read_event
from llmops.common.settings import Settings
from llmops.v1 import events_pb2

log = logging.getLogger(__name__)

OnRecords = Callable[[list[events_pb2.ConfigRecord]], Awaitable[None]]


def config_key(record: events_pb2.ConfigRecord) -> str:
    """The compaction key of a record: one per item, so the newest record of an item wins."""
    kind = record.WhichOneof("item")
    if kind == "deployment":
        return f"deployment/{record.deployment.name}/{record.deployment.version}"
    if kind == "route":
        return f"route/{record.route.name}"
    if kind == "prompt":
        return f"prompt/{record.prompt.name}/{record.prompt.version}"
    if kind == "label":
        return f"label/{record.label.name}/{record.label.label}"
    raise ValueError("a ConfigRecord must hold a deployment, route, prompt or label")


class ConfigFeed:
    def __init__(self, settings: Settings, on_records: OnRecords, *, name: str = "config-feed",
                 poll_ms: int = 100) -> None:
        self.settings = settings
        self.topic = settings.topic("config")
        self.on_records = on_records
        self.name = name
        self.poll_ms = poll_ms
        self._kafka = None
        self._task: asyncio.Task | None = None
        self.applied = 0      # records handed to on_records

    async def start(self, timeout_s: float = 60.0) -> None:
        """Read the topic up to its end as of now (handing every record on), then follow it."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from llmops.common.kafka import client_options

        self._kafka = AIOKafkaConsumer(**client_options(self.settings), group_id=None, enable_auto_commit=False,
                                       auto_offset_reset="earliest", fetch_max_wait_ms=self.poll_ms)
        await self._kafka.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        partitions = None
        while not partitions:
            await self._kafka.topics()   # a metadata refresh
            partitions = self._kafka.partitions_for_topic(self.topic)
            if not partitions:
                if loop.time() > deadline:
                    raise TimeoutError(f"{self.name}: topic {self.topic} does not exist after {timeout_s:.0f}s")
                await asyncio.sleep(0.2)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._kafka.assign(tps)
        await self._kafka.seek_to_beginning(*tps)
        ends = await self._kafka.end_offsets(tps)
        while not await self._caught_up(ends):
            if loop.time() > deadline:
                raise TimeoutError(f"{self.name}: could not read {self.topic} to its end in {timeout_s:.0f}s")
            await self._poll()
        log.info("%s: caught up with %s (%d records applied)", self.name, self.topic, self.applied)
        self._task = asyncio.create_task(self._follow(), name=self.name)

    async def _caught_up(self, ends: dict) -> bool:
        for tp, end in ends.items():
            if await self._kafka.position(tp) < end:
                return False
        return True

    async def _follow(self) -> None:
        from aiokafka.errors import KafkaError

        while True:
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:   # transient: the broker away, a leader change; poll again
                log.warning("%s: fetch failed (%s); retrying", self.name, exc)
                await asyncio.sleep(0.5)
            except Exception:           # the feed must outlive a handler that fails once
                log.exception("%s: applying config records failed; retrying", self.name)
                await asyncio.sleep(1.0)

    async def _poll(self) -> None:
        batches = await self._kafka.getmany(timeout_ms=self.poll_ms)
        out: list[events_pb2.ConfigRecord] = []
        for msgs in batches.values():
            for m in msgs:
                if m.value is None:     # a tombstone: nothing is deleted through the feed
                    metrics.CONFIG_APPLIED.labels("tombstone").inc()
                    continue
                rec = Record(topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value,
                             headers=[(k, bytes(v) if v is not None else b"") for k, v in (m.headers or ())],
                             timestamp_ms=int(m.timestamp or 0))
                try:
                    out.append(read_event(rec, events_pb2.ConfigRecord))
                except UndecodableMessage as exc:   # counted and logged on every replica; the rest applies
                    metrics.CONFIG_APPLIED.labels("undecodable").inc()
                    log.error("%s: record at %s[%d]@%d is not a ConfigRecord (%s); ignored", self.name,
                              m.topic, m.partition, m.offset, exc)
        if out:
            await self.on_records(out)
            self.applied += len(out)
            for r in out:
                metrics.CONFIG_APPLIED.labels(r.WhichOneof("item") or "empty").inc()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._kafka is not None:
            await self._kafka.stop()
            self._kafka = None
