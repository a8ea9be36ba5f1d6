"""Topic names and their creation. Every topic the platform reads or writes is listed here."""
from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from llmops.common.kafka import client_options
from llmops.common.settings import Settings

log = logging.getLogger(__name__)

# name -> (key, payload type, purpose)
TOPICS: dict[str, tuple[str, str, str]] = {
    "spans": ("trace_id", "SpanEvent", "one span per step of every request"),
    "completions": ("trace_id", "CompletionEvent", "prompt, contexts, answer, usage, latency per request"),
    "scores": ("trace_id", "ScoreEvent", "judge scores"),
    "feedback": ("trace_id", "FeedbackEvent", "user feedback"),
    "documents": ("document id", "DocumentEvent", "documents to index (any producer)"),
    "drift": ("monitor", "DriftReportEvent", "one report per drift window"),
    "retrain": ("monitor", "RetrainEvent", "retraining signals with evidence"),
    "drift-observations": ("monitor", "JSON (internal)", "joined observations repartitioned by drift monitor"),
    "dlq": ("original key", "original bytes", "what a consumer could not decode or handle"),
    "deployments": ("route", "DeploymentEvent", "rollout decisions (rollback, promote) with their evidence"),
    "config": ("route/deployment/prompt key", "ConfigRecord", "current routes, deployments and prompt labels (compacted)"),
}

#: compacted topics: the newest record of each key is the state; one partition keeps them in order
COMPACTED = {"config"}

#: the topics any producer may write, in protobuf or in protobuf's JSON mapping
#: (``content-type: application/json``; :data:`llmops.common.envelope.JSON_PAYLOADS`)
INPUT_TOPICS = ("documents", "spans", "completions", "scores", "feedback")


