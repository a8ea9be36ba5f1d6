"""Composition root of the drift service: a raw batch consumer on completions, scores and feedback
(the late join, its open entries in the drift store, and the canary rollout monitor fed from the
same stream), another on ``drift-observations`` (the joined observations keyed by monitor: each
worker of the ``drift-monitors`` group judges the monitors of its partitions), the monitors'
sweeper, and the gRPC ``DriftService``, in one process."""
from __future__ import annotations

import asyncio

from llmops.common.batch_worker import KafkaBatchWorker
from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.config_feed import ConfigFeed
from llmops.common.lag import LagMonitor
from llmops.common.runtime import ServiceParts, streaming_parts
from llmops.common.settings import Settings
from llmops.drift.api import DriftServicer
from llmops.drift.engine import CLOSE_BATCH, DriftEngine
from llmops.drift.join_table import JoinTable
from llmops.drift.monitor_config import load_specs
from llmops.drift.rollout_monitor import RolloutMonitor
from llmops.drift.store import DriftStore
from llmops.embedding import LoadingEmbedder
from llmops.v1 import drift_pb2, drift_pb2_grpc


def join_worker(settings: Settings, engine: DriftEngine, bus: EventBus) -> KafkaBatchWorker:
    """Stage 1, the late join, in the group ``<prefix>drift`` on a raw batch consumer: completions,
    scores and feedback, keyed by trace id on co-partitioned topics, with the range assignor, so
    each worker gets the same partition numbers of the three (every event of a trace comes to one
    worker). Its open entries are written to the drift store before a batch is acknowledged; a
    worker reads those of the partitions it is assigned and closes only them.

    Not a faust agent with a table any more: the table's changelog lived in the broker, so an
    in-memory broker's restart lost every open entry, the process had to exit to rebuild it, and
    faust's recovery of a changelog the broker had half lost could wait for ever. With no faust
    app left, drift rejoins a restarted broker in place, as tracing does."""
    topics = engine.join_topics
    group = f"{settings.topic_prefix}drift"

    async def assigned(tps) -> None:
        await engine.join_assigned({tp.partition for tp in tps if tp.topic in topics})

    async def revoked(_tps) -> None:
        await engine.join_revoked()

    # batches of two closes' worth: under a backlog a batch waits in the join for room (a close, seconds
    # of embedding), and each one committed is progress the lag monitor sees; with batches of 500 a
    # commit waited for eight closes, and on a loaded machine no offset moved for 300 s (the watchdog
    # then ended a process that was slow, not stuck)
    return KafkaBatchWorker(settings, group, topics, engine, lambda: DeadLetterQueue(bus, group),
                            name="drift_join", max_batch=2 * CLOSE_BATCH, within_ms=100, max_write=2 * CLOSE_BATCH,
                            queued=4, co_partitioned=True, on_assigned=assigned, on_revoked=revoked)


class Workers:
    """The join's and the monitors' consumers, started (their groups joined) at once and stopped
    in order (the join first: what it closes while it drains goes to the monitors), as one
    companion of the service."""

    def __init__(self, *workers: KafkaBatchWorker) -> None:
        self.workers = workers
        self.name = "consumers"

    @property
    def progress(self) -> list:
        return [w.progress for w in self.workers]

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self.workers))

    async def stop(self, grace_s: float = 30.0) -> None:
        share = max(0.1, grace_s / len(self.workers))
        for w in self.workers:
            await w.stop(grace_s=share)


def monitors_worker(settings: Settings, engine: DriftEngine, bus: EventBus) -> KafkaBatchWorker:
    """Stage 2 in a consumer group of its own (``<prefix>drift-monitors``), on a raw batch
    consumer beside the join's. The monitors a worker owns follow its partitions of
    drift-observations (loaded before the first record of a partition, let go when it is taken).

    Apart from the join because the join waits for room under a backlog (embedding is drift's
    bottleneck), and the monitors must never wait behind it: when both were one faust app, a
    completions backlog starved drift-observations, and no window was judged while it lasted."""
    topic = engine.observations_topic
    group = f"{settings.topic_prefix}drift-monitors"

    async def assigned(tps) -> None:
        await engine.assign({tp.partition for tp in tps if tp.topic == topic})

    async def revoked(tps) -> None:
        await engine.revoke({tp.partition for tp in tps if tp.topic == topic})

    return KafkaBatchWorker(settings, group, [topic], engine.monitors_consumer, lambda: DeadLetterQueue(bus, group),
                            name="drift_monitors", max_batch=500, within_ms=100, max_write=2000, queued=4,
                            on_assigned=assigned, on_revoked=revoked)


async def compose(settings: Settings) -> tuple[ServiceParts, DriftEngine]:
    """The service's parts, and the engine they run (the tests reach its rollout monitor)."""
    specs = load_specs(settings)
    store = await asyncio.to_thread(DriftStore, settings.drift_db_url)
    # the model loads in a thread of its own while the gRPC server starts and the groups are joined
    # (SERVING waits for it: ``loading``); nothing embeds before the first close
    embedder = LoadingEmbedder(settings.resolved_embedding_model)
    bus = EventBus(settings)
    group = f"{settings.topic_prefix}drift"
    rollouts = RolloutMonitor(store, bus, topic_prefix=settings.topic_prefix)
    await rollouts.load()   # the decisions made before: before any event, so none is made twice
    # the routes, from the compacted config topic; the engine holds its first batch until they are read
    rollouts.follow(ConfigFeed(settings, rollouts.apply_config, name="drift-config-feed"))
    engine = DriftEngine(specs, store, embedder.embed, bus, JoinTable(store),
                         reports_dir=settings.drift_reports_dir, topic_prefix=settings.topic_prefix,
                         join_wait_s=settings.drift_join_wait_s, dlq=DeadLetterQueue(bus, group),
                         retention_days=settings.drift_retention_days, rollouts=rollouts,
                         observations_topic=settings.topic("drift-observations"),
                         observation_partitions=settings.topic_partitions)
    join, monitors = join_worker(settings, engine, bus), monitors_worker(settings, engine, bus)
    servicer = DriftServicer(engine)
    return streaming_parts(
        settings, bus, [],
        register=lambda s: drift_pb2_grpc.add_DriftServiceServicer_to_server(servicer, s.server),
        service_names=[drift_pb2.DESCRIPTOR.services_by_name["DriftService"].full_name],
        close=store.close, loading=[embedder.loaded], companions=[rollouts, engine, Workers(join, monitors), LagMonitor(
            settings, {join.group: engine.join_topics, monitors.group: [engine.observations_topic]})],
    ), engine


async def build(settings: Settings) -> ServiceParts:
    return (await compose(settings))[0]
