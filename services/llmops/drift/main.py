"""Composition root of the drift service: a faust agent on completions, scores and feedback (the
late join in a faust table, and the canary rollout monitor fed from the same stream), a raw batch
consumer on ``drift-observations`` (the joined observations keyed by monitor: each worker of the
``drift-monitors`` group judges the monitors of its partitions), the monitors' sweeper, and the
gRPC ``DriftService``, in one worker."""
from __future__ import annotations

import asyncio
import hashlib

from llmops.common.batch_worker import KafkaBatchWorker
from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.config_feed import ConfigFeed
from llmops.common.lag import LagMonitor
from llmops.common.runtime import ServiceParts, streaming_parts
from llmops.common.settings import Settings
from llmops.common.stream import batch_agent, make_app
from llmops.common.topics import cluster_id
from llmops.drift.api import DriftServicer
from llmops.drift.engine import DriftEngine
from llmops.drift.monitor_config import load_specs
from llmops.drift.rollout_monitor import RolloutMonitor
from llmops.drift.store import DriftStore
from llmops.embedding import LoadingEmbedder
from llmops.v1 import drift_pb2, drift_pb2_grpc


def join_table_name(cluster_id: str) -> str:
    """``drift_join``, tagged with the Kafka cluster it lives on: its changelog is
    ``<prefix>drift-drift_join-<tag>-changelog``.

    A changelog is valid only on the cluster it was written to. After an in-memory broker
    restarted (a new cluster id), the old drift process's producer still drains the changelog
    records it buffered during the outage to the new broker, for a topic that broker no longer
    has. Tansu acknowledges them, and the topic created afterwards under that name reports an end
    offset whose records a fetch never returns: faust's recovery then waits for them for ever
    (measured: "No event received for active tp ... since recovery start"). Named after the
    cluster, the restarted process's changelog is one nobody wrote before; on a cluster that keeps
    its id (a real Kafka, or a process restart on the same broker) the name stays and the
    changelog is recovered as before."""
    if not cluster_id:
        return "drift_join"
    return f"drift_join-{hashlib.sha1(cluster_id.encode()).hexdigest()[:10]}"


def join_table(app, settings: Settings, cluster_id: str = ""):
    """The join table: trace id (raw bytes, as the source topics key it) -> the completion,
    scores and feedback seen so far. Its changelog topic keeps it across restarts on the same
    cluster (:func:`join_table_name`). ``use_partitioner`` places each changelog record by its
    key, as the producers of the source topics do, so the sweeper may delete entries outside the
    agent's stream."""
    return app.Table(join_table_name(cluster_id), default=None, key_type=bytes, value_type=None,   # keys raw, values JSON
                     partitions=settings.topic_partitions, use_partitioner=True)


def monitors_worker(settings: Settings, engine: DriftEngine, bus: EventBus) -> KafkaBatchWorker:
    """Stage 2 in a consumer group of its own (``<prefix>drift-monitors``), on a raw batch
    consumer beside the join's faust app. The monitors a worker owns follow its partitions of
    drift-observations (loaded before the first record of a partition, let go when it is taken).

    Apart from the join because faust hands all of one app's partitions to its agents through
    one conductor: within one app a completions backlog starved drift-observations, and no window
    was judged while the backlog lasted. Not a second faust app, because the drift process with
    two of them died of SIGSEGV within a minute under a backlog (3 runs of 3)."""
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
    cluster = await cluster_id(settings)   # the join's changelog belongs to this cluster
    app = make_app(settings, "drift")
    rollouts = RolloutMonitor(store, bus, topic_prefix=settings.topic_prefix)
    await rollouts.load()   # the decisions made before: before any event, so none is made twice
    # the routes, from the compacted config topic; the engine holds its first batch until they are read
    rollouts.follow(ConfigFeed(settings, rollouts.apply_config, name="drift-config-feed"))
    engine = DriftEngine(specs, store, embedder.embed, bus, join_table(app, settings, cluster),
                         reports_dir=settings.drift_reports_dir, topic_prefix=settings.topic_prefix,
                         join_wait_s=settings.drift_join_wait_s, dlq=DeadLetterQueue(bus, app.conf.id),
                         retention_days=settings.drift_retention_days, rollouts=rollouts,
                         observations_topic=settings.topic("drift-observations"),
                         observation_partitions=settings.topic_partitions)
    batch_agent(app, engine.join_topics, engine, lambda: DeadLetterQueue(bus, app.conf.id),
                name="drift_join", max_batch=500, within_s=0.1)
    monitors = monitors_worker(settings, engine, bus)
    servicer = DriftServicer(engine)
    parts = streaming_parts(
        settings, bus, app,
        register=lambda s: drift_pb2_grpc.add_DriftServiceServicer_to_server(servicer, s.server),
        service_names=[drift_pb2.DESCRIPTOR.services_by_name["DriftService"].full_name],
        close=store.close, loading=[embedder.loaded], companions=[rollouts, engine, monitors, LagMonitor(settings, {
            app.conf.id: engine.join_topics, monitors.group: [engine.observations_topic]})],
    )
    parts.cluster_id = cluster   # a broker reset before the keeper's first look is one too
    return parts, engine


async def build(settings: Settings) -> ServiceParts:
    return (await compose(settings))[0]