async def _started_admin(settings: Settings, timeout_s: float) -> AIOKafkaAdminClient:
    """An admin client that has connected, waiting up to ``timeout_s`` for a broker not up yet."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=int(timeout_s * 1000))
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    return admin


async def ensure_topics(settings: Settings, names: list[str] | None = None, timeout_s: float = 30.0) -> None:
    """Create the platform's topics (idempotent)."""
    wanted = [settings.topic(n) for n in (names or TOPICS)]
    admin = await _started_admin(settings, timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            compacted = {settings.topic(n) for n in COMPACTED}
            new = [NewTopic(t, 1, settings.topic_replication, topic_configs={"cleanup.policy": "compact"})
                   if t in compacted else NewTopic(t, settings.topic_partitions, settings.topic_replication)
                   for t in missing]
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # a racing service created them first
            log.info("created topics %s", ", ".join(missing))
    finally:
        await admin.close()


async def cluster_id(settings: Settings, timeout_s: float = 30.0) -> str:
    """The id of the Kafka cluster at ``LLMOPS_KAFKA_BOOTSTRAP`` ("" from a broker too old to tell),
    waiting up to ``timeout_s`` for a broker that is not up yet."""
    admin = await _started_admin(settings, timeout_s)
    try:
        meta = (await admin._get_cluster_metadata(topics=None)).to_object()   # Metadata v2+ carries the id
        return meta.get("cluster_id") or ""
    finally:
        await admin.close()


class TopicKeeper:
    """Keeps the platform's topics while a service runs, and tells when the broker lost its state.

    Every ``interval_s`` it lists the topics (and reads the cluster id, where the broker gives
    one). Topics that went missing are created again with their partition counts: an in-memory
    broker (the embedded Tansu) that restarted has none, and producers would otherwise wait on
    metadata for a topic that never comes. When every topic went missing at once, or the cluster
    id changed, the broker was reset: ``resets`` counts it and ``reset_reason`` says why, so that
    the runtime can restart what cannot rejoin in place (faust holds offsets of the old log).
    """

    def __init__(self, settings: Settings, interval_s: float = 1.0, cluster_id: str | None = None) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.wanted = {settings.topic(n) for n in TOPICS}
        #: the cluster the service's state belongs to: given when it was read before the keeper starts
        #: (a broker reset in between is a reset too), else the first one the keeper sees
        self.cluster_id: str | None = cluster_id or None
        self.resets = 0
        self.reset_reason = ""
        self.recreated = 0
        self._admin: AIOKafkaAdminClient | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="topic-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._close()

    async def _close(self) -> None:
        if self._admin is not None:
            try:
                await asyncio.wait_for(self._admin.close(), 2.0)
            except Exception:   # noqa: BLE001 - closing a client of a broker that is away
                pass
            self._admin = None

    async def check(self) -> None:
        """One round: list topics, re-create the missing ones, note a reset."""
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(**client_options(self.settings), request_timeout_ms=5000)
            await self._admin.start()
        meta = (await self._admin._get_cluster_metadata(topics=None)).to_object()   # list_topics, with the id
        existing = {t["topic"] for t in meta["topics"]}
        cluster_id = meta.get("cluster_id")   # Metadata v2+ carries it
        missing = sorted(self.wanted - existing)
        reason = ""
        if cluster_id and self.cluster_id and cluster_id != self.cluster_id:
            reason = f"the broker's cluster id changed ({self.cluster_id} -> {cluster_id})"
        elif missing and len(missing) == len(self.wanted):
            reason = "every topic is gone (an in-memory broker restarted?)"
        self.cluster_id = cluster_id or self.cluster_id
        if missing:
            log.warning("topics missing: %s; creating them again", ", ".join(missing))
            await ensure_topics(self.settings, [t[len(self.settings.topic_prefix):] for t in missing], timeout_s=10.0)
            self.recreated += len(missing)
            await self._repair(missing)
        if reason:
            self.resets += 1
            self.reset_reason = reason
            log.warning("the Kafka broker lost its state: %s", reason)

    async def _repair(self, topics: list[str], attempts: int = 3) -> None:
        """Re-create the topics just created that are broken by writes from before they existed.

        Tansu (memory engine, 0.6.0) acknowledges a produce for a topic it does not have: after a
        broker restart, every producer that buffered records during the outage (or still holds
        the old metadata) writes them at once, before any keeper can create the topic. The topic
        created afterwards under that name is broken (measured): its end offset counts those
        records, a fetch returns none of them, its first write fails, and after that its offsets
        no longer match what a fetch returns. Such a partition is told by an end offset above 0
        and nothing to fetch from its start; its topic is deleted (which clears it) and created
        again, until clean or ``attempts`` run out. A live topic (records a fetch returns) is
        left alone."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        for _ in range(attempts):
            consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=None, enable_auto_commit=False,
                                        request_timeout_ms=5000)
            await consumer.start()
            try:
                await consumer._client.force_metadata_update()
                tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
                ends = await consumer.end_offsets(tps) if tps else {}
                suspect = [tp for tp, end in ends.items() if end > 0]
                fetched: set = set()
                if suspect:
                    consumer.assign(suspect)
                    await consumer.seek_to_beginning(*suspect)
                    for _round in range(3):
                        got = await consumer.getmany(*[tp for tp in suspect if tp not in fetched], timeout_ms=300)
                        fetched |= {tp for tp, msgs in got.items() if msgs}
                        if len(fetched) == len(suspect):
                            break
            finally:
                await consumer.stop()
            broken = sorted({tp.topic for tp in suspect if tp not in fetched})
            if not broken:
                return
            log.warning("topics %s were written before they were created (the broker acknowledged writes to "
                        "topics it did not have, and they report records no fetch returns): deleting and "
                        "creating them again", ", ".join(broken))
            try:
                await self._admin.delete_topics(broken)
            except Exception as exc:   # noqa: BLE001 - created again below either way
                log.warning("topic keeper: deleting %s failed: %r", ", ".join(broken), exc)
            await ensure_topics(self.settings, [t[len(self.settings.topic_prefix):] for t in broken], timeout_s=10.0)
            topics = broken
        log.error("topics %s are still broken by writes from before they existed after %d attempts",
                  ", ".join(topics), attempts)

    async def _loop(self) -> None:
        failing = False
        while True:
            try:
                await asyncio.wait_for(self.check(), 15.0)
                if failing:
                    log.info("topic keeper: the broker answers again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # noqa: BLE001 - the broker away: keep asking, with a fresh client
                if not failing:
                    log.warning("topic keeper: cannot list topics (%s); retrying", exc or type(exc).__name__)
                failing = True
                await self._close()
            await asyncio.sleep(self.interval_s)
