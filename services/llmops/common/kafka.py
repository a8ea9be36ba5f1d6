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
    }
