"""Kafka client options derived from settings, shared by producers, consumers and admin clients."""
from __future__ import annotations

import ssl
from collections import OrderedDict

from aiokafka.partitioner import DefaultPartitioner

from llmops.common.settings import Settings


class CachedPartitioner:
    """Kafka's default partitioner (murmur2 of the key, as the Java client computes it) with the
    partition of recent keys remembered: one trace's spans, completion and scores share a key, and
    aiokafka's murmur2 is pure Python (a few microseconds a message on the ingest path)."""

    def __init__(self, size: int = 65_536) -> None:
        self.size = size
        self._cache: OrderedDict[tuple[bytes, int], int] = OrderedDict()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return DefaultPartitioner()(key, all_partitions, available)
        k = (key, len(all_partitions))
        p = self._cache.get(k)
        if p is None:
            p = self._cache[k] = DefaultPartitioner()(key, all_partitions, available)
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return p


def client_options(settings: Settings) -> dict:
    opts: dict = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = ssl.create_default_context()
    if settings.kafka_security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = settings.kafka_sasl_password
    return opts


def producer_options(settings: Settings) -> dict:
    return {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
        "partitioner": CachedPartitioner(),
        # the largest message sent; the event bus refuses larger events itself (reason too_large)
        "max_request_size": settings.kafka_max_message_bytes,
    }


def refuse_topic_auto_creation() -> None:
    """Make every aiokafka client of this process ask for metadata without creating topics
    (``allow_auto_topic_creation=false``, as the Java consumer's ``allow.auto.create.topics``).

    A broker that creates topics on a metadata request creates them with its own partition count:
    after the embedded broker restarted empty, the first send would re-create ``spans`` with 4
    partitions, not ``LLMOPS_TOPIC_PARTITIONS``. Service processes call this at start; their topic
    keeper (:class:`llmops.common.topics.TopicKeeper`) creates missing topics with the right
    counts, and a send waits for it (about a second). Process-wide: aiokafka has no per-client
    switch."""
    from aiokafka.protocol import metadata

    init = metadata.MetadataRequest.__init__
    if getattr(init, "_llmops_no_auto_create", False):
        return

    def no_auto_create(self, topics=None, allow_auto_topic_creation: bool | None = False) -> None:
        init(self, topics, allow_auto_topic_creation)

    no_auto_create._llmops_no_auto_create = True
    metadata.MetadataRequest.__init__ = no_auto_create
